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
from memcachier.protocols import ascii, text
from memcachier.stores.memory import MemoryKeyspace, MemoryStore
from memcachier.testing import StoreConformanceTests
from tests.unit import test_ascii
from tests.unit.helpers import World


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
