"""
The multi-get's C loops (L{memcachier._speedups}) against their Python
twins, which define the behaviour: the same items, the same bytes, the
same pieces; and the codec and store suites' multi-get tests with the
Python twins in place of the C loops.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from memcachier import speedups
from memcachier.commands import ITEM_ACTIVE, ITEM_FETCHED, packItem
from memcachier.protocols import ascii, binary, text
from memcachier.stores.memory import MemoryKeyspace, MemoryStore
from memcachier.stores.segment import SegmentStore
from memcachier.testing import StoreConformanceTests
from tests.unit import test_ascii, test_binary
from memcachier.analytics.introspection import IntrospectionService
from tests.unit.helpers import STORES, World


def test_acceleratorBuilt():
    """
    The install under test built the C module (scripts/test installs a C
    compiler): the fast path is the one these tests and the benchmarks
    measure, not silently the Python one.
    """
    assert speedups.accelerator is not None, (
        "memcachier._speedups is not built: install a C compiler and python3-dev, "
        "then reinstall (pip install -e .)"
    )
    assert speedups.describe() == "c"
    assert text.renderStream is not text.renderStreamPython
    assert MemoryKeyspace.getMany is not MemoryKeyspace.getManyPython


@pytest.fixture
def pythonLoops(monkeypatch):
    """
    Run the Python twins where the C loops would run.
    """
    monkeypatch.setattr(MemoryKeyspace, "getMany", MemoryKeyspace.getManyPython)
    monkeypatch.setattr(ascii, "renderValues", text.renderValuesPython)
    monkeypatch.setattr(ascii, "renderStream", text.renderStreamPython)
    monkeypatch.setattr(ascii, "longestKey", ascii.longestKeyPython)


_items = st.one_of(
    st.none(),
    st.builds(
        packItem,
        value=st.one_of(st.binary(max_size=40), st.binary(min_size=300, max_size=700)),
        flags=st.integers(0, 2**32 - 1),
        exptime=st.sampled_from([0, 100]),
        cas=st.integers(1, 2**64 - 1),
        bits=st.sampled_from([0, ITEM_FETCHED, ITEM_FETCHED | ITEM_ACTIVE]),
    ),
)
_keys = st.binary(min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(st.tuples(_keys, _items), max_size=30),
    start=st.integers(0, 30),
    budget=st.integers(1, 2000),
    withCas=st.booleans(),
)
def test_renderStreamTwins(pairs, start, budget, withCas):
    """
    C{renderStream} gives the pieces its Python twin gives, big values
    (C{budget} bytes or more) as the same views, and stops at the same
    index.
    """
    keys = [key for key, _ in pairs]
    items = [item for _, item in pairs]
    start = min(start, len(items))
    fast, fastNext = text.renderStream(keys, items, start, withCas, budget)
    slow, slowNext = text.renderStreamPython(keys, items, start, withCas, budget)
    assert fastNext == slowNext
    assert [bytes(p) for p in fast] == [bytes(p) for p in slow]
    assert [type(p) for p in fast] == [type(p) for p in slow]


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(_keys, _items), max_size=30), withCas=st.booleans())
def test_renderValuesTwins(pairs, withCas):
    keys = [key for key, _ in pairs]
    items = [item for _, item in pairs]
    assert text.renderValues(keys, items, withCas, b"END\r\n") == text.renderValuesPython(
        keys, items, withCas, b"END\r\n"
    )


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.binary(max_size=300), max_size=40), asTuple=st.booleans())
def test_longestKeyTwins(keys, asTuple):
    """
    The C key length check gives what its Python twin gives, 0 for no
    keys.
    """
    if asTuple:
        keys = tuple(keys)
    assert ascii.longestKey(keys) == ascii.longestKeyPython(keys)


def test_longestKeyIsTheC():
    """
    The codec's key length check is the C one when the module is built,
    and it refuses what is not bytes instead of reading it as bytes.
    """
    assert ascii.longestKey is speedups.accelerator.longest
    with pytest.raises(TypeError):
        ascii.longestKey([b"k", "k"])
    with pytest.raises(TypeError):
        ascii.longestKey(3)


def test_renderRunRefusesWhatIsNotAnItem():
    """
    The C loop checks what it is handed instead of reading past a buffer.
    """
    with pytest.raises(TypeError):
        speedups.accelerator.render_run([b"k"], [b"short"], 0, 18, 100, 100, b"")
    with pytest.raises(TypeError):
        speedups.accelerator.render_run([u"k"], [packItem(b"v", 0, 0, 1)], 0, 18, 100, 100, b"")
    with pytest.raises(ValueError):
        speedups.accelerator.render_run([], [packItem(b"v", 0, 0, 1)], 0, 18, 100, 100, b"")


def _twoKeyspaces():
    """
    Two memory keyspaces given the same history: new, fetched, expiring
    and expired items.
    """
    clock = Clock()
    clock.advance(1000)
    keyspaces = []
    for _ in range(2):
        keyspace = MemoryStore(clock).keyspace(1, 10_000_000, 1_000_000)
        for i in range(60):
            keyspace.store(1, b"k%d" % i, b"v%d" % i, i, (1010 if i % 4 == 0 else 0), 0)
        keyspace.get(b"k1")
        keyspace.get(b"k5")
        keyspaces.append(keyspace)
    return clock, keyspaces


def test_getManyTwins():
    """
    The C lookup loop returns what the Python one returns and leaves the
    keyspace as it leaves it: misses as L{None}, hits marked fetched and
    active, expired items removed and counted.
    """
    clock, (fast, slow) = _twoKeyspaces()
    keys = [b"k%d" % i for i in range(0, 70, 3)] + [b"k1", b"k1", b"nope"]
    for advance in (0, 20):
        clock.advance(advance)
        assert fast.getMany(keys) == slow.getManyPython(keys)
        assert fast.getMany(tuple(keys)) == slow.getManyPython(tuple(keys))
        assert fast._shards == slow._shards
        assert [list(d) for d in fast._shards] == [list(d) for d in slow._shards]
        assert fast.get_expired == slow.get_expired


class PythonLoopsMemoryStoreTests(StoreConformanceTests, SynchronousTestCase):
    """
    The store conformance suite with the Python multi-get loop.
    """

    def setUp(self):
        self.patch(MemoryKeyspace, "getMany", MemoryKeyspace.getManyPython)
        StoreConformanceTests.setUp(self)

    def makeStore(self, clock):
        return MemoryStore(clock)


@pytest.mark.parametrize(
    "name",
    [
        "test_setGetPipelined",
        "test_longMultiGetStreamed",
        "test_slowReaderStopsAnswers",
        "test_isolation",
        "test_expiryAndTouch",
    ],
)
def test_asciiWithPythonLoops(pythonLoops, name):
    """
    The codec tests that go through multi-gets pass with the Python twins.
    """
    getattr(test_ascii, name)(World(store=MemoryStore))


# -- the ASCII codec's run of one-key gets in C ------------------------------

_getLines = st.one_of(
    st.builds(lambda k, cr: b"get " + k + (b"\r\n" if cr else b"\n"),
              st.sampled_from([b"a", b"b", b"big", b"gone", b"k" * 250, b"k" * 251, b"\x00\xff"]),
              st.booleans()),
    st.sampled_from([
        b"get \r\n", b"get a b\r\n", b"get a \r\n", b"get\ta\r\n", b"get a\r\r\n",
        b"get a\tb\r\n", b"gets a\r\n", b"get", b"get a", b"get a\r", b"\r\n",
        b"set a 1 0 3\r\nnew\r\n", b"delete b\r\n", b"get a\nget b\n",
    ]),
)


def _asciiNode(world):
    """
    A logged-in ASCII connection to C{world}, with items to hit.
    """
    conn = test_ascii.login(world)
    test_ascii.exchange(conn, b"set a 7 0 1\r\nA\r\nset big 9 0 3000\r\n" + b"x" * 3000 + b"\r\n"
                        b"set gone 0 -1 1\r\nG\r\nset b 0 0 0\r\n\r\n")
    return conn


def _binaryNode(world):
    """
    An authenticated binary connection to C{world}, with items to hit.
    """
    conn = test_binary.Connection(world).auth()
    conn.send(test_binary.setFrame(b"a", b"A", flags=7),
              test_binary.setFrame(b"big", b"x" * 3000, flags=123456789),
              test_binary.setFrame(b"b", b""))
    return conn.proto, conn.transport


def _twins(codec, run, connect, store, data, cuts):
    """
    What a node writes, counts and taps for C{data} cut into reads at
    C{cuts}: with C{codec}'s run of one-key gets in C (C{run}), and with
    its own loop alone.
    """
    results = []
    for inC in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(codec, "getRun", run if inC else None)
            world = World(store=store, introspection=lambda clock: IntrospectionService(clock))
            proto, transport = connect(world)
            transport.clear()
            at = 0
            for cut in cuts + [len(data)]:
                proto.dataReceived(data[at:at + cut])
                at += cut
            world.clock.advance(0)
        runtime = world.registry.runtime(1)
        stats = runtime.stats
        events = list(world.introspection.introspector(runtime).events)
        results.append((transport.value(), transport.connected, stats.cmd_get, stats.get_hits,
                        stats.get_misses, stats.bytes_written, events))
    return results


_GET_RUN_STORES = dict(STORES, segment=SegmentStore)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_getLines, max_size=12), cuts=st.lists(st.integers(1, 40), max_size=4),
       store=st.sampled_from(sorted(_GET_RUN_STORES)))
def test_getRunTwins(lines, cuts, store):
    """
    With the run of one-key gets in C, the codec writes the same bytes,
    counts the same gets, hits and misses and taps the same events as its
    line loop does alone, whatever the lines and however they are cut
    into reads (an asynchronous keyspace never takes the C run).
    """
    fast, alone = _twins(ascii, speedups.accelerator.get_run, _asciiNode,
                         _GET_RUN_STORES[store], b"".join(lines), cuts)
    assert fast == alone


def test_getRunHoldsForASlowReader():
    """
    Pipelined one-key gets answered in C stop once their replies pass
    C{FLUSH_AT} while the client is not reading; the rest follows, in
    order, once it reads again.
    """
    world = World(store=SegmentStore)
    conn = test_ascii.login(world)
    proto, transport = conn
    value = b"v" * 100_000
    test_ascii.exchange(conn, b"set big 0 0 %d\r\n%b\r\n" % (len(value), value))
    transport.clear()
    proto.codec.pauseProducing()  # the transport's buffer is full
    proto.dataReceived(b"get big\r\n" * 200 + b"version\r\n")
    assert len(transport.value()) < 600_000
    proto.codec.resumeProducing()
    reply = transport.value()
    assert reply.count(b"VALUE big 0 100000\r\n") == 200
    assert reply.endswith(b"END\r\nVERSION 1.6.21\r\n")


def test_getRunStopsAtWhatIsNotAnItem():
    """
    The C run stops before a line whose lookup raised or gave what is not
    an item, drops the error, and has answered the lines before it.
    """
    run = speedups.accelerator.get_run
    item = packItem(b"v", 3, 0, 1)
    events = []

    def get(key):
        if key == b"boom":
            raise RuntimeError("lookup failed")
        return {b"k": item, b"short": b"x" * 17, b"text": "not bytes"}.get(key)

    data = b"get k\r\nget miss\r\nget boom\r\nget k\r\n"
    assert run(data, 0, get, events.append, 5, 1 << 20) == (
        data.index(b"get boom"), b"VALUE k 3 1\r\nv\r\nEND\r\nEND\r\n", 1, 1,
    )
    assert events == [(5, b"k", 1), (5, b"miss", -1)]
    for bad in (b"short", b"text"):
        assert run(b"get %b\r\n" % bad, 0, get, events.append, 5, 100) == (0, b"", 0, 0)
    assert run(b"get k\r\n", 0, get, None, 5, 100) == (0, b"", 0, 0)
    # the budget: a run stops once its replies reach it
    assert run(b"get k\r\n" * 3, 0, get, events.append, 5, 1)[:2] == (7, b"VALUE k 3 1\r\nv\r\nEND\r\n")


_getFrames = st.one_of(
    st.builds(lambda op, k, opaque: test_binary.frame(op, k, opaque=opaque),
              st.sampled_from([binary.GET, binary.GETQ, binary.GETK, binary.GETKQ]),
              st.sampled_from([b"a", b"b", b"big", b"gone", b"k" * 250, b"k" * 251, b"a b\r\n"]),
              st.integers(0, 2**32 - 1)),
    st.sampled_from([
        test_binary.frame(binary.GET),
        test_binary.frame(binary.GETQ, b"a"), test_binary.frame(binary.GETK, b"miss"),
        test_binary.frame(binary.GET, b"a", extras=b"1234"),
        test_binary.frame(binary.GET, b"a", value=b"v"),
        test_binary.frame(binary.GET, b"a", bodylen=0),
        test_binary.frame(binary.GET, b"a", magic=0x81),
        test_binary.frame(binary.NOOP),
        test_binary.setFrame(b"a", b"new", flags=4294967295),
        test_binary.frame(binary.DELETE, b"b"),
        test_binary.frame(binary.GET, b"a")[:30],
    ]),
)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(_getFrames, max_size=10), cuts=st.lists(st.integers(1, 60), max_size=4),
       store=st.sampled_from(sorted(_GET_RUN_STORES)))
def test_binaryGetRunTwins(frames, cuts, store):
    """
    With the run of plain GETs in C, the binary codec writes the same
    bytes, counts the same gets, hits and misses and taps the same events
    as its frame loop does alone, whatever the frames and however they
    are cut into reads.
    """
    fast, alone = _twins(binary, speedups.accelerator.binary_get_run, _binaryNode,
                         _GET_RUN_STORES[store], b"".join(frames), cuts)
    assert fast == alone


def test_binaryGetRunAnswersAsTheFrameLoop():
    """
    A hit carries the item's flags and CAS and the request's opaque, a miss
    memcached's "Not found", each as the frame loop writes it.
    """
    run = speedups.accelerator.binary_get_run
    item = packItem(b"value", 4294967295, 0, 0x0102030405060708)
    events = []
    data = test_binary.frame(binary.GET, b"k", opaque=0xA1B2C3D4) + test_binary.frame(
        binary.GET, b"miss", opaque=7)
    pos, reply, hits, misses = run(data, 0, {b"k": item}.get, events.append, 5, 1 << 20)
    assert (pos, hits, misses) == (len(data), 1, 1)
    hit, miss = test_binary.parse(reply)
    assert hit == test_binary.Response(binary.GET, 0, b"\xff\xff\xff\xff", b"", b"value",
                                       0x0102030405060708, 0xA1B2C3D4)
    assert miss == test_binary.Response(binary.GET, binary.KEY_ENOENT, b"", b"", b"Not found", 0, 7)
    assert events == [(5, b"k", 5), (5, b"miss", -1)]


def test_binaryGetRunAnswersKeyedAndQuietGets():
    """
    GETK and GETKQ hits carry the key; a GETK miss answers with the key,
    quiet misses with nothing (a client's multi-get: quiet gets, then a
    NOOP, where the run stops); every one is counted.
    """
    run = speedups.accelerator.binary_get_run
    item = packItem(b"value", 9, 0, 3)
    frame = test_binary.frame
    data = (frame(binary.GETKQ, b"k", opaque=1) + frame(binary.GETKQ, b"miss", opaque=2)
            + frame(binary.GETQ, b"k", opaque=3) + frame(binary.GETQ, b"miss", opaque=4)
            + frame(binary.GETK, b"miss", opaque=5))
    noop = frame(binary.NOOP, opaque=6)
    pos, reply, hits, misses = run(data + noop, 0, {b"k": item}.get, [].append, 5, 1 << 20)
    assert (pos, hits, misses) == (len(data), 2, 3)
    assert test_binary.parse(reply) == [
        test_binary.Response(binary.GETKQ, 0, b"\0\0\0\x09", b"k", b"value", 3, 1),
        test_binary.Response(binary.GETQ, 0, b"\0\0\0\x09", b"", b"value", 3, 3),
        test_binary.Response(binary.GETK, binary.KEY_ENOENT, b"", b"miss", b"", 0, 5),
    ]
