"""
Unit tests of suspicions: a node that a peer suspects (a peer connection
to it failed) is out of every node's rings, its own included, drops what
it holds and acknowledges; the suspicion ends only once the timeout has
passed and it acknowledged (or it restarted, or is out), and it is then
in again as after a join.  On the clock of the tests, with the membership
rows in SQLite.
"""

from memcachier.cluster import membership as M
from memcachier.cluster.keyspace import Cluster, ClusterStore
from memcachier.cluster.ring import Ring
from memcachier.commands import DeleteResult, StoreMode, StoreResult, itemValue
from memcachier.stores.memory import MemoryStore
from tests.unit.test_cluster import Pair, _Reactor, _SyncPool, engine  # noqa: F401

TIMEOUT = 2.0
NAMES = ("a:1", "b:1", "c:1")


class Nodes:
    """
    Three memberships of cluster C{default} over one database, on one
    wall clock, each counting what its listeners were told.
    """

    def __init__(self, engine):
        self.engine = engine
        self.wall = [1000.0]
        self.reactor = _Reactor()
        self.nodes = {}
        self.suspected = {name: 0 for name in NAMES}
        self.rejoined = {name: 0 for name in NAMES}
        for name in NAMES:
            self.start(name)
        # twice: each sees the others' first rows
        self.beat()
        self.beat()

    def start(self, name):
        node = M.Membership(
            self.engine, _SyncPool(), self.reactor, name, "default", {"default": NAMES}, TIMEOUT,
            wallClock=lambda: self.wall[0], listen=False,
        )
        node.addSuspectedListener(lambda: self.suspected.__setitem__(name, self.suspected[name] + 1))
        node.addRejoinListener(lambda: self.rejoined.__setitem__(name, self.rejoined[name] + 1))
        self.nodes[name] = node
        return node

    def __getitem__(self, name):
        return self.nodes[name]

    def beat(self, *names, seconds=0.0):
        self.wall[0] += seconds
        for name in names or NAMES:
            self.nodes[name].beat()

    def rings(self):
        return {name: node.ring("default").servers for name, node in self.nodes.items()}


def test_aSuspicionHoldsOnEveryNodeTheSuspectedOneIncluded(engine):  # noqa: F811
    """
    The suspecting node writes the suspicion at once; at their next read
    every node leaves the suspected one out of its rings and out of the
    nodes a warm-up may ask, and the suspected node (out of its own ring:
    it forwards its keys where the others send them) drops what it holds
    once, then acknowledges.  The servers (discovery) do not change.
    """
    nodes = Nodes(engine)
    assert set(nodes.rings().values()) == {NAMES}
    nodes["a:1"].suspect("c:1")
    assert nodes["a:1"].ring("default").servers == ("a:1", "b:1")
    assert nodes.suspected["c:1"] == 0
    nodes.beat("b:1", "c:1")
    assert nodes.rings() == {name: ("a:1", "b:1") for name in NAMES}
    assert all(node.servers("default") == NAMES for node in nodes.nodes.values())
    assert nodes["b:1"].reachable("default") == {"a:1", "b:1"}
    assert nodes["c:1"].suspected() and not nodes["b:1"].suspected()
    assert nodes.suspected == {"a:1": 0, "b:1": 0, "c:1": 1}
    # the acknowledgement went out with a beat of its own
    row = {r.name: r for r in M.listNodes(engine)[0]}["c:1"]
    since = M.Suspicions.fromJSON(nodes["a:1"].records[0].suspicions)
    assert M.Suspicions.fromJSON(row.suspicions).dropped == {"a:1": since.suspects["c:1"][1]}
    # dropped once per suspicion, not at every beat
    nodes.beat(seconds=0.5)
    assert nodes.suspected["c:1"] == 1


