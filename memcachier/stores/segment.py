# -*- test-case-name: tests.unit.test_segment_store -*-
"""
The segment store: every cache's items in this process's memory, outside
Python objects.

Each keyspace (L{memcachier._segments.Keyspace}, in C) keeps its items
inline in large segments (header, key and value; 1 MiB in a large cache,
mapped from the OS, so a freed segment goes back to it whatever the
allocator) and finds them through an index of its own: about 150 bytes per
item of 100 bytes, against the memory store's 253
(C{docs/performance.md}, "The segment store").  Room is made a segment at a
time, the oldest first: expired items reclaimed, ACTIVE items (hit since
they last reached the tail) copied to the newest segment once, the rest
evicted, as Segcache does with memcached's second chance.  Segments whose
items have all expired are freed as a whole.

Behaviour is the memory store's (L{memcachier.stores.memory}), which
stays the reference: the tests run both side by side.  This module is
only the Python end: the answering methods are the C type's own, and a
keyspace adds what needs the reactor (a delayed flush) or a Python loop
over many items (snapshots).
"""

import os

from zope.interface import implementer

from memcachier.commands import (
    DeleteResult,
    DeltaResult,
    StoreResult,
    itemAtime,
    itemBits,
    itemCas,
    itemExptime,
    itemFlags,
    itemValue,
)
from memcachier.interfaces import IKeyspace, ISnapshottableStore, IStore
from memcachier.stores.discovery import StorePluginError

try:
    from memcachier import _segments
except ImportError:  # pragma: no cover (installed without a C compiler)
    _segments = None

#: items one call into C hands a snapshot at a time
SNAPSHOT_BATCH = 1024


class SegmentsMissing(StorePluginError):
    """
    The C module of the segment store (C{memcachier/_segments.c}) was not
    built: the package was installed without a C compiler.
    """


def _bind():
    """
    Tell the C module the result enums' members, so it answers with them.
    """
    _segments.bind_results(
        tuple(sorted(StoreResult)), tuple(sorted(DeleteResult)), tuple(sorted(DeltaResult))
    )


if _segments is not None:
    _bind()
    _Keyspace = _segments.Keyspace
else:  # pragma: no cover
    _Keyspace = object


@implementer(IKeyspace)
class SegmentKeyspace(_Keyspace):  # type: ignore[misc,valid-type]
    """
    One cache's keys in segments.  C{get}, C{getMany}, C{peek}, C{touch},
    C{store}, C{delete}, C{delta}, C{stats}, C{resetStats}, C{configure}
    and C{keys} are the C type's; C{segmentStats()} says what the segments
    and the index hold.
    """

    synchronous = True

    def __init__(self, clock, maxBytes, maxItemSize, counter, seed):
        super().__init__(clock.seconds, counter, maxBytes, maxItemSize, seed)
        self._clock = clock
        self._flushCall = None

    def flush(self, delay):
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        if delay > 0:
            self._flushCall = self._clock.callLater(delay, self._flushDue)
        else:
            self.flushNow()

    def _flushDue(self):
        self._flushCall = None
        self.flushNow()

    def cancelFlush(self):
        """
        Forget a delayed flush (the keyspace is dropped).
        """
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None

    def pendingFlush(self):
        """
        When a delayed flush falls due (clock seconds), or L{None}.
        """
        if self._flushCall is not None and self._flushCall.active():
            return self._flushCall.getTime()
        return None

    def snapshotItems(self):
        """
        The live items as C{(key, item)}, the oldest segment first.
        """
        pairs, segment, offset = self.snapshotBatch(0, 0, SNAPSHOT_BATCH)
        yield from pairs
        while segment:
            pairs, segment, offset = self.snapshotBatch(segment, offset, SNAPSHOT_BATCH)
            yield from pairs

    def restoreItems(self, items):
        """
        Link restored items as the newest, oldest first, as they are; the
        expired and the too large are skipped, the oldest evicted when the
        limit is reached.

        @return: how many were linked.
        """
        restore = self.restoreItem
        linked = 0
        for key, item in items:
            if restore(
                key, itemValue(item), itemFlags(item), itemExptime(item), itemCas(item),
                itemAtime(item), itemBits(item),
            ):
                linked += 1
        return linked


@implementer(IStore, ISnapshottableStore)
class SegmentStore:
    """
    Keyspaces of many caches in segments.  CAS uniques come from one
    counter for the whole store, as in memcached.  Its items survive a
    graceful restart (L{ISnapshottableStore}).

    @raise SegmentsMissing: if the C module was not built.
    """

    def __init__(self, reactor):
        if _segments is None:
            raise SegmentsMissing(
                "the segment store needs memcachier._segments, built from "
                "memcachier/_segments.c at install (a C compiler was missing)"
            )
        self._reactor = reactor
        self._keyspaces = {}
        self._cas = _segments.CasCounter()
        # keys hash with a seed of this process's own, so that nobody can
        # choose keys that collide in the index
        self._seed = int.from_bytes(os.urandom(8), "little")

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        keyspace = self._keyspaces.get(cacheId)
        if keyspace is None:
            keyspace = SegmentKeyspace(self._reactor, maxBytes, maxItemSize, self._cas, self._seed)
            self._keyspaces[cacheId] = keyspace
        return keyspace

    def dropKeyspace(self, cacheId):
        keyspace = self._keyspaces.pop(cacheId, None)
        if keyspace is not None:
            keyspace.cancelFlush()
            keyspace.flushNow()

    def close(self):
        for keyspace in self._keyspaces.values():
            keyspace.cancelFlush()
            keyspace.flushNow()
        self._keyspaces.clear()

    # -- ISnapshottableStore -------------------------------------------------

    def snapshotCaches(self):
        return list(self._keyspaces)

    def snapshotItems(self, cacheId):
        return self._keyspaces[cacheId].snapshotItems()

    def pendingFlush(self, cacheId):
        return self._keyspaces[cacheId].pendingFlush()

    def casFloor(self):
        return self._cas.next

    def restoreItems(self, cacheId, maxBytes, maxItemSize, items):
        return self.keyspace(cacheId, maxBytes, maxItemSize).restoreItems(items)

    def resumeCas(self, floor):
        self._cas.next = max(self._cas.next, floor + 1)
