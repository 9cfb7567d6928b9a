# -*- test-case-name: tests.unit.test_memory_store -*-
"""
Public test helpers for plugin authors: the store conformance suite every
in-tree store passes.

Use it by mixing L{StoreConformanceTests} into a
L{twisted.trial.unittest.SynchronousTestCase} (pytest collects those too)
and implementing C{makeStore(clock)}::

    class MyStoreTests(StoreConformanceTests, SynchronousTestCase):
        def makeStore(self, clock):
            return MyStore(clock)

The clock is a L{twisted.internet.task.Clock}: the store must use it for
all expiry math.  Results may be Deferreds, but they must have fired by the
time the store call returns control to the test (drive any I/O from the
clock, or use a loopback backend that answers synchronously in tests).
Items come back as L{memcachier.commands.packItem} builds them; the suite
reads them with C{itemValue}, C{itemFlags} and C{itemCas}.
"""

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from memcachier.commands import (
    U64,
    DeleteResult,
    DeltaResult,
    StoreMode,
    StoreResult,
    itemCas,
    itemFlags,
    itemValue,
)
from memcachier.interfaces import IKeyspace, IStore

MiB = 1024 * 1024


class StoreConformanceTests:
    """
    Behaviour every L{IStore} and its L{IKeyspace}s must have.
    """

    maxBytes = 64 * 1024
    maxItemSize = MiB

    def makeStore(self, clock):
        """
        @return: the L{IStore} under test, using C{clock} as its clock.
        """
        raise NotImplementedError("makeStore")

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = self.makeStore(self.clock)
        self.ks = self.store.keyspace(1, self.maxBytes, self.maxItemSize)

    def call(self, method, *args):
        return self.successResultOf(maybeDeferred(method, *args))

    def set(self, key, value, flags=0, exptime=0, mode=StoreMode.SET, cas=0, ks=None):
        return self.call((ks or self.ks).store, mode, key, value, flags, exptime, cas)

    def test_interfaces(self):
        """
        The store provides L{IStore} and its keyspaces L{IKeyspace}.
        """
        self.assertTrue(verifyObject(IStore, self.store))
        self.assertTrue(verifyObject(IKeyspace, self.ks))

    def test_setGet(self):
        """
        A stored value comes back with its flags and a non-zero CAS.
        """
        result, cas = self.set(b"k", b"v", flags=7)
        self.assertEqual(result, StoreResult.STORED)
        item = self.call(self.ks.get, b"k")
        self.assertEqual((itemValue(item), itemFlags(item), itemCas(item)), (b"v", 7, cas))
        self.assertNotEqual(cas, 0)
        self.assertIsNone(self.call(self.ks.get, b"missing"))

    def test_addReplace(self):
        """
        add stores only a missing key, replace only an existing one.
        """
        self.assertEqual(self.set(b"k", b"1", mode=StoreMode.REPLACE)[0], StoreResult.NOT_STORED)
        self.assertEqual(self.set(b"k", b"1", mode=StoreMode.ADD)[0], StoreResult.STORED)
        self.assertEqual(self.set(b"k", b"2", mode=StoreMode.ADD)[0], StoreResult.NOT_STORED)
        self.assertEqual(self.set(b"k", b"3", mode=StoreMode.REPLACE)[0], StoreResult.STORED)
        self.assertEqual(itemValue(self.call(self.ks.get, b"k")), b"3")

    def test_appendPrepend(self):
        """
        append/prepend grow an existing value, keep its flags, and refuse
        a missing key or growth beyond the item size limit (C{NOT_STORED},
        as memcached answers when it cannot allocate the grown item).
        """
        self.assertEqual(self.set(b"k", b"x", mode=StoreMode.APPEND)[0], StoreResult.NOT_STORED)
        self.set(b"k", b"mid", flags=3)
        self.set(b"k", b">", flags=9, mode=StoreMode.APPEND)
        self.set(b"k", b"<", mode=StoreMode.PREPEND)
        item = self.call(self.ks.get, b"k")
        self.assertEqual((itemValue(item), itemFlags(item)), (b"<mid>", 3))
        ks = self.store.keyspace(2, self.maxBytes, 10)
        self.set(b"k", b"123456789", ks=ks)
        self.assertEqual(
            self.set(b"k", b"9", mode=StoreMode.APPEND, ks=ks)[0], StoreResult.NOT_STORED
        )

    def test_cas(self):
        """
        cas stores only when the CAS matches; a missing key is NOT_FOUND.
        """
        self.assertEqual(self.set(b"k", b"v", mode=StoreMode.CAS, cas=5)[0], StoreResult.NOT_FOUND)
        _, cas = self.set(b"k", b"v")
        self.assertEqual(self.set(b"k", b"w", mode=StoreMode.CAS, cas=cas + 1000)[0], StoreResult.EXISTS)
        result, newCas = self.set(b"k", b"w", mode=StoreMode.CAS, cas=cas)
        self.assertEqual(result, StoreResult.STORED)
        self.assertNotEqual(newCas, cas)

    def test_delete(self):
        """
        delete removes a key; a CAS must match when given.
        """
        _, cas = self.set(b"k", b"v")
        self.assertEqual(self.call(self.ks.delete, b"k", cas + 1), DeleteResult.EXISTS)
        self.assertEqual(self.call(self.ks.delete, b"k", 0), DeleteResult.DELETED)
        self.assertEqual(self.call(self.ks.delete, b"k", 0), DeleteResult.NOT_FOUND)

    def test_delta(self):
        """
        incr wraps at 2**64, decr floors at 0, non-numbers are refused and
        a missing key is created only when an initial value is given.
        """
        self.assertEqual(self.call(self.ks.delta, b"n", True, 1, None, 0, 0)[0], DeltaResult.NOT_FOUND)
        self.assertEqual(self.call(self.ks.delta, b"n", True, 1, 5, 0, 0)[:2], (DeltaResult.OK, 5))
        self.set(b"n", b"%d" % (U64 - 1))
        self.assertEqual(self.call(self.ks.delta, b"n", True, 2, None, 0, 0)[:2], (DeltaResult.OK, 1))
        self.assertEqual(self.call(self.ks.delta, b"n", False, 5, None, 0, 0)[:2], (DeltaResult.OK, 0))
        self.set(b"s", b"abc")
        self.assertEqual(self.call(self.ks.delta, b"s", True, 1, None, 0, 0)[0], DeltaResult.NON_NUMERIC)

    def test_expiry(self):
        """
        Items vanish once the clock reaches their expiry; a time not after
        now means already expired.
        """
        now = self.clock.seconds()
        self.set(b"k", b"v", exptime=now + 10)
        self.set(b"gone", b"v", exptime=-1)
        self.assertIsNone(self.call(self.ks.get, b"gone"))
        self.clock.advance(9)
        self.assertIsNotNone(self.call(self.ks.get, b"k"))
        self.clock.advance(1)
        self.assertIsNone(self.call(self.ks.get, b"k"))

    def test_touch(self):
        """
        touch sets a new expiry and returns the item.
        """
        self.set(b"k", b"v", exptime=self.clock.seconds() + 5)
        self.assertIsNotNone(self.call(self.ks.touch, b"k", 0))
        self.clock.advance(10)
        self.assertEqual(itemValue(self.call(self.ks.get, b"k")), b"v")
        self.assertIsNone(self.call(self.ks.touch, b"missing", 0))

    def test_flush(self):
        """
        flush(0) empties the keyspace at once; flush(delay) at the delay.
        """
        self.set(b"a", b"1")
        self.call(self.ks.flush, 0)
        self.assertIsNone(self.call(self.ks.get, b"a"))
        self.set(b"b", b"2")
        self.call(self.ks.flush, 10)
        self.assertIsNotNone(self.call(self.ks.get, b"b"))
        self.clock.advance(10)
        self.assertIsNone(self.call(self.ks.get, b"b"))

    def test_evictionLRU(self):
        """
        Past its memory limit a keyspace evicts its least recently used
        keys, counts them, and never touches another cache's keys.  (Stores
        may, like memcached, bump an item at most once a minute: the test
        lets two minutes pass between uses.)
        """
        other = self.store.keyspace(2, self.maxBytes, self.maxItemSize)
        self.set(b"other", b"x", ks=other)
        value = b"v" * 1000
        self.set(b"k0", value)
        for i in range(1, 200):
            self.clock.advance(120)
            self.call(self.ks.get, b"k0")
            self.set(b"k%d" % i, value)
        stats = self.call(self.ks.stats)
        self.assertLessEqual(stats["bytes"], self.maxBytes)
        self.assertGreater(stats["evictions"], 0)
        self.assertIsNotNone(self.call(self.ks.get, b"k0"))
        self.assertIsNone(self.call(self.ks.get, b"k1"))
        self.assertEqual(itemValue(self.call(other.get, b"other")), b"x")

    def test_isolation(self):
        """
        Keyspaces of two caches share no keys, even the same ones.
        """
        other = self.store.keyspace(2, self.maxBytes, self.maxItemSize)
        self.set(b"k", b"mine")
        self.set(b"k", b"theirs", ks=other)
        self.call(other.flush, 0)
        self.assertEqual(itemValue(self.call(self.ks.get, b"k")), b"mine")
        self.assertEqual(self.call(self.ks.stats)["curr_items"], 1)

    def test_statsAndReset(self):
        """
        stats reports memcached's counter names; resetStats zeroes the
        cumulative ones only.
        """
        self.set(b"k", b"v")
        stats = self.call(self.ks.stats)
        for name in ("curr_items", "total_items", "bytes", "limit_maxbytes", "evictions"):
            self.assertIn(name, stats)
        self.assertEqual(stats["limit_maxbytes"], self.maxBytes)
        self.call(self.ks.resetStats)
        stats = self.call(self.ks.stats)
        self.assertEqual((stats["curr_items"], stats["total_items"]), (1, 0))

    def test_configure(self):
        """
        Shrinking the memory limit evicts at once.
        """
        for i in range(20):
            self.set(b"k%d" % i, b"v" * 1000)
        self.call(self.ks.configure, 5000, self.maxItemSize)
        self.assertLessEqual(self.call(self.ks.stats)["bytes"], 5000)


