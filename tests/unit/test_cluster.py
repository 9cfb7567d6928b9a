"""
Unit tests of the cluster: the ketama ring, membership rows and views,
the peer connection against a real binary codec (in memory, no sockets),
the cluster keyspace's routing, fan-out and memory share, and the
configuration.
"""

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.test import iosim
from zope.interface.verify import verifyObject

from memcachier.cluster import keyspace as K
from memcachier.cluster import membership as M
from memcachier.cluster.keyspace import Cluster, ClusterStore
from memcachier.cluster.peer import PeerAuthenticator, PeerPool, request, wireExptime
from memcachier.cluster.ring import Ring, oneAtATime
from memcachier.commands import (
    REALTIME_MAXDELTA,
    itemAtime,
    itemCas,
    itemExptime,
    itemFetched,
    itemFlags,
    itemValue,
    DeleteResult,
    DeltaResult,
    KeyspaceError,
    StoreMode,
    StoreResult,
)
from memcachier.node.settings import ConfigError, parseSettings
from memcachier.interfaces import IKeyspace, IStore
from memcachier.protocols import binary as B
from memcachier.stores.memory import MemoryStore
from tests.unit.helpers import World


# -- ring ---------------------------------------------------------------------

#: owners pylibmc (libmemcached 1.0.18, behaviors={"ketama": True}) chose
#: for these keys over these servers, recorded from real memcached servers
#: (tests/integration/test_cluster_ring.py checks more keys live)
PYLIBMC_SERVERS = ["127.0.0.1:22111", "127.0.0.1:22112", "127.0.0.1:31211"]


def test_oneAtATimeKnownValues():
    """
    Bob Jenkins' one-at-a-time hash, as libhashkit computes it.
    """
    assert oneAtATime(b"") == 0
    assert oneAtATime(b"a") == 0xCA2E9442
    assert oneAtATime(b"The quick brown fox jumps over the lazy dog") == 0x519E91F5
    # bytes above 0x7f are sign-extended like C's char
    assert oneAtATime(b"\xff") != oneAtATime(b"\x7f")


def test_ringOwnersAndShares():
    ring = Ring(PYLIBMC_SERVERS)
    owners = [ring.owner(f"key{i}".encode()) for i in range(3000)]
    assert set(owners) == set(PYLIBMC_SERVERS)
    shares = ring.shares()
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    for server in PYLIBMC_SERVERS:
        # the share of the circle predicts the share of keys
        assert abs(owners.count(server) / 3000 - shares[server]) < 0.05


def test_ringRemovingAServerMovesOnlyItsKeys():
    """
    A dead owner's keys fall to the next node on the ring; the others stay.
    """
    full = Ring(PYLIBMC_SERVERS)
    without = Ring(PYLIBMC_SERVERS[:2])
    for i in range(2000):
        key = f"k{i}".encode()
        if full.owner(key) != PYLIBMC_SERVERS[2]:
            assert without.owner(key) == full.owner(key)
        else:
            assert without.owner(key) in PYLIBMC_SERVERS[:2]


def test_ringEdges():
    assert Ring([]).owner(b"x") is None
    assert Ring([]).shares() == {}
    assert Ring(["h:1"]).owner(b"x") == "h:1"
    assert Ring(["h:1"]).shares() == {"h:1": 1.0}


# -- membership ---------------------------------------------------------------


@pytest.fixture
def engine():
    from memcachier.control.migrations import upgrade
    from memcachier.control.schema import makeEngine

    engine = makeEngine("sqlite://")
    upgrade(engine)
    yield engine
    engine.dispose()


def record(name, cluster="default", started=100.0, at=100.0, connections=0, memory=0):
    return M.NodeRecord(name, cluster, started, at, connections, memory)


def test_heartbeatJoinsBumpsAndLeaves(engine):
    """
    A first heartbeat, one after a restart or after being out bumps the
    cluster's version; a regular one does not; leaving removes the row.
    """
    records, versions = M.heartbeat(engine, record("a:1"), 5.0)
    assert [r.name for r in records] == ["a:1"] and versions == {"default": 1}
    records, versions = M.heartbeat(engine, record("a:1", at=101.0, connections=3), 5.0)
    assert versions == {"default": 1} and records[0].connections == 3
    _, versions = M.heartbeat(engine, record("b:1", at=101.0), 5.0)
    assert versions == {"default": 2}
    _, versions = M.heartbeat(engine, record("a:1", started=200.0, at=200.0), 5.0)
    assert versions == {"default": 3}
    _, versions = M.heartbeat(engine, record("b:1", at=300.0), 5.0)
    assert versions == {"default": 4}
    M.leave(engine, "a:1")
    records, versions = M.listNodes(engine)
    assert [r.name for r in records] == ["b:1"] and versions == {"default": 5}
    assert M.noticed(engine, ["default", "eu"])[1] == {"default": 6, "eu": 1}


