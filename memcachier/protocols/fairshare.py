# -*- test-case-name: tests.unit.test_fairshare -*-
"""
A fair share of the node under a noisy neighbour, and per-plan budgets.

Every cache on a node shares one reactor thread.  A cache with 50 busy
connections is read 50 times for another's once in every reactor pass,
and a pass that reads all of them makes every other cache's request wait
for it.  L{FairShare} keeps the node work-conserving but fair:

  - B{Accounting} costs the hot path nothing: the codecs already count
    each cache's C{bytes_read} and C{bytes_written}; the scheduler reads
    them once a round (L{FairShare.round} seconds, on the injected clock)
    and works with what moved since the last round.
  - B{Shares.}  A cache alone is never held back.  When several caches
    were busy lately (within L{FairShare.busyFor}), each is entitled to
    the last round's work weighted by its plan's memory.  A cache over its
    share reads, for the next round, from only part of its connections:
    its share over its use of them, and at most L{FairShare.reading}.  The
    others are held back (their transports stop being read through the
    producer API, L{memcachier.protocols.base.CodecProtocol.holdBack});
    the part read turns round by round, so each connection progresses.
    A reactor pass then reads at most about L{FairShare.reading}
    connections of the noisy cache, and the quiet cache's request waits
    for those only.  Nothing is refused or failed: held-back requests are
    read a round later.
  - B{Budgets.}  Each cache may move at most so many requests and bytes
    in and out a second: its plan's own ceilings
    (L{memcachier.control.model.Plan.requests_per_second} and
    C{bytes_per_second}; C{0} for none) where the plan sets them, else
    the node's default scaled by the plan's memory (per MiB of it, and
    never below L{MIN_REQUESTS} and L{MIN_BYTES}, so that a small plan can
    still be filled at once).  A cache past its budget by more than
    L{BURST} seconds' worth has every connection held back until it is
    within it again, alone or not.  A round pays a budget back for at most
    an idle round's time, however late it comes.
  - B{Held-back time} is counted in the cache's C{held_back_seconds}
    (L{memcachier.runtime.CacheStats}): round seconds times the part of
    its connections held back, so it grows by at most one a second.

The round timer runs at L{FairShare.round} while any cache is busy, held
or owing, and ten times slower when none is; with the share and the
budgets both off it does not run at all.
"""

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: seconds per round
DEFAULT_ROUND = 0.02
#: connections of a cache over its share read at once
DEFAULT_READING = 8
#: a cache that moved bytes within this many seconds counts as busy
DEFAULT_BUSY_FOR = 0.25
#: default budgets per MiB of plan memory, a second
DEFAULT_REQUESTS_PER_MIB = 2000.0
DEFAULT_BYTES_PER_MIB = 2.0 * 1024 * 1024
#: the least budgets, whatever the plan: requests and bytes a second
MIN_REQUESTS = 10_000.0
MIN_BYTES = 64.0 * 1024 * 1024
#: seconds' worth of its budget a cache may run ahead before it is held
BURST = 1.0
#: the idle round is this many rounds
IDLE_ROUNDS = 10

MiB = 1024 * 1024

#: the counters whose sum is a cache's requests (keys of a multi-get each)
REQUEST_COUNTERS = (
    "cmd_get", "cmd_set", "cmd_touch", "cmd_flush", "delete_hits", "delete_misses",
    "incr_hits", "incr_misses", "decr_hits", "decr_misses",
)


def requestsOf(stats: Any) -> int:
    """
    How many requests a cache's L{memcachier.runtime.CacheStats} counted.
    """
    return sum(getattr(stats, name) for name in REQUEST_COUNTERS)


class _Account:
    """
    What the scheduler remembers of one cache between rounds.
    """

    __slots__ = ("bytesIn", "bytesOut", "requests", "lastBusy", "rotation",
                 "owedRequests", "owedIn", "owedOut")

    def __init__(self, stats: Any, fresh: bool = False) -> None:
        """
        @param fresh: the cache is new since the last round: count from
            zero, not from its counters now.
        """
        self.bytesIn = 0 if fresh else stats.bytes_read
        self.bytesOut = 0 if fresh else stats.bytes_written
        self.requests = 0 if fresh else requestsOf(stats)
        self.lastBusy = -math.inf
        self.rotation = 0
        self.owedRequests = 0.0
        self.owedIn = 0.0
        self.owedOut = 0.0


def _moved(now: int, before: int) -> int:
    """
    What a counter moved (a counter that went down was reset: its value).
    """
    return now - before if now >= before else now


