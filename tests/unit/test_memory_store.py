"""
The memory store passes the public store conformance suite, directly and
answering through Deferreds fired by a clock (L{memcachier.testing.AsyncStore},
the double codec tests and keyspaces that forward use); the failing store
double fails every call, as it says.
"""

from twisted.trial.unittest import SynchronousTestCase
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from memcachier.commands import KeyspaceError, StoreMode
from memcachier.interfaces import IKeyspace, IStore
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
        self.assertEqual(self.call(self.ks.get, b"n").value, b"99 ")
        self.assertEqual(self.call(self.ks.delta, b"n", True, 1, None, 0, 0)[1], 100)


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
