"""
The memory store passes the public store conformance suite, directly and
answering through Deferreds fired by a clock (L{memcachier.testing.AsyncStore},
the double codec tests and keyspaces that forward use); the failing store
double fails every call, as it says.  The memory store's items stay out of
the garbage collector's sight.
"""

import gc

from twisted.trial.unittest import SynchronousTestCase
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from memcachier.commands import (
    KeyspaceError, StoreMode, StoreResult, itemAtime, itemFetched, itemValue,
)
from memcachier.interfaces import IKeyspace, IStore
from memcachier.stores import memory
from memcachier.stores.memory import MemoryStore
from memcachier.testing import ANSWERING, AsyncStore, FailingStore, StoreConformanceTests


class MemoryStoreTests(StoreConformanceTests, SynchronousTestCase):
    def makeStore(self, clock):
        return MemoryStore(clock)

    def test_decrPadsLikeMemcached(self):
        """
        A decr that shortens the number leaves the value's length as it
        was, padded with spaces, as memcached's in-place rewrite does.
        """
        self.set(b"n", b"100")
        self.call(self.ks.delta, b"n", False, 1, None, 0, 0)
        self.assertEqual(itemValue(self.call(self.ks.get, b"n")), b"99 ")
        self.assertEqual(self.call(self.ks.delta, b"n", True, 1, None, 0, 0)[1], 100)

    def test_itemsInvisibleToTheCollector(self):
        """
        Neither the keyspace's table nor any item in it is tracked by the
        garbage collector, whatever happened to them (store, hit, replace,
        append, incr, touch, failed add): a full collection never walks
        the cache.
        """
        self.set(b"a", b"1", flags=5)
        self.set(b"b", b"x" * 20_000, exptime=self.clock.seconds() + 100)
        self.call(self.ks.get, b"a")
        self.call(self.ks.getMany, [b"a", b"b", b"missing"])
        self.set(b"a", b"2")
        self.set(b"a", b"3", mode=StoreMode.APPEND)
        self.set(b"a", b"4", mode=StoreMode.ADD)
        self.call(self.ks.delta, b"a", True, 7, None, 0, 0)
        self.call(self.ks.touch, b"b", 0)
        gc.collect()
        self.assertEqual(sorted(key for table in self.ks._shards for key in table), [b"a", b"b"])
        for table in self.ks._shards:
            self.assertFalse(gc.is_tracked(table))
        for key, item in ((k, i) for table in self.ks._shards for k, i in table.items()):
            self.assertFalse(gc.is_tracked(key))
            self.assertFalse(gc.is_tracked(item))
            self.assertIs(type(item), bytes)

    def fill(self, prefix, count, exptime=0, size=1000):
        for i in range(count):
            self.set(b"%s%d" % (prefix, i), b"v" * size, exptime=exptime)

    def test_expiredReclaimedBeforeLiveEvicted(self):
        """
        When a store needs room, the expired items among the oldest are
        reclaimed before any live item is evicted, even a live item older
        than them (memcached looks at a few items at the LRU tail).
        """
        self.set(b"oldest", b"v" * 1000)
        self.fill(b"exp", 3, exptime=self.clock.seconds() + 10)
        self.fill(b"live", 56)
        before = self.call(self.ks.stats)
        self.assertEqual((before["curr_items"], before["evictions"]), (60, 0))
        self.clock.advance(20)
        self.fill(b"new", 3)
        stats = self.call(self.ks.stats)
        self.assertEqual((stats["evictions"], stats["reclaimed"]), (0, 3))
        self.assertIsNotNone(self.call(self.ks.get, b"oldest"))
        self.assertLessEqual(stats["bytes"], self.maxBytes)

    def test_storingOverExpiredDoesNotGrow(self):
        """
        Storing new keys while older ones have expired reuses their room:
        the memory the cache holds does not grow, and nothing is evicted.
        """
        self.fill(b"exp", 40, exptime=self.clock.seconds() + 10)
        held = self.call(self.ks.stats)["bytes"]
        self.clock.advance(20)
        self.fill(b"new", 40)
        stats = self.call(self.ks.stats)
        self.assertLessEqual(stats["bytes"], held)
        self.assertEqual((stats["curr_items"], stats["evictions"]), (40, 0))

    def test_storingOverExpiredLargeKeyspace(self):
        """
        In a keyspace too large to look at the tail on every store, the
        tail is still looked at often enough that storing over expired
        items grows it by at most a few hundred items.
        """
        ks = self.store.keyspace(7, 1 << 30, self.maxItemSize)
        for i in range(20_000):
            self.set(b"exp%d" % i, b"v" * 10, exptime=self.clock.seconds() + 10, ks=ks)
        held = self.call(ks.stats)["bytes"]
        self.clock.advance(20)
        for i in range(20_000):
            self.set(b"new%d" % i, b"v" * 10, ks=ks)
        stats = self.call(ks.stats)
        self.assertLessEqual(stats["bytes"], held + 300 * (5 + 10 + 50))
        self.assertEqual(stats["evictions"], 0)

    def test_replacedKeyCountsAsRecent(self):
        """
        A key stored again is as recent as a new one: it outlives keys
        stored once after it, though it keeps its old place in the table.
        """
        self.set(b"k0", b"v" * 1000)
        self.fill(b"a", 50)
        self.set(b"k0", b"w" * 1000)
        self.fill(b"b", 30)
        self.assertEqual(itemValue(self.call(self.ks.get, b"k0")), b"w" * 1000)
        self.assertIsNone(self.call(self.ks.get, b"a0"))
        self.assertGreater(self.call(self.ks.stats)["evictions"], 0)

    def test_evictsWhenEverythingIsActive(self):
        """
        A keyspace whose every item was hit still evicts (second chances
        are bounded) and stays within its limit.
        """
        self.fill(b"a", 60)
        self.call(self.ks.getMany, [b"a%d" % i for i in range(60)])
        self.fill(b"b", 60)
        stats = self.call(self.ks.stats)
        self.assertLessEqual(stats["bytes"], self.maxBytes)
        self.assertGreater(stats["evictions"], 0)
        self.assertIsNotNone(self.call(self.ks.get, b"b59"))

    def test_fractionalExptimeNeverEarly(self):
        """
        Items keep whole-second expiry times rounded up: an item never
        expires before the time it was given.
        """
        self.clock.advance(0.25)
        self.set(b"k", b"v", exptime=self.clock.seconds() + 10)
        self.clock.advance(9.9)
        self.assertIsNotNone(self.call(self.ks.get, b"k"))
        self.clock.advance(1)
        self.assertIsNone(self.call(self.ks.get, b"k"))

    def test_hitMarksFetchedOnce(self):
        """
        The first hit marks the item fetched and stamps its access time;
        a peek does neither.
        """
        self.set(b"k", b"v")
        self.clock.advance(30)
        self.assertFalse(itemFetched(self.call(self.ks.peek, b"k")))
        first = self.call(self.ks.get, b"k")
        self.assertTrue(itemFetched(first))
        self.assertEqual(itemAtime(first), int(self.clock.seconds()))
        self.clock.advance(30)
        self.assertIs(self.call(self.ks.get, b"k"), first)

    def test_touchIntoThePast(self):
        """
        Touching with an expiry in the past (the session's C{-1} for a
        negative wire exptime) expires the item.
        """
        self.set(b"k", b"v")
        self.assertIsNotNone(self.call(self.ks.touch, b"k", -1))
        self.assertIsNone(self.call(self.ks.get, b"k"))