def budgets(plan: Any, requestsPerMiB: float, bytesPerMiB: float,
            minRequests: float = MIN_REQUESTS, minBytes: float = MIN_BYTES) -> Tuple[float, float]:
    """
    A plan's budgets, requests and bytes (each way) a second, C{0} for
    none: its own ceilings where it sets them, else the node's defaults
    per MiB of its memory (C{0} per MiB: none), never below the least.
    """
    mib = plan.memory / MiB
    requests = getattr(plan, "requests_per_second", None)
    if requests is None:
        requests = max(minRequests, requestsPerMiB * mib) if requestsPerMiB else 0.0
    moved = getattr(plan, "bytes_per_second", None)
    if moved is None:
        moved = max(minBytes, bytesPerMiB * mib) if bytesPerMiB else 0.0
    return float(requests), float(moved)


def _owed(owed: float, used: int, rate: float, seconds: float) -> float:
    """
    A leaky bucket: what is owed after using C{used} in C{seconds} at
    C{rate} a second (never below zero).
    """
    return max(0.0, owed + used - rate * seconds)


class FairShare(Service):
    """
    Holds back the connections of a cache over its share of the node or
    over its budget, round by round (see the module docstring).

    @ivar runtimes: the served caches, cache id to
        L{memcachier.runtime.CacheRuntime} (L{memcachier.runtime.ServedCaches.runtimes}).
    @ivar sharing: whether the fair share is on.
    @ivar round: seconds per round.
    @ivar reading: connections of a cache over its share read at once.
    @ivar requestsPerMiB: requests a second per MiB of plan memory, or
        C{0} for no request budget.
    @ivar bytesPerMiB: bytes a second, in and out each, per MiB of plan
        memory, or C{0} for no byte budget.
    @ivar ceilings: whether a configured plan sets a ceiling of its own
        (then the budgets are kept even with both defaults off).
    """

    name = "fairshare"

    def __init__(
        self,
        runtimes: Dict[int, Any],
        reactor: IReactorTime,
        sharing: bool = True,
        round: float = DEFAULT_ROUND,
        reading: int = DEFAULT_READING,
        requestsPerMiB: float = DEFAULT_REQUESTS_PER_MIB,
        bytesPerMiB: float = DEFAULT_BYTES_PER_MIB,
        busyFor: float = DEFAULT_BUSY_FOR,
        weight: Optional[Callable[[Any], float]] = None,
        minRequests: float = MIN_REQUESTS,
        minBytes: float = MIN_BYTES,
        burst: float = BURST,
        plans: Iterable[Any] = (),
    ) -> None:
        """
        @param weight: a cache's weight from its runtime (default: its
            plan's memory).
        @param minRequests: the least request budget, a second.
        @param minBytes: the least byte budget, a second.
        @param burst: seconds' worth of its budget a cache may run ahead.
        @param plans: the configured L{memcachier.control.model.Plan}s.
        """
        self.runtimes = runtimes
        self.reactor = reactor
        self.sharing = sharing
        self.round = round
        self.reading = max(1, reading)
        self.requestsPerMiB = requestsPerMiB
        self.bytesPerMiB = bytesPerMiB
        self.busyFor = busyFor
        self.minRequests = minRequests
        self.minBytes = minBytes
        self.burst = burst
        self.ceilings = any(
            getattr(plan, "requests_per_second", None) or getattr(plan, "bytes_per_second", None)
            for plan in plans
        )
        self.weight = weight if weight is not None else (lambda runtime: runtime.plan.memory)
        self._accounts: Dict[Any, _Account] = {}
        self._holding: Dict[Any, Tuple[List[Any], int]] = {}
        self._call: Optional[IDelayedCall] = None
        self._lastTick = 0.0
        self._firstRound = True

    @property
    def active(self) -> bool:
        """
        Whether there is anything to do (the share or a budget is on).
        """
        return self.sharing or self.budgeting

    @property
    def budgeting(self) -> bool:
        """
        Whether any cache may have a budget.
        """
        return bool(self.requestsPerMiB) or bool(self.bytesPerMiB) or self.ceilings

    def startService(self) -> None:
        super().startService()
        if self.active:
            self._lastTick = self.reactor.seconds()
            self._call = self.reactor.callLater(self.round, self.tick)

    def stopService(self) -> Any:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._endRound(self.reactor.seconds())
        return None

    def holding(self) -> Dict[int, int]:
        """
        The connections held back now, per cache id.
        """
        return {runtime.cacheId: len(held) for runtime, (held, _) in self._holding.items()}

    def _endRound(self, now: float, release: bool = True) -> Dict[Any, Tuple[List[Any], int]]:
        """
        Count the round just ended in each held cache's C{held_back_seconds}
        and, if C{release}, let every held connection be read again.

        @return: what was held in the round.
        """
        seconds = max(0.0, now - self._lastTick)
        self._lastTick = now
        holding, self._holding = self._holding, {}
        for runtime, (held, connections) in holding.items():
            runtime.stats.held_back_seconds += seconds * len(held) / max(1, connections)
            if release:
                for connection in held:
                    connection.release()
        return holding

    def _releaseRest(self, held: Dict[Any, Tuple[List[Any], int]]) -> None:
        """
        Let the connections held last round that are not held this round
        be read again.  A connection held in both stays paused: a cache of
        thousands of connections over its share changes only the few its
        turn moves by, not every one of them twice a round (each a pair of
        C{epoll_ctl} calls).
        """
        for runtime, (before, _) in held.items():
            still = self._holding.get(runtime)
            if still is None:
                for connection in before:
                    connection.release()
                continue
            kept = set(still[0])
            for connection in before:
                if connection not in kept:
                    connection.release()

    def tick(self) -> None:
        """
        One round's end: account, hold back for the next round, release
        the rest.
        """
        self._call = None
        now = self.reactor.seconds()
        seconds = now - self._lastTick
        before = self._endRound(now, release=False)
        accounts = self._accounts
        runtimes = self.runtimes
        if len(accounts) > len(runtimes):
            served = set(runtimes.values())
            for gone in [r for r in accounts if r not in served]:
                del accounts[gone]
        budgeting = self.budgeting
        # a budget is paid back for at most an idle round's time a round:
        # a longer gap (the reactor stalled, the wall clock stepped
        # forward) forgives no debt
        credit = min(seconds, self.round * IDLE_ROUNDS)
        busy = []
        owing = False
        firstRound = self._firstRound
        self._firstRound = False
        for runtime in runtimes.values():
            stats = runtime.stats
            account = accounts.get(runtime)
            if account is None:
                # Every round visits every cache: one first seen after the
                # first round came to be served since the last round, and
                # all it did since is this round's (a client logging in
                # and making its requests at once is charged for them).
                account = accounts[runtime] = _Account(stats, fresh=not firstRound)
                if firstRound:
                    continue
            connections = runtime.connections
            if not connections:
                continue
            bytesIn, bytesOut = stats.bytes_read, stats.bytes_written
            movedIn = _moved(bytesIn, account.bytesIn)
            movedOut = _moved(bytesOut, account.bytesOut)
            account.bytesIn, account.bytesOut = bytesIn, bytesOut
            work = movedIn + movedOut
            if work:
                account.lastBusy = now
            if budgeting and self._overBudget(runtime, account, movedIn, movedOut, credit, work):
                held = list(connections)
                for connection in held:
                    connection.holdBack()
                self._holding[runtime] = (held, len(held))
                continue
            owing = owing or bool(account.owedRequests or account.owedIn or account.owedOut)
            if now - account.lastBusy < self.busyFor:
                busy.append((runtime, account, work))
        if self.sharing and len(busy) > 1:
            self._share(busy)
        self._releaseRest(before)
        if self.running:
            # a cache just released still owes: checked again next round,
            # not an idle round later (which would let it run unmetered
            # for ten rounds)
            period = self.round if busy or owing or self._holding else self.round * IDLE_ROUNDS
            self._call = self.reactor.callLater(period, self.tick)

    def _overBudget(self, runtime: Any, account: _Account, movedIn: int, movedOut: int,
                    seconds: float, work: int) -> bool:
        """
        Charge what the cache moved against its budgets; whether it is
        more than a round's worth past one.
        """
        requestRate, byteRate = budgets(runtime.plan, self.requestsPerMiB, self.bytesPerMiB,
                                        self.minRequests, self.minBytes)
        over = False
        if requestRate:
            if work or account.owedRequests:
                requests = requestsOf(runtime.stats)
                used = _moved(requests, account.requests)
                account.requests = requests
                account.owedRequests = _owed(account.owedRequests, used, requestRate, seconds)
                over = account.owedRequests > requestRate * self.burst
        if byteRate:
            account.owedIn = _owed(account.owedIn, movedIn, byteRate, seconds)
            account.owedOut = _owed(account.owedOut, movedOut, byteRate, seconds)
            over = over or max(account.owedIn, account.owedOut) > byteRate * self.burst
        return over

    def _share(self, busy: List[Tuple[Any, _Account, int]]) -> None:
        """
        Hold back part of the connections of each busy cache that used more
        than its weighted share of the last round's work.
        """
        total = sum(work for _, _, work in busy)
        weights = sum(self.weight(runtime) for runtime, _, _ in busy)
        if total <= 0 or weights <= 0:
            return
        for runtime, account, work in busy:
            share = total * self.weight(runtime) / weights
            if work <= share:
                continue
            connections = list(runtime.connections)
            count = len(connections)
            reading = min(count, self.reading, max(1, math.ceil(count * share / work)))
            if reading >= count:
                continue
            start = account.rotation % count
            account.rotation = start + reading
            turn = connections[start:] + connections[:start]
            held = turn[reading:]
            for connection in held:
                connection.holdBack()
            self._holding[runtime] = (held, count)
