"""
Warm restart's snapshot (L{memcachier.node.snapshot}) with the memory
store: the round trip keeps every item exact (flags, absolute expiry, CAS)
and the LRU order, the CAS counter resumes above the snapshot's, expired
items and caches deleted meanwhile are dropped, a smaller plan keeps the
most recently used; a truncated, corrupt or other-version snapshot
restores nothing and starts cold with one log line, as does a start after
an unclean stop.
"""

import os
import shutil
import struct
import tempfile

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from memcachier.commands import StoreMode, itemCas, itemExptime, itemFlags, itemValue
from memcachier.control.model import Cache, Plan
from memcachier.control.repository import FlushGeneration
from memcachier.interfaces import ISnapshottableStore, IStore
from memcachier.node.snapshot import (
    CAS_PER_SECOND,
    FORMAT_VERSION,
    MAGIC,
    MANUAL_NAME,
    RUNNING_NAME,
    SNAPSHOT_NAME,
    TEMP_SUFFIX,
    SnapshotError,
    SnapshotReader,
    WarmRestart,
    cacheIdentity,
    restoreSnapshot,
    writeSnapshot,
)
from memcachier.stores.memory import SHARD_FROM, MemoryStore

NOW = 1_700_000_000.0
PLAN = Plan("100", 1 << 20, 250, 1 << 16)


def _cache(cacheId, uuid="u", cluster="default"):
    return Cache(cacheId, f"c{cacheId}", "", PLAN.slug, True, cluster, "s", 1000.0 + cacheId, NOW, uuid)


class FakeIndex:
    """
    The control index's C{cache} and C{planOf}.
    """

    def __init__(self, caches, plan=PLAN):
        self.caches = {c.id: c for c in caches}
        self.plan = plan
        self.flushes = {}

    def cache(self, cacheId):
        return self.caches.get(cacheId)

    def planOf(self, cacheId):
        return self.plan

    def flushGeneration(self, cacheId):
        return self.flushes.get(cacheId)


