# -*- test-case-name: tests.unit.test_sniff -*-
"""
One port, both protocols: the first byte of a connection picks the codec.

C{0x80} (the binary request magic) selects the binary codec; anything else
is ASCII.  After the first read the connection talks to the codec directly:
the sniffing protocol rebinds its own C{dataReceived} to the codec's, so
later reads cost no extra call.

The factory counts open connections over every memcache listener and
refuses any past its ceiling (L{memcachier.tx.ceiling}) the way memcached does
past C{-c}: C{ERROR Too many open connections} and a close, with one log
line per burst.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from memcachier.tx.ceiling import Bursts
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
        factory.open.add(self)
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
        if not data:
            # no byte to sniff yet (TCP never delivers none; a wrapping
            # transport might): wait for one
            return
        codecClass = BinaryProtocol if data[0] == BINARY_REQUEST_MAGIC else AsciiProtocol
        codec = self.codec = codecClass(self.session)
        codec.maxKeys = self.factory.maxKeys
        self.dataReceived = codec.dataReceived
        codec.makeConnection(self.transport)
        codec.dataReceived(data)

    def drain(self):
        """
        Close once the request being received, if any, is answered (see
        L{memcachier.protocols.base.CodecProtocol.drain}).
        """
        if self.codec is None:
            self.transport.loseConnection()
        else:
            self.codec.drain()

    def connectionLost(self, reason):
        factory = self.factory
        factory.open.discard(self)
        if self.codec is not None:
            self.codec.connectionLost(reason)
        elif self.session is not None:
            self.session.connectionLost()
        if not factory.open and factory._drained is not None:
            drained, factory._drained = factory._drained, None
            drained.callback(None)


#: memcached's reply past its connection limit (C{-c}, C{maxconns_fast})
TOO_MANY_OPEN_CONNECTIONS = b"ERROR Too many open connections\r\n"


class RefusingProtocol(Protocol):
    """
    Says why and hangs up: the connection is over the ceiling.
    """

    def connectionMade(self):
        self.transport.write(TOO_MANY_OPEN_CONNECTIONS)
        self.transport.loseConnection()


class MemcacheFactory(Factory):
    """
    The memcache listener's factory, shared by every TCP and TLS listener.

    @ivar registry: the L{memcachier.runtime.CacheRegistry}.
    @ivar authTimeout: seconds an unauthenticated connection may stay open.
    @ivar maxConnections: the ceiling over every memcache listener.
    @ivar maxKeys: keys an ASCII retrieval command may name, C{0} for no
        count (C{limits.multiget_keys}).
    @ivar open: the connections open now.
    @ivar refused: connections refused past the ceiling, in L{Bursts}.
    """

    protocol = SniffingProtocol
    noisy = False
    _log = Logger()

    def __init__(self, registry, reactor, authTimeout=5.0, throttle=None, maxConnections=None,
                 maxKeys=0):
        self.maxKeys = maxKeys
        self.registry = registry
        self.reactor = reactor
        self.authTimeout = authTimeout
        self.throttle = throttle if throttle is not None else AuthThrottle()
        self.maxConnections = maxConnections
        self.open = set()
        self.refused = Bursts()
        self._drained = None

    @property
    def connections(self):
        """
        How many connections are open.
        """
        return len(self.open)

    def drain(self):
        """
        Close every connection once what it was sent is answered: an idle
        one at once (after its queued output), one in the middle of a
        request once that request has arrived and been answered (see
        L{memcachier.node.shutdown}).

        @return: a L{Deferred} firing when none is open.
        """
        if not self.open:
            return succeed(None)
        drained = self._drained = Deferred()
        for protocol in list(self.open):
            protocol.drain()
        return drained

    def abort(self):
        """
        Drop every connection still open (a client not reading its
        answers past the shutdown deadline).

        @return: how many were open.
        """
        left = list(self.open)
        for protocol in left:
            protocol.transport.abortConnection()
        return len(left)

    def buildProtocol(self, addr):
        if self.maxConnections is not None and self.connections >= self.maxConnections:
            previous = self.refused.occurred(self.reactor.seconds())
            if previous is not None:
                self._log.warn(
                    "memcache connection ceiling reached: {maxConnections} open; "
                    "refusing new connections with 'ERROR Too many open connections' "
                    "(logged once per burst; {previousBurst} refused in the previous burst)",
                    event="memcache_connections_refused",
                    maxConnections=self.maxConnections,
                    previousBurst=previous,
                )
            return RefusingProtocol()
        return SniffingProtocol(self)
