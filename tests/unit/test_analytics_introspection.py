"""
Introspection driven through real sessions (the ASCII codec on a string
transport, the memory store) and a L{task.Clock}: recent logs, popular
items, key stats, watched prefixes, sampling of large batches, and the
no-op tap when introspection is off.
"""

import pytest
from twisted.internet.task import Clock

from memcachier.analytics.introspection import IntrospectionService, discard, prefixOf
from tests.unit.helpers import World


@pytest.fixture
def node():
    world = World(introspection=lambda clock: IntrospectionService(
        clock, interval=0.1, sliceSeconds=60, slices=10))
    service = world.introspection
    service.startService()
    yield world, service
    service.stopService()


def connect(world, username="rw"):
    proto, transport = world.connect()
    proto.dataReceived(b"set %s 0 0 6\r\nsecret\r\n" % username.encode())
    assert transport.value() == b"STORED\r\n"
    transport.clear()
    return proto, transport


def send(proto, transport, data):
    proto.dataReceived(data)
    out = transport.value()
    transport.clear()
    return out


def workload(world, proto, transport):
    """
    A known workload: user:1 hit 5 times, user:2 twice, a missing key
    three times, sets and a delete.
    """
    send(proto, transport, b"set user:1 0 0 5\r\nhello\r\n")
    send(proto, transport, b"set user:2 0 0 2\r\nhi\r\n")
    send(proto, transport, b"set page:home 0 0 3\r\nabc\r\n")
    for _ in range(5):
        send(proto, transport, b"get user:1\r\n")
    send(proto, transport, b"get user:2 user:1\r\n")
    send(proto, transport, b"get user:2\r\n")
    for _ in range(3):
        send(proto, transport, b"get nothing:here\r\n")
    send(proto, transport, b"delete page:home\r\n")
    send(proto, transport, b"incr user:1 1\r\n")


def test_recentLogs(node):
    world, service = node
    proto, transport = connect(world)
    world.clock.advance(5)
    workload(world, proto, transport)
    world.clock.advance(0.1)
    intro = service.existing(1)
    logs = intro.recentLogs()
    assert [(l["command"], l["key"], l["status"], l["size"]) for l in logs] == [
        ("SET", "user:1", "STORED", 5),
        ("SET", "user:2", "STORED", 2),
        ("SET", "page:home", "STORED", 3),
    ] + [("GET", "user:1", "HIT", 5)] * 5 + [
        ("GET", "user:2", "HIT", 2),
        ("GET", "user:1", "HIT", 5),
        ("GET", "user:2", "HIT", 2),
    ] + [("GET", "nothing:here", "MISS", 0)] * 3 + [
        ("DELETE", "page:home", "DELETED", 0),
        ("INCR", "user:1", "NON_NUMERIC", 0),
    ]
    # batches are stamped when drained
    assert logs[0]["timestamp"] == "2023-11-14T22:13:25Z"


def test_recentLogsRecordStats(node):
    """
    C{stats} is a command of the recent logs (the contract's example line:
    key C{""}, status C{OK}, size 0), its groups and C{stats reset} too,
    over both protocols' session; they count in no sketch.
    """
    world, service = node
    proto, transport = connect(world)
    send(proto, transport, b"get k\r\n")
    assert send(proto, transport, b"stats\r\n").endswith(b"END\r\n")
    assert send(proto, transport, b"stats settings\r\n").endswith(b"END\r\n")
    assert send(proto, transport, b"stats reset\r\n") == b"RESET\r\n"
    world.clock.advance(0.1)
    intro = service.existing(1)
    assert [(l["command"], l["key"], l["status"], l["size"]) for l in intro.recentLogs()] == [
        ("GET", "k", "MISS", 0),
        ("STATS", "", "OK", 0),
        ("STATS", "settings", "OK", 0),
        ("STATS", "reset", "OK", 0),
    ]
    popular = intro.popularItems()
    assert popular["most_missed_keys"] == [{"name": "k", "popularity": 1}]
    assert popular["popular_prefixes"] == []


def test_recentLogsKeepsTheLast100(node):
    world, service = node
    proto, transport = connect(world)
    for i in range(150):
        send(proto, transport, b"get k%d\r\n" % i)
    logs = service.existing(1).recentLogs()
    assert len(logs) == 100
    assert logs[0]["key"] == "k50" and logs[-1]["key"] == "k149"


def test_popularItems(node):
    world, service = node
    proto, transport = connect(world)
    workload(world, proto, transport)
    world.clock.advance(0.1)
    popular = service.existing(1).popularItems()
    assert popular["most_hit_keys"] == [
        {"name": "user:1", "popularity": 6},
        {"name": "user:2", "popularity": 2},
    ]
    assert popular["most_missed_keys"] == [{"name": "nothing:here", "popularity": 3}]
    # set + incr, set + delete, set (ties by name)
    assert popular["most_mutated_keys"] == [
        {"name": "page:home", "popularity": 2},
        {"name": "user:1", "popularity": 2},
        {"name": "user:2", "popularity": 1},
    ]
    # prefixes: every keyed command counts for the part before the first ':'
    assert popular["popular_prefixes"] == [
        {"name": "user", "popularity": 11},
        {"name": "nothing", "popularity": 3},
        {"name": "page", "popularity": 2},
    ]
    assert popular["time_slice"] == int((world.clock.seconds() % 60) * 1e9)


