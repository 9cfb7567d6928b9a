# -*- test-case-name: tests.unit.test_base -*-
"""
What both codecs share: the session they talk to and a way to send a
response without paying two C{epoll_ctl} calls for it.

Twisted's C{transport.write} queues data and sends it on the next reactor
pass, which registers the socket for writability and unregisters it again
for every response.  For a request/response protocol where the reply is
almost always smaller than the socket buffer, sending at once when nothing
is queued avoids both calls.  We do this with public APIs only:

  - the transport's socket from C{getHandle()};
  - "is anything queued?" from the producer protocol: we register as a
    I{pull} producer, and a transport calls C{resumeProducing} on its pull
    producer each time its buffer has been written out.  After a send had
    to go through the transport we use the transport until that call.

Queued output is bounded: past L{MAX_QUEUED} bytes we stop reading from the
client until the transport has drained (a client that pipelines without
reading cannot grow our memory).

Transports that are not plain TCP (TLS, tests) get C{transport.write}, with
us registered as a push producer for the same back-pressure.
"""

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from zope.interface import implementer
from twisted.internet.interfaces import IPullProducer, IPushProducer


#: queued output beyond which we stop reading from the client
MAX_QUEUED = 4 * 1024 * 1024
#: codecs send what they have gathered once it passes this size, then
#: check L{CodecProtocol.backlogged} before answering more
FLUSH_AT = 256 * 1024


@implementer(IPullProducer, IPushProducer)
class CodecProtocol(Protocol):
    """
    Base class of the ASCII and binary codecs.

    On plain TCP it registers as a pull producer (see the module docstring);
    on other transports (TLS) as a push producer, so that the transport's
    own C{pauseProducing}/C{resumeProducing} tell it when output backs up.

    @ivar session: the connection's L{memcachier.protocols.session.Session}.
    @ivar _sock: the socket to send on directly, or L{None} when every
        write must go through the transport.
    @ivar _queued: bytes handed to the transport since it last drained
        (direct sends must wait while this is non-zero, to keep order).
    @ivar _backlogged: whether too much output is queued: reading is paused
        and codecs must stop answering until L{drained}.
    """

    def __init__(self, session):
        self.session = session
        self._sock = None
        self._queued = 0
        self._readingPaused = False
        self._backlogged = False

    def connectionMade(self):
        transport = self.transport
        if isinstance(transport, tcp.Connection):
            sock = transport.getHandle()
            if isinstance(sock, socket.socket):
                transport.registerProducer(self, False)
                self._sock = sock
                return
        registerProducer = getattr(transport, "registerProducer", None)
        if registerProducer is not None:
            registerProducer(self, True)
            # TLS sends its close alert only once no producer is registered,
            # so a close (quit, auth timeout or failure, shutdown) would
            # otherwise never happen: unregister first.
            loseConnection = transport.loseConnection

            def unregisterThenLose():
                transport.unregisterProducer()
                loseConnection()

            transport.loseConnection = unregisterThenLose

    @property
    def backlogged(self):
        """
        Whether the client is not reading its answers fast enough: a codec
        must stop answering (and keep unparsed input) until L{drained}.
        """
        return self._backlogged

    def drained(self):
        """
        Called once queued output has been written after L{backlogged}
        was true; codecs override it to go on answering.
        """

    def send(self, data):
        """
        Send C{data} now if nothing is queued, else through the transport.
        """
        self.session.stats.bytes_written += len(data)
        sock = self._sock
        if sock is not None:
            if not self._queued:
                try:
                    sent = sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    # let the transport see and report the error
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            self._queued += len(data)
            if self._queued > MAX_QUEUED and not self._backlogged:
                self._backlogged = True
                self.transport.pauseProducing()
        self.transport.write(data)

    # IPullProducer (TCP): the transport calls this each time its buffer
    # drained.  IPushProducer (other transports): the transport's buffer
    # drained after a pauseProducing.

    def resumeProducing(self):
        self._queued = 0
        transport = self.transport
        if self._sock is not None and transport.disconnecting:
            # a registered pull producer would keep a closing transport open
            self._sock = None
            transport.unregisterProducer()
            return
        if self._backlogged:
            self._backlogged = False
            if not self._readingPaused:
                transport.resumeProducing()
            self.drained()

    def pauseProducing(self):
        if not self._backlogged:
            self._backlogged = True
            self.transport.pauseProducing()

    def stopProducing(self):
        self._sock = None

    # codecs pause reading while an asynchronous store works

    def pauseReading(self):
        """
        Stop reading from the client (an asynchronous store is answering).
        """
        self._readingPaused = True
        self.transport.pauseProducing()

    def resumeReading(self):
        self._readingPaused = False
        if not self._backlogged:
            self.transport.resumeProducing()

    def connectionLost(self, reason):
        self._sock = None
        self.session.connectionLost()
