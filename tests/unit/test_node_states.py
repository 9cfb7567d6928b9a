"""
Unit tests of node states (restoring, warming, serving, draining), the
warm paths of the cluster keyspace (a miss asks the key's previous owner,
writes delete it there, a joined node's range kept as its fallback), the
state in the heartbeat row and C{memcachier-admin node drain}'s request,
the drain before a graceful stop, and the state in C{/metrics}.
"""

import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from memcachier.cluster import membership as M
from memcachier.cluster.states import (
    DRAINING,
    RESTORING,
    SERVING,
    WARMING,
    NodeState,
    parseDetails,
)
from memcachier.commands import DeleteResult, StoreMode, StoreResult, itemValue
from memcachier.node.shutdown import NodeService
from memcachier.web.metrics import NodeCounters, exposition
from tests.unit.test_cluster import Pair, _Reactor, _SyncPool, engine  # noqa: F401

WARMUP = 30.0


# -- the state ------------------------------------------------------------------


def test_restoringThenServingThenWarmingForTheWindow():
    clock = Clock()
    state = NodeState(clock, WARMUP, restoring=True)
    seen = []
    state.addListener(lambda: seen.append(state.state))
    assert state.state == RESTORING
    state.warming()
    assert state.state == RESTORING, "a restoring node warms only once restored"
    state.restoreDone(42)
    assert (state.state, state.restored) == (SERVING, 42)
    state.joined()
    assert state.state == WARMING and state.joinEnd == WARMUP
    clock.advance(WARMUP / 2)
    assert state.details() == {"warmup": 0.5, "restored": 42, "taken_over": 0, "handed_off": 0}
    clock.advance(WARMUP / 2)
    assert state.state == SERVING and state.progress() == 1.0
    assert seen == [SERVING, WARMING, SERVING]


def test_warmPathsOffNeverWarmAndDrainAtOnce():
    clock = Clock()
    state = NodeState(clock, 0.0)
    state.joined()
    assert state.state == SERVING and state.joinEnd == 0.0
    drained = state.drain(10.0)
    assert state.state == DRAINING and drained.called


def test_drainLastsTheWindowBoundedByTheLimit():
    clock = Clock()
    state = NodeState(clock, WARMUP)
    state.warming()
    drained = state.drain(5.0)
    assert state.state == DRAINING and not drained.called
    again = state.drain(5.0)
    clock.advance(4.9)
    assert not drained.called
    clock.advance(0.1)
    assert drained.called and again.called
    # the warm-up timer was cancelled: still draining
    clock.advance(WARMUP)
    assert state.state == DRAINING
    assert clock.getDelayedCalls() == []


def test_parseDetails():
    assert parseDetails('{"warmup": 1.0}') == {"warmup": 1.0}
    assert parseDetails("nonsense") == {} and parseDetails("[1]") == {} and parseDetails(None) == {}


# -- warm paths of the cluster keyspace ------------------------------------------


def _joined(warmup=WARMUP):
    """
    Node A joins B's cluster: B holds every key (A's share too).
    """
    state = NodeState(None, warmup)
    pair = Pair(state=state, warmup=warmup)
    state.clock = pair.clock
    b = pair.bKeyspace()
    for key in pair.local[:10]:
        b.store(StoreMode.SET, key, b"from-b:" + key, 3, 0, 0)
    pair.store.joined()
    return pair, state, b


def test_joiningNodeDropsWhatItsWarmRestartPutBack():
    """
    A node that restarts into a cluster whose other nodes are live keeps
    none of its snapshot: they were given newer values while it was away.
    """
    state = NodeState(None, WARMUP)
    pair = Pair(state=state, warmup=WARMUP)
    state.clock = pair.clock
    local = pair.localStore.keyspace(1, 1, 1)
    other = pair.localStore.keyspace(2, 1024 * 1024, 1024)
    local.store(StoreMode.SET, pair.local[0], b"restored", 0, 0, 0)
    other.store(StoreMode.SET, b"x", b"restored", 0, 0, 0)
    other.flush(100)
    pair.store.joined()
    assert local.peek(pair.local[0]) is None and other.peek(b"x") is None
    other.store(StoreMode.SET, b"y", b"later", 0, 0, 0)
    pair.clock.advance(100)
    assert other.peek(b"y") is None, "the delayed flush still falls due"


