# -*- test-case-name: tests.unit.test_health -*-
"""
The probes of a process supervisor or an orchestrator: C{GET /healthz}
(the process serves HTTP: always 200) and C{GET /readyz} (200 only when
every check passes, else 503 with a JSON body naming what is missing).

Neither takes a credential and neither writes a line to the access log
(a probe every few seconds would drown it).  What the checks read comes
in as callables from L{memcachier.node.build}: this package knows
nothing of listeners or membership.

The control-plane check is one small query (the control version, which
the index polls anyway) through the control plane's thread pool, bounded
by a timeout.  A burst of probes shares one query (one in flight at a
time, its answer reused for C{fresh} seconds), so probes never queue
work in front of the control plane's own, and a database that hangs
holds one thread, not one per probe.
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime

from memcachier.web.router import Route

#: The names a not-ready answer lists in C{missing}.
LISTENERS, CONTROL_PLANE, MEMBERSHIP = "listeners", "control plane", "cluster membership"


class ControlPlaneCheck:
    """
    Whether the control plane answers, asked at most once per C{fresh}
    seconds and never more than once at a time.
    """

    def __init__(
        self, query: Callable[[], Deferred[Any]], clock: IReactorTime,
        timeout: float = 2.0, fresh: float = 1.0,
    ) -> None:
        """
        @param query: runs a small query in the control plane's thread pool
            (L{memcachier.control.repository.AsyncControlPlane.version}).
        @param clock: the reactor, for the timeout and the freshness.
        @param timeout: seconds after which a query not yet answered
            counts as no answer (it still runs; the next check waits for it
            rather than starting another).
        @param fresh: seconds an answer is reused for.
        """
        self.query = query
        self.clock = clock
        self.timeout = timeout
        self.fresh = fresh
        self._answer: Optional[Tuple[float, bool]] = None
        self._waiting: Optional[List[Deferred[bool]]] = None

    def __call__(self) -> Deferred[bool]:
        """
        @return: a L{Deferred} of whether the control plane answered (within
            C{timeout}); it never fails.
        """
        now = self.clock.seconds()
        if self._answer is not None and now - self._answer[0] < self.fresh:
            return succeed(self._answer[1])
        observer: Deferred[bool] = Deferred()
        if self._waiting is None:
            self._waiting = []
            maybeDeferred(self.query).addCallbacks(
                lambda _: True, lambda _: False
            ).addCallback(self._answered)
        if self._waiting is not None:
            # the query may have answered at once
            self._waiting.append(observer)
            delayed = self.clock.callLater(self.timeout, self._late, observer)
            observer.addBoth(self._cancel, delayed)
        else:
            assert self._answer is not None
            observer.callback(self._answer[1])
        return observer

    def _answered(self, answered: bool) -> None:
        self._answer = (self.clock.seconds(), answered)
        waiting, self._waiting = self._waiting or [], None
        for observer in waiting:
            if not observer.called:
                observer.callback(answered)

    def _late(self, observer: Deferred[bool]) -> None:
        if not observer.called:
            observer.callback(False)

    @staticmethod
    def _cancel(result: object, delayed: Any) -> object:
        if delayed.active():
            delayed.cancel()
        return result


def membershipJoined(membership: Any) -> Callable[[], bool]:
    """
    Whether this node has joined its cluster: its own heartbeat is in the
    membership it last read, no older than the heartbeat timeout (a node
    whose heartbeats stopped landing has, for the others, left).

    @param membership: the L{memcachier.cluster.membership.Membership}.
    """

    def joined() -> bool:
        now = membership.wallClock()
        return any(
            record.name == membership.name and record.cluster == membership.cluster
            and record.heartbeat_at >= now - membership.timeout
            for record in membership.records
        )

    return joined


class Health:
    """
    The probe routes, a part of the site's router
    (L{memcachier.web.router.makeRouter}).
    """

    def __init__(
        self,
        listening: Callable[[], bool],
        controlPlane: Callable[[], Deferred[bool]],
        joined: Optional[Callable[[], bool]] = None,
    ) -> None:
        """
        @param listening: whether every listener is bound and accepting.
        @param controlPlane: a L{Deferred} of whether the control plane
            answers (a L{ControlPlaneCheck}).
        @param joined: whether this node has joined its cluster
            (L{membershipJoined}), or L{None} for a node alone.
        """
        self.listening = listening
        self.controlPlane = controlPlane
        self.joined = joined

    def endpoints(self) -> List[Route]:
        """
        The probes' routes, for L{memcachier.web.router.makeRouter}.
        """
        methods: Sequence[str] = ("GET", "HEAD")
        return [
            ("/healthz", methods, self.healthz, False),
            ("/readyz", methods, self.readyz, False),
        ]

    def healthz(self, request: Any) -> bytes:
        """
        200 while the process serves HTTP.
        """
        return self._answer(request, 200, {"alive": True})

    async def readyz(self, request: Any) -> bytes:
        """
        200 when the listeners accept, the control plane answers and (in a
        cluster) this node has joined; else 503 naming what is missing.
        """
        missing = []
        if not self.listening():
            missing.append(LISTENERS)
        if not await self.controlPlane():
            missing.append(CONTROL_PLANE)
        if self.joined is not None and not self.joined():
            missing.append(MEMBERSHIP)
        return self._answer(
            request, 503 if missing else 200, {"ready": not missing, "missing": missing}
        )

    def _answer(self, request: Any, code: int, body: object) -> bytes:
        # read by memcachier.web.site.APISite.log: no access log line
        request.unlogged = True
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(body).encode("utf-8") + b"\n"
