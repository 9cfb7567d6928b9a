"""
The alert service on a L{Clock}, over a real control plane (in-memory
SQLite, synchronous thread pool) and real cache runtimes: fires and
resolves once, stays silent when disabled, retries with backoff,
gives up after a bounded number of attempts, survives a restart
mid-retry, and lets only the lease holder evaluate.
"""

import pytest
from twisted.internet import defer
from zope.interface import implementer

from memcachier.alerts import service as alertservice
from memcachier.alerts.repository import AlertRepository, AsyncAlerts
from memcachier.alerts.service import MAX_ATTEMPTS, AlertService, backoff
from memcachier.interfaces import IAlertDeliverer
from tests.unit.test_api import SynchronousThreadPool, World, result

INTERVAL = 10.0


@implementer(IAlertDeliverer)
class Recorder:
    """
    A deliverer that records messages and fails the first C{failures}
    attempts.
    """

    def __init__(self, failures=0):
        self.failures = failures
        self.attempts = []
        self.delivered = []

    def deliver(self, message):
        self.attempts.append(message)
        if len(self.attempts) <= self.failures:
            return defer.fail(RuntimeError("HTTP 500 from stand-in"))
        self.delivered.append(message)
        return defer.succeed(None)


class AlertWorld(World):
    def __init__(self):
        super().__init__()
        self.repo = AlertRepository(self.cp.engine, self.reactor)
        self.store = AsyncAlerts(self.repo, SynchronousThreadPool(), self.reactor)
        self.recorder = Recorder()
        self.config = self.repo.createConfig(self.cache.id, delivery_type="slack",
                                             slack_url="https://hooks.slack.test/x")
        self.services = []

    def service(self, node="127.0.0.1:11211", wholeStats=None):
        s = AlertService(
            self.store, self.registry, self.index, lambda config: self.recorder, node,
            "http://dash.test/", self.reactor, interval=INTERVAL, window=30.0,
            wholeStats=wholeStats,
        )
        self.services.append(s)
        return s

    def alert(self, trigger="hit_rate", threshold=50, **kw):
        return self.repo.createAlert(
            self.cache.id, trigger_type=trigger, trigger_threshold=threshold,
            delivery_config_id=self.config["id"], **kw,
        )

    def gets(self, hits, misses):
        stats = self.runtime().stats
        stats.get_hits += hits
        stats.get_misses += misses
        stats.cmd_get += hits + misses

    def ticks(self, n, hits=0, misses=0):
        for _ in range(n):
            self.gets(hits, misses)
            self.reactor.advance(INTERVAL)

    def events(self, alertId):
        return self.repo.events(self.cache.id, alertId)


@pytest.fixture
def world():
    w = AlertWorld()
    yield w
    for s in w.services:
        if s.running:
            s.stopService()


def kinds(messages):
    return [m.kind for m in messages]


def test_firesOnceResolvesOnce(world):
    alert = world.alert()
    world.runtime()
    s = world.service()
    s.startService()
    world.ticks(6, hits=10, misses=90)
    assert kinds(world.recorder.delivered) == ["fired"]
    fired = world.recorder.delivered[0]
    assert (fired.cacheName, fired.triggerType, fired.value, fired.threshold) == (
        "main", "hit_rate", 10.0, 50.0)
    assert fired.dashboardUrl == f"http://dash.test/caches/{world.cache.id}/"
    world.ticks(8, hits=95, misses=5)
    assert kinds(world.recorder.delivered) == ["fired", "resolved"]
    events = world.events(alert["id"])
    assert [e["kind"] for e in events] == ["resolved", "fired"]
    assert all(e["deliveries"][0]["status"] == "delivered" for e in events)
    assert world.repo.getAlert(world.cache.id, alert["id"])["firing"] is False


def test_disabledAlertIsSilent(world):
    world.alert(enabled=False)
    world.runtime()
    world.service().startService()
    world.ticks(6, hits=0, misses=100)
    assert world.recorder.attempts == []