class AsyncMemoryStoreTests(StoreConformanceTests, SynchronousTestCase):
    """
    The same suite through L{AsyncStore}: every answer is a Deferred that
    has not fired when the call returns.
    """

    def makeStore(self, clock):
        return AsyncStore(MemoryStore(clock), clock)

    def test_answersAreLate(self):
        """
        An answer is a Deferred that fires only when the clock runs.
        """
        d = self.ks.store(StoreMode.SET, b"k", b"v", 0, 0, 0)
        self.assertNoResult(d)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d)[0], 1)
        self.assertFalse(self.ks.synchronous)


class FailingStoreTests(SynchronousTestCase):
    """
    L{FailingStore} fails every answering call: raising, or through a
    Deferred fired by the clock.
    """

    def calls(self, ks):
        return [
            lambda: ks.get(b"k"), lambda: ks.getMany([b"k"]), lambda: ks.peek(b"k"),
            lambda: ks.touch(b"k", 0), lambda: ks.store(StoreMode.SET, b"k", b"v", 0, 0, 0),
            lambda: ks.delete(b"k", 0), lambda: ks.delta(b"k", True, 1, None, 0, 0),
            lambda: ks.flush(0),
        ]

    def test_raises(self):
        store = FailingStore(Clock(), late=False)
        ks = store.keyspace(1, 1000, 100)
        self.assertTrue(verifyObject(IStore, store))
        self.assertTrue(verifyObject(IKeyspace, ks))
        for call in self.calls(ks):
            self.assertRaises(KeyspaceError, call)
        self.assertEqual(ks.calls, len(ANSWERING))

    def test_failsLate(self):
        clock = Clock()
        ks = FailingStore(clock, late=True).keyspace(1, 1000, 100)
        self.assertFalse(ks.synchronous)
        for call in self.calls(ks):
            d = call()
            self.assertNoResult(d)
            clock.advance(0)
            self.failureResultOf(d, KeyspaceError)


