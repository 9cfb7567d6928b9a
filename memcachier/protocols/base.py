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
    streaming producer with a C{bufferSize} of 0, so the transport calls
    L{pauseProducing} as soon as anything is queued and L{resumeProducing}
    once its buffer is empty again.  While paused we write through the
    transport (keeping order) and stop reading (back-pressure).

Transports that are not plain TCP (TLS, tests) just get C{transport.write}.
"""

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


@implementer(IPushProducer)
class CodecProtocol(Protocol):
    """
    Base class of the ASCII and binary codecs.

    @ivar session: the connection's L{memcachier.protocols.session.Session}.
    @ivar _sock: the socket to send on directly, or L{None} when every
        write must go through the transport.
    """

    def __init__(self, session):
        self.session = session
        self._sock = None
        self._queued = False
        self._paused = False

    def connectionMade(self):
        transport = self.transport
        if isinstance(transport, tcp.Connection) and hasattr(transport, "bufferSize"):
            sock = transport.getHandle()
            if isinstance(sock, socket.socket):
                transport.bufferSize = 0
                transport.registerProducer(self, True)
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
        self.transport.write(data)

    # IPushProducer: called by the transport about its own buffer

    def pauseProducing(self):
        self._queued = True
        if not self._paused:
            self.transport.pauseProducing()

    def resumeProducing(self):
        self._queued = False
        if not self._paused:
            self.transport.resumeProducing()

    def stopProducing(self):
        self._sock = None

    # codecs pause reading while an asynchronous store works

    def pauseReading(self):
        """
        Stop reading from the client (an asynchronous store is answering).
        """
        self._paused = True
        self.transport.pauseProducing()

    def resumeReading(self):
        self._paused = False
        if not self._queued:
            self.transport.resumeProducing()

    def connectionLost(self, reason):
        self._sock = None
        self.session.connectionLost()
