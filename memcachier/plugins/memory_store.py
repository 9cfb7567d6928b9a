# -*- test-case-name: tests.unit.test_discovery -*-
"""
The built-in in-memory store, selected with C{[store] plugin = "memory"}
(the default).
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from memcachier.interfaces import IStorePlugin
from memcachier.stores.memory import MemoryStore


@implementer(IPlugin, IStorePlugin)
class MemoryStorePlugin:
    """
    Makes a L{memcachier.stores.memory.MemoryStore}: every cache's keys in
    this process's memory, LRU-evicted within each cache's plan.
    """

    name = "memory"
    description = "In-process memory, LRU per cache (memcached-like); the default."

    def makeStore(self, settings, reactor):
        """
        @param settings: the C{[store]} table; the memory store takes no
            settings.
        @param reactor: the store's clock.
        """
        return MemoryStore(reactor)


memoryStore = MemoryStorePlugin()
