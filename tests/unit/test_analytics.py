"""
Insight: the series arithmetic, the sampler and its rollups in a real
(in-memory SQLite) control plane, retention, and the queries of the API,
all driven by a L{task.Clock}.
"""

import re

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.internet.task import Clock

from memcachier.analytics import series
from memcachier.analytics.repository import AnalyticsRepository
from memcachier.analytics.series import DAY, HOUR, MINUTE, QueryError
from memcachier.analytics.service import Analytics, LatencyProbe, Sampler, _VersionProbe
from memcachier.node.settings import Settings
from memcachier.control.migrations import upgrade
from memcachier.control.model import DEFAULT_PLANS
from memcachier.control.repository import ControlPlane
from memcachier.control.schema import makeEngine
from memcachier.testing import MemoryControlIndex

SERVER = "n1:11211"
OTHER = "n2:11211"


class SyncStore:
    """
    L{AsyncAnalytics} without threads: each call runs at once and returns
    a fired Deferred (Buildbot's NonThreadPool idea).
    """

    def __init__(self, repository):
        self.repository = repository

    def __getattr__(self, name):
        method = getattr(self.repository, name)
        return lambda *a, **kw: defer.maybeDeferred(method, *a, **kw)


class FakeRuntime:
    def __init__(self, cacheId):
        self.cacheId = cacheId
        self.counters = {name: 0 for name in series.COUNTERS}
        self.counters.update(bytes=0, curr_connections=0, curr_items=0, limit_maxbytes=1000)
        self.gone = False

    def statsDict(self):
        return dict(self.counters)


class FakeRegistry:
    def __init__(self, *runtimes):
        self._runtimes = {r.cacheId: r for r in runtimes}

    def runtimes(self):
        return list(self._runtimes.values())

    def existing(self, cacheId):
        return self._runtimes.get(cacheId)


def result(d):
    """
    The result of a fired Deferred (failures raise).
    """
    out = []
    d.addBoth(out.append)
    assert out, "Deferred did not fire"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def world():
    clock = Clock()
    engine = makeEngine("sqlite://")
    upgrade(engine)
    plans = {p.slug: p for p in DEFAULT_PLANS}
    cp = ControlPlane(engine, clock, plans)
    cache, _ = cp.createCache(name="one")
    repo = AnalyticsRepository(engine, clock)
    store = SyncStore(repo)
    runtime = FakeRuntime(cache.id)
    registry = FakeRegistry(runtime)
    index = MemoryControlIndex()
    index.addCache(cache.id)
    settings = Settings(clusters={"default": (SERVER, OTHER)}).evolve(node={"name": SERVER})

    class W:
        pass

    w = W()
    w.clock, w.repo, w.store, w.runtime, w.cacheId = clock, repo, store, runtime, cache.id
    w.sampler = Sampler(registry, store, SERVER, clock, period=60)
    w.analytics = Analytics(registry, index, store, None, settings, clock)
    w.sampler.startService()
    yield w
    w.sampler.stopService()


def bump(runtime, **counts):
    for name, value in counts.items():
        runtime.counters[name] += value


# -- series ------------------------------------------------------------


def test_processedNamesAreTheContracts():
    """
    Every name of the contract's list, and nothing else.
    """
    contract = (
        "auth_cmds_rate, auth_errors_rate, bytes, bytes_read_rate, bytes_write_rate, "
        "cas_badval_rate, cas_fraction, cas_hit_rate, cas_rate, connection_rate, connections, "
        "decr_fraction, decr_hit_rate,decr_rate, delete_fraction, delete_hit_rate, delete_rate, "
        "eviction_rate, flush_fraction, flush_rate, get_expired_rate, get_fraction, "
        "get_hit_rate, get_rate, hit_rate, incr_fraction, incr_hit_rate, incr_rate, items,"
        "max_bytes, request_rate, set_fraction, set_rate, touch_fraction, touch_hit_rate, "
        "touch_rate"
    )
    assert sorted(n.strip() for n in contract.split(",")) == list(series.PROCESSED_NAMES)
    assert len(series.PROCESSED_NAMES) == 36


