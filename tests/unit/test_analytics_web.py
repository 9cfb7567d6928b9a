"""
The insight and introspection routes through L{treq.testing.StubTreq}: the
real API, a real control plane (in-memory SQLite, synchronous thread
pool), real sessions tapping introspection, and a clock.
"""

import re

import pytest
from treq.testing import StubTreq

from memcachier.analytics import series
from memcachier.analytics.service import makeAnalytics
from memcachier.node.settings import Settings
from memcachier.web.common import CacheAuth
from memcachier.web.insight import InsightAPI
from memcachier.web.introspection import IntrospectionAPI
from memcachier.web.api import CacheAPI
from tests.unit.test_api import SynchronousThreadPool, World, assertError, result


class AnalyticsWorld(World):
    def __init__(self):
        super().__init__(settings=Settings().evolve(node={"name": "127.0.0.1:11211"}))
        self.analytics = makeAnalytics(
            self.registry, self.index, self.cp.engine, SynchronousThreadPool(),
            self.settings, self.reactor, connect=lambda server, protocol: None,
        )
        self.api = CacheAPI(
            self.acp, self.index, self.registry, self.settings, self.reactor,
            [InsightAPI(CacheAuth(self.index), self.analytics),
             IntrospectionAPI(CacheAuth(self.index), self.analytics)],
        )
        self.treq = StubTreq(self.api.resource())
        self.introspection = self.analytics.introspection

    def session(self):
        from memcachier.protocols.session import Session
        from memcachier.protocols.throttle import AuthThrottle

        s = Session(self.registry, self.reactor, AuthThrottle(), "h", lambda: None, 0)
        s.authenticate(self.primary.username.encode(), self.primary.password.encode())
        return s


@pytest.fixture
def world():
    w = AnalyticsWorld()
    for service in w.analytics:
        if type(service).__name__ != "LatencyProbe":
            service.startService()
    yield w
    for service in w.analytics:
        if service.running:
            service.stopService()


def test_processedStats(world):
    s = world.session()
    for _ in range(30):
        s.get(b"a")
    s.store(1, b"a", b"xyz", 0, 0)
    s.get(b"a")
    world.reactor.advance(60)
    r = world.call("GET", "/insight/processed_stats?names=get_rate,get_hit_rate,items")
    assert r.code == 200, r
    body = r.json()
    assert body[0]["columns"] == ["time", "get_rate", "get_hit_rate", "items"]
    assert body[0]["values"][-1][1:] == [31 / 60, 1 / 31, 1]
    r = world.call("GET", "/insight/processed_stats/per_server?names=set_rate")
    assert r.json()[0]["tags"] == {"server": "127.0.0.1:11211"}
    assert r.json()[0]["values"][-1][1] == 1 / 60


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("", "names is required"),
        ("?names=get_rate,bogus", "unknown stat name(s): 'bogus'"),
        ("?names=get_rate,%20hit_rate", "without spaces"),
        ("?names=get_rate,", "unknown stat name(s): ''"),
        ("?names=get_rate&startTime=yesterday", "startTime: expected an ISO 8601"),
        ("?names=get_rate&startTime=", "startTime: expected an ISO 8601 time such as "
         "2023-01-08T15:20:00Z, got ''"),
        ("?names=get_rate&endTime=", "endTime: expected an ISO 8601"),
        ("?names=get_rate&startTime=2023-01-10T00:00:00Z&endTime=2023-01-09T00:00:00Z",
         "endTime is before startTime"),
    ],
)
def test_processedStatsBadQueries(world, query, fragment):
    """
    Bad parameters are a 400 that says what is wrong; an empty time is
    one (the document's C{date-time} format excludes it), not the default.
    """
    assertError(world.call("GET", "/insight/processed_stats" + query), 400, fragment)


@pytest.mark.parametrize(
    "path",
    ["/insight/processed_stats?names=get_rate&", "/insight/processed_stats/per_server?names=get_rate&",
     "/insight/latency?", "/introspection/compound_stats?"],
)
@pytest.mark.parametrize(
    "times",
    ["startTime=2000-01-01T00:00:00Z&endTime=2000-01-01T00:00:00Z",
     "startTime=1969-07-20T20:17:40Z", "startTime=0001-01-01T00:00:00Z",
     "startTime=2000-01-01T00:00:00Z"],
)
def test_timesBeforeRetentionAreRefused(world, path, times):
    """
    A span reaching further back than the data kept, before 1970 even, is
    a 400 that says how far back data goes (the issue: "a span over
    retention → 400 with a clear message").
    """
    world.reactor.advance(1000 * series.DAY)
    world.session().get(b"a")
    world.reactor.advance(60)
    assertError(world.call("GET", path + times), 400, "data is kept for")