def test_alertOfDisabledCacheIsSilent(world):
    world.alert()
    world.runtime()
    world.cp.setEnabled(world.cache.id, False)
    world.refresh()
    world.service().startService()
    world.ticks(6, hits=0, misses=100)
    assert world.recorder.attempts == []


def test_retriesWithBackoffThenDelivers(world):
    """
    A destination failing twice gets the message on the third attempt:
    retries wait C{interval}, then twice that, on the reactor clock.
    """
    world.recorder.failures = 2
    alert = world.alert()
    world.runtime()
    world.service().startService()
    world.ticks(2, hits=0, misses=100)
    assert len(world.recorder.attempts) == 1
    delivery = world.events(alert["id"])[0]["deliveries"][0]
    assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
    assert "HTTP 500" in delivery["last_error"]
    world.reactor.advance(backoff(INTERVAL, 1) - 0.5)
    assert len(world.recorder.attempts) == 1
    world.reactor.advance(0.5)
    assert len(world.recorder.attempts) == 2
    world.reactor.advance(backoff(INTERVAL, 2))
    assert len(world.recorder.attempts) == 3
    assert kinds(world.recorder.delivered) == ["fired"]
    delivery = world.events(alert["id"])[0]["deliveries"][0]
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 3)


def test_retriesAreBounded(world):
    world.recorder.failures = 100
    alert = world.alert()
    world.runtime()
    world.service().startService()
    world.ticks(2, hits=0, misses=100)
    total = sum(backoff(INTERVAL, n) for n in range(1, MAX_ATTEMPTS + 3))
    world.reactor.pump([1.0] * int(total))
    assert len(world.recorder.attempts) == MAX_ATTEMPTS
    delivery = world.events(alert["id"])[0]["deliveries"][0]
    assert (delivery["status"], delivery["attempts"]) == ("failed", MAX_ATTEMPTS)


def test_restartMidRetryDeliversOnce(world):
    """
    The pending delivery lives in the control plane: a new service (a
    restarted process) delivers it, once, and does not fire again.
    """
    world.recorder.failures = 1
    alert = world.alert()
    world.runtime()
    first = world.service()
    first.startService()
    world.ticks(2, hits=0, misses=100)
    assert len(world.recorder.attempts) == 1
    first.stopService()
    world.reactor.advance(100 * INTERVAL)
    assert len(world.recorder.attempts) == 1
    second = world.service()
    second.startService()
    world.ticks(5, hits=0, misses=100)
    assert kinds(world.recorder.delivered) == ["fired"]
    assert len(world.recorder.attempts) == 2
    assert [e["kind"] for e in world.events(alert["id"])] == ["fired"]


def test_onlyTheLeaseHolderEvaluates(world):
    world.alert()
    world.runtime()
    a, b = world.service("node-a:11211"), world.service("node-b:11211")
    a.startService()
    b.startService()
    world.ticks(3, hits=0, misses=100)
    assert (a.leader, b.leader) == (True, False)
    assert kinds(world.recorder.delivered) == ["fired"]
    assert world.repo.leaseHolder()["holder"] == "node-a:11211"
    a.stopService()
    world.ticks(1, hits=0, misses=100)
    assert b.leader
    world.ticks(6, hits=100, misses=0)
    assert kinds(world.recorder.delivered) == ["fired", "resolved"]


def test_expiredLeaseIsTakenOver(world):
    repo = world.repo
    assert repo.acquireLease("a", 100.0, 30.0)
    assert not repo.acquireLease("b", 120.0, 30.0)
    assert repo.acquireLease("a", 120.0, 30.0)
    assert repo.acquireLease("b", 151.0, 30.0)
    assert not repo.acquireLease("a", 152.0, 30.0)


