# -*- test-case-name: tests.unit.test_sniff -*-
"""
One port, both protocols: the first byte of a connection picks the codec.

C{0x80} (the binary request magic) selects the binary codec; anything else
is ASCII.  After the first read the connection talks to the codec directly:
the sniffing protocol rebinds its own C{dataReceived} and C{connectionLost}
to the codec's, so later reads cost no extra call.
"""

from twisted.internet.protocol import Factory, Protocol

from memcachier.protocols.ascii import AsciiProtocol
from memcachier.protocols.binary import BinaryProtocol
from memcachier.protocols.session import Session
from memcachier.protocols.throttle import AuthThrottle

BINARY_REQUEST_MAGIC = 0x80


class SniffingProtocol(Protocol):
    """
    Waits for the first byte, then hands the connection to the codec it
    names.
    """

    def __init__(self, factory):
        self.factory = factory
        self.session = None
        self.codec = None

    def connectionMade(self):
        factory = self.factory
        peer = self.transport.getPeer()
        self.session = Session(
            factory.registry,
            factory.reactor,
            factory.throttle,
            getattr(peer, "host", str(peer)),
            self.transport.loseConnection,
            factory.authTimeout,
        )

    def dataReceived(self, data):
        codecClass = BinaryProtocol if data[0] == BINARY_REQUEST_MAGIC else AsciiProtocol
        codec = self.codec = codecClass(self.session)
        self.dataReceived = codec.dataReceived
        self.connectionLost = codec.connectionLost
        codec.makeConnection(self.transport)
        codec.dataReceived(data)

    def connectionLost(self, reason):
        if self.session is not None:
            self.session.connectionLost()


class MemcacheFactory(Factory):
    """
    The memcache listener's factory, shared by every TCP and TLS listener.

    @ivar registry: the L{memcachier.runtime.CacheRegistry}.
    @ivar authTimeout: seconds an unauthenticated connection may stay open.
    """

    protocol = SniffingProtocol

    def __init__(self, registry, reactor, authTimeout=5.0, throttle=None):
        self.registry = registry
        self.reactor = reactor
        self.authTimeout = authTimeout
        self.throttle = throttle if throttle is not None else AuthThrottle()

    def buildProtocol(self, addr):
        return SniffingProtocol(self)
