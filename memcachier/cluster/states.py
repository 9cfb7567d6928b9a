# -*- test-case-name: tests.unit.test_node_states -*-
"""
What a node is doing, as the others, C{/metrics} and C{memcachier-admin
node list} see it: C{restoring} (putting its warm-restart snapshot back),
C{warming} (it joined a cluster whose other nodes held its range: a local
miss asks the key's previous owner for a bounded window), C{serving}, or
C{draining} (leaving on purpose: out of every ring, still answering its
peers' fallback requests until the window ends, then it stops).

The state rides the node's heartbeat row (C{nodes.state} and
C{nodes.progress}), which is how the others learn that a node drains: a
draining node is out of the cluster's servers, so its keys go to their
new owners, which ask it for what they miss.
"""

import json
from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

RESTORING = "restoring"
WARMING = "warming"
SERVING = "serving"
DRAINING = "draining"
#: every state, in the order a node goes through them
STATES = (RESTORING, WARMING, SERVING, DRAINING)


class NodeState:
    """
    This node's state, its warm-up window and its hand-off counters.

    @ivar state: one of L{STATES}.
    @ivar restored: items the warm restart put back.
    @ivar takenOver: items this node copied from a key's previous owner
        (a local miss in a warm-up window that the previous owner had).
    @ivar handedOff: items this node pushed to their new owners as it
        drained.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, warmup: float, restoring: bool = False) -> None:
        """
        @param warmup: seconds of a warm-up (and drain) window; 0 turns
            the warm paths off.
        @param restoring: start in C{restoring} (warm restart is on).
        """
        self.clock = clock
        self.warmup = warmup
        self.state = RESTORING if restoring else SERVING
        self.restored = 0
        self.takenOver = 0
        self.handedOff = 0
        #: when the window of this node's own join ends (0: none)
        self.joinEnd = 0.0
        self.windowStart: Optional[float] = None
        self.windowEnd: Optional[float] = None
        self._timer: Any = None
        self._drained: Optional[Deferred[None]] = None
        self._listeners: list[Callable[[], None]] = []

    def addListener(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener()} whenever the state changes.
        """
        self._listeners.append(listener)

    def _set(self, state: str) -> None:
        if state == self.state:
            return
        self._log.info("node state: {state}", event="node_state", state=state)
        self.state = state
        for listener in list(self._listeners):
            listener()

    def restoreDone(self, restored: int) -> None:
        """
        The warm restart is over (C{restored} items back).
        """
        self.restored = restored
        if self.state == RESTORING:
            self._set(SERVING)

    def window(self) -> Optional[float]:
        """
        The end of the warm-up window under way, or L{None}.
        """
        if self.windowEnd is not None and self.clock.seconds() < self.windowEnd:
            return self.windowEnd
        return None

    def warming(self) -> None:
        """
        This node gained a range that others held: warm it from them for
        the window (a new window if one runs).
        """
        if not self.warmup or self.state in (DRAINING, RESTORING):
            return
        now = self.clock.seconds()
        self.windowStart, self.windowEnd = now, now + self.warmup
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(self.warmup, self._warmed)
        self._set(WARMING)

    def joined(self) -> None:
        """
        This node joined a cluster whose other nodes are live: its whole
        range was theirs.
        """
        if not self.warmup:
            return
        self.warming()
        if self.windowEnd is not None:
            self.joinEnd = self.windowEnd

    def _warmed(self) -> None:
        self._timer = None
        if self.state == WARMING:
            self._set(SERVING)

    def progress(self) -> float:
        """
        How far the window under way is (1.0 when none runs).
        """
        if self.windowEnd is None or self.windowStart is None:
            return 1.0
        span = self.windowEnd - self.windowStart
        if span <= 0:
            return 1.0
        return max(0.0, min(1.0, (self.clock.seconds() - self.windowStart) / span))

    def drain(self, limit: float) -> Deferred[None]:
        """
        Drain: announce it (the listeners write the heartbeat row), then
        stay the fallback of this node's keys for the window, at most
        C{limit} seconds.

        @return: a L{Deferred} firing when the window is over (at once
            when the warm paths are off).
        """
        if self._drained is not None:
            return self._later(self._drained)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._set(DRAINING)
        span = max(0.0, min(self.warmup, limit))
        now = self.clock.seconds()
        self.windowStart, self.windowEnd = now, now + span
        self._drained = Deferred()
        if not span:
            self._drained.callback(None)
        else:
            self._timer = self.clock.callLater(span, self._drained.callback, None)
        return self._later(self._drained)

    @staticmethod
    def _later(d: Deferred[None]) -> Deferred[None]:
        if d.called:
            return succeed(None)
        observer: Deferred[None] = Deferred()
        d.addBoth(lambda result: (observer.callback(None), result)[1])
        return observer

    def details(self) -> Dict[str, Any]:
        """
        What the heartbeat row's C{progress} holds.
        """
        return {
            "warmup": round(self.progress(), 3),
            "restored": self.restored,
            "taken_over": self.takenOver,
            "handed_off": self.handedOff,
        }

    def detailsJSON(self) -> str:
        return json.dumps(self.details(), sort_keys=True)


def parseDetails(text: Optional[str]) -> Dict[str, Any]:
    """
    A heartbeat row's C{progress} as a L{dict} (empty when unreadable).
    """
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
