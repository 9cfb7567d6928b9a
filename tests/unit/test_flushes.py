"""
Unit tests of flush generations: the control plane's record of each
cache's last flush, the index that loads it, what a node decides is due,
and a cluster store applying what its fan-out missed.
"""

import pytest
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from memcachier.cluster.flushes import FlushGenerations
from memcachier.cluster.keyspace import Cluster, ClusterStore
from memcachier.cluster.ring import Ring
from memcachier.commands import StoreMode, itemValue
from memcachier.control.repository import FlushGeneration, UnknownCache
from memcachier.stores.memory import MemoryStore
from tests.unit.test_cluster import Pair, _Membership
from tests.unit.test_control import START, SynchronousReactor, makeControlPlane, makeIndex


class FakeControlPlane:
    """
    Records C{recordFlush} calls; answers with C{result}.
    """

    def __init__(self, result=None):
        self.calls = []
        self.result = result

    def recordFlush(self, cacheId, flushAt, requestedAt):
        self.calls.append((cacheId, flushAt, requestedAt))
        if isinstance(self.result, Exception):
            return fail(self.result)
        return succeed(self.result)


class FakeIndex:
    def __init__(self):
        self.flushes = {}

    def flushGenerations(self):
        return dict(self.flushes)


# -- the control plane -------------------------------------------------------


@pytest.fixture
def reactor():
    clock = SynchronousReactor()
    clock.advance(START)
    return clock


@pytest.fixture
def cp(reactor):
    return makeControlPlane(clock=reactor)


def test_recordFlushCountsGenerations(cp, reactor):
    """
    Each flush is the cache's next generation; the latest flush time is
    kept, except that a flush replaces a delayed one still to come.
    """
    cache, _ = cp.createCache(name="f")
    before = cp.version()
    assert cp.recordFlush(cache.id, START, START) == FlushGeneration(1, START)
    assert cp.version() == before + 1
    assert cp.recordFlush(cache.id, START + 10, START + 10) == FlushGeneration(2, START + 10)
    # a delayed flush, then one that replaces it before it is due
    assert cp.recordFlush(cache.id, START + 80, START + 20) == FlushGeneration(3, START + 80)
    assert cp.recordFlush(cache.id, START + 30, START + 30) == FlushGeneration(4, START + 30)
    # a flush recorded late (it happened before the last one): the latest stays
    assert cp.recordFlush(cache.id, START + 25, START + 40) == FlushGeneration(5, START + 30)
    assert cp.snapshot().flushes == {cache.id: FlushGeneration(5, START + 30)}
    with pytest.raises(UnknownCache):
        cp.recordFlush(999, START, START)
    cp.deleteCache(cache.id)
    assert cp.snapshot().flushes == {}


def test_indexLoadsFlushGenerations(cp, reactor):
    """
    The index holds each cache's last flush; a flush recorded through this
    process is visible when the write answers, and tells the listeners.
    """
    cache, _ = cp.createCache(name="f")
    acp, index = makeIndex(cp, reactor)
    index.startService()
    changes = []
    index.addListener(lambda: changes.append(index.flushGeneration(cache.id)))
    assert index.flushGeneration(cache.id) is None
    results = []
    acp.recordFlush(cache.id, START + 5, START).addCallback(results.append)
    assert results == [FlushGeneration(1, START + 5)]
    assert changes == [FlushGeneration(1, START + 5)]
    assert index.flushGenerations() == {cache.id: FlushGeneration(1, START + 5)}
    index.stopService()


# -- what a node decides --------------------------------------------------------


def makeGenerations(result=None):
    clock = Clock()
    clock.advance(1000)
    index = FakeIndex()
    controlPlane = FakeControlPlane(result)
    return clock, index, controlPlane, FlushGenerations(controlPlane, index, clock.seconds)


def test_dueFlushes():
    clock, index, controlPlane, generations = makeGenerations()
    # a flush before this node started: it holds nothing older
    index.flushes[1] = FlushGeneration(1, 999.0)
    assert generations.due() == []
    # one it missed
    clock.advance(10)
    index.flushes[1] = FlushGeneration(2, 1005.0)
    assert generations.due() == [(1, 0.0)]
    assert generations.due() == []
    # its own: recorded, and found applied
    clock.advance(10)
    generations.flushed(1, 0)
    assert controlPlane.calls == [(1, 1020.0, 1020.0)]
    index.flushes[1] = FlushGeneration(3, 1020.0)
    assert generations.due() == []
    # one a peer fanned out (clocks a little apart)
    clock.advance(10)
    generations.peerFlushed(1, 0)
    index.flushes[1] = FlushGeneration(4, 1029.9)
    assert generations.due() == []
    # a delayed flush missed: scheduled
    clock.advance(5)
    index.flushes[1] = FlushGeneration(5, 1040.0)
    assert generations.due() == [(1, 5.0)]
    # then a flush now replaces it
    clock.advance(0.5)
    index.flushes[1] = FlushGeneration(6, 1035.5)
    assert generations.due() == [(1, 0.0)]
    # other caches are separate
    index.flushes[2] = FlushGeneration(1, 1035.0)
    assert generations.due() == [(2, 0.0)]


def test_flushNotRecordedIsLogged():
    """
    When the control plane cannot be written, the flush still counts as
    applied here, and the failure is logged, not raised.
    """
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock, index, _, generations = makeGenerations(RuntimeError("database down"))
        generations.flushed(1, 0)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert generations.applied(1) == 1000.0
    assert any("not recorded" in e.get("log_format", "") and e.get("error") == "database down"
               for e in events)


# -- a cluster store applying them ------------------------------------------------


def test_clusterFlushRecordsAndMissedFlushIsApplied():
    """
    A flush through the cluster keyspace is recorded; a flush a peer fans
    out is noted; a recorded flush this node missed empties its local
    items of that cache only.
    """
    pair = Pair()
    clock = pair.clock
    index = FakeIndex()
    controlPlane = FakeControlPlane()
    generations = FlushGenerations(controlPlane, index, clock.seconds)
    cluster = Cluster("a:1", _Membership(["a:1", "b:1"]), pair.b.index, pair.peers, generations)
    store = ClusterStore(MemoryStore(clock), cluster)
    ks = store.keyspace(1, 64 * 1024 * 1024, 1024 * 1024)
    other = store.keyspace(2, 64 * 1024 * 1024, 1024 * 1024)
    ring = Ring(["a:1", "b:1"])
    local = [k for k in (f"k{i}".encode() for i in range(50)) if ring.owner(k) == "a:1"]
    for key in local:
        ks.store(StoreMode.SET, key, b"v", 0, 0, 0)
        other.store(StoreMode.SET, key, b"o", 0, 0, 0)
    clock.advance(1)
    # a peer's fan-out reaches the peer side, which notes it
    ks.peerSide.flush(0)
    assert ks.local.get(local[0]) is None
    assert generations.applied(1) == clock.seconds()
    ks.store(StoreMode.SET, local[0], b"after", 0, 0, 0)
    index.flushes[1] = FlushGeneration(1, clock.seconds())
    store.applyFlushes()
    assert itemValue(ks.get(local[0])) == b"after"
    # a flush this node missed
    clock.advance(1)
    index.flushes[1] = FlushGeneration(2, clock.seconds())
    store.applyFlushes()
    assert ks.get(local[0]) is None
    assert itemValue(other.get(local[1])) == b"o"
    # a flush through this node is recorded
    pair.run(ks.flush(0))
    assert controlPlane.calls == [(1, clock.seconds(), clock.seconds())]
    assert pair.bKeyspace().stats()["curr_items"] == 0
