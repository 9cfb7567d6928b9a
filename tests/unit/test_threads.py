"""
Tests for L{memcachier.tx.threads}: the one thread-pool adapter.
"""

import pytest
from twisted.application.service import MultiService
from twisted.python.threadpool import ThreadPool

from memcachier.tx.threads import ThreadPoolRunner, ThreadPoolService
from tests.unit.test_control import SynchronousReactor, SynchronousThreadPool, result


def test_runDeliversResults():
    """
    L{ThreadPoolRunner.run} calls the function in the pool with its
    arguments and fires with its result, or fails with its exception.
    """
    runner = ThreadPoolRunner(SynchronousReactor(), SynchronousThreadPool())
    assert result(runner.run(lambda a, b=0: a + b, 1, b=2)) == 3
    with pytest.raises(ZeroDivisionError):
        result(runner.run(lambda: 1 / 0))


def test_serviceStartsAndStopsThePool():
    """
    L{ThreadPoolService} starts the pool with the service and joins its
    threads when it stops.
    """
    pool = ThreadPool(minthreads=1, maxthreads=1, name="test")
    parent = MultiService()
    ThreadPoolService(pool).setServiceParent(parent)
    assert not pool.started
    parent.startService()
    assert pool.started
    parent.stopService()
    assert not pool.started
    assert pool.joined


def test_runUsesTheReactorsPoolWhenGivenNone():
    """
    A L{ThreadPoolRunner} made without a pool asks the reactor for its
    own at each call, not when it is made (a node being built must not
    make the reactor start its pool).
    """
    pool = SynchronousThreadPool()

    class Reactor(SynchronousReactor):
        asked = 0

        def getThreadPool(self):
            self.asked += 1
            return pool

    reactor = Reactor()
    runner = ThreadPoolRunner(reactor)
    assert reactor.asked == 0
    assert result(runner.run(lambda a: a * 2, 21)) == 42
    assert reactor.asked == 1