def _capture(testCase):
    events = []
    globalLogPublisher.addObserver(events.append)
    testCase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def _tempDir(testCase):
    """
    A fresh directory, removed after the test (trial's C{mktemp} would
    leave it in the working directory under pytest).
    """
    directory = tempfile.mkdtemp(prefix="snapshot-test-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    return directory


def _warmLines(events):
    return [e for e in events if e.get("event") == "warm_restart"]


class SnapshotTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.dir = _tempDir(self)
        self.path = os.path.join(self.dir, SNAPSHOT_NAME)

    def fill(self, store, cacheId, count, maxBytes=PLAN.memory, exptime=0):
        ks = store.keyspace(cacheId, maxBytes, PLAN.item_size)
        for i in range(count):
            ks.store(StoreMode.SET, b"k%d" % i, b"v%d-%d" % (cacheId, i), i, exptime, 0)
        return ks

    def items(self, store, cacheId):
        return list(store.snapshotItems(cacheId))

    def write(self, store, cacheIds):
        return writeSnapshot(self.path, store, [(c, cacheIdentity(_cache(c))) for c in cacheIds])

    def restore(self, store, index=None, now=None):
        index = index or FakeIndex([_cache(1), _cache(2)])

        def limitsOf(meta):
            cache = index.cache(meta["id"])
            if cache is None or cacheIdentity(cache) != {k: meta[k] for k in cacheIdentity(cache)}:
                return None
            return PLAN.memory, PLAN.item_size

        with open(self.path, "rb") as f:
            return restoreSnapshot(f, store, limitsOf, self.clock.seconds() if now is None else now)

    def test_interface(self):
        """
        The memory store provides L{ISnapshottableStore} as well as L{IStore}.
        """
        store = MemoryStore(self.clock)
        self.assertTrue(verifyObject(ISnapshottableStore, store))
        self.assertTrue(verifyObject(IStore, store))

    def test_roundTrip(self):
        """
        Every item comes back byte for byte (value, flags, absolute expiry,
        CAS), in LRU order, and new CAS uniques are above every old one.
        """
        store = MemoryStore(self.clock)
        self.fill(store, 1, 100)
        ks2 = self.fill(store, 2, 50, exptime=NOW + 3600)
        ks2.get(b"k0")  # bumped: ACTIVE, kept where it is
        before = {c: self.items(store, c) for c in (1, 2)}
        saved = self.write(store, [1, 2])
        self.assertEqual((saved.caches, saved.items), (2, 150))

        fresh = MemoryStore(self.clock)
        done, flushes = self.restore(fresh)
        self.assertEqual((done.caches, done.items, done.restored, done.dropped), (2, 150, 150, 0))
        self.assertEqual(flushes, [])
        for c in (1, 2):
            self.assertEqual(self.items(fresh, c), before[c])
        item = fresh.keyspace(2, PLAN.memory, PLAN.item_size).get(b"k7")
        self.assertEqual((itemValue(item), itemFlags(item), itemExptime(item)), (b"v2-7", 7, NOW + 3600))
        highest = max(itemCas(i) for c in (1, 2) for _, i in before[c])
        result, cas = fresh.keyspace(1, PLAN.memory, PLAN.item_size).store(
            StoreMode.SET, b"new", b"x", 0, 0, 0
        )
        self.assertGreater(cas, highest)

    def test_casResumesAboveDeletedItems(self):
        """
        The CAS counter resumes above every CAS handed out before the
        snapshot, those of items deleted since included.
        """
        store = MemoryStore(self.clock)
        ks = self.fill(store, 1, 10)
        _, lastCas = ks.store(StoreMode.SET, b"gone", b"x", 0, 0, 0)
        ks.delete(b"gone", 0)
        self.write(store, [1])
        fresh = MemoryStore(self.clock)
        self.restore(fresh)
        _, cas = fresh.keyspace(1, PLAN.memory, PLAN.item_size).store(StoreMode.SET, b"gone", b"y", 0, 0, 0)
        self.assertGreater(cas, lastCas)

    def test_shardedKeyspace(self):
        """
        A sharded keyspace (one of L{SHARD_FROM} bytes or more) hands out
        every live item once.
        """
        store = MemoryStore(self.clock)
        self.fill(store, 1, 3000, maxBytes=SHARD_FROM)
        keys = [k for k, _ in store.snapshotItems(1)]
        self.assertEqual(sorted(keys), sorted(b"k%d" % i for i in range(3000)))

    def test_expiredDropped(self):
        """
        Items expired by the time of the restore are not restored; the
        snapshot itself never holds items already expired when taken.
        """
        store = MemoryStore(self.clock)
        ks = self.fill(store, 1, 5)
        ks.store(StoreMode.SET, b"soon", b"x", 0, NOW + 10, 0)
        ks.store(StoreMode.SET, b"past", b"x", 0, NOW + 1, 0)
        self.clock.advance(2)
        self.assertEqual(self.write(store, [1]).items, 6)
        self.clock.advance(10)
        fresh = MemoryStore(self.clock)
        done, _ = self.restore(fresh)
        self.assertEqual((done.items, done.restored), (6, 5))
        self.assertIsNone(fresh.keyspace(1, PLAN.memory, PLAN.item_size).get(b"soon"))

    def test_deletedOrRecreatedCacheDropped(self):
        """
        Items of a cache deleted meanwhile, or deleted and created again
        under the same id, are dropped.
        """
        store = MemoryStore(self.clock)
        self.fill(store, 1, 5)
        self.fill(store, 2, 7)
        self.write(store, [1, 2])
        fresh = MemoryStore(self.clock)
        done, _ = self.restore(fresh, FakeIndex([_cache(2, uuid="other")]))
        self.assertEqual((done.caches, done.restored, done.dropped), (0, 0, 12))
        self.assertEqual(list(fresh.snapshotCaches()), [])

    def test_planShrank(self):
        """
        Restored into a smaller plan, a cache keeps its most recently used
        items: the oldest are evicted.
        """
        store = MemoryStore(self.clock)
        self.fill(store, 1, 1000)
        self.write(store, [1])
        fresh = MemoryStore(self.clock)
        small = 20_000

        def limitsOf(meta):
            return small, PLAN.item_size

        with open(self.path, "rb") as f:
            restoreSnapshot(f, fresh, limitsOf, NOW)
        ks = fresh.keyspace(1, small, PLAN.item_size)
        self.assertLessEqual(ks.stats()["bytes"], small)
        self.assertGreater(ks.stats()["curr_items"], 100)
        self.assertIsNotNone(ks.get(b"k999"))
        self.assertIsNone(ks.get(b"k0"))

    def test_pendingFlushKept(self):
        """
        A delayed flush pending at the snapshot is handed back to be
        scheduled again; one due meanwhile drops the cache's items.
        """
        store = MemoryStore(self.clock)
        self.fill(store, 1, 3).flush(60)
        self.fill(store, 2, 3).flush(5)
        self.write(store, [1, 2])
        self.clock.advance(10)
        fresh = MemoryStore(self.clock)
        done, flushes = self.restore(fresh)
        self.assertEqual(flushes, [(1, NOW + 60)])
        self.assertEqual((done.caches, done.restored, done.dropped), (1, 3, 3))

    def corrupted(self, change):
        store = MemoryStore(self.clock)
        self.fill(store, 1, 2000)
        self.fill(store, 2, 10)
        self.write(store, [1, 2])
        with open(self.path, "rb") as f:
            data = f.read()
        with open(self.path, "wb") as f:
            f.write(change(data))
        fresh = MemoryStore(self.clock)
        error = self.assertRaises(SnapshotError, self.restore, fresh)
        self.assertEqual(list(fresh.snapshotCaches()), [], "a failed restore leaves nothing")
        return str(error)

    def test_truncated(self):
        """
        A truncated snapshot restores nothing, wherever it was cut.
        """
        for cut in (3, 20, 5000, -1):
            self.assertIn("truncated", self.corrupted(lambda data: data[:cut]))

    def test_flippedByte(self):
        """
        A changed byte in any block is caught by its checksum.
        """
        for at in (len(MAGIC) + 6, 40, 20_000, -3):
            def flip(data, at=at):
                data = bytearray(data)
                data[at] ^= 0x10
                return bytes(data)
            self.assertIn("corrupt", self.corrupted(flip))

    def test_otherVersion(self):
        """
        A snapshot of another format version is not read.
        """
        def bump(data):
            return MAGIC + struct.pack("<I", FORMAT_VERSION + 1) + data[len(MAGIC) + 4:]
        self.assertIn(f"format version {FORMAT_VERSION + 1}", self.corrupted(bump))

    def test_notASnapshot(self):
        """
        Something else under the snapshot's name is not read.
        """
        self.assertIn("magic", self.corrupted(lambda data: b"x" * len(data)))

    def test_trailingBytes(self):
        """
        Bytes after the end block make the file suspect.
        """
        self.assertIn("after the end", self.corrupted(lambda data: data + b"\0"))

    def test_readerStreams(self):
        """
        The reader hands out caches and items one at a time; a consumer
        may skip a cache's items.
        """
        store = MemoryStore(self.clock)
        self.fill(store, 1, 3)
        self.fill(store, 2, 4)
        self.write(store, [1, 2])
        with open(self.path, "rb") as f:
            reader = SnapshotReader(f)
            ids = [meta["id"] for meta, _items in reader.caches()]
        self.assertEqual((ids, reader.items, reader.end["items"]), ([1, 2], 7, 7))

    def test_writeFailureLeavesNoTemp(self):
        """
        A write that fails leaves neither a temporary file nor a snapshot.
        """
        class Broken(MemoryStore):
            def snapshotItems(self, cacheId):
                yield (b"k", b"x" * 30)
                raise OSError("disk full")

        store = Broken(self.clock)
        self.fill(store, 1, 3)
        self.assertRaises(OSError, self.write, store, [1])
        self.assertEqual(os.listdir(self.dir), [])


@attr.s(auto_attribs=True)
class NotSnapshottable:
    """
    A store without L{ISnapshottableStore}.
    """

    keyspaces: dict = attr.Factory(dict)


class WarmRestartTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.dir = os.path.join(_tempDir(self), "state")
        self.index = FakeIndex([_cache(1)])
        self.events = _capture(self)

    def service(self, store, ready=None, enabled=True, stateDir=None):
        return WarmRestart(
            store, self.index, self.dir if stateDir is None else stateDir, enabled, self.clock,
            succeed(None) if ready is None else ready, installSignal=False, storeName="memory",
        )

    def stopStart(self, store):
        """
        Stop a node holding C{store}, start a new one; return its store.
        """
        fresh = MemoryStore(self.clock)
        service = self.service(store)
        service.startService()
        service.stopService()
        self.events.clear()
        self.service(fresh)
        return fresh

    def test_restartKeepsItems(self):
        """
        Stopped, the service writes the snapshot and removes the running
        marker; the next start restores it, deletes it (a later kill -9
        must not bring it back), marks the node running, logs one line.
        """
        store = MemoryStore(self.clock)
        first = self.service(store)
        self.assertEqual(_warmLines(self.events)[0]["outcome"], "missing")
        self.assertTrue(os.path.exists(os.path.join(self.dir, RUNNING_NAME)))
        store.keyspace(1, PLAN.memory, PLAN.item_size).store(StoreMode.SET, b"a", b"1", 3, 0, 0)
        first.startService()
        first.stopService()
        self.assertEqual(sorted(os.listdir(self.dir)), [SNAPSHOT_NAME])
        self.events.clear()
        fresh = MemoryStore(self.clock)
        second = self.service(fresh)
        lines = _warmLines(self.events)
        self.assertEqual([e["outcome"] for e in lines], ["restored"])
        self.assertEqual(lines[0]["restored"], 1)
        self.assertEqual(sorted(os.listdir(self.dir)), [RUNNING_NAME])
        self.assertEqual(itemFlags(fresh.keyspace(1, PLAN.memory, PLAN.item_size).get(b"a")), 3)
        self.assertTrue(second.restored.called)

    def test_killedAfterRestoreStartsCold(self):
        """
        A node killed (no stop) after a restore leaves no snapshot but its
        running marker: the next start is cold and says why.
        """
        store = MemoryStore(self.clock)
        store.keyspace(1, PLAN.memory, PLAN.item_size).store(StoreMode.SET, b"a", b"1", 0, 0, 0)
        self.stopStart(store)  # restored, then "killed": never stopped
        self.events.clear()
        fresh = MemoryStore(self.clock)
        self.service(fresh)
        self.assertEqual([e["outcome"] for e in _warmLines(self.events)], ["unclean"])
        self.assertEqual(list(fresh.snapshotCaches()), [])

    def test_unfinishedSnapshot(self):
        """
        A temporary file left by a stop killed while writing is removed;
        the start is cold and says so.
        """
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, SNAPSHOT_NAME + TEMP_SUFFIX), "wb") as f:
            f.write(MAGIC)
        self.service(MemoryStore(self.clock))
        self.assertEqual([e["outcome"] for e in _warmLines(self.events)], ["unfinished"])
        self.assertNotIn(SNAPSHOT_NAME + TEMP_SUFFIX, os.listdir(self.dir))

    def test_casAboveEarlierRunsAfterColdStart(self):
        """
        A cold start (no snapshot: the last run was killed) still hands
        out CAS uniques above the earlier run's: the counter is seeded from
        the clock.
        """
        store = MemoryStore(self.clock)
        self.service(store)
        _, first = store.keyspace(1, PLAN.memory, PLAN.item_size).store(StoreMode.SET, b"a", b"1", 0, 0, 0)
        self.assertGreaterEqual(first, NOW * CAS_PER_SECOND)
        self.clock.advance(1)
        fresh = MemoryStore(self.clock)
        self.service(fresh)
        self.assertEqual(_warmLines(self.events)[-1]["outcome"], "unclean")
        _, cas = fresh.keyspace(1, PLAN.memory, PLAN.item_size).store(StoreMode.SET, b"a", b"2", 0, 0, 0)
        self.assertGreater(cas, first)

    def test_unusableSnapshot(self):
        """
        A corrupt snapshot: one warning line, a cold store, the file gone,
        the listeners let in all the same.
        """
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, SNAPSHOT_NAME), "wb") as f:
            f.write(MAGIC + struct.pack("<I", 99))
        fresh = MemoryStore(self.clock)
        service = self.service(fresh)
        lines = _warmLines(self.events)
        self.assertEqual([e["outcome"] for e in lines], ["unusable"])
        self.assertIn("format version 99", lines[0]["reason"])
        self.assertEqual(list(fresh.snapshotCaches()), [])
        self.assertNotIn(SNAPSHOT_NAME, os.listdir(self.dir))
        self.assertTrue(service.restored.called)

    def test_stoppedBeforeReadyKeepsSnapshot(self):
        """
        A node stopped before its index loaded (so before the restore)
        leaves the snapshot as it was for the next start.
        """
        os.makedirs(self.dir)
        path = os.path.join(self.dir, SNAPSHOT_NAME)
        with open(path, "wb") as f:
            f.write(b"old")
        service = self.service(MemoryStore(self.clock), ready=Deferred())
        service.startService()
        service.stopService()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"old")

    def test_off(self):
        """
        With C{warm_restart = false} the snapshot is neither read nor
        written; one line says so.  Without a state_dir, nothing at all.
        """
        os.makedirs(self.dir)
        service = self.service(MemoryStore(self.clock), enabled=False)
        service.startService()
        service.stopService()
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual([e["outcome"] for e in _warmLines(self.events)], ["off"])
        self.events.clear()
        service = self.service(MemoryStore(self.clock), stateDir="")
        service.startService()
        service.stopService()
        self.assertEqual(_warmLines(self.events), [])
        self.assertTrue(service.restored.called)

    def test_storeWithoutInterface(self):
        """
        A store plugin without L{ISnapshottableStore} starts cold with one
        line, and nothing is written at stop.
        """
        service = self.service(NotSnapshottable())
        service.startService()
        service.stopService()
        self.assertEqual([e["outcome"] for e in _warmLines(self.events)], ["unsupported"])

    def test_onDemand(self):
        """
        An on-demand snapshot goes to its own file, which a start does not
        restore by itself.
        """
        store = MemoryStore(self.clock)
        store.keyspace(1, PLAN.memory, PLAN.item_size).store(StoreMode.SET, b"a", b"1", 0, 0, 0)
        service = self.service(store)
        self.assertEqual(service.saveOnDemand().items, 1)
        self.assertIn(MANUAL_NAME, os.listdir(self.dir))
        self.assertNotIn(SNAPSHOT_NAME, os.listdir(self.dir))

    def test_flushedMeanwhile(self):
        """
        A cache whose flush generation moved on while the node was down
        (a flush recorded by another node) comes back empty; one whose
        generation is the one saved comes back whole.
        """
        self.index.caches[2] = _cache(2)
        self.index.flushes = {1: FlushGeneration(3, NOW - 100), 2: FlushGeneration(5, NOW - 50)}
        store = MemoryStore(self.clock)
        for cacheId in (1, 2):
            store.keyspace(cacheId, PLAN.memory, PLAN.item_size).store(StoreMode.SET, b"a", b"1", 0, 0, 0)
        service = self.service(store)
        service.startService()
        service.stopService()
        self.index.flushes[1] = FlushGeneration(4, NOW + 1)
        self.events.clear()
        fresh = MemoryStore(self.clock)
        self.service(fresh)
        self.assertEqual(list(fresh.snapshotCaches()), [2])
        self.assertEqual(_warmLines(self.events)[0]["dropped"], 1)

    def test_delayedFlushScheduled(self):
        """
        A delayed flush pending at the stop happens when it was due.
        """
        store = MemoryStore(self.clock)
        ks = store.keyspace(1, PLAN.memory, PLAN.item_size)
        ks.store(StoreMode.SET, b"a", b"1", 0, 0, 0)
        ks.flush(30)
        fresh = self.stopStart(store)
        restored = fresh.keyspace(1, PLAN.memory, PLAN.item_size)
        self.assertIsNotNone(restored.get(b"a"))
        self.clock.advance(31)
        self.assertIsNone(restored.get(b"a"))