def test_changingTheTriggerStartsAfresh(world):
    alert = world.alert()
    world.runtime()
    world.service().startService()
    world.ticks(2, hits=0, misses=100)
    assert world.repo.getAlert(world.cache.id, alert["id"])["firing"]
    world.repo.updateAlert(world.cache.id, alert["id"], trigger_threshold=5.0)
    assert not world.repo.getAlert(world.cache.id, alert["id"])["firing"]
    world.ticks(4, hits=0, misses=100)
    assert kinds(world.recorder.delivered) == ["fired", "fired"]


def test_backoff():
    assert [backoff(60, n) for n in range(1, 6)] == [60, 120, 240, 480, 960]
    assert backoff(60, 30) == alertservice.MAX_BACKOFF


def test_latencyAlertReadsTheProbes(world):
    """
    A latency alert judges the figure C{latencyOf} gives (the analytics
    probes), in milliseconds.
    """
    asked = []

    def latencyOf(cacheId, now):
        asked.append(cacheId)
        return defer.succeed(8.0)

    world.alert(trigger="latency", threshold=5)
    s = AlertService(
        world.store, world.registry, world.index, lambda config: world.recorder,
        "127.0.0.1:11211", "http://dash.test", world.reactor, interval=INTERVAL,
        window=30.0, latencyOf=latencyOf,
    )
    world.services.append(s)
    s.startService()
    world.ticks(2)
    assert asked and set(asked) == {world.cache.id}
    assert [(m.kind, m.value) for m in world.recorder.delivered] == [("fired", 8.0)]


def test_latencyFromTheAnalyticsStore():
    """
    L{alertservice.latencyFrom}: the highest of the servers' latest mean
    round trips, in milliseconds; L{None} without probes.
    """
    from memcachier.node.settings import Settings

    class Index:
        def cache(self, cacheId):
            return None

    class Store:
        def __init__(self, rows):
            self.rows = rows
            self.asked = None

        def latencyBuckets(self, servers, resolution, start, end):
            self.asked = (tuple(servers), resolution, start, end)
            return defer.succeed(self.rows)

    class Analytics:
        index = Index()

    settings = Settings(clusters={"default": ("a:1", "b:2")}).evolve(alerts={"window": 300.0})
    analytics = Analytics()
    analytics.store = Store([("a:1", 0, 2e6), ("a:1", 20, 1e6), ("b:2", 0, 3e6)])
    latencyOf = alertservice.latencyFrom(analytics, settings)
    assert result(latencyOf(1, 1000.0)) == 3.0
    assert analytics.store.asked == (("a:1", "b:2"), 20, 700.0, 1000.0)
    analytics.store = Store([])
    assert result(latencyOf(1, 1000.0)) is None


class SlowSnapshots:
    """
    The store, but C{evaluationSnapshot} answers only when told to.
    """

    def __init__(self, store):
        self._store = store
        self.waiting = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def evaluationSnapshot(self):
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def release(self):
        for d in self.waiting:
            d.callback(self._store.repository.evaluationSnapshot())
        self.waiting = []


def test_slowRoundsDoNotOverlap(world):
    """
    While a round waits on the database, the next ticks are skipped: two
    rounds at once could both record the same firing.
    """
    world.alert()
    world.runtime()
    slow = SlowSnapshots(world.store)
    s = AlertService(slow, world.registry, world.index, lambda config: world.recorder,
                     "127.0.0.1:11211", "http://dash.test", world.reactor, interval=INTERVAL,
                     window=30.0)
    world.services.append(s)
    s.startService()
    world.ticks(5, hits=0, misses=100)
    assert len(slow.waiting) == 1
    slow.release()
    world.ticks(1, hits=0, misses=100)
    slow.release()
    world.ticks(1, hits=0, misses=100)
    slow.release()
    assert kinds(world.recorder.delivered) == ["fired"]


