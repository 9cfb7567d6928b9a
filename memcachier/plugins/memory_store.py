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
        @param settings: the C{[store]} table: C{compact_tables} (a
            boolean, false by default) copies a churning dict into a table
            sized for its items instead of letting CPython double it
            (L{memcachier.stores.memory.COMPACT_FROM}).
        @param reactor: the store's clock.
        @raise ValueError: C{compact_tables} is not a boolean.
        """
        compact = settings.get("compact_tables", False)
        if not isinstance(compact, bool):
            raise ValueError(f"[store] compact_tables: expected true or false, got {compact!r}")
        return MemoryStore(reactor, compactTables=compact)


memoryStore = MemoryStorePlugin()