def test_noWarmUpFromNodesThatHoldNothing(monkeypatch):
    """
    A cluster starting (the other nodes hold nothing): no window, so no
    request travels to a previous owner.
    """
    from tests.unit.test_cluster import _Membership

    state = NodeState(None, WARMUP)
    pair = Pair(state=state, warmup=WARMUP)
    state.clock = pair.clock
    monkeypatch.setattr(_Membership, "records", [])
    pair.store.joined()
    assert state.state == SERVING and pair.pumps == []
    assert pair.keyspace.get(pair.local[0]) is None


def test_joinedNodeFetchesFromThePreviousOwnerAndKeepsACopy():
    pair, state, b = _joined()
    ks = pair.keyspace
    key = pair.local[0]
    assert state.state == WARMING
    item = pair.run(ks.get(key))
    assert itemValue(item) == b"from-b:" + key
    # kept: the next get is local, at once
    assert itemValue(ks.get(key)) == b"from-b:" + key
    assert state.takenOver == 1
    # multi-get: the local misses are fetched too
    found = pair.run(ks.getMany(pair.local[1:4] + [b"nowhere-" + key]))
    assert [itemValue(i) if i else None for i in found] == [
        b"from-b:" + k for k in pair.local[1:4]] + [None]
    assert state.takenOver == 4


def test_writesInTheWindowDeleteThePreviousOwnersCopy():
    """
    A set, an append and a delete of a key the previous owner holds:
    the append and the delete see its value, and afterwards it holds
    none, so no later fallback brings an older value back.
    """
    pair, state, b = _joined()
    ks = pair.keyspace
    setKey, appendKey, deleteKey = pair.local[:3]
    assert ks.store(StoreMode.SET, setKey, b"new", 0, 0, 0)[0] == StoreResult.STORED
    assert pair.run(ks.store(StoreMode.APPEND, appendKey, b"+", 0, 0, 0))[0] == StoreResult.STORED
    assert pair.run(ks.delete(deleteKey, 0)) == DeleteResult.DELETED
    pair.pump()
    assert [b.peek(k) for k in (setKey, appendKey, deleteKey)] == [None, None, None]
    assert itemValue(ks.get(setKey)) == b"new"
    assert itemValue(ks.get(appendKey)) == b"from-b:" + appendKey + b"+"
    assert pair.run(ks.get(deleteKey)) is None


def test_noFallbackAfterTheWindowOrToAnUnreachableNode():
    pair, state, b = _joined()
    ks = pair.keyspace
    pair.membership.live = ("a:1",)
    pair.store.refresh()
    # B is gone (not draining): a miss, no hop
    assert ks.get(pair.local[0]) is None
    pair, state, b = _joined()
    pair.clock.advance(WARMUP)
    assert state.state == SERVING
    assert pair.keyspace.get(pair.local[0]) is None


def test_drainingNodeIsTheFallbackOfItsKeysNewOwner():
    """
    B drains: it leaves A's ring but answers peers; A now owns B's keys
    and fetches them from B on a miss.
    """
    state = NodeState(None, WARMUP)
    pair = Pair(state=state, warmup=WARMUP)
    state.clock = pair.clock
    ks = pair.keyspace
    key = pair.remote[0]
    pair.run(ks.store(StoreMode.SET, key, b"v", 0, 0, 0))
    pair.membership.live = ("a:1",)
    pair.membership.draining = ("b:1",)
    pair.store.refresh()
    assert state.state == WARMING
    assert itemValue(pair.run(ks.get(key))) == b"v"
    assert itemValue(ks.local.peek(key)) == b"v"


