"""
The segment store (L{memcachier.stores.segment}, its keyspace in C,
C{memcachier/_segments.c}) passes the public store conformance suite; the
store-agnostic behaviours the memory store's tests pin run against both
stores; random operations applied to both give the same answers; and what
segments themselves promise (bounded memory, freed on flush and drop,
items larger than a segment, second chances) holds.

The sanitizer tier of C{scripts/test} runs this file against a build with
AddressSanitizer and UBSan: C{MEMCACHIER_SANITIZED_BUILD} then names the
directory its modules must come from (L{test_sanitizedBuildLoaded}).
"""

import os
import random
import struct

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from memcachier import _segments, commands, speedups
from memcachier.commands import (
    ITEM_ACTIVE,
    ITEM_FETCHED,
    U64,
    DeleteResult,
    DeltaResult,
    StoreMode,
    StoreResult,
    itemAtime,
    itemCas,
    itemExptime,
    itemFetched,
    itemFlags,
    itemValue,
    packItem,
)
from memcachier.interfaces import IKeyspace, ISnapshottableStore, IStore, IStorePlugin
from memcachier.stores.discovery import findStorePlugin, makeStore
from memcachier.stores.memory import ITEM_OVERHEAD, MemoryStore
from memcachier.stores.segment import SegmentStore
from memcachier.testing import StoreConformanceTests

MiB = 1024 * 1024


class SegmentStoreTests(StoreConformanceTests, SynchronousTestCase):
    def makeStore(self, clock):
        return SegmentStore(clock)


