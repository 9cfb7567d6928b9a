# -*- test-case-name: tests.unit.test_segment_store -*-
"""
The segment store, selected with C{[store] plugin = "segment"}: every
cache's items in large segments outside Python objects
(L{memcachier.stores.segment}).
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from memcachier.interfaces import IStorePlugin
from memcachier.stores.discovery import StorePluginError
from memcachier.stores.segment import SegmentStore


@implementer(IPlugin, IStorePlugin)
class SegmentStorePlugin:
    """
    Makes a L{memcachier.stores.segment.SegmentStore}: the memory store's
    behaviour with less memory per item and memory that follows the
    cache's size under churn, whatever the allocator.
    """

    name = "segment"
    description = "In-process memory in segments outside Python objects (C); LRU per cache."

    def makeStore(self, settings, reactor):
        """
        @param settings: the rest of the C{[store]} table; the segment
            store takes no settings.
        @param reactor: the store's clock.
        @raise StorePluginError: a setting was given (one of another
            store's, such as the memory store's C{compact_tables}: with
            C{plugin = "auto"} that store is chosen instead).
        """
        if settings:
            raise StorePluginError(
                "the segment store takes no [store] settings; given: " + ", ".join(sorted(settings))
            )
        return SegmentStore(reactor)


segmentStore = SegmentStorePlugin()
