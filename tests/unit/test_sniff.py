"""
L{memcachier.protocols.sniff}: the first byte picks the codec, the codec
gets its collaborators as constructor arguments, and every close goes
through L{SniffingProtocol.close}: the producer unregistered first (TLS
closes only without one), then C{loseConnection}, then an abort if the
connection has not let go after L{CLOSE_GRACE}; a TLS client that never
finishes its handshake is aborted.
"""

import socket

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from memcachier.protocols.ascii import AsciiProtocol
from memcachier.protocols.binary import BinaryProtocol
from memcachier.protocols.sniff import CLOSE_GRACE, HANDSHAKE_TIMEOUT, MemcacheFactory
from tests.unit.helpers import World
from tests.unit.test_binary import plainAuth


class RecordingTransport(StringTransport):
    """
    A transport that records the calls a close makes, in order, and
    never finishes closing by itself (as a TLS transport waiting for the
    peer's close alert).
    """

    def __init__(self, tls=False):
        super().__init__()
        self.calls = []
        if tls:
            directlyProvides(self, ISSLTransport)

    def registerProducer(self, producer, streaming):
        self.calls.append("registerProducer")
        super().registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.calls.append("unregisterProducer")
        super().unregisterProducer()

    def loseConnection(self):
        self.calls.append("loseConnection")
        super().loseConnection()

    def abortConnection(self):
        self.calls.append("abortConnection")
        self.disconnecting = self.disconnected = True


def connect(factory, tls=False):
    proto = factory.buildProtocol(None)
    transport = RecordingTransport(tls)
    proto.makeConnection(transport)
    return proto, transport


def test_authTimeoutUnregistersThenLoses():
    """
    The auth timeout of a connection whose codec is the transport's
    producer unregisters it before C{loseConnection}; the connection is
    aborted C{CLOSE_GRACE} later if it is still open, and only once.
    """
    world = World()
    proto, transport = connect(world.factory)
    proto.dataReceived(b"g")
    assert transport.calls == ["registerProducer"]
    world.clock.advance(5.0)
    assert transport.calls == ["registerProducer", "unregisterProducer", "loseConnection"]
    world.clock.advance(CLOSE_GRACE)
    assert transport.calls[-1] == "abortConnection"
    proto.connectionLost(None)
    world.clock.advance(60)
    assert transport.calls.count("abortConnection") == 1
    assert world.factory.connections == 0


def test_authTimeoutBeforeAnyByte():
    """
    A connection that sent nothing has no codec and no producer: the
    auth timeout just closes it.
    """
    world = World()
    proto, transport = connect(world.factory)
    world.clock.advance(5.0)
    assert transport.calls == ["loseConnection"]


def test_closedInTimeNeedsNoAbort():
    """
    A connection that closes within the grace is not aborted.
    """
    world = World()
    proto, transport = connect(world.factory)
    world.clock.advance(5.0)
    proto.connectionLost(None)
    world.clock.advance(CLOSE_GRACE * 2)
    assert "abortConnection" not in transport.calls


def test_quitAndFailedAuthCloseThroughClose():
    """
    QUIT (ASCII) and a failed authentication (binary) unregister the
    producer before C{loseConnection}, as every close does.
    """
    world = World()
    proto, transport = connect(world.factory)
    proto.dataReceived(b"quit\r\n")
    assert transport.calls == ["registerProducer", "unregisterProducer", "loseConnection"]
    proto, transport = connect(world.factory)
    proto.dataReceived(plainAuth(b"rw", b"wrong"))
    world.clock.advance(0)
    assert transport.calls[:1] == ["registerProducer"]


def test_drainClosesThroughClose():
    """
    Drain on shutdown closes an idle connection the same way.
    """
    world = World()
    proto, transport = connect(world.factory)
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    world.factory.drain()
    assert transport.calls == ["registerProducer", "unregisterProducer", "loseConnection"]


def test_handshakeTimeout():
    """
    On a TLS transport the handshake must finish within the auth
    timeout: past it the connection is aborted, even before any byte.
    """
    world = World()
    factory = MemcacheFactory(world.registry, world.clock, authTimeout=2.0)
    proto, transport = connect(factory, tls=True)
    world.clock.advance(2.0)
    assert "abortConnection" in transport.calls


def test_closeDuringHandshakeKeepsItsDeadline():
    """
    A close asked during the TLS handshake (the auth timeout, a drain)
    does not push the handshake's deadline back by the close grace.
    """
    world = World()
    factory = MemcacheFactory(world.registry, world.clock, authTimeout=2.0)
    proto, transport = connect(factory, tls=True)
    world.clock.advance(1.0)
    proto.close()
    world.clock.advance(1.0)
    assert transport.calls == ["loseConnection", "abortConnection"]


def test_handshakeTimeoutWithoutAuthTimeout():
    """
    With the auth timeout off, the handshake still has
    L{HANDSHAKE_TIMEOUT}; once it completed, nothing closes an idle
    connection.
    """
    world = World()
    factory = MemcacheFactory(world.registry, world.clock, authTimeout=0)
    proto, transport = connect(factory, tls=True)
    world.clock.advance(HANDSHAKE_TIMEOUT - 0.1)
    assert transport.calls == []
    world.clock.advance(0.1)
    assert transport.calls == ["abortConnection"]
    proto, transport = connect(factory, tls=True)
    proto.handshakeCompleted()
    world.clock.advance(HANDSHAKE_TIMEOUT * 10)
    assert transport.calls == []


def test_plainTransportHasNoHandshakeTimeout():
    """
    A TCP connection is not aborted by a handshake timeout (the auth
    timeout closes it gracefully).
    """
    world = World()
    factory = MemcacheFactory(world.registry, world.clock, authTimeout=0)
    proto, transport = connect(factory)
    world.clock.advance(HANDSHAKE_TIMEOUT * 10)
    assert transport.calls == []


def test_codecsGetTheirCollaborators():
    """
    The codec is built with the factory's C{maxKeys} and fast send path,
    not given them afterwards.
    """
    world = World()
    factory = MemcacheFactory(world.registry, world.clock, maxKeys=3)
    proto, transport = connect(factory)
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    transport.clear()
    proto.dataReceived(b"get a b c d\r\n")
    assert isinstance(proto.codec, AsciiProtocol) and proto.codec.maxKeys == 3
    assert transport.value() == b"CLIENT_ERROR too many keys\r\n"
    proto, transport = connect(factory)
    proto.dataReceived(plainAuth(b"rw", b"secret"))
    assert isinstance(proto.codec, BinaryProtocol)


def test_directSendIsInjected():
    """
    Given a C{directSend}, a codec sends on the socket it returns and is
    the transport's pull producer; without one (the public path) it
    writes to the transport and is a push producer.
    """
    world = World()
    ours, theirs = socket.socketpair()
    try:
        factory = MemcacheFactory(world.registry, world.clock, directSend=lambda t: ours)
        proto, transport = connect(factory)
        proto.dataReceived(b"version\r\n")
        assert transport.streaming is False and transport.value() == b""
        assert theirs.recv(100).startswith(b"VERSION ")
    finally:
        ours.close()
        theirs.close()
    proto, transport = connect(world.factory)
    proto.dataReceived(b"version\r\n")
    assert transport.streaming is True
    assert transport.value().startswith(b"VERSION ")