class StoreBehaviourTests:
    """
    Behaviours of the memory store that any store of items in this
    process should have, run against both stores.
    """

    maxBytes = 64 * 1024
    maxItemSize = MiB

    def makeStore(self, clock):
        raise NotImplementedError("makeStore")

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = self.makeStore(self.clock)
        self.ks = self.store.keyspace(1, self.maxBytes, self.maxItemSize)

    def set(self, key, value, flags=0, exptime=0, mode=StoreMode.SET, cas=0, ks=None):
        return (ks or self.ks).store(mode, key, value, flags, exptime, cas)

    def fill(self, prefix, count, exptime=0, size=1000):
        for i in range(count):
            self.set(b"%s%d" % (prefix, i), b"v" * size, exptime=exptime)

    def test_casUniqueAcrossKeyspaces(self):
        """
        Every store, in any keyspace of the store, gets a CAS unique never
        handed out before, including one stored already expired.
        """
        other = self.store.keyspace(2, self.maxBytes, self.maxItemSize)
        seen = [
            self.set(b"a", b"1")[1],
            self.set(b"a", b"2", ks=other)[1],
            self.set(b"b", b"3", exptime=-1)[1],
            self.ks.delta(b"n", True, 1, 0, 0, 0)[2],
            self.ks.delta(b"n", True, 1, None, 0, 0)[2],
            self.set(b"a", b"x", mode=StoreMode.APPEND)[1],
        ]
        self.assertEqual(len(set(seen)), len(seen))
        self.assertNotIn(0, seen)
        self.assertEqual(seen, sorted(seen))

    def test_decrPadsLikeMemcached(self):
        """
        A decr that shortens the number leaves the value's length as it
        was, padded with spaces, as memcached's in-place rewrite does.
        """
        self.set(b"n", b"100")
        self.ks.delta(b"n", False, 1, None, 0, 0)
        self.assertEqual(itemValue(self.ks.get(b"n")), b"99 ")
        self.assertEqual(self.ks.delta(b"n", True, 1, None, 0, 0)[1], 100)
        self.assertEqual(self.ks.delta(b"n", True, 900, None, 0, 0)[1], 1000)
        self.assertEqual(itemValue(self.ks.get(b"n")), b"1000")

    def test_deltaParsing(self):
        """
        incr/decr read a value as memcached's C{strtoull} does here:
        decimal digits, then spaces; anything else, an empty value or a
        number of 2**64 or more is not numeric.
        """
        for value, number in [
            (b"0", 0), (b"7  ", 7), (b"007", 7), (b"%d" % (U64 - 1), U64 - 1),
        ]:
            self.set(b"k", value)
            self.assertEqual(self.ks.delta(b"k", True, 0, None, 0, 0)[:2], (DeltaResult.OK, number))
        for value in [b"", b" 7", b"-1", b"1.5", b"%d" % U64, b"1" * 21, b"12a", b"\xd9\xa1"]:
            self.set(b"k", value)
            self.assertEqual(
                self.ks.delta(b"k", True, 1, None, 0, 0)[0], DeltaResult.NON_NUMERIC, value
            )

    def test_deltaKeepsFlagsAndExpiry(self):
        """
        incr keeps the flags and the expiry and gives a new CAS; a CAS
        that does not match refuses; a missing key is created with the
        initial value and the given expiry.
        """
        _, cas = self.set(b"n", b"5", flags=9, exptime=self.clock.seconds() + 100)
        self.assertEqual(self.ks.delta(b"n", True, 1, None, 0, cas + 1)[0], DeltaResult.EXISTS)
        result, value, newCas = self.ks.delta(b"n", True, 1, None, 0, cas)
        self.assertEqual((result, value), (DeltaResult.OK, 6))
        item = self.ks.get(b"n")
        self.assertEqual((itemFlags(item), itemCas(item)), (9, newCas))
        self.assertEqual(itemExptime(item), int(self.clock.seconds()) + 100)
        self.ks.delta(b"m", False, 1, 42, self.clock.seconds() + 5, 0)
        self.assertEqual(itemValue(self.ks.get(b"m")), b"42")
        self.clock.advance(5)
        self.assertIsNone(self.ks.get(b"m"))

    def test_appendPrependLimits(self):
        """
        append/prepend up to the item size limit store; one byte more is
        NOT_STORED and leaves the item as it was; replace is held to the
        limit too; a CAS must match.
        """
        ks = self.store.keyspace(3, self.maxBytes, 10)
        _, cas = self.set(b"k", b"12345678", ks=ks)
        self.assertEqual(self.set(b"k", b"9", mode=StoreMode.APPEND, cas=cas + 1, ks=ks)[0],
                         StoreResult.EXISTS)
        self.assertEqual(self.set(b"k", b"9", mode=StoreMode.APPEND, ks=ks)[0], StoreResult.STORED)
        self.assertEqual(self.set(b"k", b"0", mode=StoreMode.PREPEND, ks=ks)[0],
                         StoreResult.NOT_STORED)
        self.assertEqual(itemValue(ks.get(b"k")), b"123456789")
        self.assertEqual(self.set(b"k", b"0123456789", mode=StoreMode.REPLACE, ks=ks)[0],
                         StoreResult.NOT_STORED)
        self.assertEqual(self.set(b"k", b"", mode=StoreMode.APPEND, ks=ks)[0], StoreResult.STORED)

    def test_fractionalExptimeNeverEarly(self):
        """
        Items keep whole-second expiry times rounded up: an item never
        expires before the time it was given.
        """
        self.clock.advance(0.25)
        self.set(b"k", b"v", exptime=self.clock.seconds() + 10)
        self.clock.advance(9.9)
        self.assertIsNotNone(self.ks.get(b"k"))
        self.clock.advance(1)
        self.assertIsNone(self.ks.get(b"k"))

    def test_expiryRules(self):
        """
        An expired item is a miss for every command: get, peek, touch,
        delete, delta, replace, cas and append; add and set store over it.
        """
        commandsOnExpired = [
            lambda: self.ks.get(b"k"),
            lambda: self.ks.peek(b"k"),
            lambda: self.ks.touch(b"k", 0),
            lambda: self.ks.getMany([b"k"])[0],
        ]
        for call in commandsOnExpired:
            self.set(b"k", b"1", exptime=self.clock.seconds() + 1)
            self.clock.advance(1)
            self.assertIsNone(call())
        self.set(b"k", b"1", exptime=self.clock.seconds() + 1)
        self.clock.advance(1)
        self.assertEqual(self.ks.delete(b"k", 0), DeleteResult.NOT_FOUND)
        self.set(b"k", b"1", exptime=self.clock.seconds() + 1)
        _, cas = self.set(b"k", b"1", exptime=self.clock.seconds() + 1)
        self.clock.advance(1)
        self.assertEqual(self.ks.delta(b"k", True, 1, None, 0, 0)[0], DeltaResult.NOT_FOUND)
        for mode in (StoreMode.REPLACE, StoreMode.APPEND, StoreMode.PREPEND):
            self.set(b"k", b"1", exptime=self.clock.seconds() + 1)
            self.clock.advance(1)
            self.assertEqual(self.set(b"k", b"2", mode=mode)[0], StoreResult.NOT_STORED)
        _, cas = self.set(b"k", b"1", exptime=self.clock.seconds() + 1)
        self.clock.advance(1)
        self.assertEqual(self.set(b"k", b"2", mode=StoreMode.CAS, cas=cas)[0], StoreResult.NOT_FOUND)
        self.assertEqual(self.set(b"k", b"2", mode=StoreMode.ADD)[0], StoreResult.STORED)
        self.assertEqual(itemValue(self.ks.get(b"k")), b"2")
        self.assertGreater(self.ks.stats()["reclaimed"], 0)

    def test_storedAlreadyExpired(self):
        """
        A store with an expiry not after now answers STORED and removes
        the key (memcached stores the item and it is expired at once).
        """
        self.set(b"k", b"1")
        self.assertEqual(self.set(b"k", b"2", exptime=self.clock.seconds())[0], StoreResult.STORED)
        self.assertIsNone(self.ks.get(b"k"))
        self.assertEqual(self.ks.stats()["curr_items"], 0)

    def test_touchIntoThePast(self):
        """
        Touching with an expiry in the past (the session's C{-1} for a
        negative wire exptime) expires the item; touching to 0 keeps it.
        """
        self.set(b"k", b"v", exptime=self.clock.seconds() + 5)
        self.assertEqual(itemExptime(self.ks.touch(b"k", 0)), 0)
        self.clock.advance(10)
        self.assertIsNotNone(self.ks.touch(b"k", -1))
        self.assertIsNone(self.ks.get(b"k"))

    def test_hitMarksFetched(self):
        """
        The first hit marks the item fetched and stamps its access time;
        a peek does neither.
        """
        self.set(b"k", b"v")
        self.clock.advance(30)
        self.assertFalse(itemFetched(self.ks.peek(b"k")))
        first = self.ks.get(b"k")
        self.assertTrue(itemFetched(first))
        self.assertEqual(itemAtime(first), int(self.clock.seconds()))
        self.clock.advance(30)
        self.assertEqual(self.ks.get(b"k"), first)

    def test_multiGetNamingAKeyAgainHoldsOneCopy(self):
        """
        A multi-get naming a big value's key many times holds that value
        once, not once per name: a 256 KiB get line may name a 1 MiB key
        65,000 times.
        """
        value = b"v" * 4096
        self.set(b"big", value)
        items = self.ks.getMany([b"big"] * 1000 + [b"missing", b"big"])
        self.assertIsNone(items[1000])
        hits = items[:1000] + items[1001:]
        self.assertTrue(all(item is hits[0] for item in hits))
        self.assertTrue(bytes(hits[0]).endswith(value))

    def test_flushWithDelay(self):
        """
        flush(delay) empties the keyspace when the delay has passed,
        items stored during the delay included; a later flush replaces a
        pending one; flush(0) cancels it.
        """
        self.set(b"a", b"1")
        self.ks.flush(10)
        self.clock.advance(5)
        self.set(b"b", b"2")
        self.ks.flush(20)
        self.clock.advance(10)
        self.assertIsNotNone(self.ks.get(b"a"))
        self.clock.advance(10)
        self.assertEqual((self.ks.get(b"a"), self.ks.get(b"b")), (None, None))
        self.set(b"c", b"3")
        self.ks.flush(10)
        self.ks.flush(0)
        self.set(b"d", b"4")
        self.clock.advance(20)
        self.assertIsNotNone(self.ks.get(b"d"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_statsNames(self):
        """
        stats() has memcached's names, every one an int, C{expired}
        counting what C{reclaimed} counts.
        """
        self.set(b"k", b"v")
        stats = self.ks.stats()
        self.assertEqual(set(stats), {
            "curr_items", "total_items", "bytes", "limit_maxbytes", "evictions",
            "evicted_unfetched", "expired_unfetched", "reclaimed", "get_expired",
            "get_flushed", "expired",
        })
        self.assertTrue(all(type(value) is int for value in stats.values()))
        self.assertEqual(stats["bytes"], 1 + 1 + ITEM_OVERHEAD)

    def test_storingOverExpiredDoesNotGrow(self):
        """
        Storing new keys while older ones have expired reuses their room:
        the memory the cache holds does not grow, and nothing is evicted.
        """
        self.fill(b"exp", 40, exptime=self.clock.seconds() + 10)
        held = self.ks.stats()["bytes"]
        self.clock.advance(20)
        self.fill(b"new", 40)
        stats = self.ks.stats()
        self.assertLessEqual(stats["bytes"], held)
        self.assertEqual((stats["curr_items"], stats["evictions"]), (40, 0))

    def test_evictsWhenEverythingIsActive(self):
        """
        A keyspace whose every item was hit still evicts (second chances
        are bounded) and stays within its limit.
        """
        self.fill(b"a", 60)
        self.ks.getMany([b"a%d" % i for i in range(60)])
        self.fill(b"b", 60)
        stats = self.ks.stats()
        self.assertLessEqual(stats["bytes"], self.maxBytes)
        self.assertGreater(stats["evictions"], 0)
        self.assertIsNotNone(self.ks.get(b"b59"))

    def test_replacedKeyCountsAsRecent(self):
        """
        A key stored again is as recent as a new one: it outlives keys
        stored once before it.
        """
        self.set(b"k0", b"v" * 1000)
        self.fill(b"a", 50)
        self.set(b"k0", b"w" * 1000)
        self.fill(b"b", 30)
        self.assertEqual(itemValue(self.ks.get(b"k0")), b"w" * 1000)
        self.assertIsNone(self.ks.get(b"a0"))
        self.assertGreater(self.ks.stats()["evictions"], 0)


class MemoryStoreBehaviourTests(StoreBehaviourTests, SynchronousTestCase):
    def makeStore(self, clock):
        return MemoryStore(clock)


class SegmentStoreBehaviourTests(StoreBehaviourTests, SynchronousTestCase):
    def makeStore(self, clock):
        return SegmentStore(clock)


class SegmentsTests(SynchronousTestCase):
    """
    What the segments promise.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = SegmentStore(self.clock)

    def test_layoutIsTheCommandsOne(self):
        """
        The prefix offsets C{_segments.c} writes are the ones
        L{memcachier.commands} states, and its items read back through
        the accessors as L{packItem} builds them, byte for byte.
        """
        c = _segments
        self.assertEqual(
            (c.ITEM_CAS_AT, c.ITEM_EXPTIME_AT, c.ITEM_ATIME_AT, c.ITEM_BITS_AT,
             c.ITEM_SUFFIX_LENGTH_AT, c.ITEM_PREFIX_SIZE),
            (commands.ITEM_CAS_AT, commands.ITEM_EXPTIME_AT, commands.ITEM_ATIME_AT,
             commands.ITEM_BITS_AT, commands.ITEM_SUFFIX_LENGTH_AT, commands.ITEM_PREFIX_SIZE),
        )
        self.assertEqual(
            (c.ITEM_FETCHED, c.ITEM_ACTIVE, c.ITEM_EXPIRES, c.ITEM_OVERHEAD),
            (commands.ITEM_FETCHED, commands.ITEM_ACTIVE, commands.ITEM_EXPIRES, ITEM_OVERHEAD),
        )
        self.assertEqual(commands.ITEM_PREFIX_FORMAT, "<QIIBB")
        ks = self.store.keyspace(1, MiB, MiB)
        for key, value, flags, exptime in [
            (b"a", b"", 0, 0), (b"b", b"v", 2**32 - 1, 2_000_000),
            (b"c", b"\r\n\x00" * 100, 10, 1_000_000.5),
        ]:
            _, cas = ks.store(StoreMode.SET, key, value, flags, exptime, 0)
            item = ks.peek(key)
            self.assertEqual(item, packItem(value, flags, exptime, cas, 1_000_000, 0))
            item = ks.get(key)
            self.assertEqual(
                item, packItem(value, flags, exptime, cas, 1_000_000, ITEM_FETCHED | ITEM_ACTIVE)
            )
            self.assertEqual(struct.unpack_from(commands.ITEM_PREFIX_FORMAT, item)[0], cas)

    def test_interfaces(self):
        """
        The store is snapshottable, its keyspaces are keyspaces.
        """
        self.assertTrue(verifyObject(ISnapshottableStore, self.store))
        self.assertTrue(verifyObject(IKeyspace, self.store.keyspace(1, MiB, MiB)))

    def test_itemsLargerThanASegment(self):
        """
        An item larger than a segment gets a segment of its own, up to
        the item size limit, and reads back whole; freed when it goes.
        """
        ks = self.store.keyspace(1, 64 * MiB, 4 * MiB)
        size = ks.segmentStats()["segment_size"]
        self.assertEqual(size, _segments.SEGMENT_MAX)
        for n in (size - 40, size, size + 1, 4 * MiB - 3):
            value = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
            self.assertEqual(ks.store(StoreMode.SET, b"big", value, 0, 0, 0)[0], StoreResult.STORED)
            self.assertEqual(itemValue(ks.get(b"big")), value)
            ks.store(StoreMode.SET, b"small", b"s", 0, 0, 0)
            self.assertEqual(itemValue(ks.get(b"small")), b"s")
        ks.delete(b"big", 0)
        ks.store(StoreMode.SET, b"x", b"x", 0, 0, 0)
        ks.store(StoreMode.SET, b"x", b"y", 0, 0, 0)
        self.clock.advance(2)
        ks.store(StoreMode.SET, b"z", b"z", 0, 0, 0)
        self.assertLessEqual(ks.segmentStats()["segment_bytes"], 2 * (size + 4096))

    def test_tooLargeForTheLimit(self):
        """
        An item that cannot fit even in an empty keyspace is NO_MEMORY.
        """
        ks = self.store.keyspace(1, 10_000, MiB)
        self.assertEqual(ks.store(StoreMode.SET, b"k", b"v" * 10_000, 0, 0, 0),
                         (StoreResult.NO_MEMORY, 0))
        self.assertEqual(ks.stats()["curr_items"], 0)

    def test_segmentsBoundedUnderOverwrites(self):
        """
        Overwriting the same keys again and again leaves dead space that
        is compacted or evicted: the segments stay within the limit plus
        an eighth plus two segments, and every key is still there.
        """
        ks = self.store.keyspace(1, 4 * MiB, MiB)
        for round in range(30):
            for i in range(2000):
                ks.store(StoreMode.SET, b"key:%d" % i, b"%d" % round * 50, 0, 0, 0)
            stats = ks.segmentStats()
            self.assertLessEqual(stats["segment_bytes"], stats["segment_limit"] + 4096)
        self.assertEqual(ks.stats()["evictions"], 0)
        self.assertEqual(len(ks.keys()), 2000)
        self.assertEqual(itemValue(ks.get(b"key:7")), b"29" * 50)

    def test_deadSpaceWithinAnEighth(self):
        """
        Cold keys stored once and a few hot keys overwritten again and
        again: the dead space the overwrites leave is compacted (the cold
        items move forward), nothing is evicted under the limit, and the
        written bytes stay within the live items plus an eighth plus three
        segments.
        """
        ks = self.store.keyspace(1, 64 * MiB, MiB)
        for i in range(20_000):
            ks.store(StoreMode.SET, b"cold:%d" % i, b"c" * 200, 0, 0, 0)
        for i in range(200_000):
            ks.store(StoreMode.SET, b"hot:%d" % (i % 10), b"h" * 200, 0, 0, 0)
        stats = ks.segmentStats()
        self.assertEqual((stats["written"], stats["live_span"]),
                         (stats["written_bytes"], stats["live_bytes"]))
        self.assertLessEqual(
            stats["written"] - stats["live_span"],
            # checked each time a segment is added: the one being written
            # fills with dead items before the next check
            stats["live_span"] // 8 + 3 * stats["segment_size"],
        )
        self.assertEqual(ks.stats()["evictions"], 0)
        self.assertEqual(len(ks.keys()), 20_010)

    def test_segmentsBoundedUnderNewKeys(self):
        """
        New keys of every size past the limit: bytes within the limit,
        segments within their bound.
        """
        ks = self.store.keyspace(1, 2 * MiB, MiB)
        for i in range(20_000):
            ks.store(StoreMode.SET, b"key:%d" % i, b"v" * (100 + i % 900), 0, 0, 0)
            if i % 1000 == 0:
                self.assertLessEqual(ks.stats()["bytes"], 2 * MiB)
                stats = ks.segmentStats()
                self.assertLessEqual(stats["segment_bytes"], stats["segment_limit"] + 4096)
        self.assertGreater(ks.stats()["evictions"], 0)
        self.assertEqual(itemValue(ks.get(b"key:19999")), b"v" * (100 + 19999 % 900))

    def test_roomMadeInSteps(self):
        """
        No store pays for a whole segment: past the limit, with new keys
        evicting old ones and overwrites leaving dead space, each store
        evicts or moves on at most a step (DRAIN_STEP bytes) of the oldest
        segment, not the thousands of items a segment holds; and the
        steps keep up, so no segment is ever drained in one go.
        """
        ks = self.store.keyspace(1, 16 * MiB, MiB)
        value = b"v" * 100
        for i in range(100_000):
            ks.store(StoreMode.SET, b"key:%d" % i, value, 0, 0, 0)
        rng = random.Random(7)
        fresh = 100_000
        evictions = ks.stats()["evictions"]
        written = ks.segmentStats()["written"]
        mostEvicted = mostWritten = 0
        for n in range(60_000):
            if n % 2:
                key = b"key:%d" % fresh
                fresh += 1
            else:
                key = b"key:%d" % rng.randrange(fresh)
            ks.store(StoreMode.SET, key, value, 0, 0, 0)
            now, written = written, ks.segmentStats()["written"]
            mostWritten = max(mostWritten, written - now)
            now, evictions = evictions, ks.stats()["evictions"]
            mostEvicted = max(mostEvicted, evictions - now)
        # every item takes more than its 100-byte value
        self.assertGreater(evictions, 20_000)
        self.assertLessEqual(mostEvicted, _segments.DRAIN_STEP // 100)
        # the copies compaction makes, and the item stored
        self.assertGreater(mostWritten, 256)
        self.assertLessEqual(mostWritten, _segments.DRAIN_STEP + 256)
        stats = ks.segmentStats()
        self.assertEqual(stats["whole_drains"], 0)
        self.assertLessEqual(stats["segment_bytes"], stats["segment_limit"])
        self.assertLessEqual(
            stats["written"] - stats["live_span"],
            stats["live_span"] // 8 + 2 * stats["segment_size"],
        )
        self.assertEqual(itemValue(ks.get(key)), value)

    def test_partlyDrainedSegment(self):
        """
        A segment drained part of the way still answers for the items it
        has left: the keys listed are those held, each a hit, the evicted
        ones misses; and when its items expire it is freed whole with the
        others.
        """
        ks = self.store.keyspace(1, 16 * MiB, MiB)
        expiry = self.clock.seconds() + 10
        n = 0
        while ks.stats()["evictions"] == 0:
            ks.store(StoreMode.SET, b"k%d" % n, b"v" * 100, 0, expiry, 0)
            n += 1
        stats = ks.stats()
        # one step of the oldest segment went, not the segment
        self.assertLess(stats["evictions"], _segments.DRAIN_STEP // 100)
        self.assertGreater(ks.segmentStats()["segments"], 10)
        held = set(ks.keys())
        self.assertEqual(len(held), stats["curr_items"])
        self.assertEqual(len(held), n - stats["evictions"])
        for i in range(n):
            key = b"k%d" % i
            self.assertEqual(ks.peek(key) is not None, key in held, key)
        self.assertIsNone(ks.peek(b"k0"))
        self.assertIn(b"k%d" % (n - 1), held)
        self.clock.advance(11)
        ks.store(StoreMode.SET, b"last", b"l", 0, 0, 0)
        self.assertEqual(ks.segmentStats()["segments"], 1)
        self.assertEqual(ks.stats()["curr_items"], 1)

    def test_flushAndDropFreeSegments(self):
        """
        A flushed keyspace holds no segment and a minimal index; a
        dropped one is forgotten.
        """
        ks = self.store.keyspace(1, 64 * MiB, MiB)
        for i in range(50_000):
            ks.store(StoreMode.SET, b"k%d" % i, b"v" * 100, 0, 0, 0)
        self.assertGreater(ks.segmentStats()["segments"], 4)
        ks.flush(0)
        stats = ks.segmentStats()
        self.assertEqual((stats["segments"], stats["segment_bytes"], stats["index_slots"]),
                         (0, 0, _segments.INDEX_MIN_SLOTS))
        self.assertEqual((ks.stats()["curr_items"], ks.stats()["bytes"]), (0, 0))
        ks.store(StoreMode.SET, b"k1", b"again", 0, 0, 0)
        self.assertEqual(itemValue(ks.get(b"k1")), b"again")
        self.store.dropKeyspace(1)
        self.assertEqual(ks.segmentStats()["segments"], 0)
        self.assertIsNot(self.store.keyspace(1, MiB, MiB), ks)

    def test_activeItemsCopiedOnce(self):
        """
        An item hit since it was stored survives the eviction of its
        segment (copied to the newest, its mark cleared); not hit again,
        it is evicted the next time round.
        """
        ks = self.store.keyspace(1, MiB, MiB)
        ks.store(StoreMode.SET, b"hot", b"h" * 1000, 0, 0, 0)
        ks.get(b"hot")
        for i in range(1100):
            ks.store(StoreMode.SET, b"a%d" % i, b"v" * 1000, 0, 0, 0)
        self.assertIsNone(ks.get(b"a0"))
        self.assertFalse(ks.peek(b"hot")[commands.ITEM_BITS_AT] & ITEM_ACTIVE)
        for i in range(1100):
            ks.store(StoreMode.SET, b"b%d" % i, b"v" * 1000, 0, 0, 0)
        self.assertIsNone(ks.get(b"hot"))
        self.assertGreater(ks.stats()["evictions"], 1100)

    def test_expiredSegmentsFreedWhole(self):
        """
        Segments whose items have all expired are freed, a second after
        the last look at most, with the next store.
        """
        ks = self.store.keyspace(1, 64 * MiB, MiB)
        for i in range(20_000):
            ks.store(StoreMode.SET, b"e%d" % i, b"v" * 100, 0, self.clock.seconds() + 10, 0)
        held = ks.segmentStats()["segments"]
        self.assertGreater(held, 1)
        self.clock.advance(11)
        ks.store(StoreMode.SET, b"new", b"n", 0, 0, 0)
        self.assertEqual(ks.segmentStats()["segments"], 1)
        stats = ks.stats()
        self.assertEqual((stats["curr_items"], stats["reclaimed"]), (1, 20_000))
        self.assertEqual(stats["expired_unfetched"], 20_000)

    def test_configureShrinks(self):
        """
        A smaller limit evicts at once and the segments follow it.
        """
        ks = self.store.keyspace(1, 8 * MiB, MiB)
        for i in range(40_000):
            ks.store(StoreMode.SET, b"k%d" % i, b"v" * 150, 0, 0, 0)
        ks.configure(MiB, 1000)
        self.assertLessEqual(ks.stats()["bytes"], MiB)
        stats = ks.segmentStats()
        self.assertLessEqual(stats["segment_bytes"], stats["segment_limit"] + 4096)
        self.assertEqual((ks.maxBytes, ks.maxItemSize), (MiB, 1000))
        self.assertEqual(itemValue(ks.get(b"k39999")), b"v" * 150)

    def test_snapshotRoundTrip(self):
        """
        A snapshot lists the live items oldest first, and restoring it into
        a new store (memory or segment) gives the same items; CAS uniques
        resume above the floor.
        """
        ks = self.store.keyspace(5, 64 * MiB, MiB)
        for i in range(3000):
            ks.store(StoreMode.SET, b"k%d" % i, b"%d" % i * (i % 7), i, 0, 0)
        ks.store(StoreMode.SET, b"gone", b"x", 0, self.clock.seconds() + 1, 0)
        ks.delete(b"k5", 0)
        ks.get(b"k6")
        ks.flush(30)
        self.clock.advance(1)
        pairs = list(self.store.snapshotItems(5))
        self.assertEqual([key for key, _ in pairs], [b"k%d" % i for i in range(3000) if i != 5])
        self.assertEqual(self.store.pendingFlush(5), self.clock.seconds() + 29)
        floor = self.store.casFloor()
        for other in (SegmentStore(self.clock), MemoryStore(self.clock)):
            self.assertEqual(other.restoreItems(5, 64 * MiB, MiB, iter(pairs)), len(pairs))
            other.resumeCas(floor)
            restored = other.keyspace(5, 64 * MiB, MiB)
            self.assertEqual([restored.peek(k) for k, _ in pairs], [i for _, i in pairs])
            self.assertGreater(restored.store(StoreMode.SET, b"n", b"1", 0, 0, 0)[1], floor)
        back = SegmentStore(self.clock)
        back.restoreItems(5, 64 * MiB, MiB, other.snapshotItems(5))
        self.assertEqual(list(back.snapshotItems(5)), list(other.snapshotItems(5)))

    def test_restoreSkipsAndEvicts(self):
        """
        Restoring skips expired and too large items and evicts the oldest
        to fit a smaller limit.
        """
        now = self.clock.seconds()
        items = [(b"old", packItem(b"o", 0, now - 1, 1))]
        items += [(b"big", packItem(b"b" * 2000, 0, 0, 2))]
        items += [(b"k%d" % i, packItem(b"v" * 1000, 0, 0, 3 + i)) for i in range(100)]
        ks = self.store.keyspace(1, 32 * 1024, 1500)
        self.assertEqual(self.store.restoreItems(1, 32 * 1024, 1500, items), 100)
        self.assertLessEqual(ks.stats()["bytes"], 32 * 1024)
        self.assertIsNone(ks.get(b"old"))
        self.assertIsNone(ks.get(b"big"))
        self.assertIsNone(ks.get(b"k0"))
        self.assertEqual(itemCas(ks.get(b"k99")), 102)

    def test_refusesBadArguments(self):
        """
        Keys of 0 or more than 255 bytes, flags beyond 32 bits and unknown
        modes are errors, not crashes; the keyspace is unchanged.
        """
        ks = self.store.keyspace(1, MiB, MiB)
        self.assertRaises(ValueError, ks.get, b"")
        self.assertRaises(ValueError, ks.get, b"k" * 256)
        self.assertRaises(ValueError, ks.getMany, [b"ok", b""])
        self.assertRaises(TypeError, ks.get, 5)
        self.assertRaises(OverflowError, ks.store, StoreMode.SET, b"k", b"v", 2**32, 0, 0)
        self.assertRaises(ValueError, ks.store, 99, b"k", b"v", 0, 0, 0)
        self.assertRaises(TypeError, ks.store, StoreMode.SET, b"k")
        self.assertRaises(ValueError, ks.delta, b"k", False, -1, None, 0, 0)
        self.assertRaises(ValueError, ks.snapshotBatch, 999, 0, 10)
        self.assertEqual(ks.stats()["curr_items"], 0)
        ks.store(StoreMode.SET, b"n", b"5", 0, 0, 0)
        self.assertEqual(ks.delta(b"n", False, 2**70, None, 0, 0)[:2], (DeltaResult.OK, 0))
        self.assertEqual(ks.delta(b"n", True, 2**64 + 3, None, 0, 0)[:2], (DeltaResult.OK, 3))

    def test_clockThatChangesTheKeyspace(self):
        """
        The clock is Python code: one that flushes or refills the keyspace
        when read (never a reactor's, but possible) leaves a get, a
        multi-get and a touch answering from what is there afterwards.
        """
        class MeddlingClock(Clock):
            meddle = None

            def seconds(self):
                if self.meddle is not None:
                    meddle, self.meddle = self.meddle, None
                    meddle()
                return Clock.seconds(self)

        clock = MeddlingClock()
        clock.advance(1000)
        ks = SegmentStore(clock).keyspace(1, MiB, MiB)
        ks.store(StoreMode.SET, b"k", b"v", 0, 0, 0)
        clock.meddle = lambda: ks.flushNow()
        self.assertIsNone(ks.get(b"k"))
        ks.store(StoreMode.SET, b"k", b"v", 0, 0, 0)
        clock.meddle = lambda: [ks.flushNow(), ks.store(StoreMode.SET, b"k", b"new" * 300, 0, 0, 0)]
        self.assertEqual([itemValue(i) for i in ks.getMany([b"k", b"k"])], [b"new" * 300] * 2)
        ks.store(StoreMode.SET, b"t", b"v", 0, 0, 0)
        clock.meddle = lambda: ks.delete(b"t", 0)
        self.assertIsNone(ks.touch(b"t", 0))

    def test_keysUpTo255Bytes(self):
        """
        Keys of 255 bytes (beyond memcached's 250) and binary keys are
        stored.
        """
        ks = self.store.keyspace(1, MiB, MiB)
        for key in (b"k" * 255, b"\x00\xff", b"k"):
            ks.store(StoreMode.SET, key, key, 0, 0, 0)
        self.assertEqual(sorted(ks.keys()), sorted([b"k" * 255, b"\x00\xff", b"k"]))

    def test_indexGrowsAndShrinks(self):
        """
        The index grows with the items (at most 3/4 of its slots used) and
        shrinks after they are deleted and new keys come.
        """
        ks = self.store.keyspace(1, 256 * MiB, MiB)
        for i in range(100_000):
            ks.store(StoreMode.SET, b"k%d" % i, b"v", 0, 0, 0)
        slots = ks.segmentStats()["index_slots"]
        self.assertGreaterEqual(slots * 3, 100_000 * 4)
        for i in range(100_000):
            self.assertEqual(ks.delete(b"k%d" % i, 0), DeleteResult.DELETED)
        for i in range(100_000):
            ks.store(StoreMode.SET, b"n%d" % (i % 10), b"v", 0, 0, 0)
        self.assertLess(ks.segmentStats()["index_slots"], slots)
        self.assertEqual(len(ks.keys()), 10)


def test_segmentPlugin():
    """
    The C{segment} plugin is found in L{memcachier.plugins} and makes a
    L{SegmentStore}.
    """
    plugin = findStorePlugin("segment")
    assert verifyObject(IStorePlugin, plugin)
    store = makeStore("segment", {}, Clock())
    assert verifyObject(IStore, store)
    assert isinstance(store, SegmentStore)


def test_sanitizedBuildLoaded():
    """
    Under the sanitizer tier (C{MEMCACHIER_SANITIZED_BUILD} names the
    build directory), the C modules imported are the sanitized ones.
    """
    build = os.environ.get("MEMCACHIER_SANITIZED_BUILD")
    if build is None:
        assert _segments.__file__.startswith(os.path.dirname(commands.__file__))
        return
    for module in (_segments, speedups.accelerator):
        assert module is not None
        assert os.path.realpath(module.__file__).startswith(os.path.realpath(build) + os.sep)
    print(f"sanitized build: {_segments.__file__} {speedups.accelerator.__file__}")


_keys = st.sampled_from([b"a", b"b", b"c", b"counter", b"k" * 200])
_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"0", b"5", b"99", b"18446744073709551615", b"12 ", b"x"]),
    st.binary(min_size=3000, max_size=5000),
)


class Differential(RuleBasedStateMachine):
    """
    The same random operations on a memory store and a segment store
    (eviction out of the way: a large limit) give the same answers.
    """

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.memory = MemoryStore(self.clock)
        self.segment = SegmentStore(self.clock)
        self.lastCas = 0

    def both(self, cacheId, method, *args):
        answers = [
            getattr(store.keyspace(cacheId, 64 * MiB, 10_000), method)(*args)
            for store in (self.memory, self.segment)
        ]
        return answers

    def same(self, answers):
        memory, segment = answers
        assert memory == segment, (memory, segment)
        return memory

    def sameItem(self, answers):
        memory, segment = answers
        if memory is None or segment is None:
            assert memory is segment, (memory, segment)
            return
        assert (itemValue(memory), itemFlags(memory), itemCas(memory), itemExptime(memory)) == (
            itemValue(segment), itemFlags(segment), itemCas(segment), itemExptime(segment)
        )

    @rule(cache=st.sampled_from([1, 2]), mode=st.sampled_from(list(StoreMode)), key=_keys,
          value=_values, flags=st.sampled_from([0, 1, 2**32 - 1]),
          exptime=st.sampled_from([0, -1, 0.5, 3, 3.5, 100]), useCas=st.booleans())
    def store(self, cache, mode, key, value, flags, exptime, useCas):
        exptime = exptime and self.clock.seconds() + exptime
        cas = self.lastCas if useCas or mode == StoreMode.CAS else 0
        result = self.same(self.both(cache, "store", mode, key, value, flags, exptime, cas))
        self.lastCas = result[1] or self.lastCas

    @rule(cache=st.sampled_from([1, 2]), keys=st.lists(_keys, max_size=40))
    def getMany(self, cache, keys):
        memory, segment = self.both(cache, "getMany", keys)
        for pair in zip(memory, segment):
            self.sameItem(pair)

    @rule(cache=st.sampled_from([1, 2]), key=_keys,
          method=st.sampled_from(["get", "peek"]))
    def get(self, cache, key, method):
        self.sameItem(self.both(cache, method, key))

    @rule(cache=st.sampled_from([1, 2]), key=_keys, exptime=st.sampled_from([0, -1, 2, 50]))
    def touch(self, cache, key, exptime):
        self.sameItem(self.both(cache, "touch", key, exptime and self.clock.seconds() + exptime))

    @rule(cache=st.sampled_from([1, 2]), key=_keys, useCas=st.booleans())
    def delete(self, cache, key, useCas):
        self.same(self.both(cache, "delete", key, self.lastCas if useCas else 0))

    @rule(cache=st.sampled_from([1, 2]), key=_keys, incr=st.booleans(),
          delta=st.sampled_from([0, 1, 7, 100, 2**64 - 1]),
          initial=st.sampled_from([None, 0, 10, 2**64 - 1]), useCas=st.booleans())
    def delta(self, cache, key, incr, delta, initial, useCas):
        result = self.same(self.both(
            cache, "delta", key, incr, delta, initial, 0, self.lastCas if useCas else 0
        ))
        self.lastCas = result[2] or self.lastCas

    @rule(cache=st.sampled_from([1, 2]), delay=st.sampled_from([0, 0, 2, 5]))
    def flush(self, cache, delay):
        self.both(cache, "flush", delay)

    @rule(seconds=st.sampled_from([0.5, 1, 3, 60]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @invariant()
    def sameKeys(self):
        for cache in (1, 2):
            memory, segment = self.both(cache, "keys")
            assert sorted(memory) == sorted(segment)


Differential.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDifferential = Differential.TestCase


def test_missingModuleSaysSo(monkeypatch):
    """
    Installed without the C module, the segment store refuses to be made
    and says what is missing.
    """
    from memcachier.stores import segment

    monkeypatch.setattr(segment, "_segments", None)
    try:
        SegmentStore(Clock())
    except segment.SegmentsMissing as e:
        assert "memcachier._segments" in str(e) and "C compiler" in str(e)
    else:
        raise AssertionError("SegmentStore was made without its C module")