class MemoryControlIndex:
    """
    An in-memory stand-in for the control index, for unit tests of
    sessions and codecs: caches, credentials and plans in dicts.

    @ivar plans: slug -> L{memcachier.control.model.Plan}.
    """

    def __init__(self, plans=None):
        from memcachier.control.model import DEFAULT_PLANS

        self.plans = {p.slug: p for p in (plans or DEFAULT_PLANS)}
        self._caches = {}
        self._credentials = {}
        self._listeners = []

    def addCache(self, cacheId, plan="dev", enabled=True):
        from memcachier.control.model import Cache

        self._caches[cacheId] = Cache(
            cacheId, f"cache{cacheId}", "", plan, enabled, "default", "", 0.0, 0.0
        )
        self.changed()

    def addCredential(self, cacheId, username, password, write=True, flush=True, api=True):
        from memcachier.control.model import Credential

        self._credentials[username] = Credential(
            len(self._credentials) + 1, cacheId, username, password, write, flush, api,
            not any(c.cache_id == cacheId for c in self._credentials.values()),
        )
        self.changed()

    def removeCache(self, cacheId):
        self._caches.pop(cacheId, None)
        for name, c in list(self._credentials.items()):
            if c.cache_id == cacheId:
                del self._credentials[name]
        self.changed()

    def changed(self):
        for listener in list(self._listeners):
            listener()

    def addListener(self, listener):
        self._listeners.append(listener)

    def authenticate(self, username, password):
        import hmac

        credential = self._credentials.get(username.decode("utf-8", "replace"))
        if credential is None:
            return None
        if not hmac.compare_digest(credential.password.encode("utf-8"), password):
            return None
        cache = self._caches.get(credential.cache_id)
        if cache is None or not cache.enabled:
            return None
        return credential

    def credential(self, username):
        return self._credentials.get(username)

    def cache(self, cacheId):
        return self._caches.get(cacheId)

    def planOf(self, cacheId):
        return self.plans[self._caches[cacheId].plan]