def test_processedFigures():
    """
    Rates divide by the seconds sampled, hit rates by the attempts of the
    same command, fractions by all requests; gauges are the last value.
    """
    data = dict(
        cmd_get=120, get_hits=90, get_misses=30, cmd_set=40, cas_hits=6, cas_misses=2,
        cas_badval=2, delete_hits=5, delete_misses=5, incr_hits=3, incr_misses=1,
        decr_hits=1, decr_misses=1, cmd_touch=8, touch_hits=6, touch_misses=2, cmd_flush=2,
        auth_cmds=4, auth_errors=1, bytes_read=6000, bytes_written=12000, evictions=3,
        get_expired=1, total_connections=2, bytes=500, curr_connections=3, curr_items=7,
        limit_maxbytes=1000,
    )
    # requests: 120 get + 40 set + 8 touch + 2 flush + 10 delete + 4 incr + 2 decr
    assert series.requests(data) == 186
    p = lambda name: series.processed(name, data, 60)  # noqa: E731
    assert p("get_rate") == 2.0
    assert p("set_rate") == 40 / 60
    assert p("request_rate") == 186 / 60
    assert p("bytes_read_rate") == 100.0
    assert p("bytes_write_rate") == 200.0
    assert p("cas_rate") == 10 / 60
    assert p("connection_rate") == 2 / 60
    assert p("get_hit_rate") == 0.75
    assert p("cas_hit_rate") == 0.6
    assert p("delete_hit_rate") == 0.5
    assert p("incr_hit_rate") == 0.75
    assert p("touch_hit_rate") == 0.75
    # hits of every keyed command over all their attempts
    assert p("hit_rate") == (90 + 6 + 1 + 5 + 3 + 6) / (120 + 10 + 2 + 10 + 4 + 8)
    assert p("get_fraction") == 120 / 186
    assert p("set_fraction") == 40 / 186
    assert p("flush_fraction") == 2 / 186
    assert p("cas_fraction") == 10 / 186
    assert (p("bytes"), p("connections"), p("items"), p("max_bytes")) == (500, 3, 7, 1000)
    # nothing happened: zero, not a division error
    assert series.processed("hit_rate", {}, 60) == 0.0
    assert series.processed("get_rate", {}, 0) == 0.0


def test_deltaAfterReset():
    """
    A counter that went down was reset: its delta is its new value.
    """
    d = series.delta({"cmd_get": 100, "curr_items": 9}, {"cmd_get": 30, "curr_items": 4})
    assert d["cmd_get"] == 30
    assert d["curr_items"] == 4
    assert series.delta(None, {"cmd_get": 5})["cmd_get"] == 5


@pytest.mark.parametrize(
    "span, expected",
    [
        (60, MINUTE),
        (DAY, MINUTE),
        (DAY + 1, 10 * MINUTE),
        (7 * DAY, 10 * MINUTE),
        (7 * DAY + 1, HOUR),
        (92 * DAY, HOUR),
        (92 * DAY + 1, DAY),
        (700 * DAY, DAY),
    ],
)
def test_granularitySwitchPoints(span, expected):
    now = 1000 * DAY
    assert series.granularity(now - span, now, now) == expected


def test_latencyGranularity():
    now = 1000 * DAY
    assert series.granularity(
        now - DAY, now, now, series.LATENCY_RETENTION, series.LATENCY_PERIOD
    ) == 20
    assert series.granularity(
        now - DAY - 1, now, now, series.LATENCY_RETENTION, series.LATENCY_PERIOD
    ) == 600


def test_granularityFallsBackToAKeptResolution():
    """
    One hour three days ago is no longer kept at 1 minute (2 days): it
    gets 10 minutes; a year ago gets days; beyond retention is a 400
    that says how far back data goes.
    """
    now = 1000 * DAY
    assert series.granularity(now - 3 * DAY, now - 3 * DAY + HOUR, now) == 10 * MINUTE
    assert series.granularity(now - 365 * DAY, now - 365 * DAY + HOUR, now) == DAY
    for start in (now - 800 * DAY, -62135596800):  # and 0001-01-01
        with pytest.raises(QueryError, match="kept for 730 days"):
            series.granularity(start, start + DAY, now)
    assert series.granularity(now - 3 * DAY, now, now, series.LATENCY_RETENTION, 20) == 10 * MINUTE


def test_timeRange():
    now = 1673364000.0  # 2023-01-10T15:20:00Z
    assert series.timeRange({}, now) == (now - DAY, now)
    start, end = series.timeRange(
        {"startTime": "2023-01-08T15:20:00Z", "endTime": "2023-01-10T15:20:00+00:00"}, now
    )
    assert (start, end) == (now - 2 * DAY, now)
    assert series.formatTime(start) == "2023-01-08T15:20:00Z"
    with pytest.raises(QueryError, match="startTime: expected an ISO 8601 time"):
        series.timeRange({"startTime": "yesterday"}, now)
    # Given empty is not left out: it is no time at all.
    for name in ("startTime", "endTime"):
        with pytest.raises(QueryError, match=f"{name}: expected an ISO 8601 time.*''"):
            series.timeRange({name: ""}, now)
    # Before 1970 and before retention are times like any other.
    assert series.timeRange({"startTime": "1969-12-31T23:59:00Z"}, now) == (-60, now)
    with pytest.raises(QueryError, match="endTime is before startTime"):
        series.timeRange({"startTime": "2023-01-10T15:20:00Z", "endTime": "2023-01-09T00:00:00Z"}, now)


