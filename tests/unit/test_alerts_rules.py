"""
Alert rules, pure, driven by L{task.Clock}: every trigger fires once when
its condition starts, resolves once when it ends, does not flap, judges
nothing without enough traffic.
"""

import pytest
from twisted.internet.task import Clock

from memcachier.alerts import rules
from memcachier.alerts.rules import FIRED, RESOLVED, CounterWindow, RuleState, measure, step
from memcachier.control.model import Plan

PLAN = Plan("100", 100 * 1024 * 1024, 100)


class Cache:
    """
    Cumulative counters of a cache, as C{statsDict} reports them.
    """

    def __init__(self):
        self.stats = {"get_hits": 0, "get_misses": 0, "evictions": 0, "auth_errors": 0,
                      "bytes": 0, "curr_connections": 0}

    def gets(self, hits, misses):
        self.stats["get_hits"] += hits
        self.stats["get_misses"] += misses


class Judge:
    """
    Evaluates one alert every C{interval} seconds of a L{Clock}, as the
    service does, and records its transitions.
    """

    def __init__(self, trigger, threshold, window=300.0, interval=60.0):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.trigger = trigger
        self.threshold = threshold
        self.window = CounterWindow(window)
        self.interval = interval
        self.state = RuleState()
        self.transitions = []
        self.values = []

    def tick(self, cache, latency=None):
        self.clock.advance(self.interval)
        now = self.clock.seconds()
        self.window.add(now, cache.stats)
        seconds, data = self.window.total()
        value = measure(self.trigger, seconds, data, PLAN, latency)
        self.values.append(value)
        self.state, transition = step(self.state, self.trigger, value, self.threshold, now)
        if transition:
            self.transitions.append((transition, now))
        return transition


def test_hitRateFiresOnceAndResolvesOnce():
    judge = Judge("hit_rate", 50, window=120, interval=60)
    cache = Cache()
    judge.tick(cache)
    for _ in range(5):
        cache.gets(hits=10, misses=90)
        judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED]
    assert judge.values[-1] == pytest.approx(10.0)
    for _ in range(5):
        cache.gets(hits=95, misses=5)
        judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED, RESOLVED]
    fired, resolved = judge.transitions[0][1], judge.transitions[1][1]
    assert resolved - fired >= judge.interval


def test_firesOnlyAfterTheMinimumDuration():
    """
    One bad evaluation is not enough: the condition must be seen at
    L{rules.HOLD_EVALUATIONS} consecutive evaluations.
    """
    judge = Judge("hit_rate", 50, window=60, interval=60)
    cache = Cache()
    judge.tick(cache)
    cache.gets(0, 100)
    assert judge.tick(cache) is None
    cache.gets(100, 0)
    assert judge.tick(cache) is None
    cache.gets(0, 100)
    assert judge.tick(cache) is None
    cache.gets(0, 100)
    assert judge.tick(cache) == FIRED


def test_noFlappingAroundTheThreshold():
    """
    A value wandering just either side of the threshold fires once and
    does not resolve until it is past the hysteresis margin.
    """
    judge = Judge("hit_rate", 50, window=60, interval=60)
    cache = Cache()
    judge.tick(cache)
    for hits in [40, 40, 52, 48, 53, 49, 54, 47, 51]:
        cache.gets(hits, 100 - hits)
        judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED]
    for _ in range(2):
        cache.gets(56, 44)
        judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED, RESOLVED]


def test_notEnoughTrafficJudgesNothing():
    """
    Fewer than L{rules.MIN_LOOKUPS} lookups in the window: no value, no
    firing, however bad the ratio.
    """
    judge = Judge("hit_rate", 50, window=60, interval=60)
    cache = Cache()
    judge.tick(cache)
    for _ in range(5):
        cache.gets(0, rules.MIN_LOOKUPS - 1)
        judge.tick(cache)
    assert judge.transitions == []
    assert judge.values[-1] is None


def test_firingAlertStaysFiringWhenTrafficStops():
    judge = Judge("hit_rate", 50, window=60, interval=60)
    cache = Cache()
    judge.tick(cache)
    for _ in range(2):
        cache.gets(0, 100)
        judge.tick(cache)
    for _ in range(5):
        judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED]
    assert judge.state.firing


def test_memoryUsage():
    judge = Judge("memory_usage", 80)
    cache = Cache()
    cache.stats["bytes"] = PLAN.memory // 2
    judge.tick(cache)
    judge.tick(cache)
    assert judge.transitions == []
    cache.stats["bytes"] = int(PLAN.memory * 0.9)
    judge.tick(cache)
    judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED]
    assert judge.values[-1] == pytest.approx(90.0)
    cache.stats["bytes"] = int(PLAN.memory * 0.77)  # within the margin
    judge.tick(cache)
    judge.tick(cache)
    assert len(judge.transitions) == 1
    cache.stats["bytes"] = int(PLAN.memory * 0.5)
    judge.tick(cache)
    judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED, RESOLVED]


def test_connections():
    judge = Judge("connections", 50)
    cache = Cache()
    cache.stats["curr_connections"] = 60
    judge.tick(cache)
    judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED]
    assert judge.values[-1] == pytest.approx(60.0)
    cache.stats["curr_connections"] = 10
    judge.tick(cache)
    judge.tick(cache)
    assert [t for t, _ in judge.transitions] == [FIRED, RESOLVED]