def test_keyStatsPerSlice(node):
    world, service = node
    proto, transport = connect(world)
    start = world.clock.seconds()
    workload(world, proto, transport)
    world.clock.advance(0.1)  # drained into the first slice
    world.clock.advance(60)  # next slice
    send(proto, transport, b"get user:1\r\n")
    world.clock.advance(0.1)
    rows = service.existing(1).keyStats("user:1")
    assert [(r["hit_count"], r["miss_count"], r["mutation_count"]) for r in rows] == [
        (6, 0, 2), (1, 0, 0),
    ]
    assert all(r["size"] == 5 and r["in_cache"] for r in rows)
    assert rows[0]["timestamp"] < rows[1]["timestamp"]
    missing = service.existing(1).keyStats("nothing:here")
    assert [(r["hit_count"], r["miss_count"], r["in_cache"], r["size"]) for r in missing] == [
        (0, 3, False, 0), (0, 0, False, 0),
    ]
    assert start


def test_slicesAreBounded(node):
    world, service = node
    proto, transport = connect(world)
    for _ in range(25):
        send(proto, transport, b"get a\r\n")
        world.clock.advance(60)
    assert len(service.existing(1).keyStats("a")) == 10


def test_watchedPrefix(node):
    world, service = node
    service.setPrefixes([{"id": 7, "cache_id": 1, "name": "user:"}])
    proto, transport = connect(world)
    workload(world, proto, transport)
    send(proto, transport, b"get user:3:name\r\n")
    world.clock.advance(0.1)
    intro = service.existing(1)
    # hits: user:1 x6, user:2 x2; miss: user:3:name; mutations: 2 sets, 1 incr
    assert intro.takePrefixCounts() == {7: [8, 1, 3]}
    assert intro.takePrefixCounts() == {7: [0, 0, 0]}
    assert intro.prefixFootprint() == {7: [2, len("user:1hello") + len("user:2hi")]}
    popular = intro.popularItems(7)
    assert popular["most_hit_keys"][0] == {"name": "user:1", "popularity": 6}
    assert popular["most_missed_keys"] == [{"name": "user:3:name", "popularity": 1}]
    assert popular["popular_prefixes"] == [{"name": "user:3", "popularity": 1}]


def test_prefixOf():
    assert prefixOf("user:42:name") == "user"
    assert prefixOf("user:42:name", "user:") == "user:42"
    assert prefixOf("user:42:name", "user") == "user:42"
    assert prefixOf("plain") is None
    assert prefixOf(":odd") is None


def test_largeBatchesAreSampled(node):
    """
    Above C{batchLimit} events per batch, every k-th event is counted with
    weight k: the totals stay right, the work stays bounded.
    """
    world, service = node
    proto, transport = connect(world)
    intro = service.introspector(world.registry.existing(1))
    intro.batchLimit = 100
    send(proto, transport, b"".join(b"get hot\r\n" for _ in range(1000)))
    world.clock.advance(0.1)
    assert intro.sampledEvents == 1000
    assert intro.keyStats("hot")[-1]["miss_count"] == 1000
    assert len(intro.recentLogs()) == 100


def test_introspectionOff():
    world = World(introspection=lambda clock: IntrospectionService(clock, enabled=False))
    service = world.introspection
    proto, transport = connect(world)
    send(proto, transport, b"get x\r\n")
    assert proto.session.tap is discard
    assert service.introspectors() == {}


def test_drainTimer():
    """
    Enabled, the service drains every C{interval} seconds of its clock
    from one interval after start; disabled, it runs no timer.
    """
    clock = Clock()
    on = IntrospectionService(clock, interval=0.5)
    on.startService()
    assert [call.getTime() for call in clock.getDelayedCalls()] == [0.5]
    on.stopService()
    assert clock.getDelayedCalls() == []
    off = IntrospectionService(clock, enabled=False)
    off.startService()
    assert clock.getDelayedCalls() == []
    off.stopService()


def test_noIntrospectionService():
    """
    A registry without introspection (unit tests of codecs) taps nothing.
    """
    world = World()
    proto, transport = connect(world)
    assert proto.session.tap is discard


def test_statsDetailIsExactWhenBatchesAreSampled():
    """
    C{stats detail} counts every event of a batch, before the sampling
    that bounds the sketch work; watched prefixes and popular items go on
    from the same drain.
    """
    world = World(introspection=lambda clock: IntrospectionService(clock, batchLimit=10))
    proto, transport = connect(world)
    assert send(proto, transport, b"stats detail on\r\n") == b"OK\r\n"
    send(proto, transport, b"set p:1 0 0 1\r\nx\r\n" + b"get p:1\r\nget p:2\r\n" * 500)
    assert send(proto, transport, b"stats detail dump\r\n") == (
        b"PREFIX p get 1000 hit 500 set 1 del 0\r\nEND\r\n"
    )
    intro = world.introspection.existing(1)
    assert intro.sampledEvents == 1001
    assert intro.popularItems()["popular_prefixes"][0]["name"] == "p"


