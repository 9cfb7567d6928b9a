"""
Builders shared by the codec and session unit tests: a registry over the
memory store and an in-memory control index, and a connected protocol on a
string transport.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection

from memcachier.protocols.sniff import MemcacheFactory
from memcachier.runtime import CacheRegistry
from memcachier.stores.memory import MemoryStore
from memcachier.testing import AsyncStore, MemoryControlIndex

#: the stores codec tests run against: the memory store, and the same
#: answering through Deferreds fired by the clock
STORES = {
    "memory": MemoryStore,
    "async": lambda clock: AsyncStore(MemoryStore(clock), clock),
}


class World:
    """
    One node with two caches: cache 1 (credentials C{rw}, C{ro} read-only,
    C{nf} without flush) and cache 2 (credential C{other}).
    """

    def __init__(self, plans=None, introspection=None, store=None):
        """
        @param introspection: a callable taking the clock and returning the
            registry's introspection service, or L{None} for none.
        @param store: a callable taking the clock and returning the store
            (default: the memory store).
        """
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.index = MemoryControlIndex(plans)
        self.index.addCache(1, "dev")
        self.index.addCache(2, "dev")
        self.index.addCredential(1, "rw", "secret")
        self.index.addCredential(1, "ro", "secret", write=False)
        self.index.addCredential(1, "nf", "secret", flush=False)
        self.index.addCredential(2, "other", "secret")
        self.store = (store or MemoryStore)(self.clock)
        self.introspection = introspection(self.clock) if introspection else None
        self.registry = CacheRegistry(
            self.store, self.index, None, self.clock, introspection=self.introspection
        )
        self.factory = MemcacheFactory(self.registry, self.clock, authTimeout=5.0)

    def connect(self):
        """
        @return: (protocol, transport) of a new connection.
        """
        proto = self.factory.buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
        return proto, transport
