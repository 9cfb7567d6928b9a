# -*- test-case-name: tests.unit.test_drain -*-
"""
Graceful stop (C{SIGTERM}) and certificate reload (C{SIGHUP}).

twistd stops the application service on C{SIGTERM} and waits for the
L{Deferred} its C{stopService} returns.  L{NodeService} makes that a
sequence: stop accepting on every listener; let every open connection
finish what it is doing (a web request or a memcache request being
received or answered runs to its end, then its connection closes; an idle
connection closes at once) for
at most C{shutdownTimeout} seconds, after which what is left is aborted;
only then stop the other services, the thread pool last, so control-plane
writes the last requests queued are done before the process exits (0).
"""

import signal
from types import FrameType
from typing import Any, Callable, Dict, Iterable, Optional, Protocol, Sequence, Union

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger

from memcachier.node.tls import ReloadingContextFactory

#: what C{signal.signal} returns: the handler it replaced
_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]


class Drainable(Protocol):
    """
    What holds connections (the web site, the memcache factory), as
    L{NodeService} stops it.
    """

    def drain(self) -> Deferred[Any]:
        """
        Close idle connections and let busy ones finish.

        @return: a L{Deferred} that fires once no connection is open.
        """

    def abort(self) -> int:
        """
        Drop the connections left.

        @return: how many were dropped.
        """


class NodeService(MultiService):
    """
    The node's top service: stops in order (see the module).

    @ivar listeners: the L{memcachier.node.listeners.ListenerService}s, stopped
        first.
    @ivar drainables: what holds connections, the L{Drainable}s: C{drain()}
        (close idle connections, let busy ones finish; a L{Deferred} that
        fires once none is open) and C{abort()} (drop what is left).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        shutdownTimeout: float = 10.0,
        listeners: Iterable[IService] = (),
        drainables: Iterable[Drainable] = (),
        beforeStop: Optional[Callable[[], Deferred[Any]]] = None,
    ) -> None:
        """
        @param beforeStop: called first on a stop, while the listeners
            still accept (a cluster node drains: its keys' new owners ask
            it for what they miss); the stop goes on when its L{Deferred}
            fires.
        """
        super().__init__()
        self.beforeStop = beforeStop
        self.clock = clock
        self.shutdownTimeout = shutdownTimeout
        self.listeners = list(listeners)
        self.drainables = list(drainables)

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        first: Deferred[Any] = (
            maybeDeferred(self.beforeStop) if self.beforeStop is not None else succeed(None)
        )
        first.addErrback(lambda f: self._log.failure("draining the node failed", f))
        first.addCallback(lambda _: self._stopListeners())
        return first

    def _stopListeners(self) -> Deferred[Any]:
        stopped = DeferredList([maybeDeferred(s.stopService) for s in self.listeners])
        stopped.addCallback(lambda _: self._drain())
        stopped.addErrback(
            lambda f: self._log.failure("draining connections failed", f)
        )
        # whatever happened above, the rest must stop (the thread pool's
        # threads would otherwise keep the process alive)
        stopped.addBoth(lambda _: self._stopChildren())
        return stopped

    def _stopChildren(self) -> Deferred[Any]:
        """
        Stop the other services one at a time, the last added first, each
        once the one before has finished.  C{MultiService} stops them all
        at once: the thread pool then stopped while a periodic job still
        had SQL to run, the pool dropped that call, and the job's stop
        waited for it forever.
        """
        done: Deferred[Any] = succeed(None)
        for service in reversed(list(self)):
            if service.running:
                done.addCallback(lambda _, s: s.stopService(), service)
                done.addErrback(
                    lambda f, s: self._log.failure("stopping {service} failed", f, service=s),
                    service,
                )
        return done

    def _drain(self) -> Deferred[None]:
        """
        Ask every drainable to finish; fire once they have, or once the
        deadline has passed and what was left is aborted.
        """
        finished: Deferred[None] = Deferred()
        timer = self.clock.callLater(self.shutdownTimeout, self._deadlinePassed, finished)

        def drained(_: object) -> None:
            if timer.active():
                timer.cancel()
                self._log.info(
                    "stopped accepting; every connection finished", event="shutdown_drained"
                )
                finished.callback(None)

        DeferredList(
            [maybeDeferred(d.drain) for d in self.drainables], consumeErrors=True
        ).addCallback(drained)
        return finished

    def _deadlinePassed(self, finished: Deferred[None]) -> None:
        left = sum(d.abort() for d in self.drainables)
        self._log.warn(
            "shutdown deadline of {shutdownTimeout}s passed: aborted {left} connections",
            event="shutdown_deadline",
            shutdownTimeout=self.shutdownTimeout,
            left=left,
        )
        finished.callback(None)


def installGracefulStop(reactor: IReactorCore) -> None:
    """
    Make C{SIGTERM} (and C{SIGINT}) stop the reactor without the exit
    status twistd would otherwise give: twistd kills itself again with the
    signal that stopped it (status 143), which a supervisor reads as a
    crash.  A stop that drained (L{NodeService}) is a clean exit, 0, as
    memcached's.  Call once the reactor runs (its own handlers are then in
    place to be replaced).
    """
    log = Logger()

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        log.info(
            "received {signal}: stopping gracefully", event="shutdown_requested",
            signal=signal.Signals(signum).name,
        )
        IReactorFromThreads(reactor).callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


class CertificateReloader(Service):
    """
    Reloads every C{ssl:} listener's certificate, key and CA files on
    C{SIGHUP} (L{memcachier.node.tls.ReloadingContextFactory}); open
    connections are untouched.

    @ivar contextFactories: the listeners' context factories.
    @ivar counters: listener reloads since start, by result (C{ok},
        C{failed}), for C{/metrics}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        contextFactories: Sequence[ReloadingContextFactory],
        installSignal: bool = True,
        counters: Optional[Dict[str, int]] = None,
    ) -> None:
        """
        @param counters: the mapping to count reloads in (C{ok}, C{failed}),
            built before this reloader so that C{/metrics} can be given it
            first; a new one if L{None}.
        """
        self.reactor = reactor
        self.contextFactories = contextFactories
        self.installSignal = installSignal
        self._previous: _Handler = None
        self.counters = counters if counters is not None else {"ok": 0, "failed": 0}

    def startService(self) -> None:
        super().startService()
        if self.installSignal:
            self._previous = signal.signal(signal.SIGHUP, self._signalled)

    def stopService(self) -> None:
        super().stopService()
        if self.installSignal and self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _signalled(self, signum: int, frame: Optional[FrameType]) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> int:
        """
        Reload every listener's files; log one line per listener.

        @return: the number of listeners whose files did not load.
        """
        failed = 0
        for factory in self.contextFactories:
            error = factory.reload()
            self.counters["ok" if error is None else "failed"] += 1
            if error is None:
                self._log.info(
                    "TLS certificate reloaded for {description}",
                    event="tls_reloaded",
                    description=factory.description,
                )
            else:
                failed += 1
                self._log.error(
                    "TLS certificate reload failed for {description}, still using the "
                    "previous one: {error}",
                    event="tls_reload_failed",
                    description=factory.description,
                    error=str(error) or type(error).__name__,
                )
        return failed