def test_joinedNodesRangeKeptAsItsFallbackUntilTheWindowEnds():
    """
    With warm paths on, a node whose range a joining node takes keeps
    it for the window (the joined node asks it), then drops it.
    """
    state = NodeState(None, WARMUP)
    pair = Pair(state=state, warmup=WARMUP, servers=("a:1",))
    state.clock = pair.clock
    ks = pair.keyspace
    for key in pair.remote[:5]:
        ks.store(StoreMode.SET, key, b"old", 0, 0, 0)
    pair.membership.live = ("a:1", "b:1")
    pair.store.refresh()
    assert state.state == SERVING, "a node that lost range is not warming"
    pair.clock.advance(0)
    assert ks.local.stats()["curr_items"] == 5
    pair.clock.advance(WARMUP)
    pair.clock.advance(0)
    assert ks.local.stats()["curr_items"] == 0


def test_drainingNodeHandsItsItemsToTheirNewOwners(monkeypatch):
    """
    A draining node pushes what it holds to the owners on the ring
    without it, as adds: a value the new owner was given meanwhile stays.
    """
    from memcachier.cluster import keyspace as K

    monkeypatch.setattr(K, "HANDOFF_SLICE", 3)
    state = NodeState(None, WARMUP)
    pair = Pair(state=state, warmup=WARMUP)
    state.clock = pair.clock
    ks = pair.keyspace
    for key in pair.local[:10]:
        ks.store(StoreMode.SET, key, b"a:" + key, 5, 0, 0)
    b = pair.bKeyspace()
    b.store(StoreMode.SET, pair.local[0], b"newer", 0, 0, 0)
    done = pair.store.handOff()
    for _ in range(10):
        pair.clock.advance(0)
        pair.pump()
    assert done.called and done.result == 9
    assert state.handedOff == 9
    assert itemValue(b.peek(pair.local[0])) == b"newer"
    assert [itemValue(b.peek(k)) for k in pair.local[1:10]] == [b"a:" + k for k in pair.local[1:10]]


# -- membership -------------------------------------------------------------------


def test_stateInTheRowDrainRequestAndDrainingOutOfTheServers(engine):  # noqa: F811
    wall = [1000.0]
    reactor = _Reactor()
    clusters = {"default": ("a:1", "b:1")}
    asked = []
    stateA = NodeState(Clock(), WARMUP)
    a = M.Membership(
        engine, _SyncPool(), reactor, "a:1", "default", clusters, 2.0,
        wallClock=lambda: wall[0], listen=False, state=stateA,
        drainAsked=lambda: asked.append(True),
    )
    b = M.Membership(
        engine, _SyncPool(), reactor, "b:1", "default", clusters, 2.0,
        wallClock=lambda: wall[0], listen=False,
    )
    a.beat()
    b.beat()
    stateA.joined()  # a state change writes the row at once
    rows = {r.name: r for r in M.listNodes(engine)[0]}
    assert rows["a:1"].state == WARMING and json.loads(rows["a:1"].progress)["warmup"] == 0.0
    assert rows["b:1"].state == SERVING

    assert M.requestDrain(engine, "a:1") and not M.requestDrain(engine, "nobody:1")
    a.beat()
    assert asked == [True]
    # the request sticks until the node acts on it, and only for this run
    assert {r.name: r.state for r in M.listNodes(engine)[0]}["a:1"] == DRAINING
    stateA.drain(5.0)
    b.beat()
    assert b.servers("default") == ("b:1",)
    assert b.reachable("default") == {"a:1", "b:1"}
    b.suspect("a:1")
    assert b.reachable("default") == {"b:1"}


# -- the drain before a graceful stop, and /metrics -----------------------------------


def test_gracefulStopDrainsBeforeTheListenersStop():
    clock = Clock()
    order = []
    drained = Deferred()

    class Listener:
        running = True

        def stopService(self):
            order.append("listener")

    node = NodeService(
        clock, shutdownTimeout=1, listeners=[Listener()],
        beforeStop=lambda: (order.append("drain"), drained)[1],
    )
    node.startService()
    stopped = node.stopService()
    assert order == ["drain"]
    drained.callback(None)
    assert order == ["drain", "listener"]
    assert stopped.called


