# -*- test-case-name: tests.unit.test_alerts_rules -*-
"""
Alert rules: what each trigger measures, when it fires and when it
resolves.  Pure: no I/O, no reactor; the caller passes the time (its
injected clock's C{seconds()}) and the readings.  docs/alerts.md spells out
the same definitions for users.

  - L{CounterWindow} keeps one cache's counter deltas over the evaluation
    window (the insight series' arithmetic, L{memcachier.analytics.series}).
  - L{CacheWindow} sums those windows over every node that serves the
    cache, and knows whether the last reading heard from all of them.
  - L{measure} turns a window (and the plan, and the latency) into the
    value a trigger compares with its threshold, or L{None} when there is
    not enough data to judge.
  - L{RuleState} and L{step} decide, evaluation after evaluation, when an
    alert fires and resolves: once each, with hysteresis and a minimum
    duration so that it does not flap.
"""

import collections
import math

import attr

from memcachier.analytics import series

#: The contract's trigger types (MemCachier's), then the extra ones.
CONTRACT_TRIGGERS = ("hit_rate", "memory_usage")
EXTRA_TRIGGERS = ("evictions", "connections", "latency", "auth_errors", "held_back")
TRIGGER_TYPES = CONTRACT_TRIGGERS + EXTRA_TRIGGERS

#: Triggers whose threshold is a percentage (0-100).
PERCENT_TRIGGERS = ("hit_rate", "memory_usage", "connections", "held_back")

#: Triggers that fire when the value falls I{below} the threshold; the
#: others fire when it rises above.
BELOW_TRIGGERS = ("hit_rate",)

#: What the value of each trigger is, for messages and documents.
UNITS = {
    "hit_rate": "%",
    "memory_usage": "%",
    "connections": "%",
    "evictions": " evictions/min",
    "auth_errors": " auth errors/min",
    "latency": " ms",
    "held_back": "%",
}

#: the cumulative counter behind C{held_back} (seconds, a float), kept by
#: the window beside the insight series' counters
HELD_BACK = "held_back_seconds"

#: hit_rate judges nothing until the window holds this many lookups.
MIN_LOOKUPS = 20

#: Hysteresis: a percentage trigger resolves only once the value is this
#: many points on the good side of its threshold ...
PERCENT_MARGIN = 5.0
#: ... a rate or latency trigger once it is this fraction below it.
RATE_MARGIN = 0.10

#: Minimum duration: a change of state needs its condition seen at this
#: many consecutive evaluations (so it lasted at least one interval).
HOLD_EVALUATIONS = 2


class CounterWindow:
    """
    One cache's counters over the last C{window} seconds, from readings of
    its cumulative counters (L{memcachier.runtime.CacheRuntime.statsDict}).

    Each reading adds the delta since the previous one (a counter that
    went down was reset and counts from zero, as in the sampler); deltas
    older than the window are dropped, so the sum is what happened in the
    window, and the gauges are those of the last reading.
    """

    def __init__(self, window):
        self.window = window
        self._deltas = collections.deque()
        self._last = None

    def add(self, now, stats):
        """
        Record a reading of the cumulative counters taken at C{now}.
        """
        if self._last is not None and now > self._last[0]:
            delta = series.delta(self._last[1], stats)
            held, before = stats.get(HELD_BACK, 0), self._last[1].get(HELD_BACK, 0)
            delta[HELD_BACK] = held - before if held >= before else held
            self._deltas.append((now, now - self._last[0], delta))
        self._last = (now, dict(stats))
        while self._deltas and self._deltas[0][0] <= now - self.window:
            self._deltas.popleft()

    def total(self):
        """
        @return: a 2-tuple: seconds covered, and the summed deltas with the
            last gauges (both empty before two readings).
        """
        seconds = 0.0
        data = {}
        for _, covered, delta in self._deltas:
            seconds += covered
            series.merge(data, delta)
        if self._last is not None:
            for name in series.GAUGES:
                data[name] = self._last[1].get(name, 0)
        return seconds, data


class CacheWindow:
    """
    One cache's counters over the last C{window} seconds on every node that
    serves it: a L{CounterWindow} per node, summed.

    Each node's deltas are its own (a node that misses a reading adds the
    two intervals at its next one), so the sum of the counters is what the
    whole cache did in the window, whichever nodes answered last.  The
    gauges (C{bytes}, C{curr_connections}, ...) are summed over the nodes
    of the last reading only; L{complete} says whether that reading heard
    every live node.  A node not heard for a whole window is forgotten.
    """

    def __init__(self, window):
        self.window = window
        self.complete = False
        self._nodes = {}
        self._fresh = frozenset()

    def add(self, now, readings, complete=True):
        """
        Record one reading of the cache.

        @param readings: (node name, cumulative counters) pairs, one per
            node that answered.
        @param complete: whether every live node of the cache answered.
        """
        for node, stats in readings:
            entry = self._nodes.get(node)
            if entry is None:
                entry = self._nodes[node] = [CounterWindow(self.window), now]
            entry[0].add(now, stats)
            entry[1] = now
        for node, (_, seen) in list(self._nodes.items()):
            if seen <= now - self.window:
                del self._nodes[node]
        self._fresh = frozenset(node for node, _ in readings)
        self.complete = bool(complete)

    def nodes(self):
        """
        @return: the names of the nodes whose counters are in the window.
        """
        return sorted(self._nodes)

    def total(self):
        """
        @return: a 3-tuple: seconds covered (the longest of the nodes'),
            the summed deltas and gauges (see the class docstring), and
            L{complete}.
        """
        seconds = 0.0
        data = {}
        for node, (window, _) in self._nodes.items():
            covered, nodeData = window.total()
            seconds = max(seconds, covered)
            if node not in self._fresh:
                nodeData = {k: v for k, v in nodeData.items() if k not in series.GAUGES}
            series.merge(data, nodeData, gauges=())
        return seconds, data, self.complete