def test_parseNames():
    assert series.parseNames("get_rate,hit_rate") == ["get_rate", "hit_rate"]
    with pytest.raises(QueryError, match="names is required"):
        series.parseNames(None)
    with pytest.raises(QueryError, match="unknown stat name.*'nope'"):
        series.parseNames("get_rate,nope")
    # What is accepted is exactly what the OpenAPI document's pattern says.
    for value in ("get_rate, hit_rate", "get_rate,", ",get_rate", "get_rate,,hit_rate"):
        with pytest.raises(QueryError, match="without spaces"):
            series.parseNames(value)
        assert not re.match(series.NAMES_PATTERN, value)
    assert re.match(series.NAMES_PATTERN, "get_rate,hit_rate,get_rate")


# -- sampler, rollups, queries ------------------------------------------


def test_samplerRollupsAndQueries(world):
    """
    Two minutes of a known workload: the 1-minute series has one row per
    minute with exact rates; the 10-minute rollup sums both minutes.
    """
    w = world
    w.clock.advance(1000 * DAY)  # one (empty) sample at t0, a day boundary
    bump(w.runtime, cmd_get=120, get_hits=90, get_misses=30, cmd_set=60)
    w.runtime.counters["curr_items"] = 50
    w.clock.advance(60)
    bump(w.runtime, cmd_get=60, get_hits=60)
    w.runtime.counters["curr_items"] = 70
    w.clock.advance(60)
    t0 = 1000 * DAY
    query = {"names": "get_rate,get_hit_rate,set_fraction,items",
             "startTime": series.formatTime(t0), "endTime": series.formatTime(t0 + 300)}
    body = result(w.analytics.processedStats(w.cacheId, query))
    assert body == [{
        "name": "processed_stats",
        "columns": ["time", "get_rate", "get_hit_rate", "set_fraction", "items"],
        "values": [
            [series.formatTime(t0), 0.0, 0.0, 0.0, 0],
            [series.formatTime(t0 + 60), 2.0, 0.75, 60 / 180, 50],
            [series.formatTime(t0 + 120), 1.0, 1.0, 0.0, 70],
        ],
    }]
    # two days: 10-minute buckets; the three samples (180 s) fall in the one at t0
    query2 = dict(query, startTime=series.formatTime(t0), endTime=series.formatTime(t0 + 2 * DAY))
    body = result(w.analytics.processedStats(w.cacheId, query2))
    assert body[0]["values"] == [[series.formatTime(t0), 180 / 180, 150 / 180, 60 / 240, 70]]
    # a span of exactly 24 h still gets minutes; one second more gets 10 minutes
    day = dict(query, startTime=series.formatTime(t0), endTime=series.formatTime(t0 + DAY))
    assert len(result(w.analytics.processedStats(w.cacheId, day))[0]["values"]) == 3
    more = dict(query, startTime=series.formatTime(t0), endTime=series.formatTime(t0 + DAY + 1))
    assert len(result(w.analytics.processedStats(w.cacheId, more))[0]["values"]) == 1


def test_perServerAndAggregate(world):
    """
    Per server: one series per server of the cluster (empty if it has no
    data); the aggregate sums counters and gauges of the same bucket.
    """
    w = world
    w.clock.advance(DAY)  # an empty sample at DAY
    bump(w.runtime, cmd_get=60)
    w.runtime.counters["curr_items"] = 5
    w.clock.advance(60)
    w.repo.addSamples(OTHER, DAY + 60, {w.cacheId: (60, dict(series.delta(None, {"cmd_get": 120, "curr_items": 7})))})
    query = {"names": "get_rate,items"}
    perServer = result(w.analytics.processedStats(w.cacheId, query, perServer=True))
    assert [(s["tags"]["server"], s["values"]) for s in perServer] == [
        (SERVER, [[series.formatTime(DAY), 0.0, 0], [series.formatTime(DAY + 60), 1.0, 5]]),
        (OTHER, [[series.formatTime(DAY + 60), 2.0, 7]]),
    ]
    total = result(w.analytics.processedStats(w.cacheId, query))
    assert total[0]["values"] == [
        [series.formatTime(DAY), 0.0, 0], [series.formatTime(DAY + 60), 3.0, 12]
    ]
    assert "tags" not in total[0]