def test_liveServersOrder():
    """
    Configured (MEMCACHIER_SERVERS) order first, other registered nodes by
    name; silent, suspected and other clusters' nodes left out.
    """
    records = [
        record("c:1", at=99.0), record("b:1", at=99.0), record("a:1", at=99.0),
        record("z:1", at=99.0), record("old:1", at=90.0), record("eu:1", cluster="eu", at=99.0),
    ]
    assert M.liveServers(records, "default", ("c:1", "a:1", "b:1"), 100.0, 5.0) == (
        "c:1", "a:1", "b:1", "z:1",
    )
    assert M.liveServers(
        records, "default", ("c:1", "a:1", "b:1"), 100.0, 5.0, exclude={"a:1"}
    ) == ("c:1", "b:1", "z:1")


class _SyncPool:
    """
    A thread pool running work at once (unit tests have no threads).
    """

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        from twisted.python.failure import Failure

        try:
            result = f(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class _Reactor(Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


def test_membershipViewTimeoutSuspicionAndReturn(engine):
    """
    Nodes are in while they beat, out after the timeout, in again when
    they beat; a suspected node leaves the rings (not the server list)
    until its timeout passed or it restarted.
    """
    wall = [1000.0]
    reactor = _Reactor()
    clusters = {"default": ("a:1", "b:1", "c:1")}
    nodes = {
        name: M.Membership(
            engine, _SyncPool(), reactor, name, "default", clusters, 2.0,
            wallClock=lambda: wall[0], listen=False,
        )
        for name in ("a:1", "b:1", "c:1")
    }
    changes = []
    a = nodes["a:1"]
    a.addListener(lambda: changes.append(a.servers("default")))
    nodes["b:1"].usage = lambda: (3, 100, {7: 2, 8: 1})
    nodes["c:1"].usage = lambda: (1, 100, {7: 1})
    a.usage = lambda: (5, 100, {7: 5})
    for node in nodes.values():
        node.beat()
    a.beat()
    # connection limits count the other live nodes
    assert (a.connectionsElsewhere(7), a.connectionsElsewhere(8), a.connectionsElsewhere(9)) == (3, 1, 0)
    assert a.servers("default") == ("a:1", "b:1", "c:1")
    assert a.ring("default").servers == ("a:1", "b:1", "c:1")
    version = a.version("default")

    a.suspect("c:1")
    assert a.servers("default") == ("a:1", "b:1", "c:1")
    assert a.ring("default").servers == ("a:1", "b:1")

    wall[0] += 3.0
    nodes["b:1"].beat()
    a.beat()
    assert a.servers("default") == ("a:1", "b:1")
    assert a.version("default") > version
    assert a.connectionsElsewhere(7) == 2
    assert changes[-1] == ("a:1", "b:1")

    # c restarts: back in, and no longer suspected
    nodes["c:1"] = M.Membership(
        engine, _SyncPool(), reactor, "c:1", "default", clusters, 2.0,
        wallClock=lambda: wall[0], listen=False,
    )
    nodes["c:1"].beat()
    a.beat()
    assert a.servers("default") == ("a:1", "b:1", "c:1")
    assert a.ring("default").servers == ("a:1", "b:1", "c:1")


def test_membershipBeatsOnItsClockAndLeavesAtStop(engine):
    """
    A started membership beats at once and every interval of its reactor;
    stopping it stops the beats and deletes its row, so the others see it
    leave.
    """
    wall = [1000.0]
    reactor = _Reactor()
    clusters = {"default": ("a:1", "b:1")}

    def member(name):
        return M.Membership(
            engine, _SyncPool(), reactor, name, "default", clusters, 2.0,
            wallClock=lambda: wall[0], listen=False,
        )

    a, b = member("a:1"), member("b:1")
    a.startService()
    assert [r.name for r in a.records] == ["a:1"]
    b.beat()
    wall[0] += a.interval
    reactor.advance(a.interval)
    assert a.servers("default") == ("a:1", "b:1")
    a.stopService()
    assert reactor.getDelayedCalls() == []
    b.beat()
    assert [r.name for r in b.records] == ["b:1"]


# -- peer connections and the cluster keyspace ----------------------------------


class _Membership:
    """
    A fixed view of cluster C{default}.
    """

    def __init__(self, servers):
        self.cluster = "default"
        self.live = tuple(servers)
        self.suspected = []
        #: nodes out of the ring that still answer peers
        self.draining = ()

    def ring(self, cluster):
        return Ring(self.live)

    def servers(self, cluster):
        return self.live

    def suspect(self, name):
        self.suspected.append(name)

    def reachable(self, cluster):
        return frozenset(self.live) | frozenset(self.draining)

    @property
    def records(self):
        """
        Heartbeat rows of the reachable nodes, each holding something.
        """
        return [
            M.NodeRecord(name, "default", 100.0, 100.0, 0, 1)
            for name in sorted(self.reachable("default"))
        ]


class Pair:
    """
    Node A (a cluster keyspace over its memory store) forwarding to node B
    (a L{World} whose registry lets peers in), connected in memory.
    """

    def __init__(self, secret="s3cret", timeout=2.0, state=None, warmup=0.0, servers=("a:1", "b:1")):
        self.b = World()
        self.b.registry.peerAuthenticator = PeerAuthenticator("s3cret")
        self.clock = self.b.clock
        self.pumps = []
        self.refuse = False
        self.membership = _Membership(servers)
        self.peers = PeerPool(secret, self.clock, timeout, self.membership.suspect, self.connect)
        self.cluster = Cluster(
            "a:1", self.membership, self.b.index, self.peers, state=state, warmup=warmup
        )
        self.localStore = MemoryStore(self.clock)
        self.store = ClusterStore(self.localStore, self.cluster)
        self.keyspace = self.store.keyspace(1, 64 * 1024 * 1024, 1024 * 1024)
        ring = Ring(["a:1", "b:1"])
        self.remote = [f"k{i}".encode() for i in range(200) if ring.owner(f"k{i}".encode()) == "b:1"]
        self.local = [f"k{i}".encode() for i in range(200) if ring.owner(f"k{i}".encode()) == "a:1"]

    def connect(self, node, protocol):
        if self.refuse:
            from twisted.internet.error import ConnectionRefusedError

            from twisted.internet.defer import fail

            return fail(ConnectionRefusedError())
        server = self.b.factory.buildProtocol(None)
        serverTransport = iosim.FakeTransport(server, isServer=True)
        clientTransport = iosim.FakeTransport(protocol, isServer=False)
        self.pumps.append(iosim.connect(server, serverTransport, protocol, clientTransport, greet=False))
        return succeed(protocol)

    def run(self, result):
        """
        Move bytes until C{result} (a Deferred or a value) is known.
        """
        if not isinstance(result, Deferred):
            return result
        out = []
        result.addBoth(out.append)
        for _ in range(20):
            for pump in self.pumps:
                pump.flush()
            if out:
                break
        assert out, "no answer"
        if hasattr(out[0], "raiseException"):
            out[0].raiseException()
        return out[0]

    def pump(self):
        """
        Move every byte both ways (a few rounds: request, answer).
        """
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()

    def bKeyspace(self):
        return self.b.registry.runtime(1).keyspace


def test_interfaces():
    pair = Pair()
    assert verifyObject(IKeyspace, pair.keyspace)
    assert verifyObject(IStore, pair.store)


def test_forwardedCallsReachTheOwner():
    """
    Every keyed call on a key B owns goes to B's keyspace over the peer
    connection and answers as a local call would; keys A owns never leave.
    """
    pair = Pair()
    ks = pair.keyspace
    key = pair.remote[0]
    assert isinstance(ks.get(key), Deferred)
    assert pair.run(ks.get(key)) is None
    assert pair.run(ks.store(StoreMode.SET, key, b"v1", 7, 0, 0))[0] == StoreResult.STORED
    assert itemValue(pair.bKeyspace().peek(key)) == b"v1"
    item = pair.run(ks.get(key))
    assert (itemValue(item), itemFlags(item)) == (b"v1", 7)
    assert pair.run(ks.store(StoreMode.ADD, key, b"x", 0, 0, 0)) == (StoreResult.NOT_STORED, 0)
    assert pair.run(ks.store(StoreMode.REPLACE, pair.remote[1], b"x", 0, 0, 0)) == (
        StoreResult.NOT_STORED, 0)
    assert pair.run(ks.store(StoreMode.APPEND, key, b"+", 0, 0, 0))[0] == StoreResult.STORED
    assert pair.run(ks.store(StoreMode.PREPEND, key, b"-", 0, 0, 0))[0] == StoreResult.STORED
    assert itemValue(pair.run(ks.peek(key))) == b"-v1+"
    cas = itemCas(pair.run(ks.get(key)))
    assert pair.run(ks.store(StoreMode.CAS, key, b"c", 0, 0, cas + 1)) == (StoreResult.EXISTS, 0)
    assert pair.run(ks.store(StoreMode.CAS, pair.remote[2], b"c", 0, 0, 5)) == (
        StoreResult.NOT_FOUND, 0)
    assert pair.run(ks.store(StoreMode.CAS, key, b"c", 0, 0, cas))[0] == StoreResult.STORED
    # counters
    assert pair.run(ks.store(StoreMode.SET, key, b"10", 0, 0, 0))[0] == StoreResult.STORED
    assert pair.run(ks.delta(key, True, 5, None, 0, 0))[:2] == (DeltaResult.OK, 15)
    assert pair.run(ks.delta(key, False, 20, None, 0, 0))[:2] == (DeltaResult.OK, 0)
    assert pair.run(ks.delta(pair.remote[3], True, 1, None, 0, 0))[0] == DeltaResult.NOT_FOUND
    assert pair.run(ks.delta(pair.remote[3], True, 1, 42, 0, 0))[:2] == (DeltaResult.OK, 42)
    assert pair.run(ks.store(StoreMode.SET, key, b"abc", 0, 0, 0))[0] == StoreResult.STORED
    assert pair.run(ks.delta(key, True, 1, None, 0, 0))[0] == DeltaResult.NON_NUMERIC
    # touch and expiry: absolute times survive the trip
    now = pair.clock.seconds()
    assert itemValue(pair.run(ks.touch(key, now + 100))) == b"abc"
    assert itemExptime(pair.bKeyspace().peek(key)) == int(now + 100)
    assert pair.run(ks.touch(pair.remote[4], now + 100)) is None
    # delete
    assert pair.run(ks.delete(key, 0)) == DeleteResult.DELETED
    assert pair.run(ks.delete(key, 0)) == DeleteResult.NOT_FOUND
    # a local key answers at once and B never sees it
    local = pair.local[0]
    assert ks.store(StoreMode.SET, local, b"here", 0, 0, 0)[0] == StoreResult.STORED
    assert itemValue(ks.get(local)) == b"here"
    assert pair.bKeyspace().peek(local) is None
    # keys() lists what this node owns, so introspection's peeks stay local
    pair.localStore.keyspace(1, 1, 1).store(StoreMode.SET, key, b"stale", 0, 0, 0)
    assert set(ks.keys()) == {local}


def test_getManySpansOwners():
    pair = Pair()
    ks = pair.keyspace
    keys = pair.local[:3] + pair.remote[:3]
    for key in keys:
        pair.run(ks.store(StoreMode.SET, key, key, 0, 0, 0))
    found = pair.run(ks.getMany(keys + [b"missing-" + pair.remote[5]]))
    assert [itemValue(i) if i else None for i in found] == keys + [None]
    assert ks.getMany(pair.local[:2]).__class__ is list


def test_flushAndResetStatsReachEveryNode():
    pair = Pair()
    ks = pair.keyspace
    for key in pair.local[:3] + pair.remote[:3]:
        pair.run(ks.store(StoreMode.SET, key, b"v", 0, 0, 0))
    assert pair.run(ks.flush(0)) is None
    assert pair.bKeyspace().stats()["curr_items"] == 0
    assert ks.stats()["curr_items"] == 0
    pair.run(ks.get(pair.remote[0]))
    runtime = pair.b.registry.runtime(1)
    runtime.stats.cmd_get = 5
    ks.resetStats()
    for pump in pair.pumps:
        pump.flush()
    assert runtime.stats.cmd_get == 0
    stats = pair.run(ks.peerStats())
    assert [node for node, _ in stats] == ["b:1"]
    assert stats[0][1]["curr_items"] == 0 and "cmd_get" in stats[0][1]


def test_peerRecentLogs():
    """
    A peer's recent commands of the cache come over the peer connection;
    the group does not exist for a client.
    """
    from memcachier.analytics.introspection import IntrospectionService

    pair = Pair()
    service = IntrospectionService(pair.clock)
    pair.b.registry.introspection = service
    service.introspector(pair.b.registry.runtime(1)).events.append((1, b"k1", 1, 3))
    logs = pair.run(pair.keyspace.peerRecentLogs())
    assert list(logs) == ["b:1"]
    assert [(e["key"], e["command"], e["size"]) for e in logs["b:1"]] == [("k1", "SET", 3)]
    proto, transport = pair.b.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\nstats cluster_recent_logs\r\n")
    assert transport.value() == b"STORED\r\nERROR\r\n"


def test_memoryDividedByRingShare():
    pair = Pair()
    share = Ring(["a:1", "b:1"]).shares()["a:1"]
    assert pair.keyspace.local.stats()["limit_maxbytes"] == int(64 * 1024 * 1024 * share)
    pair.membership.live = ("a:1",)
    pair.store.refresh()
    assert pair.keyspace.local.stats()["limit_maxbytes"] == 64 * 1024 * 1024


def test_wrongSecretFallsBackAsAMiss():
    """
    A peer that refuses the cluster secret (tried twice: the request is
    retried once on a fresh connection) is never an error: a get misses,
    a store is not stored, a delete or an incr finds nothing.
    """
    pair = Pair(secret="wrong")
    ks = pair.keyspace
    key = pair.remote[0]
    assert pair.run(ks.get(key)) is None
    assert pair.run(ks.getMany([key, pair.local[0]])) == [None, None]
    assert pair.run(ks.peek(key)) is None
    assert pair.run(ks.touch(key, 0)) is None
    assert pair.run(ks.store(StoreMode.SET, key, b"v", 0, 0, 0)) == (StoreResult.NOT_STORED, 0)
    assert pair.run(ks.store(StoreMode.APPEND, key, b"v", 0, 0, 0)) == (StoreResult.NOT_STORED, 0)
    assert pair.run(ks.delete(key, 0)) == DeleteResult.NOT_FOUND
    assert pair.run(ks.delta(key, True, 1, None, 0, 0)) == (DeltaResult.NOT_FOUND, 0, 0)
    assert ks.fallbacks == 8
    assert pair.bKeyspace().peek(key) is None


def test_unreachablePeerIsSuspectedAndTheRetryFindsTheNewOwner():
    """
    A peer that cannot be reached is suspected before its requests fail,
    so the retry goes to the key's owner on the ring without it: here
    this node, which answers from its own store.
    """
    pair = Pair()
    key = pair.remote[0]
    pair.keyspace.local.store(StoreMode.SET, key, b"here", 0, 0, 0)

    def suspect(name):
        pair.membership.suspected.append(name)
        pair.membership.live = ("a:1",)
        pair.store.refresh()

    pair.peers.onDown = suspect
    pair.refuse = True
    assert itemValue(pair.run(pair.keyspace.get(key))) == b"here"
    assert pair.membership.suspected == ["b:1"]
    assert pair.keyspace.fallbacks == 1


def test_unreachablePeerRetriedOnceThenAMiss():
    """
    When the ring does not change, the retry goes to the same node on a
    fresh connection; when that fails too the get is a miss.
    """
    pair = Pair()
    pair.refuse = True
    assert pair.run(pair.keyspace.get(pair.remote[0])) is None
    assert pair.membership.suspected == ["b:1", "b:1"]


def test_stalledPeerTimesOutAndQueueIsBounded():
    """
    A request on a peer that does not answer times out (the connection is
    dropped and the peer suspected) and is sent again on a fresh
    connection, which answers; beyond the bound new requests fail at once.
    """
    pair = Pair(timeout=1.0)
    ks = pair.keyspace
    key = pair.remote[0]
    assert pair.run(ks.store(StoreMode.SET, key, b"v", 0, 0, 0))[0] == StoreResult.STORED
    stalled = pair.pumps[-1]
    d = ks.get(key)
    answers = []
    d.addBoth(answers.append)
    pair.clock.advance(1.0)
    assert pair.membership.suspected == ["b:1"]
    assert answers == []
    pair.pumps.remove(stalled)
    pair.pump()
    assert itemValue(answers[0]) == b"v"
    connection = pair.peers.connection("b:1", 1)
    connection.maxPending = 2
    pending = [ks.get(pair.remote[1]), ks.get(pair.remote[2])]
    for p in pending:
        p.addErrback(lambda f: None)
    with pytest.raises(KeyspaceError, match="queue full"):
        ks.get(pair.remote[3])


def test_nonIdempotentRequestSentIsNotRetried():
    """
    An incr or an append that reached the peer before the connection was
    lost may have been carried out: it is not sent again (a miss), where
    a set is.
    """
    pair = Pair(timeout=1.0)
    ks = pair.keyspace
    key = pair.remote[0]
    assert pair.run(ks.store(StoreMode.SET, key, b"1", 0, 0, 0))[0] == StoreResult.STORED
    pair.pump()
    answers = []
    ks.delta(key, True, 1, None, 0, 0).addBoth(answers.append)
    ks.store(StoreMode.SET, pair.remote[1], b"s", 0, 0, 0).addBoth(answers.append)
    # both were written on the open connection, which drops before B answers
    pair.peers.connection("b:1", 1).close()
    assert answers[0] == (DeltaResult.NOT_FOUND, 0, 0)
    pair.pump()
    assert answers[1][0] == StoreResult.STORED
    assert itemValue(pair.bKeyspace().peek(key)) in (b"1", b"2")


def test_peerSessionsUseTheLocalKeyspaceAndOwnCounters():
    """
    A peer connection lands on the cache's local keyspace with counters of
    its own; a wrong secret or an unknown cache is refused.
    """
    world = World()
    world.registry.peerAuthenticator = PeerAuthenticator("s3cret")
    credential, runtime = world.registry.authenticate(b"@peer:1", b"s3cret")
    assert credential.write and credential.flush and runtime.peer
    assert runtime.keyspace is world.registry.runtime(1).keyspace
    assert runtime.stats is not world.registry.runtime(1).stats
    assert world.registry.authenticate(b"@peer:1", b"nope") is None
    assert world.registry.authenticate(b"@peer:99", b"s3cret") is None
    assert world.registry.authenticate(b"@peer:x", b"s3cret") is None
    plain = World()
    assert plain.registry.authenticate(b"@peer:1", b"s3cret") is None


def test_forwardedItemsKeepTheirState():
    """
    A forwarded get, peek or touch brings the owner's item back whole: its
    expiry (as time to live, so the nodes' clocks need not agree), its
    last access and whether it was fetched; a peek does not bump it.
    """
    pair = Pair()
    ks = pair.keyspace
    key = pair.remote[0]
    now = pair.clock.seconds()
    pair.run(ks.store(StoreMode.SET, key, b"v", 3, now + 100, 0))
    pair.clock.advance(10)
    peeked = pair.run(ks.peek(key))
    assert itemExptime(peeked) == int(now + 100)
    assert not itemFetched(peeked)
    assert pair.clock.seconds() - itemAtime(peeked) == 10
    assert not itemFetched(pair.bKeyspace().peek(key))
    got = pair.run(ks.get(key))
    assert (itemValue(got), itemFlags(got), itemExptime(got)) == (b"v", 3, int(now + 100))
    assert itemFetched(pair.run(ks.peek(key)))
    touched = pair.run(ks.touch(key, pair.clock.seconds() + 500))
    assert itemExptime(touched) == int(pair.clock.seconds() + 500)
    assert itemExptime(pair.bKeyspace().peek(key)) == int(pair.clock.seconds() + 500)
    # without expiry it reports none
    pair.run(ks.store(StoreMode.SET, key, b"v", 0, 0, 0))
    assert itemExptime(pair.run(ks.get(key))) == 0


def test_metaThroughAForwardingNode():
    """
    C{mg <key> t}, C{me <key>} and C{mg <key> T<ttl> t} on the node that
    forwards report the owner's expiry, not -1.
    """
    pair = Pair()
    a = World(store=lambda clock: pair.store)
    proto, transport = a.connect()
    key = pair.remote[0].decode()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    proto.dataReceived(f"ms {key} 1 T100\r\nx\r\n".encode())
    pair.pump()
    transport.clear()
    proto.dataReceived(f"mg {key} t v\r\n".encode())
    pair.pump()
    assert transport.value() == b"VA 1 t100\r\nx\r\n"
    transport.clear()
    proto.dataReceived(f"me {key}\r\n".encode())
    pair.pump()
    assert transport.value().startswith(f"ME {key} exp=100 la=0 cas=".encode()), transport.value()
    transport.clear()
    proto.dataReceived(f"mg {key} T300 t\r\n".encode())
    pair.pump()
    assert transport.value() == b"HD t300\r\n"


def test_peerOpcodesAreForPeersOnly():
    """
    A client's connection does not have the peer opcodes: 0x81, and the
    connection goes on.
    """
    world = World()
    proto, transport = world.connect()
    proto.dataReceived(request(B.SASL_AUTH, b"PLAIN", value=b"\0rw\0secret"))
    transport.clear()
    proto.dataReceived(request(B.PEER_GET, b"k") + request(B.NOOP))
    out = transport.value()
    assert B.FRAME_HEADER.unpack_from(out)[5] == B.UNKNOWN_COMMAND
    assert B.FRAME_HEADER.unpack_from(out, 24 + B.FRAME_HEADER.unpack_from(out)[6])[1] == B.NOOP


def test_peerIntrospectionSketches():
    """
    A peer's heavy hitters and per-key counts come over the peer
    connection (nothing from a peer without traffic of the cache); the
    groups do not exist for a client.
    """
    from memcachier.analytics.introspection import GET, IntrospectionService

    pair = Pair()
    service = IntrospectionService(pair.clock)
    pair.b.registry.introspection = service
    assert pair.run(pair.keyspace.peerPopular()) == [("b:1", None)]
    assert pair.run(pair.keyspace.peerKeyCounts()) == [("b:1", [])]
    intro = service.introspector(pair.b.registry.runtime(1))
    intro.setPrefixes([(7, "hot:")])
    for _ in range(3):
        intro.events.append((GET, b"hot:1", 1))
    [(node, (start, sketches))] = pair.run(pair.keyspace.peerPopular())
    assert node == "b:1" and start <= pair.clock.seconds()
    assert sketches["hits"].get_estimate("hot:1") == 3
    [(_, (_, watched))] = pair.run(pair.keyspace.peerPopular(7))
    assert watched["hits"].get_estimate("hot:1") == 3
    [(_, counts)] = pair.run(pair.keyspace.peerKeyCounts())
    assert [c.get_estimate("hhot:1") for _, c in counts] == [3]
    proto, transport = pair.b.connect()
    proto.dataReceived(
        b"set rw 0 0 6\r\nsecret\r\nstats cluster_popular\r\nstats cluster_popular 7\r\n"
    )
    assert transport.value() == b"STORED\r\nERROR\r\nERROR\r\n"


def test_silentPeerIsLeftOutOfGatheredAnswers():
    """
    A peer that does not answer within the request timeout is left out of
    stats, recent logs, popular items and key counts: the answer still
    comes, with what the others said.
    """
    pair = Pair(timeout=1.0)
    ks = pair.keyspace
    asked = [ks.peerStats(), ks.peerRecentLogs(), ks.peerPopular(), ks.peerKeyCounts()]
    answers = []
    for d in asked:
        d.addBoth(answers.append)
    # nothing is pumped: B never answers
    pair.clock.advance(1.0)
    assert answers == [[], {}, [], []]
    assert pair.membership.suspected == ["b:1"]


def test_movedCacheIsEmptiedOnEveryNode():
    """
    A node that sees a cache move to another cluster empties what it
    holds of it (its own share only: the other nodes do the same).
    """
    pair = Pair()
    remote = pair.remote[0]
    pair.run(pair.keyspace.store(StoreMode.SET, remote, b"b", 0, 0, 0))
    runtime = pair.b.registry.runtime(1)
    other = pair.b.registry.runtime(2)
    other.keyspace.store(StoreMode.SET, b"x", b"y", 0, 0, 0)
    pair.b.index.moveCache(1, "elsewhere")
    assert runtime.keyspace.peek(remote) is None
    assert runtime.cluster == "elsewhere"
    assert itemValue(other.keyspace.peek(b"x")) == b"y"
    # a plan change alone keeps the data
    runtime.keyspace.store(StoreMode.SET, remote, b"c", 0, 0, 0)
    pair.b.index.changed()
    assert itemValue(runtime.keyspace.peek(remote)) == b"c"


def test_lostRangeIsDroppedSoItNeverComesBackStale():
    """
    When a node joins, what this node held of the range it lost is
    dropped; when the joined node leaves again, that range is a miss here,
    never the value from before the join.
    """
    pair = Pair()
    ks = pair.keyspace
    pair.membership.live = ("a:1",)
    pair.store.refresh()
    for key in pair.remote[:10] + pair.local[:10]:
        assert ks.store(StoreMode.SET, key, b"old", 0, 0, 0)[0] == StoreResult.STORED
    pair.membership.live = ("a:1", "b:1")
    pair.store.refresh()
    assert pair.run(ks.store(StoreMode.SET, pair.remote[0], b"new", 0, 0, 0))[0] == StoreResult.STORED
    pair.clock.advance(0)
    pair.membership.live = ("a:1",)
    pair.store.refresh()
    assert [ks.get(key) for key in pair.remote[:10]] == [None] * 10
    assert [itemValue(ks.get(key)) for key in pair.local[:10]] == [b"old"] * 10


def test_lostRangeDroppedInSlicesEvenIfItComesBackMeanwhile(monkeypatch):
    """
    The drop takes a slice of keys per reactor turn, later; a range that
    comes back before the drop is over is still dropped (checked against
    the ring under which it was lost).
    """
    monkeypatch.setattr(K, "DROP_SLICE", 3)
    pair = Pair()
    ks = pair.keyspace
    pair.membership.live = ("a:1",)
    pair.store.refresh()
    remote = pair.remote[:10]
    for key in remote + pair.local[:10]:
        ks.store(StoreMode.SET, key, b"old", 0, 0, 0)
    pair.membership.live = ("a:1", "b:1")
    pair.store.refresh()
    # back before the drop ran
    pair.membership.live = ("a:1",)
    pair.store.refresh()
    assert ks.local.stats()["curr_items"] == 20
    assert len(pair.clock.getDelayedCalls()) == 1
    pair.clock.advance(0)
    assert [ks.get(key) for key in remote] == [None] * 10
    assert ks.local.stats()["curr_items"] == 10


def test_wireExptime():
    assert wireExptime(0, 1000.0) == 0
    assert wireExptime(999.0, 1000.0) == REALTIME_MAXDELTA + 1
    assert wireExptime(1_700_000_100.5, 1_700_000_000.0) == 1_700_000_101
    assert wireExptime(1100.0, 1000.0) == 100


def test_requestFramesParseAsTheServerParsesThem():
    frame = request(B.SET, b"key", B.STORE_EXTRAS.pack(1, 2), b"value", cas=9, opaque=3)
    header = B.FRAME_HEADER.unpack_from(frame)
    assert header == (B.REQUEST_MAGIC, B.SET, 3, 8, 0, 0, 16, 3, 9)
    assert frame[24:] == B.STORE_EXTRAS.pack(1, 2) + b"keyvalue"


# -- discovery over ASCII -------------------------------------------------------


def test_configGetCluster():
    """
    A single node lists itself, before authentication too; anything but
    C{config get cluster} is an unknown command.
    """
    world = World()
    world.registry.settings = parseSettings("")
    proto, transport = world.connect()
    proto.dataReceived(b"config get cluster\r\n")
    body = b"1\n127.0.0.1|127.0.0.1|11211\n"
    assert transport.value() == b"CONFIG cluster 0 %d\r\n%b\r\nEND\r\n" % (len(body), body)
    transport.clear()
    proto.dataReceived(b"config get nodes\r\nconfig\r\n")
    assert transport.value() == b"ERROR\r\nERROR\r\n"


# -- configuration ---------------------------------------------------------------


def test_clusterSettings():
    s = parseSettings(
        '[node]\nname = "10.0.0.2:11211"\n'
        '[cluster]\nsecret = "x"\nheartbeat_timeout = "500ms"\nrequest_timeout = 3\n'
        '[clusters.eu]\nservers = ["10.0.0.1:11211", "10.0.0.2:11211"]\n'
        '[caches]\ndefault_cluster = "eu"\n'
    )
    assert s.clustered and s.cluster.secret == "x"
    assert (s.cluster.heartbeat_timeout, s.cluster.request_timeout) == (0.5, 3.0)
    assert s.node_cluster == "eu"
    d = parseSettings("")
    assert not d.clustered and d.cluster.heartbeat_timeout == 5.0
    with pytest.raises(ConfigError) as e:
        parseSettings('[cluster]\nsecret = 1\nheartbeat_timeout = "soon"\nrequest_timeout = -1\nx = 1\n')
    text = str(e.value)
    for part in ("cluster.secret", "cluster.heartbeat_timeout", "cluster.request_timeout", "cluster.x"):
        assert part in text


def test_keyHashAgreesWithThePythonHash():
    """
    The hash the ring uses (libhashkit's through ctypes when installed)
    gives the pure-Python values, high bytes included.
    """
    from memcachier.cluster import ring as R

    keys = [b"", b"a", b"user:1", bytes(range(256)), "ünïcode".encode()]
    assert [R.keyHash(k) for k in keys] == [oneAtATime(k) for k in keys]


def test_ownerCacheIsBounded(monkeypatch):
    from memcachier.cluster import ring as R

    monkeypatch.setattr(R, "OWNER_CACHE", 10)
    ring = Ring(PYLIBMC_SERVERS)
    fresh = Ring(PYLIBMC_SERVERS)
    for i in range(25):
        key = f"k{i}".encode()
        assert ring.owner(key) == ring.owner(key)
        assert len(ring._cache) <= 10
    assert all(ring.owner(f"k{i}".encode()) == fresh.owner(f"k{i}".encode()) for i in range(25))