def test_statsDetailPrefixesAreBounded(monkeypatch):
    """
    At most L{MAX_DETAIL_PREFIXES} prefixes are counted per cache; keys
    under new prefixes beyond are not.
    """
    from memcachier.analytics import introspection

    monkeypatch.setattr(introspection, "MAX_DETAIL_PREFIXES", 3)
    world = World(introspection=lambda clock: IntrospectionService(clock))
    proto, transport = connect(world)
    send(proto, transport, b"stats detail on\r\n")
    send(proto, transport, b"".join(b"get p%d:x\r\n" % i for i in range(5)) + b"get p0:y\r\n")
    assert send(proto, transport, b"stats detail dump\r\n") == (
        b"PREFIX p0 get 2 hit 0 set 0 del 0\r\nPREFIX p1 get 1 hit 0 set 0 del 0\r\n"
        b"PREFIX p2 get 1 hit 0 set 0 del 0\r\nEND\r\n"
    )


# -- several nodes: sketches travel and merge ------------------------------------


def _twoNodes():
    """
    Two nodes' introspectors of one cache on one clock, each with its own
    traffic.
    """
    from memcachier.analytics.introspection import Introspector
    from memcachier.stores.memory import MemoryStore
    from twisted.internet.task import Clock

    clock = Clock()
    clock.advance(1_700_000_000)
    store = MemoryStore(clock)
    a = Introspector(clock, store.keyspace(1, 1 << 20, 1 << 20))
    b = Introspector(clock, store.keyspace(2, 1 << 20, 1 << 20))
    return clock, a, b


def test_popularSketchesMergeAcrossNodes():
    """
    Heavy hitters of two nodes, sent as C{stats} lines and decoded, merge
    into one ranking: a key hit on both nodes adds up, and outranks keys
    hit more on either node alone.
    """
    from memcachier.analytics.introspection import (
        GET, decodePopular, encodePopular, mergePopular,
    )

    clock, a, b = _twoNodes()
    for _ in range(4):
        a.events.append((GET, b"shared:1", 1))
        b.events.append((GET, b"shared:1", 1))
    for _ in range(6):
        a.events.append((GET, b"a-only", 1))
    b.events.append((GET, b"b-miss", -1))
    lines = dict(encodePopular(b.popularSketches()))
    assert all(isinstance(v, str) for v in lines.values())
    remote = decodePopular(lines)
    popular = mergePopular(clock.seconds() + 1, [a.popularSketches(), remote], 10)
    assert popular["most_hit_keys"] == [
        {"name": "shared:1", "popularity": 8},
        {"name": "a-only", "popularity": 6},
    ]
    assert popular["most_missed_keys"] == [{"name": "b-miss", "popularity": 1}]
    assert popular["popular_prefixes"] == [{"name": "shared", "popularity": 8}]
    # merging did not change either node's own sketches
    assert a.popularItems()["most_hit_keys"][0] == {"name": "a-only", "popularity": 6}
    # nothing from anyone: the empty answer
    assert mergePopular(clock.seconds(), [], 10)["most_hit_keys"] == []


def test_keyCountsMergeSliceBySlice():
    """
    Per-key counts of two nodes merge by slice start: the rows are the
    union of the slices, each the sum of the nodes' counts.
    """
    from memcachier.analytics.introspection import (
        GET, INCR, decodeKeyCounts, encodeKeyCounts, keyStatsRows,
    )

    clock, a, b = _twoNodes()
    a.events.append((GET, b"k", 1))
    b.events.append((GET, b"k", 1))
    b.events.append((GET, b"k", -1))
    a.drain()
    b.drain()
    clock.advance(60)
    b.events.append((INCR, b"k", 0))
    remote = decodeKeyCounts(dict(encodeKeyCounts(b.keyCounts())))
    rows = keyStatsRows("k", [a.keyCounts(), remote], 3, True, 10)
    assert [(r["hit_count"], r["miss_count"], r["mutation_count"]) for r in rows] == [
        (2, 1, 0), (0, 0, 1),
    ]
    assert all(r["size"] == 3 and r["in_cache"] for r in rows)
    # only the newest slices are answered
    assert len(keyStatsRows("k", [a.keyCounts(), remote], 0, False, 1)) == 1


def test_stopReleasesTheSketches():
    """
    Stopping the service drops every introspector (and its DataSketches
    objects, which would otherwise outlive the interpreter's teardown and
    be reported by nanobind as leaked); a cache used afterwards gets a
    fresh one.
    """
    world = World(introspection=lambda clock: IntrospectionService(clock, interval=0.1))
    service = world.introspection
    service.startService()
    proto, transport = connect(world)
    send(proto, transport, b"get user:1\r\n")
    world.clock.advance(0.1)
    before = service.existing(1)
    assert before is not None

    service.stopService()
    assert service.introspectors() == {}
    assert service.existing(1) is None
    assert service.introspector(proto.session.runtime) is not before