def test_theSuspicionEndsAfterTheTimeoutOnceAcknowledged(engine):  # noqa: F811
    """
    Before the timeout the suspicion holds though the suspected node
    acknowledged; after it, it ends at the suspecting node's next beat,
    and at the others' next read the suspected node is in every ring
    again and is told to drop what it was sent meanwhile and warm up
    (the rejoin listeners, as after a join).
    """
    nodes = Nodes(engine)
    nodes["a:1"].suspect("c:1")
    nodes.beat("b:1", "c:1", "a:1")
    nodes.beat(seconds=TIMEOUT - 0.5)
    assert nodes["a:1"].ring("default").servers == ("a:1", "b:1")
    assert nodes.rejoined["c:1"] == 0
    nodes.beat("a:1", seconds=0.6)
    assert nodes["a:1"].ring("default").servers == NAMES
    nodes.beat("b:1", "c:1")
    assert set(nodes.rings().values()) == {NAMES}
    assert nodes.rejoined == {"a:1": 0, "b:1": 0, "c:1": 1}
    assert not nodes["c:1"].suspected()
    # its acknowledgement of a suspicion that ended is gone from its row
    nodes.beat()
    row = {r.name: r for r in M.listNodes(engine)[0]}["c:1"]
    assert M.Suspicions.fromJSON(row.suspicions).dropped == {}


def test_noEndWithoutTheAcknowledgement(engine):  # noqa: F811
    """
    A suspected node that has not dropped what it holds for the suspicion
    (its beats go on, but it has not read the suspicion yet) stays out
    of the suspecting node's rings after the timeout; a node from before
    suspicions were acknowledged (its row has none) is trusted as before,
    after the timeout.
    """
    nodes = Nodes(engine)
    a = nodes["a:1"]
    a.suspect("c:1")
    started = {r.name: r.started_at for r in a.records}

    def rowOfC(suspicions):
        M.heartbeat(engine, M.NodeRecord(
            "c:1", "default", started["c:1"], nodes.wall[0], 0, 0, suspicions=suspicions,
        ), TIMEOUT)

    nodes.wall[0] += TIMEOUT + 0.5
    rowOfC(M.Suspicions().toJSON())
    nodes.beat("b:1", "a:1")
    assert a.ring("default").servers == ("a:1", "b:1")
    nodes.wall[0] += TIMEOUT
    rowOfC(M.Suspicions().toJSON())
    nodes.beat("b:1", "a:1")
    assert a.ring("default").servers == ("a:1", "b:1")
    rowOfC("{}")
    nodes.beat("b:1", "a:1")
    assert a.ring("default").servers == NAMES


def test_restartOrTimeoutEndsTheSuspicion(engine):  # noqa: F811
    """
    A restarted node holds nothing from before (a restart into a live
    cluster drops), and one that was out drops on its return: either ends
    the suspicion at once, without an acknowledgement.
    """
    nodes = Nodes(engine)
    nodes["a:1"].suspect("c:1")
    nodes.wall[0] += 0.1
    nodes.start("c:1").beat()
    nodes.beat("a:1", "b:1")
    assert nodes["a:1"].ring("default").servers == NAMES
    assert nodes.suspected["c:1"] == 0

    nodes["a:1"].suspect("b:1")
    nodes.beat("c:1", "a:1", seconds=TIMEOUT + 0.1)
    assert nodes["a:1"].servers("default") == ("a:1", "c:1")
    assert nodes["a:1"]._suspects == {}
    nodes.beat("b:1", "a:1", "c:1", seconds=0.1)
    assert nodes["a:1"].ring("default").servers == NAMES


def test_aSuspicionByANodeThatIsOutNoLongerHolds(engine):  # noqa: F811
    """
    Only live nodes' suspicions count: the suspecting node's heartbeat
    stopped, and the suspected node is in again (told to drop and warm).
    """
    nodes = Nodes(engine)
    nodes["a:1"].suspect("c:1")
    nodes.beat("b:1", "c:1")
    assert nodes["b:1"].ring("default").servers == ("a:1", "b:1")
    nodes.beat("b:1", "c:1", seconds=TIMEOUT + 0.1)
    nodes.beat("b:1", "c:1")
    assert nodes["b:1"].ring("default").servers == ("b:1", "c:1")
    assert nodes["c:1"].ring("default").servers == ("b:1", "c:1")
    assert nodes.rejoined["c:1"] == 1


