# -*- test-case-name: tests.unit.test_flushes -*-
"""
Flush generations: a flush that no node of a cluster can miss.

A flush reaches a cache's other nodes by a fan-out over the peer
connections (L{memcachier.cluster.keyspace.ClusterKeyspace.flush}), the
fast path.  A node cut off from its peers misses it, and would go on
serving what the flush removed.  So the node that took the flush also
records it in the control plane (C{flush_generations}, in the control
plane's thread pool, never on the reply's path): the cache's next
generation and its C{flush_at}, the wall-clock time from which what was
stored before is invalid (in the future for C{flush_all <delay>}).  Every
node's control index loads it (at once on PostgreSQL's C{NOTIFY}, else
within a poll interval), and a node that has not applied a flush at least
that late flushes its local items of the cache then (or schedules it, for
a time still to come).

A node notes the flushes it applied (its own, and those a peer fanned out
to it), so that seeing the generation of a flush it already applied does
nothing.  A node that starts counts as having applied every flush before
its start: it holds nothing older.

If the control plane cannot be written, the flush still happened here and
on every reachable peer, and the client is answered C{OK} as memcached
would; the failure is logged.
"""

import time
from typing import Callable, Dict, List, Tuple

from twisted.logger import Logger


class FlushGenerations:
    """
    This node's side of flush generations: records the flushes it takes,
    notes those it applied, and says which recorded ones it still must
    apply.
    """

    _log = Logger()

    def __init__(self, controlPlane, index, wallClock: Callable[[], float] = time.time) -> None:
        """
        @param controlPlane: the L{memcachier.control.repository.AsyncControlPlane}
            (its C{recordFlush}).
        @param index: the L{memcachier.control.index.ControlIndex} (its
            C{flushGenerations}).
        @param wallClock: wall-clock seconds, shared between machines.
        """
        self.controlPlane = controlPlane
        self.index = index
        self.wallClock = wallClock
        self.startedAt = wallClock()
        #: cache id to the latest flush time applied (or scheduled) here
        self._applied: Dict[int, float] = {}
        #: cache id to the last generation looked at
        self._seen: Dict[int, int] = {}

    def applied(self, cacheId: int) -> float:
        """
        The latest flush time this node applied or scheduled for a cache
        (its start, if none since).
        """
        return self._applied.get(cacheId, self.startedAt)

    def flushed(self, cacheId: int, delay: float) -> None:
        """
        A client flushed a cache through this node (C{flush_all}, the API,
        the dashboard): note it and record it in the control plane, in the
        background.
        """
        now = self.wallClock()
        flushAt = now + max(0.0, delay)
        self._applied[cacheId] = flushAt
        d = self.controlPlane.recordFlush(cacheId, flushAt, now)
        d.addErrback(self._notRecorded, cacheId)

    def _notRecorded(self, failure, cacheId):
        self._log.warn(
            "flush of cache {cacheId} not recorded in the control plane ({error}): "
            "nodes that missed its fan-out keep what it removed",
            cacheId=cacheId, error=failure.getErrorMessage(),
        )

    def peerFlushed(self, cacheId: int, delay: float) -> None:
        """
        A peer fanned a flush of a cache out to this node: note it.
        """
        self._applied[cacheId] = self.wallClock() + max(0.0, delay)

    def due(self) -> List[Tuple[int, float]]:
        """
        The recorded flushes this node has not applied, now marked as
        applied: the caller flushes each cache's local items.

        A generation newer than the one last looked at is due when its
        flush time is later than what this node applied, or earlier than a
        delayed flush still to come here (a later flush replaced it).

        @return: L{list} of (cache id, delay in seconds from now).
        """
        now = self.wallClock()
        out = []
        for cacheId, recorded in self.index.flushGenerations().items():
            if recorded.generation <= self._seen.get(cacheId, 0):
                continue
            self._seen[cacheId] = recorded.generation
            flushAt = recorded.flush_at
            applied = self.applied(cacheId)
            if flushAt > applied or (now < applied and flushAt < applied):
                self._applied[cacheId] = flushAt
                out.append((cacheId, max(0.0, flushAt - now)))
        return out
