"""
The memory store passes the public store conformance suite.
"""

from twisted.trial.unittest import SynchronousTestCase

from memcachier.stores.memory import MemoryStore
from memcachier.testing import StoreConformanceTests


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