@pytest.mark.parametrize("trigger, counter", [("evictions", "evictions"), ("auth_errors", "auth_errors")])
def test_perMinuteRates(trigger, counter):
    """
    evictions and auth_errors are per minute over the window.
    """
    judge = Judge(trigger, 10, window=120, interval=60)
    cache = Cache()
    judge.tick(cache)
    for _ in range(3):
        cache.stats[counter] += 30
        judge.tick(cache)
    assert judge.values[-1] == pytest.approx(30.0)
    assert [t for t, _ in judge.transitions] == [FIRED]
    for _ in range(4):
        judge.tick(cache)
    assert judge.values[-1] == 0
    assert [t for t, _ in judge.transitions] == [FIRED, RESOLVED]


def test_latency():
    judge = Judge("latency", 5)
    cache = Cache()
    judge.tick(cache, latency=None)
    judge.tick(cache, latency=None)
    assert judge.transitions == []
    judge.tick(cache, latency=8.0)
    judge.tick(cache, latency=9.0)
    assert [t for t, _ in judge.transitions] == [FIRED]
    judge.tick(cache, latency=4.7)  # above the 10% margin: still firing
    judge.tick(cache, latency=4.6)
    assert len(judge.transitions) == 1
    judge.tick(cache, latency=1.0)
    judge.tick(cache, latency=1.0)
    assert [t for t, _ in judge.transitions] == [FIRED, RESOLVED]


def test_counterResetCountsFromZero():
    """
    A counter that went down (stats reset) counts what happened since.
    """
    window = CounterWindow(300)
    window.add(0, {"get_hits": 100, "get_misses": 0})
    window.add(60, {"get_hits": 5, "get_misses": 40})
    seconds, data = window.total()
    assert seconds == 60
    assert (data["get_hits"], data["get_misses"]) == (5, 40)


def test_windowDropsOldDeltas():
    window = CounterWindow(120)
    stats = {"get_hits": 0, "get_misses": 0}
    window.add(0, stats)
    for t in range(60, 400, 60):
        stats = dict(stats, get_misses=stats["get_misses"] + t)
        window.add(t, stats)
    seconds, data = window.total()
    assert seconds == 120
    assert data["get_misses"] == 300 + 360


def test_hysteresisMarginsAreCapped():
    assert rules.recovered("hit_rate", 100.0, 100)
    assert not rules.recovered("hit_rate", 99.9, 100)
    assert rules.recovered("memory_usage", 0.0, 2)
    assert rules.breached("hit_rate", 49.9, 50) and not rules.breached("hit_rate", 50, 50)
    assert rules.breached("memory_usage", 50.1, 50) and not rules.breached("memory_usage", 50, 50)


# -- the whole cache: every node's counters


def test_cacheWindowSumsEveryNode():
    """
    Hits on one node and misses on another are one cache: the hit rate is
    judged over both, the gauges summed.
    """
    window = rules.CacheWindow(300.0)
    a, b = Cache(), Cache()
    a.stats["bytes"], b.stats["bytes"] = 100, 50
    window.add(1000.0, [("a", dict(a.stats)), ("b", dict(b.stats))])
    a.gets(10, 0)
    b.gets(0, 30)
    window.add(1060.0, [("a", dict(a.stats)), ("b", dict(b.stats))])
    seconds, data, complete = window.total()
    assert (seconds, complete) == (60.0, True)
    assert (data["get_hits"], data["get_misses"], data["bytes"]) == (10, 30, 150)
    assert measure("hit_rate", seconds, data, PLAN, complete=complete) == 25.0
    assert window.nodes() == ["a", "b"]


def test_cacheWindowNodeThatMissesAReading():
    """
    A node that does not answer one reading: its counters are still
    judged (its next reading brings both intervals), its gauges are not
    summed while it is silent, and memory is not judged on that reading.
    """
    window = rules.CacheWindow(300.0)
    a, b = Cache(), Cache()
    a.stats["bytes"], b.stats["bytes"] = 100, 400
    window.add(1000.0, [("a", dict(a.stats)), ("b", dict(b.stats))])
    b.gets(0, 20)
    a.gets(0, 25)
    window.add(1060.0, [("a", dict(a.stats))], complete=False)
    seconds, data, complete = window.total()
    assert complete is False
    assert (data["get_misses"], data["bytes"]) == (25, 100)
    assert measure("hit_rate", seconds, data, PLAN, complete=complete) == 0.0
    assert measure("memory_usage", seconds, data, PLAN, complete=complete) is None
    assert measure("connections", seconds, data, PLAN, complete=complete) is None
    b.gets(0, 5)
    window.add(1120.0, [("a", dict(a.stats)), ("b", dict(b.stats))])
    seconds, data, complete = window.total()
    assert complete is True
    assert (data["get_misses"], data["bytes"]) == (50, 500)
    assert measure("memory_usage", seconds, data, PLAN, complete=complete) == pytest.approx(
        100.0 * 500 / PLAN.memory)


def test_cacheWindowForgetsANodeSilentForAWindow():
    window = rules.CacheWindow(100.0)
    a, b = Cache(), Cache()
    window.add(1000.0, [("a", dict(a.stats)), ("b", dict(b.stats))])
    for t in (1050.0, 1100.0):
        window.add(t, [("a", dict(a.stats))], complete=False)
    assert window.nodes() == ["a"]
