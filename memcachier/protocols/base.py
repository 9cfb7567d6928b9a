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

Transports that are not plain TCP (TLS, tests) just get C{transport.write}.
"""

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from zope.interface import implementer
from twisted.internet.interfaces import IPullProducer


#: queued output beyond which we stop reading from the client
MAX_QUEUED = 4 * 1024 * 1024


@implementer(IPullProducer)
class CodecProtocol(Protocol):
    """
    Base class of the ASCII and binary codecs.

    @ivar session: the connection's L{memcachier.protocols.session.Session}.
    @ivar _sock: the socket to send on directly, or L{None} when every
        write must go through the transport.
    @ivar _queued: bytes handed to the transport since it last drained
        (direct sends must wait while this is non-zero, to keep order).
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

    def send(self, data):
        """
        Send C{data} now if nothing is queued, else through the transport.
        """
        self.session.stats.bytes_written += len(data)
        sock = self._sock
        if sock is not None and not self._queued:
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
        if sock is not None:
            self._queued += len(data)
            if self._queued > MAX_QUEUED and not self._backlogged:
                self._backlogged = True
                self.transport.pauseProducing()
        self.transport.write(data)

    # IPullProducer: the transport calls this each time its buffer drained

    def resumeProducing(self):
        self._queued = 0
        transport = self.transport
        if transport.disconnecting:
            # a registered producer would keep a closing transport open
            self._sock = None
            transport.unregisterProducer()
            return
        if self._backlogged:
            self._backlogged = False
            if not self._readingPaused:
                transport.resumeProducing()

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