def test_latencyAndCompoundBadTimes(world):
    assertError(world.call("GET", "/insight/latency?endTime=nope"), 400, "endTime")
    assertError(world.call("GET", "/introspection/compound_stats?startTime=x"), 400, "startTime")
    r = world.call("GET", "/insight/latency")
    assert r.code == 200
    assert r.json() == [{"name": "latency", "tags": {"server": "127.0.0.1:11211"},
                         "columns": ["time", "duration"], "values": []}]


def test_introspectionRoutes(world):
    s = world.session()
    s.store(1, b"user:1", b"hello", 0, 0)
    for _ in range(3):
        s.get(b"user:1")
    s.get(b"missing")
    world.reactor.advance(0.1)
    logs = world.call("GET", "/introspection/recent_logs").json()
    assert list(logs) == ["127.0.0.1:11211"]
    assert [(l["command"], l["status"]) for l in logs["127.0.0.1:11211"]] == [
        ("SET", "STORED"), ("GET", "HIT"), ("GET", "HIT"), ("GET", "HIT"), ("GET", "MISS")
    ]
    popular = world.call("GET", "/introspection/popular_items").json()
    assert popular["most_hit_keys"] == [{"name": "user:1", "popularity": 3}]
    assert popular["most_missed_keys"] == [{"name": "missing", "popularity": 1}]
    assert popular["popular_prefixes"] == [{"name": "user", "popularity": 4}]
    stats = world.call("GET", "/introspection/key_stats?key=user:1").json()
    assert stats[-1]["hit_count"] == 3 and stats[-1]["in_cache"] and stats[-1]["size"] == 5
    assertError(world.call("GET", "/introspection/key_stats"), 400, "key is required")
    world.reactor.advance(60)
    compound = world.call("GET", "/introspection/compound_stats").json()
    assert compound[0]["columns"] == list(series.COMPOUND_COLUMNS)
    row = compound[0]["values"][-1]
    assert row[1] == 1  # num_keys
    assert row[3:] == [3 / 60, 1 / 60, 1 / 60]  # hits, misses, mutations per second


def test_watchedPrefixes(world):
    r = world.call("POST", "/introspection/prefixes", body={"name": "user:"})
    assert r.code == 200, r
    prefix = r.json()
    assert set(prefix) == {"id", "name"} and prefix["name"] == "user:"
    assertError(world.call("POST", "/introspection/prefixes", body={"name": "user:"}), 409, "already watched")
    assertError(world.call("POST", "/introspection/prefixes", body={"name": "a b"}), 400, "spaces")
    assertError(world.call("POST", "/introspection/prefixes", body={"nom": "x"}), 400, "name")
    assert world.call("GET", "/introspection/prefixes").json() == [prefix]
    pid = prefix["id"]
    s = world.session()
    s.store(1, b"user:1", b"hello", 0, 0)
    s.get(b"user:1")
    s.get(b"user:2")
    s.get(b"other")
    world.reactor.advance(60)
    stats = world.call("GET", f"/introspection/prefixes/{pid}/stats").json()
    assert stats[0]["name"] == "prefix_stats"
    assert stats[0]["values"][-1][1:] == [1, len(b"user:1hello"), 1 / 60, 1 / 60, 1 / 60]
    popular = world.call("GET", f"/introspection/prefixes/{pid}/popular_items").json()
    assert popular["most_hit_keys"] == [{"name": "user:1", "popularity": 1}]
    assertError(world.call("GET", "/introspection/prefixes/999/stats"), 404, "999")
    assertError(world.call("GET", "/introspection/prefixes/x/stats"), 400, "number")
    r = world.call("DELETE", f"/introspection/prefixes/{pid}")
    assert r.code == 204
    assert world.call("GET", "/introspection/prefixes").json() == []
    assertError(world.call("DELETE", f"/introspection/prefixes/{pid}"), 404)


def test_authRequired(world):
    assertError(world.call("GET", "/introspection/recent_logs", auth=None), 401)
    assertError(world.call("GET", "/insight/latency", cacheId=world.other.id), 403)
    assertError(world.call("GET", "/insight/latency", cacheId=99999), 404)


