"""
Tests for L{memcachier.tx.periodic}: the one timer of every periodic job.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher

from memcachier.tx.periodic import PeriodicService


class Calls:
    def __init__(self, results=()):
        self.count = 0
        self.results = list(results)

    def __call__(self):
        self.count += 1
        if self.results:
            outcome = self.results.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return None


def test_ticksOnTheInjectedClock():
    """
    The first tick runs at start, then one every interval of the clock
    given to the constructor; stopping leaves no delayed call.
    """
    clock = Clock()
    calls = Calls()
    service = PeriodicService(5.0, calls, clock, "counting")
    service.startService()
    assert calls.count == 1
    clock.advance(5)
    clock.advance(5)
    assert calls.count == 3
    assert service.interval == 5.0
    service.stopService()
    assert clock.getDelayedCalls() == []
    assert not service.running


def test_notNow():
    """
    With C{now=False} the first tick waits one interval.
    """
    clock = Clock()
    calls = Calls()
    service = PeriodicService(5.0, calls, clock, "counting", now=False)
    service.startService()
    assert calls.count == 0
    clock.advance(5)
    assert calls.count == 1
    service.stopService()


def test_failuresAreLoggedAndTheTimerGoesOn():
    """
    A tick that raises, or returns a failing L{Deferred}, is logged with
    the description; the next tick still runs.
    """
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = Clock()
        calls = Calls([ValueError("boom"), defer.fail(KeyError("k")), None])
        service = PeriodicService(1.0, calls, clock, "the job")
        service.startService()
        clock.advance(1)
        clock.advance(1)
        assert calls.count == 3
        service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e for e in events if e.get("log_level") == LogLevel.critical
                and e.get("description") == "the job"]
    assert len(failures) == 2


def test_noOverlap():
    """
    A tick whose L{Deferred} has not fired delays the next one; stopping
    waits for it.
    """
    clock = Clock()
    waiting = defer.Deferred()
    calls = Calls([waiting])
    service = PeriodicService(1.0, calls, clock, "slow")
    service.startService()
    clock.advance(1)
    clock.advance(1)
    assert calls.count == 1
    stopped = service.stopService()
    assert not stopped.called
    assert not service.running
    waiting.callback(None)
    assert stopped.called
    assert clock.getDelayedCalls() == []


def test_stopWithoutStart():
    """
    Stopping a service that never started does nothing.
    """
    assert PeriodicService(1.0, Calls(), Clock(), "idle").stopService() is None