#: Triggers that read gauges: judged only on a reading of every node
#: (part of the nodes' memory or connections would always look better).
GAUGE_TRIGGERS = ("memory_usage", "connections")


def measure(triggerType, seconds, data, plan, latencyMs=None, complete=True):
    """
    The value a trigger compares with its threshold.

      - C{hit_rate}: hits / lookups in the window, in percent (insight's
        C{hit_rate}); L{None} below L{MIN_LOOKUPS} lookups.
      - C{memory_usage}: bytes used / the plan's memory, in percent.
      - C{connections}: open connections / the plan's limit, in percent.
      - C{evictions}, C{auth_errors}: per minute over the window.
      - C{held_back}: seconds the cache was held back (fair share,
        budgets) over the window's seconds, in percent.
      - C{latency}: the last probe's round trip in milliseconds.

    @param seconds: what the window covers (L{CounterWindow.total}).
    @param data: the window's deltas and gauges.
    @param plan: the cache's L{memcachier.control.model.Plan}.
    @param latencyMs: the latest latency figure, or L{None}.
    @param complete: whether C{data} covers every live node of the cache
        (L{CacheWindow.complete}); if not, the L{GAUGE_TRIGGERS} give
        L{None} and the counters are judged over the nodes that answered.
    @return: a L{float}, or L{None} when there is not enough data.
    """
    if triggerType == "latency":
        return None if latencyMs is None else float(latencyMs)
    if triggerType in GAUGE_TRIGGERS and not complete:
        return None
    if triggerType == "memory_usage":
        if "bytes" not in data or not plan.memory:
            return None
        return 100.0 * data["bytes"] / plan.memory
    if triggerType == "connections":
        if "curr_connections" not in data or not plan.connections:
            return None
        return 100.0 * data["curr_connections"] / plan.connections
    if seconds <= 0:
        return None
    if triggerType == "hit_rate":
        hits, lookups = series.hitCounts(data)
        if lookups < MIN_LOOKUPS:
            return None
        return 100.0 * hits / lookups
    if triggerType == "evictions":
        return 60.0 * data.get("evictions", 0) / seconds
    if triggerType == "auth_errors":
        return 60.0 * data.get("auth_errors", 0) / seconds
    if triggerType == "held_back":
        return 100.0 * data.get(HELD_BACK, 0) / seconds
    raise ValueError(f"unknown trigger type {triggerType!r}")


def breached(triggerType, value, threshold):
    """
    Whether C{value} is on the wrong side of C{threshold}: below it for
    C{hit_rate}, above it for every other trigger.
    """
    if triggerType in BELOW_TRIGGERS:
        return value < threshold
    return value > threshold


def recovered(triggerType, value, threshold):
    """
    Whether C{value} is back on the good side of C{threshold} by the
    hysteresis margin (L{PERCENT_MARGIN} points for percentages, capped
    at 0 and 100; L{RATE_MARGIN} of the threshold for the others).
    """
    if triggerType in PERCENT_TRIGGERS:
        if triggerType in BELOW_TRIGGERS:
            return value >= min(100.0, threshold + PERCENT_MARGIN)
        return value <= max(0.0, threshold - PERCENT_MARGIN)
    return value <= threshold * (1.0 - RATE_MARGIN)


@attr.s(frozen=True, slots=True)
class RuleState:
    """
    Where an alert stands.

    @ivar firing: it fired and has not resolved.
    @ivar since: when it last changed state (clock seconds), or L{None}.
    @ivar pending: consecutive evaluations that saw the opposite state's
        condition (see L{HOLD_EVALUATIONS}).
    """

    firing = attr.ib(default=False)
    since = attr.ib(default=None)
    pending = attr.ib(default=0)


#: What L{step} reports.
FIRED, RESOLVED = "fired", "resolved"


def step(state, triggerType, value, threshold, now, hold=HOLD_EVALUATIONS):
    """
    One evaluation of one alert.

    Not firing, it fires once its condition (L{breached}) has been seen at
    C{hold} consecutive evaluations.  Firing, it resolves once the value
    has been back by the hysteresis margin (L{recovered}) at C{hold}
    consecutive evaluations.  A value of L{None} (not enough data)
    changes nothing and starts the count again; so does a value between
    the threshold and the margin.

    @param state: the alert's L{RuleState}.
    @param value: L{measure}'s result.
    @param now: the clock's seconds.
    @return: a 2-tuple of the new L{RuleState} and L{FIRED}, L{RESOLVED}
        or L{None}.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return attr.evolve(state, pending=0), None
    if state.firing:
        moving = recovered(triggerType, value, threshold)
    else:
        moving = breached(triggerType, value, threshold)
    if not moving:
        return attr.evolve(state, pending=0), None
    pending = state.pending + 1
    if pending < hold:
        return attr.evolve(state, pending=pending), None
    if state.firing:
        return RuleState(False, now, 0), RESOLVED
    return RuleState(True, now, 0), FIRED