def test_openapiDescribesEveryRoute(world):
    """
    Every insight and introspection route is in the OpenAPI document, and
    the document is valid.
    """
    import schemathesis

    paths = world.api.openapi()["paths"]
    import re

    for path, methods in world.api.routes():
        documented = re.sub(r"<(\w+)>", r"{\1}", path)
        assert documented in paths or documented.endswith("openapi.json"), path
        for method in methods:
            if not documented.endswith("openapi.json"):
                assert method.lower() in paths[documented], (path, method)
    schemathesis.openapi.from_dict(world.api.openapi())


def test_watchingAPrefixTwiceIsAConflict(world):
    """
    Watching a name the cache watches already is a 409 (the request is
    well formed; the cache's state forbids it), documented as such; the
    prefix stays watched once.
    """
    first = world.call("POST", "/introspection/prefixes", body={"name": "processed_stats"})
    assert first.code == 200, first
    assertError(
        world.call("POST", "/introspection/prefixes", body={"name": "processed_stats"}),
        409, "'processed_stats' is already watched",
    )
    assert world.call("GET", "/introspection/prefixes").json() == [first.json()]
    create = world.api.openapi()["paths"]["/api/v2/caches/{cacheId}/introspection/prefixes"]["post"]
    assert "409" in create["responses"]


@pytest.mark.parametrize(
    "name, fragment",
    [("", "non-empty"), ("a b", "spaces"), ("a\tb", "control"), ("é" * 126, "250 bytes")],
)
def test_prefixNamesNoKeyCouldStartWith(world, name, fragment):
    """
    A name no key could start with is a 400; the document's pattern and
    lengths say which (except the byte count of non-ASCII names, which a
    schema cannot count).
    """
    assertError(world.call("POST", "/introspection/prefixes", body={"name": name}), 400, fragment)
    schema = world.api.openapi()["paths"]["/api/v2/caches/{cacheId}/introspection/prefixes"][
        "post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["name"]
    if len(name.encode()) <= 250:
        assert not (len(name) >= schema["minLength"] and re.match(schema["pattern"], name))


def test_keyStatsKeyParameter(world):
    """
    An empty or missing key is a 400 (the document says 1 to 250
    characters), a key over 250 bytes too; any key up to 250 bytes,
    stored or not, is answered.
    """
    assertError(world.call("GET", "/introspection/key_stats?key="), 400, "key is required")
    assertError(world.call("GET", "/introspection/key_stats"), 400, "key is required")
    assertError(world.call("GET", "/introspection/key_stats?key=" + "k" * 251), 400, "250 bytes")
    r = world.call("GET", "/introspection/key_stats?key=" + "k" * 250)
    assert r.code == 200, r
    r = world.call("GET", "/introspection/key_stats?key=%5BFiltered%5D")
    assert r.code == 200, r
    key = world.api.openapi()["paths"]["/api/v2/caches/{cacheId}/introspection/key_stats"][
        "get"]["parameters"][0]
    assert (key["name"], key["schema"]["minLength"], key["schema"]["maxLength"]) == ("key", 1, 250)


def test_prefixIdRange(world):
    """
    A prefix id is a number up to 2**63 - 1, as the document's integer
    schema says: within it an unknown id is a 404, beyond it a 400.
    """
    big = 2**63 - 1
    for method, suffix in (("GET", "/stats"), ("GET", "/popular_items"), ("DELETE", "")):
        assertError(world.call(method, f"/introspection/prefixes/{big}{suffix}"), 404, str(big))
        assertError(world.call(method, f"/introspection/prefixes/{big + 1}{suffix}"), 400, "number")
        assertError(world.call(method, f"/introspection/prefixes/-1{suffix}"), 400, "number")


def test_prefixLinksFollowACreatedPrefix(world):
    """
    The document links a created prefix's id to the operations that take
    it, so stateful fuzzing reaches them with an id that exists.
    """
    paths = world.api.openapi()["paths"]
    links = paths["/api/v2/caches/{cacheId}/introspection/prefixes"]["post"]["responses"]["200"]["links"]
    assert set(links) == {"UnwatchPrefix", "PrefixStats", "PrefixPopularItems"}
    for link in links.values():
        assert link["parameters"]["prefixId"] == "$response.body#/id"
        path, method = link["operationRef"][len("#/paths/"):].rsplit("/", 1)
        assert method in paths[path.replace("~1", "/").replace("~0", "~")]
