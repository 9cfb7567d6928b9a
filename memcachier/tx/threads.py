# -*- test-case-name: tests.unit.test_threads -*-
"""
Blocking work (SQL) run off the reactor thread: L{ThreadPoolRunner}, the
one adapter every repository's asynchronous face runs its calls through,
and L{ThreadPoolService}, which starts and stops the pool with the node.

It is Twisted's L{deferToThreadPool} with the reactor and the pool bound
once (Buildbot's C{DBThreadPool.do} shape), so a caller names neither.
"""

from typing import Any, Callable, Optional, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

_T = TypeVar("_T")


class ThreadPoolRunner:
    """
    Runs functions in a thread pool and delivers their results on the
    reactor.

    @ivar reactor: the reactor the results are delivered on.
    @ivar pool: the L{ThreadPool} (or anything with its C{callInThreadWithCallback},
        such as a synchronous stand-in in tests), or L{None} for the
        reactor's own.
    """

    def __init__(self, reactor: IReactorFromThreads, pool: Optional[ThreadPool] = None) -> None:
        """
        @param reactor: the reactor the results are delivered on.
        @param pool: a pool started before the first call (see
            L{ThreadPoolService}); L{None}: the reactor's own pool
            (C{IReactorThreads.getThreadPool}), looked up at each call,
            since a reactor makes it on first demand and a node being
            built must not start it.
        """
        self.reactor = reactor
        self.pool = pool

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> "Deferred[_T]":
        """
        Call C{f(*args, **kwargs)} in the pool.

        @return: a L{Deferred} firing on the reactor with what C{f}
            returns, or failing with what it raises.
        """
        pool = self.pool
        if pool is None:
            threads: IReactorThreads = self.reactor  # type: ignore[assignment]
            pool = threads.getThreadPool()
        return deferToThreadPool(self.reactor, pool, f, *args, **kwargs)


class ThreadPoolService(Service):
    """
    Starts a thread pool with the service and stops it (joining its
    threads) when the service stops.  Put it before every service that
    uses the pool in a C{MultiService}, since children start in order and
    stop in reverse.

    @ivar threadpool: the L{ThreadPool}.
    """

    def __init__(self, threadpool: ThreadPool) -> None:
        self.threadpool = threadpool

    def startService(self) -> None:
        super().startService()
        self.threadpool.start()

    def stopService(self) -> None:
        super().stopService()
        self.threadpool.stop()
