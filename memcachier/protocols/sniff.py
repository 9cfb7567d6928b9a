# -*- test-case-name: tests.unit.test_sniff -*-
"""
One port, both protocols: the first byte of a connection picks the codec.

C{0x80} (the binary request magic) selects the binary codec; anything else
is ASCII.  After the first read the connection talks to the codec directly:
the sniffing protocol rebinds its own C{dataReceived} to the codec's, so
later reads cost no extra call.

Closing
=======

L{SniffingProtocol.close} is the one way a memcache connection closes:
the auth timeout, QUIT, failed authentication, drain on shutdown and the
codec's own closes all call it.  It stops the codec being the transport's
producer (TLS sends its close alert, and so closes, only once no producer
is registered), asks the transport to close, and aborts the connection if
it is still open L{CLOSE_GRACE} seconds later: a TLS transport waits for
the peer's close alert, and any transport for its queued output to be
read, and a peer that does neither must not keep the descriptor.

On an C{ssl:} listener a client must also finish its TLS handshake within
the auth timeout (or L{HANDSHAKE_TIMEOUT} when that is off), or the
connection is aborted (docs/security.md).

A storm of new connections is read, and its logins handled, a bounded
batch at a time (L{memcachier.protocols.admission}), and an authenticated
connection can be held back by the fair share (L{SniffingProtocol.holdBack},
L{memcachier.protocols.fairshare}).

The factory counts open connections over every memcache listener with a
L{memcachier.tx.ceiling.ConnectionCeiling}, which refuses any past the
ceiling the way memcached does past C{-c}: C{ERROR Too many open
connections} and a close, with one log line per burst.
"""

from socket import socket
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    ISSLTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from memcachier.protocols.admission import LoginAdmission
from memcachier.protocols.ascii import AsciiProtocol
from memcachier.protocols.base import CodecProtocol
from memcachier.protocols.binary import BinaryProtocol
from memcachier.protocols.session import Session
from memcachier.protocols.throttle import AuthThrottle
from memcachier.tx.ceiling import ConnectionCeiling

BINARY_REQUEST_MAGIC = 0x80

#: seconds a closing connection may take to let go (the peer's TLS close
#: alert, queued output being read) before it is aborted
CLOSE_GRACE = 5.0

#: seconds a TLS client has to finish its handshake when the auth timeout
#: is off (otherwise the auth timeout applies)
HANDSHAKE_TIMEOUT = 5.0

#: memcached's reply past its connection limit (C{-c}, C{maxconns_fast})
TOO_MANY_OPEN_CONNECTIONS = b"ERROR Too many open connections\r\n"

#: the fast send path a factory may be given: the socket a codec may send
#: on directly for a transport, or L{None} (L{memcachier.node.fastpaths})
DirectSend = Callable[[ITransport], Optional[socket]]


def memcacheConnectionCeiling(limit: Optional[int], clock: IReactorTime) -> ConnectionCeiling:
    """
    The memcache listeners' L{ConnectionCeiling}: memcached's refusal and
    log line.

    @param limit: the ceiling (L{memcachier.tx.ceiling.connectionCeilings}),
        or L{None} for none.
    """
    return ConnectionCeiling(
        limit,
        clock,
        refusal=TOO_MANY_OPEN_CONNECTIONS,
        surface="memcache",
        refusedHow="refusing new connections with 'ERROR Too many open connections'",
    )