def test_oldEventsAreDeleted(world):
    """
    An alert keeps its last L{EVENTS_KEPT} events (with their deliveries).
    """
    from memcachier.alerts.repository import EVENTS_KEPT

    alert = world.alert()
    config = world.config
    for i in range(EVENTS_KEPT + 5):
        world.repo.recordTransition(alert["id"], "fired" if i % 2 == 0 else "resolved",
                                    1000.0 + i, 1.0, 50.0, "hit_rate", "{}", config)
    events = world.repo.events(world.cache.id, alert["id"], limit=1000)
    assert len(events) == EVENTS_KEPT
    assert events[-1]["time"] == 1005.0
    assert len(world.repo.pendingDeliveries()) == EVENTS_KEPT


# -- the whole cache


class TwoNodes:
    """
    A C{wholeStats} of a cache on two nodes: this one (the world's
    runtime) and a peer whose counters the test moves, which may be
    silent (left out and named missing, as a peer past the request
    timeout is).
    """

    def __init__(self, world):
        self.world = world
        self.peer = {"get_hits": 0, "get_misses": 0, "cmd_get": 0, "bytes": 0,
                     "curr_connections": 0}
        self.silent = False
        self.asked = []

    def __call__(self, cacheId):
        self.asked.append(cacheId)
        runtime = self.world.registry.existing(cacheId)
        own = [("a", runtime.statsDict())] if runtime is not None else []
        if self.silent:
            return defer.succeed((own, ["b"]))
        return defer.succeed((own + [("b", dict(self.peer))], []))

    def misses(self, n):
        self.peer["get_misses"] += n
        self.peer["cmd_get"] += n


def test_hitRateJudgesTrafficOnAnotherNode(world):
    """
    The lease holder serves no lookups; the peer's misses make the hit
    rate fall and the alert fires, evaluated here.
    """
    nodes = TwoNodes(world)
    world.alert("hit_rate", 50)
    world.runtime()
    world.service(wholeStats=nodes).startService()
    for _ in range(4):
        nodes.misses(50)
        world.ticks(1, hits=5, misses=0)
    assert kinds(world.recorder.delivered) == ["fired"]
    assert world.recorder.delivered[0].value < 50
    assert set(nodes.asked) == {world.cache.id}


def test_hitRateWithoutThePeerIsLocal(world):
    """
    The same traffic, the peer not heard: judged over this node's lookups
    (all hits), nothing fires.
    """
    nodes = TwoNodes(world)
    nodes.silent = True
    world.alert("hit_rate", 50)
    world.runtime()
    world.service(wholeStats=nodes).startService()
    for _ in range(4):
        nodes.misses(50)
        world.ticks(1, hits=5, misses=0)
    assert world.recorder.delivered == []


def test_memoryIsNotJudgedOnPartialData(world):
    """
    Memory over the threshold only counting the peer: not judged while the
    peer is silent (part of the memory would look like all of it), fired
    once both nodes answer.
    """
    nodes = TwoNodes(world)
    world.alert("memory_usage", 50)
    world.runtime()
    nodes.peer["bytes"] = int(world.index.planOf(world.cache.id).memory * 0.8)
    nodes.silent = True
    world.service(wholeStats=nodes).startService()
    world.ticks(4)
    assert world.recorder.attempts == []
    nodes.silent = False
    world.ticks(3)
    assert kinds(world.recorder.delivered) == ["fired"]
    assert world.recorder.delivered[0].value == pytest.approx(80.0, abs=0.1)


def test_aCacheWithoutAlertsIsNotRead(world):
    """
    Only caches with a live alert are read (a peer round trip each).
    """
    nodes = TwoNodes(world)
    world.alert("hit_rate", 50, enabled=False)
    world.alert("latency", 50)
    world.runtime()
    world.service(wholeStats=nodes).startService()
    world.ticks(3)
    assert nodes.asked == []


def test_aFailedReadingJudgesNothing(world):
    """
    A reading that fails (the cache went away between the snapshot and the
    reading) is logged; the round goes on and nothing fires.
    """
    def failing(cacheId):
        return defer.fail(KeyError(cacheId))

    world.alert("memory_usage", 0)
    world.runtime()
    s = world.service(wholeStats=failing)
    s.startService()
    world.ticks(4)
    assert world.recorder.attempts == []
    assert s.leader