def test_metricsShowTheStateGauge():
    state = NodeState(Clock(), WARMUP, restoring=True)
    body = exposition([], NodeCounters(state=state).sample()).decode()
    assert 'memcachier_node_state{state="restoring"} 1.0' in body
    assert 'memcachier_node_state{state="serving"} 0.0' in body
    state.restoreDone(7)
    body = exposition([], NodeCounters(state=state).sample()).decode()
    assert 'memcachier_node_state{state="serving"} 1.0' in body
    assert "memcachier_node_items_restored 7.0" in body
    assert "memcachier_node_warmup_progress 1.0" in body
    assert "memcachier_node_items_taken_over 0.0" in body
    assert "memcachier_node_items_handed_off 0.0" in body
    assert "memcachier_node_state" not in exposition([], NodeCounters().sample()).decode()


class _DrainMembership:
    cluster = "default"
    name = "a:1"
    interval = 0.5

    def __init__(self, servers):
        self.live = servers

    def servers(self, cluster):
        return self.live


class _HandOff:
    def __init__(self):
        self.calls = []

    def handOff(self):
        d = Deferred()
        self.calls.append(d)
        return d


def test_drainNodeHandsOffAfterAHeartbeatIntervalBoundedByTheLimit():
    from memcachier.node.build import drainNode

    # alone in its cluster: no drain
    clock = Clock()
    store = _HandOff()
    state = NodeState(clock, WARMUP)
    assert drainNode(state, _DrainMembership(("a:1",)), store, clock, 10.0).called
    assert store.calls == []

    # others serve: the push starts once they have seen it; over when done
    clock = Clock()
    state = NodeState(clock, WARMUP)
    over = drainNode(state, _DrainMembership(("a:1", "b:1")), store, clock, 10.0)
    assert state.state == DRAINING and store.calls == []
    clock.advance(0.5)
    assert len(store.calls) == 1 and not over.called
    store.calls[0].callback(12)
    assert over.called

    # a push that does not finish: over at the limit
    clock = Clock()
    state = NodeState(clock, WARMUP)
    store = _HandOff()
    over = drainNode(state, _DrainMembership(("a:1", "b:1")), store, clock, 3.0)
    clock.advance(0.5)
    clock.advance(2.4)
    assert not over.called
    clock.advance(0.1)
    assert over.called


def test_heartbeatGapLongerThanTheTimeoutIsARejoin(engine):  # noqa: F811
    """
    A node whose heartbeat stopped for longer than the timeout while
    another node beat (so the other counted it out and took its range) is
    told it is in again; regular beats are not a rejoin, and neither is a
    gap in which no other node beat either (the control plane was slow for
    everyone: no node counted another out).
    """
    wall = [1000.0]
    rejoined = []
    nodes = {"default": ("a:1", "b:1")}
    a, b = (
        M.Membership(
            engine, _SyncPool(), _Reactor(), name, "default", nodes, 2.0,
            wallClock=lambda: wall[0], listen=False,
        )
        for name in ("a:1", "b:1")
    )
    a.addRejoinListener(lambda: rejoined.append(wall[0]))
    a.beat()
    b.beat()
    wall[0] += 1.9
    a.beat()
    b.beat()
    assert rejoined == []
    # both stall for 2.5 s, then beat again: nobody saw anybody out
    wall[0] += 2.5
    b.beat()
    a.beat()
    assert rejoined == []
    # a stalls; b beats after a's row went stale (it counts a out)
    wall[0] += 2.1
    b.beat()
    wall[0] += 0.4
    a.beat()
    assert rejoined == [wall[0]]
    assert M.seenOut(a.records, "a:1", wall[0] - 2.5 + 2.0, wall[0])


def test_rejoinDropsWhatTheNodeHeldWhenOthersAreLive():
    state = NodeState(None, WARMUP)
    pair = Pair(state=state, warmup=WARMUP)
    state.clock = pair.clock
    ks = pair.keyspace
    ks.store(StoreMode.SET, pair.local[0], b"held", 0, 0, 0)
    pair.membership.live = ("a:1",)
    pair.store.joined()
    assert itemValue(ks.local.peek(pair.local[0])) == b"held", "alone: nothing to drop"
    pair.membership.live = ("a:1", "b:1")
    pair.store.joined()
    assert ks.local.peek(pair.local[0]) is None
    assert state.state == WARMING