@implementer(IHandshakeListener)
class SniffingProtocol(Protocol, TimeoutMixin):
    """
    Waits for the first byte, then hands the connection to the codec it
    names; owns the connection's one way to close (L{close}).

    @ivar session: the connection's L{Session}.
    @ivar codec: the codec, once the first byte arrived.
    """

    def __init__(self, factory: "MemcacheFactory") -> None:
        self.factory = factory
        self.session: Optional[Session] = None
        self.codec: Optional[CodecProtocol] = None
        self._closing = False
        self._handshaking = False
        self._waiting = False
        self._heldBack = False
        self._stash: Optional[list] = None

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """
        L{TimeoutMixin}'s timers run on the factory's clock.
        """
        return self.factory.reactor.callLater(period, func)

    def connectionMade(self) -> None:
        factory = self.factory
        factory.ceiling.opened(self)
        transport: Any = self.transport
        peer = transport.getPeer()
        self.session = Session(
            factory.registry,
            factory.reactor,
            factory.throttle,
            getattr(peer, "host", str(peer)),
            self.close,
            factory.authTimeout,
            connection=self,
        )
        if ISSLTransport.providedBy(transport):
            # until handshakeCompleted
            self._handshaking = True
            self.setTimeout(factory.authTimeout or HANDSHAKE_TIMEOUT)
        if not factory.admission.arrive(self):
            # A storm of new connections: not read at all until a place is
            # free (L{LoginAdmission.arrive}), so their first reads do not
            # all come in one reactor pass.
            transport.pauseProducing()

    @property
    def closed(self) -> bool:
        """
        Whether the connection is closing or closed (a waiting one is then
        not admitted).
        """
        return self._closing

    def letIn(self) -> None:
        """
        A place came free (L{LoginAdmission.arrive}): start reading, unless
        the first-read gate holds it.
        """
        if not self._closing and not self._waiting:
            transport: Any = self.transport
            transport.resumeProducing()

    def putBack(self) -> None:
        """
        It lost its place before its client sent anything
        (L{LoginAdmission.arrive}): stop reading until let in again.
        """
        transport: Any = self.transport
        transport.pauseProducing()

    def admitted(self) -> None:
        """
        Its turn came (L{LoginAdmission}): read again, and handle what its
        first read brought.
        """
        self._waiting = False
        stash, self._stash = self._stash, None
        if not self._closing:
            transport: Any = self.transport
            transport.resumeProducing()
            if stash:
                self._start(b"".join(stash))

    def holdBack(self) -> None:
        """
        Stop reading until L{release} (the fair share): the codec's gate.
        """
        if self.codec is not None:
            self.codec.holdBack()

    def release(self) -> None:
        """
        Read again (the fair share's round came).
        """
        if self.codec is not None:
            self.codec.release()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: from now on the auth timeout applies.
        """
        self._handshaking = False
        if not self._closing:
            self.setTimeout(None)

    def timeoutConnection(self) -> None:
        """
        The handshake did not finish in time, or a close did not complete
        within L{CLOSE_GRACE}: drop the connection.
        """
        transport: Any = self.transport
        transport.abortConnection()

    def close(self) -> None:
        """
        Close the connection: the one way it closes (see the module
        docstring).  Output already handed to the transport is still sent.
        """
        if self._closing:
            return
        self._closing = True
        if self.codec is not None:
            self.codec.stopBeingProducer()
        transport: Any = self.transport
        transport.loseConnection()
        if not self._handshaking:
            # (during a handshake its own deadline stands)
            self.setTimeout(CLOSE_GRACE)

    def dataReceived(self, data: bytes) -> None:
        if not data:
            # no byte to sniff yet (TCP never delivers none; a wrapping
            # transport might): wait for one
            return
        self.factory.admission.read(self)
        transport: Any = self.transport
        if self._waiting:
            # more before its turn (a client waits for its login's answer,
            # so rarely): keep it, and read no more until the turn
            assert self._stash is not None
            self._stash.append(data)
            transport.pauseProducing()
            return
        if not self.factory.admission.admit(self):
            # A login storm: handled when its turn comes, a batch per turn.
            # The gate is here, at the first read, not at the connection:
            # connections let in before their clients sent anything would
            # otherwise all become readable in one reactor pass.  Reading
            # goes on (a pause and its resume are two epoll_ctl calls for
            # each of thousands), the next read pauses it.
            self._waiting = True
            self._stash = [data]
            return
        self._start(data)

    def _start(self, data: bytes) -> None:
        """
        Hand the connection to the codec its first byte names.
        """
        factory = self.factory
        if data[0] == BINARY_REQUEST_MAGIC:
            codec: CodecProtocol = BinaryProtocol(self.session, self.close, factory.directSend)
        else:
            codec = AsciiProtocol(self.session, self.close, factory.directSend, factory.maxKeys)
        self.codec = codec
        self.dataReceived = codec.dataReceived  # type: ignore[method-assign]
        codec.makeConnection(self.transport)
        codec.dataReceived(data)

    def drain(self) -> None:
        """
        Close once the request being received, if any, is answered (see
        L{memcachier.protocols.base.CodecProtocol.drain}).
        """
        if self.codec is None:
            self.close()
        else:
            self.codec.drain()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self.setTimeout(None)
        if self.codec is not None:
            self.codec.connectionLost(reason)
        elif self.session is not None:
            self.session.connectionLost()
        self.factory.ceiling.closed(self)
        self.factory.admission.read(self)
        # The codec and the session point back here (the close callback):
        # letting go of them leaves no cycle, so a closed connection is
        # freed at once, not left to the collector (thousands closing at
        # once would otherwise all be garbage for its next full pass).
        self.codec = None
        self.session = None
        self._stash = None
        self.__dict__.pop("dataReceived", None)


class MemcacheFactory(Factory):
    """
    The memcache listener's factory, shared by every TCP and TLS listener.

    @ivar registry: the L{memcachier.runtime.CacheRegistry}.
    @ivar authTimeout: seconds an unauthenticated connection may stay open
        (also the TLS handshake's deadline).
    @ivar ceiling: the L{ConnectionCeiling} over every memcache listener.
    @ivar maxKeys: keys an ASCII retrieval command may name, C{0} for no
        count (C{limits.multiget_keys}).
    @ivar directSend: the codecs' fast send path, or L{None} for the
        public one (C{transport.write}).
    @ivar admission: the L{LoginAdmission} new connections go through.
    """

    protocol = SniffingProtocol
    noisy = False

    def __init__(
        self,
        registry: Any,
        reactor: IReactorTime,
        authTimeout: float = 5.0,
        throttle: Optional[AuthThrottle] = None,
        maxConnections: Optional[int] = None,
        maxKeys: int = 0,
        ceiling: Optional[ConnectionCeiling] = None,
        directSend: Optional[DirectSend] = None,
        admission: Optional[LoginAdmission] = None,
    ) -> None:
        """
        @param admission: the L{LoginAdmission} (none, every connection
            read at once, when L{None}).
        @param maxConnections: the ceiling, when C{ceiling} is not given.
        @param ceiling: the memcache surface's L{ConnectionCeiling}
            (L{memcacheConnectionCeiling}), built by the composition.
        @param directSend: L{memcachier.node.fastpaths.directSocket} or
            L{None}.
        """
        self.maxKeys = maxKeys
        self.registry = registry
        self.reactor = reactor
        self.authTimeout = authTimeout
        self.throttle = throttle if throttle is not None else AuthThrottle()
        if ceiling is None:
            ceiling = memcacheConnectionCeiling(maxConnections, reactor)
        self.ceiling = ceiling
        self.directSend = directSend
        self.admission = admission if admission is not None else LoginAdmission(reactor, 0)

    @property
    def maxConnections(self) -> Optional[int]:
        """
        The ceiling over every memcache listener, or L{None}.
        """
        return self.ceiling.limit

    @property
    def open(self) -> "set[Any]":
        """
        The connections open now.
        """
        return self.ceiling.open

    @property
    def refused(self) -> Any:
        """
        The connections refused past the ceiling, in
        L{memcachier.tx.ceiling.Bursts}.
        """
        return self.ceiling.refused

    @property
    def connections(self) -> int:
        """
        How many connections are open.
        """
        return self.ceiling.connections

    def drain(self) -> Deferred:
        """
        Close every connection once what it was sent is answered: an idle
        one at once (after its queued output), one in the middle of a
        request once that request has arrived and been answered (see
        L{memcachier.node.shutdown}).

        @return: a L{Deferred} firing when none is open.
        """
        self.admission.stop()
        return self.ceiling.drain()

    def abort(self) -> int:
        """
        Drop every connection still open (a client not reading its
        answers past the shutdown deadline).

        @return: how many were open.
        """
        return self.ceiling.abort()

    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[Protocol]:
        refusing = self.ceiling.admit()
        if refusing is not None:
            return refusing
        return SniffingProtocol(self)
