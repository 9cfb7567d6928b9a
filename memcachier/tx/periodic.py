# -*- test-case-name: tests.unit.test_periodic -*-
"""
L{PeriodicService}: the one timer every periodic job of a node runs on
(the control poll, the reaper, the heartbeat, alert evaluation, analytics
samples, latency probes, the introspection drain, Heroku sync).

It is Twisted's L{TimerService} with what each of those jobs needs and
used to write by hand around a L{twisted.internet.task.LoopingCall}:

  - the clock is a constructor argument (tests pass a
    L{twisted.internet.task.Clock});
  - a tick that raises or fails is logged and the timer goes on (a bare
    L{TimerService} stops at the first failure);
  - a tick returning a L{Deferred} is never overlapped: the next tick
    waits for it (L{LoopingCall} does that), and stopping waits for it
    too;
  - the first tick may wait one interval instead of running at start.
"""

from typing import Any, Callable, Optional

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class PeriodicService(TimerService):
    """
    Calls C{tick()} every C{interval} seconds of C{clock}.

    Subclass it (passing a bound method as C{tick}) or use it as it is.

    @ivar interval: the seconds between two ticks.
    @ivar pending: the L{Deferred} of the last tick, or L{None} before the
        first (tests wait on it); it never fails.
    """

    _log = Logger()
    #: the clock the ticks follow (TimerService's, never L{None} here)
    clock: IReactorTime

    def __init__(
        self,
        interval: float,
        tick: Callable[[], Any],
        clock: IReactorTime,
        description: str,
        now: bool = True,
    ) -> None:
        """
        @param interval: seconds between two ticks.
        @param tick: called with no argument; may return a L{Deferred}.
        @param clock: the clock the ticks follow.
        @param description: what the tick does, for the log line of a
            failure ("{description} failed").
        @param now: whether the first tick runs at start (else one
            interval later).
        """
        TimerService.__init__(self, interval, self._periodicTick)
        self.clock = clock
        self.pending: Optional[Deferred] = None
        self._periodicCall = tick
        self._periodicDescription = description
        self._periodicNow = now
        self._periodicSkip = False

    @property
    def interval(self) -> float:
        """
        The seconds between two ticks (L{TimerService}'s C{step}); a new
        value takes effect at the next start.
        """
        return float(self.step)

    @interval.setter
    def interval(self, seconds: float) -> None:
        self.step = seconds

    def startService(self) -> None:
        """
        Start the ticks: the first now, or after one interval.
        """
        self._periodicSkip = not self._periodicNow
        TimerService.startService(self)

    def stopService(self) -> Optional[Deferred]:
        """
        Stop the ticks.

        @return: L{None} if it was not running, else a L{Deferred} that
            fires once the tick under way (if any) is over.
        """
        if not self.running:
            return None
        stopped = TimerService.stopService(self)
        # TimerService says it runs until the tick under way is over; this
        # service says it stopped at once (as every other service does), so
        # a tick that ends meanwhile starts nothing new.
        Service.stopService(self)
        return stopped

    def _periodicTick(self) -> Optional[Deferred]:
        if self._periodicSkip:
            # TimerService always ticks at start; this one waits.
            self._periodicSkip = False
            return None
        d = maybeDeferred(self._periodicCall)
        d.addErrback(
            lambda f: self._log.failure("{description} failed", f,
                                        description=self._periodicDescription)
        )
        self.pending = d
        return d