# -- what the keyspace does with it ----------------------------------------------


def test_suspectedNodeDropsWhatItHolds():
    """
    C{ClusterStore.suspected} empties every cache this node holds.
    """
    pair = Pair()
    ks = pair.keyspace
    for key in pair.local[:5]:
        assert ks.store(StoreMode.SET, key, b"old", 0, 0, 0)[0] == StoreResult.STORED
    pair.store.suspected()
    assert all(ks.local.peek(key) is None for key in pair.local[:5])


class _AllSuspected:
    """
    Two live servers, each suspected: the ring is empty.
    """

    cluster = "default"
    records = ()

    def ring(self, cluster):
        return Ring(())

    def servers(self, cluster):
        return ("a:1", "b:1")

    def reachable(self, cluster):
        return frozenset()

    def suspect(self, name):
        pass


def test_everyNodeSuspectedIsAMissNeverASplitBrain():
    """
    Two nodes that suspect each other are both out of every ring: no node
    may answer a key from what it alone holds, so every request falls
    back as a miss (a store is not stored), never an error.
    """
    pair = Pair()
    store = MemoryStore(pair.clock)
    cluster = Cluster("a:1", _AllSuspected(), pair.b.index, pair.peers)
    ks = ClusterStore(store, cluster).keyspace(1, 1 << 20, 1 << 20)
    key = b"k"
    store.keyspace(1, 1 << 20, 1 << 20).store(StoreMode.SET, key, b"alone", 0, 0, 0)
    assert pair.run(ks.get(key)) is None
    assert pair.run(ks.getMany([key, b"other"])) == [None, None]
    assert pair.run(ks.store(StoreMode.SET, key, b"v", 0, 0, 0)) == (StoreResult.NOT_STORED, 0)
    assert pair.run(ks.delete(key, 0)) == DeleteResult.NOT_FOUND
    assert ks.fallbacks >= 4


def test_aDrainingNodeKeepsWhatItHoldsWhenSuspected(engine):  # noqa: F811
    """
    A node that drains (or stops) is out of the rings already and keeps
    its items for its new owners and its snapshot: a suspicion does not
    drop them, nor does its end.
    """
    from twisted.internet.task import Clock

    from memcachier.cluster.states import NodeState

    nodes = Nodes(engine)
    state = NodeState(Clock(), 30.0)
    c = nodes["c:1"]
    c.state = state
    state.drain(10.0)
    nodes["a:1"].suspect("c:1")
    nodes.beat("c:1", "b:1")
    assert nodes["b:1"].ring("default").servers == ("a:1", "b:1")
    assert nodes.suspected["c:1"] == 0
    nodes.beat("a:1", seconds=TIMEOUT + 0.5)
    nodes.beat("c:1", "b:1")
    assert nodes.rejoined["c:1"] == 0


def test_aDrainingNodesSuspicionsStayItsOwn(engine):  # noqa: F811
    """
    A draining node's hand-off may time out on a loaded peer: its
    suspicions are not written in its row (the peer keeps what it holds
    and its place in every ring), and it does not route around them
    either (its clients' keys go where every other node sends them).
    """
    from twisted.internet.task import Clock

    from memcachier.cluster.states import NodeState

    nodes = Nodes(engine)
    state = NodeState(Clock(), 30.0)
    c = nodes["c:1"]
    c.state = state
    state.drain(10.0)
    nodes.beat("c:1", "a:1", "b:1")
    c.suspect("b:1")
    nodes.beat("a:1", "b:1")
    assert nodes.suspected["b:1"] == 0
    assert nodes["a:1"].ring("default").servers == ("a:1", "b:1")
    assert c.ring("default").servers == ("a:1", "b:1")
    assert M.Suspicions.fromJSON(
        {r.name: r for r in M.listNodes(engine)[0]}["c:1"].suspicions
    ).suspects == {}