def test_retention(world):
    """
    The pruning that runs with the sampler (once an hour) drops 1-minute
    buckets after 2 days and keeps the coarser ones.
    """
    w = world
    w.sampler.pruneEvery = HOUR
    bump(w.runtime, cmd_get=1)
    w.clock.advance(60)
    assert len(w.repo.statBuckets(w.cacheId, MINUTE, 0, 60)) == 1
    w.clock.advance(2 * DAY + HOUR)
    assert w.repo.statBuckets(w.cacheId, MINUTE, 0, 60) == []
    assert len(w.repo.statBuckets(w.cacheId, 10 * MINUTE, 0, 60)) == 1
    assert len(w.repo.statBuckets(w.cacheId, HOUR, 0, 60)) == 1
    # bounded: one 1-minute row per minute of the last ~2 days, no more
    now = w.clock.seconds()
    rows = w.repo.statBuckets(w.cacheId, MINUTE, 0, now)
    assert len(rows) <= 2 * DAY // MINUTE + 2


def test_compoundStats(world):
    w = world
    bump(w.runtime, cmd_get=30, get_hits=20, get_misses=10, cmd_set=6, delete_hits=3, cmd_touch=3)
    w.runtime.counters.update(curr_items=4, bytes=400)
    w.clock.advance(60)
    body = result(w.analytics.compoundStats(w.cacheId, {}))
    assert body == [{
        "name": "compound_stats",
        "columns": list(series.COMPOUND_COLUMNS),
        "values": [[series.formatTime(60), 4, 400, 20 / 60, 10 / 60, 12 / 60]],
    }]


def test_badQueries(world):
    w = world
    w.clock.advance(1000 * DAY)
    with pytest.raises(QueryError, match="names is required"):
        w.analytics.processedStats(w.cacheId, {})
    with pytest.raises(QueryError, match="unknown stat"):
        w.analytics.processedStats(w.cacheId, {"names": "bogus"})
    with pytest.raises(QueryError, match="endTime is before startTime"):
        w.analytics.latency(w.cacheId, {"startTime": "2026-01-02T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"})
    with pytest.raises(QueryError, match="ISO 8601"):
        w.analytics.compoundStats(w.cacheId, {"endTime": "soon"})
    with pytest.raises(QueryError, match="startTime: expected an ISO 8601 time.*''"):
        w.analytics.compoundStats(w.cacheId, {"startTime": ""})


# -- latency -------------------------------------------------------------


class FakeTransport:
    def __init__(self):
        self.written = b""
        self.lost = False

    def write(self, data):
        self.written += data

    def loseConnection(self):
        self.lost = True


def test_latencyProbe(world):
    """
    Every 20 s each server gets a C{version}; the round trip (on the
    clock) is stored in nanoseconds, and the 20-second series reports it.
    """
    w = world
    protocols = []

    def connect(server, protocol):
        protocol.makeConnection(FakeTransport())
        protocols.append((server, protocol))
        return defer.succeed(protocol)

    probe = LatencyProbe(lambda: [SERVER, OTHER], w.store, w.clock, connect=connect)
    probe.startService()
    w.clock.advance(20)
    assert [p.transport.written for _, p in protocols] == [b"version\r\n"] * 2
    w.clock.advance(0.002)
    protocols[0][1].dataReceived(b"VERSION 1.6.21\r\n")
    w.clock.advance(0.001)
    protocols[1][1].dataReceived(b"VERSION 1.6.21\r\n")
    probe.stopService()
    body = result(w.analytics.latency(w.cacheId, {}))
    assert [(s["tags"]["server"], s["columns"]) for s in body] == [
        (SERVER, ["time", "duration"]), (OTHER, ["time", "duration"])
    ]
    assert body[0]["values"][0][0] == series.formatTime(20)
    assert body[0]["values"][0][1] == pytest.approx(2_000_000, rel=1e-6)
    assert body[1]["values"][0][1] == pytest.approx(3_000_000, rel=1e-6)


def test_latencyRoundsDoNotOverlap(world):
    """
    A probe round still waiting on a server delays the next round: a
    server that answers nothing is not connected to once per period.
    """
    w = world
    connects = []

    def connect(server, protocol):
        connects.append(server)
        return defer.Deferred()

    probe = LatencyProbe(lambda: [SERVER], w.store, w.clock, connect=connect, period=20,
                         timeout=30)
    probe.startService()
    assert connects == []
    w.clock.advance(20)
    w.clock.advance(20)
    assert connects == [SERVER]
    w.clock.advance(10)  # the first round times out at 50
    w.clock.advance(10)
    assert connects == [SERVER, SERVER]
    stopped = probe.stopService()
    w.clock.advance(100)
    assert stopped.called
    assert connects == [SERVER, SERVER]


def test_versionProbeBadReply():
    p = _VersionProbe(Clock())
    p.makeConnection(FakeTransport())
    p.dataReceived(b"ERROR\r\n")
    failures = []
    p.done.addErrback(failures.append)
    assert failures and "unexpected reply" in failures[0].getErrorMessage()
