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
all expiry math.  Results may be Deferreds; the suite runs the clock's
calls that are due (C{clock.advance(0)}) after each store call, and the
Deferred must have fired by then (drive any I/O from the clock, or use a
loopback backend that answers synchronously in tests).
Items come back as L{memcachier.commands.packItem} builds them; the suite
reads them with C{itemValue}, C{itemFlags} and C{itemCas}.

Test doubles for codecs, sessions and anything that forwards to a keyspace
(a plugin's tests, a cluster keyspace):

  - L{AsyncStore} wraps any store so that its keyspaces answer through
    L{Deferred}s fired by the clock, after a delay a test chooses per call
    (or synchronously, or failing), so pipelines can mix immediate, late
    and failing answers;
  - L{FailingStore} has keyspaces whose every call fails, by raising or
    through a Deferred.
"""

import hmac

import attr
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from memcachier.commands import (
    KeyspaceError,
    U64,
    DeleteResult,
    DeltaResult,
    StoreMode,
    StoreResult,
    itemCas,
    itemFlags,
    itemValue,
)
from memcachier.control.model import DEFAULT_PLANS, Cache, Credential
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
        d = maybeDeferred(method, *args)
        self.clock.advance(0)
        return self.successResultOf(d)

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


#: the methods of L{IKeyspace} that answer a request (the rest, stats and
#: configuration, stay synchronous in the doubles below)
ANSWERING = ("get", "getMany", "peek", "touch", "store", "delete", "delta", "flush")


def _answerLater(clock, delay, result):
    d = Deferred()
    if isinstance(result, BaseException):
        clock.callLater(delay, d.errback, result)
    else:
        clock.callLater(delay, d.callback, result)
    return d


@implementer(IKeyspace)
class AsyncKeyspace:
    """
    A keyspace answering through L{Deferred}s fired by a clock.

    Each call runs on the wrapped keyspace at once (so calls take effect in
    the order they are made, as a remote store over one ordered connection
    would), and its answer is delivered as C{schedule(method, args)} says:

      - a number: through a Deferred fired after that many seconds of the
        clock (answers may thus arrive out of order);
      - L{None}: synchronously, the plain result (no Deferred);
      - an exception instance: the call fails with it, through a Deferred
        fired at the next C{clock.advance(0)} (nothing is run).

    @ivar inner: the wrapped L{IKeyspace}.
    """

    synchronous = False

    def __init__(self, inner, clock, schedule=None):
        self.inner = inner
        self._clock = clock
        self.schedule = schedule or (lambda method, args: 0)

    def _answer(self, method, *args):
        how = self.schedule(method, args)
        if isinstance(how, BaseException):
            return _answerLater(self._clock, 0, how)
        result = getattr(self.inner, method)(*args)
        if how is None:
            return result
        return _answerLater(self._clock, how, result)

    def get(self, key):
        return self._answer("get", key)

    def getMany(self, keys):
        return self._answer("getMany", keys)

    def peek(self, key):
        return self._answer("peek", key)

    def touch(self, key, exptime):
        return self._answer("touch", key, exptime)

    def store(self, mode, key, value, flags, exptime, cas):
        return self._answer("store", mode, key, value, flags, exptime, cas)

    def delete(self, key, cas):
        return self._answer("delete", key, cas)

    def delta(self, key, incr, delta, initial, exptime, cas):
        return self._answer("delta", key, incr, delta, initial, exptime, cas)

    def flush(self, delay):
        return self._answer("flush", delay)

    def stats(self):
        return self.inner.stats()

    def resetStats(self):
        return self.inner.resetStats()

    def configure(self, maxBytes, maxItemSize):
        return self.inner.configure(maxBytes, maxItemSize)

    def keys(self):
        return self.inner.keys()


@implementer(IStore)
class AsyncStore:
    """
    A store whose keyspaces are L{AsyncKeyspace}s over those of C{inner}.

    @ivar schedule: given to every keyspace (see L{AsyncKeyspace}); may be
        changed by a test at any time.
    """

    def __init__(self, inner, clock, schedule=None):
        self.inner = inner
        self._clock = clock
        self.schedule = schedule or (lambda method, args: 0)
        self._keyspaces = {}

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        keyspace = self._keyspaces.get(cacheId)
        if keyspace is None:
            keyspace = AsyncKeyspace(
                self.inner.keyspace(cacheId, maxBytes, maxItemSize), self._clock,
                lambda method, args: self.schedule(method, args),
            )
            self._keyspaces[cacheId] = keyspace
        return keyspace

    def dropKeyspace(self, cacheId):
        self._keyspaces.pop(cacheId, None)
        return self.inner.dropKeyspace(cacheId)

    def close(self):
        return self.inner.close()


@implementer(IKeyspace)
class FailingKeyspace:
    """
    A keyspace whose every answering call fails with a L{KeyspaceError}:
    raised at once (C{late=False}) or through a L{Deferred} fired by the
    clock (C{late=True}).  Stats and configuration work (empty).
    """

    def __init__(self, clock, late, reason="store unavailable"):
        self._clock = clock
        self.late = late
        self.synchronous = not late
        self.reason = reason
        self.calls = 0

    def _fail(self):
        self.calls += 1
        error = KeyspaceError(self.reason)
        if self.late:
            return _answerLater(self._clock, 0, error)
        raise error

    def get(self, key):
        return self._fail()

    def getMany(self, keys):
        return self._fail()

    def peek(self, key):
        return self._fail()

    def touch(self, key, exptime):
        return self._fail()

    def store(self, mode, key, value, flags, exptime, cas):
        return self._fail()

    def delete(self, key, cas):
        return self._fail()

    def flush(self, delay):
        return self._fail()

    def delta(self, key, incr, delta, initial, exptime, cas):
        return self._fail()

    def stats(self):
        return {}

    def resetStats(self):
        pass

    def configure(self, maxBytes, maxItemSize):
        pass

    def keys(self):
        return []


@implementer(IStore)
class FailingStore:
    """
    A store whose keyspaces are L{FailingKeyspace}s.
    """

    def __init__(self, clock, late):
        self._clock = clock
        self.late = late
        self._keyspaces = {}

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        keyspace = self._keyspaces.get(cacheId)
        if keyspace is None:
            keyspace = self._keyspaces[cacheId] = FailingKeyspace(self._clock, self.late)
        return keyspace

    def dropKeyspace(self, cacheId):
        self._keyspaces.pop(cacheId, None)

    def close(self):
        pass


class MemoryControlIndex:
    """
    An in-memory stand-in for the control index, for unit tests of
    sessions and codecs: caches, credentials and plans in dicts.

    @ivar plans: slug -> L{memcachier.control.model.Plan}.
    """

    def __init__(self, plans=None):
        self.plans = {p.slug: p for p in (plans or DEFAULT_PLANS)}
        self._caches = {}
        self._credentials = {}
        self._listeners = []

    def addCache(self, cacheId, plan="dev", enabled=True):
        self._caches[cacheId] = Cache(
            cacheId, f"cache{cacheId}", "", plan, enabled, "default", "", 0.0, 0.0
        )
        self.changed()

    def addCredential(self, cacheId, username, password, write=True, flush=True, api=True):
        self._credentials[username] = Credential(
            len(self._credentials) + 1, cacheId, username, password, write, flush, api,
            not any(c.cache_id == cacheId for c in self._credentials.values()),
        )
        self.changed()

    def moveCache(self, cacheId, cluster):
        """
        Put a cache on another cluster (C{switch_cluster}, a plan change
        between development and production).
        """
        self._caches[cacheId] = attr.evolve(self._caches[cacheId], cluster=cluster)
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