class ShardedMemoryStoreTests(StoreConformanceTests, SynchronousTestCase):
    """
    The conformance suite with every keyspace in L{memory.SHARDS} dicts,
    as keyspaces of L{memory.SHARD_FROM} bytes or more keep their items;
    and what sharding itself promises.  (L{MemoryStoreTests}' exact LRU
    orders hold per dict: small keyspaces have one.)
    """

    def setUp(self):
        self.patch(memory, "SHARD_FROM", 0)
        StoreConformanceTests.setUp(self)

    def makeStore(self, clock):
        return MemoryStore(clock)

    def test_shardCount(self):
        """
        Keyspaces allowed L{memory.SHARD_FROM} bytes or more have
        L{memory.SHARDS} dicts, smaller ones one.
        """
        self.patch(memory, "SHARD_FROM", 1 << 20)
        self.assertEqual(len(self.store.keyspace(11, 1 << 20, 1000)._shards), memory.SHARDS)
        self.assertEqual(len(self.store.keyspace(12, (1 << 20) - 1, 1000)._shards), 1)

    def test_keysSpreadEvenly(self):
        """
        Keys hash evenly over the dicts, so each one's pause when it
        rebuilds its table is a sixteenth of one dict's.
        """
        ks = self.store.keyspace(13, 1 << 30, 1000)
        for i in range(16_000):
            self.set(b"user:%d" % i, b"v", ks=ks)
        sizes = [len(items) for items in ks._shards]
        self.assertEqual(sum(sizes), 16_000)
        self.assertLess(max(sizes), 2 * 16_000 // memory.SHARDS)

    def test_hotKeyAloneInItsDictKept(self):
        """
        A new key whose dict holds only a hot (ACTIVE) item gives that item
        its second chance and takes its room from a cold item of another
        dict: the hot key is not evicted while cold ones are held.
        """
        ks = self.store.keyspace(15, 10 * (5 + 1000 + memory.ITEM_OVERHEAD), 2000)
        shardOf = lambda key: hash(key) & ks._mask
        hot = b"hot"
        self.set(hot, b"h" * 1000, ks=ks)
        cold = [key for key in (b"c%d" % i for i in range(1000, 10_000))
                if shardOf(key) != shardOf(hot)][:9]
        for key in cold:
            self.clock.advance(120)
            self.set(key, b"c" * 1000, ks=ks)
        self.clock.advance(120)
        self.assertEqual(self.call(ks.stats)["evictions"], 0)
        self.assertIsNotNone(self.call(ks.get, hot))
        new = next(key for key in (b"n%d" % i for i in range(1000, 10_000)) if shardOf(key) == shardOf(hot))
        self.assertEqual(self.set(new, b"n" * 1000, ks=ks)[0], StoreResult.STORED)
        self.assertIsNotNone(self.call(ks.get, hot))
        self.assertIsNotNone(self.call(ks.get, new))
        # (a little more than asked may go: EVICT_SLACK_SHIFT)
        self.assertGreaterEqual(sum(self.call(ks.get, key) is None for key in cold), 1)
        self.assertLessEqual(self.call(ks.stats)["bytes"], ks.maxBytes)

    def test_evictsFromOtherDicts(self):
        """
        A key whose dict holds nothing to evict still gets room, from the
        other dicts, and the keyspace stays within its limit.
        """
        ks = self.store.keyspace(14, 10 * (1 + 1000 + 50), 2000)
        stored = [b"%d" % i for i in range(10)]
        for key in stored:
            self.set(key, b"v" * 1000, ks=ks)
        target = next(
            b"x%d" % i for i in range(1000)
            if not ks._shards[hash(b"x%d" % i) & ks._mask]
        )
        self.assertEqual(self.set(target, b"w" * 1000, ks=ks)[0], StoreResult.STORED)
        stats = self.call(ks.stats)
        self.assertLessEqual(stats["bytes"], 10 * (1 + 1000 + 50))
        self.assertGreater(stats["evictions"], 0)
        self.assertIsNotNone(self.call(ks.get, target))

    def test_planChangeAcrossTheThreshold(self):
        """
        A keyspace reconfigured across L{memory.SHARD_FROM} moves its items
        into the new number of dicts and keeps every one.
        """
        self.patch(memory, "SHARD_FROM", 1 << 20)
        ks = self.store.keyspace(15, 1 << 19, 1000)
        for i in range(500):
            self.set(b"k%d" % i, b"%d" % i, ks=ks)
        self.call(ks.configure, 1 << 21, 1000)
        self.assertEqual(len(ks._shards), memory.SHARDS)
        self.call(ks.configure, 1 << 19, 1000)
        self.assertEqual(len(ks._shards), 1)
        items = self.call(ks.getMany, [b"k%d" % i for i in range(500)])
        self.assertEqual([itemValue(item) for item in items], [b"%d" % i for i in range(500)])


class TurnClock(Clock):
    """
    A clock whose L{turn} runs the calls due before it, as one reactor
    iteration does (calls they schedule wait for the next).
    """

    def turn(self):
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class FlushFreesInSlicesTests(SynchronousTestCase):
    """
    A flushed keyspace's items are freed L{memory.FREE_SLICE} per reactor
    turn, so a flush of a large cache is not one long pause; what the
    client sees is empty at once.
    """

    def test_freedInSlices(self):
        clock = TurnClock()
        ks = MemoryStore(clock).keyspace(1, 1 << 30, 1000)
        count = 2 * memory.FREE_SLICE + 5
        for i in range(count):
            ks.store(StoreMode.SET, b"k%d" % i, b"v", 0, 0, 0)
        ks.flush(0)
        self.assertEqual(ks.stats()["curr_items"], 0)
        self.assertIsNone(ks.get(b"k1"))
        held = [sum(map(len, ks._flushed))]
        while ks._flushed:
            clock.turn()
            held.append(sum(map(len, ks._flushed)))
        self.assertEqual(held, [count, count - memory.FREE_SLICE, 5, 0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_smallFlushAtOnce(self):
        """
        A keyspace of L{memory.FREE_SLICE} items or fewer frees them with
        the flush, leaving nothing scheduled.
        """
        clock = Clock()
        ks = MemoryStore(clock).keyspace(1, 1 << 30, 1000)
        for i in range(100):
            ks.store(StoreMode.SET, b"k%d" % i, b"v", 0, 0, 0)
        ks.flush(0)
        self.assertEqual((ks._flushed, clock.getDelayedCalls()), ([], []))

    def test_storesDuringTheFreeing(self):
        """
        Stores and a second flush while flushed items are being freed
        touch only the new dicts.
        """
        clock = Clock()
        ks = MemoryStore(clock).keyspace(1, 1 << 30, 1000)
        for i in range(3 * memory.FREE_SLICE):
            ks.store(StoreMode.SET, b"k%d" % i, b"v", 0, 0, 0)
        ks.flush(0)
        clock.advance(0)
        ks.store(StoreMode.SET, b"k1", b"new", 0, 0, 0)
        self.assertEqual(itemValue(ks.get(b"k1")), b"new")
        ks.flush(0)
        self.assertIsNone(ks.get(b"k1"))
        while ks._flushed:
            clock.advance(0)
        self.assertEqual(len(clock.getDelayedCalls()), 0)
