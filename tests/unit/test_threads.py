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
