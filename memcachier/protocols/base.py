# -*- test-case-name: tests.unit.test_pipeline -*-
"""
What both codecs share: the ordered-reply pipeline and a way to send a
response without paying two C{epoll_ctl} calls for it.

The pipeline
============

A codec parses requests and hands each one to the session.  A synchronous
keyspace answers at once: the codec renders the reply into a plain list and
the list is sent once per read (no object per request).  An asynchronous
keyspace (a remote store, a peer node) answers with a L{Deferred}: the
codec passes it to L{CodecProtocol.later} with a renderer, and that request
gets a I{slot}.  From then on every reply, immediate or late, queues behind
that slot, so replies leave in request order (memcached's
C{conn_resp_suspend}).  Parsing goes on through the data already received,
so several requests can be in flight towards the keyspace, but reading from
the client pauses while the oldest answer is pending: at most one read's
worth of requests waits in memory.

A late answer that fails (or a keyspace that raises) is logged once and
answered with the codec's error for that request alone (ASCII
C{SERVER_ERROR <reason>}, binary status 0x84); the connection goes on.

A request whose answer changes how the rest must be parsed (authentication)
is a I{barrier}: parsing holds the rest of the input until it is answered.
Parsing also holds while the client does not read its answers (below).

Sending
=======

The public path: replies go to C{transport.write}, and the codec is the
transport's I{push} producer, so a transport whose buffer fills pauses us
(we stop reading from the client) and resumes us once it drained.

The fast path, when the factory was given one
(L{memcachier.node.fastpaths.directSocket}, injected: this layer never
imports the node's): Twisted's C{transport.write} queues data and sends it
on the next reactor pass, which registers the socket for writability and
unregisters it again for every response.  For a request/response protocol
where the reply is almost always smaller than the socket buffer, sending
on the transport's socket at once when nothing is queued avoids both
calls.  "Is anything queued?" comes from the producer protocol: we
register as a I{pull} producer, and the transport calls
C{resumeProducing} on it each time its buffer has been written out; after
a send had to go through the transport we use the transport until then.

Queued output is bounded: past L{MAX_QUEUED} bytes we stop reading from the
client until the transport has drained (a client that pipelines without
reading cannot grow our memory).

Holding back
============

The fair share (L{memcachier.protocols.fairshare}) may stop a connection
being read for a round: L{CodecProtocol.holdBack} and
L{CodecProtocol.release}.  Reading is paused while any of three reasons
holds (a pending answer, a backlog, holding back) and resumed only once
none does; what was already received is still answered.

Closing
=======

A codec closes through the C{close} callable it was given (the
connection's one way to close,
L{memcachier.protocols.sniff.SniffingProtocol.close}), which first calls
L{CodecProtocol.stopBeingProducer}: TLS sends its close alert only once no
producer is registered.
"""

import socket
from collections import deque
from typing import Callable, Optional

from twisted.internet.defer import FirstError
from twisted.internet.interfaces import IPullProducer, IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from memcachier.commands import KeyspaceError


#: queued output beyond which we stop reading from the client
MAX_QUEUED = 4 * 1024 * 1024
#: codecs send what they have gathered once it passes this size, then
#: check L{CodecProtocol.backlogged} before answering more
FLUSH_AT = 256 * 1024
#: longest reason a keyspace failure may show the client
MAX_REASON = 64


def failureReason(failure):
    """
    The short reason a client is shown for a failed keyspace call: the
    text of a L{KeyspaceError} (printable ASCII, other bytes as spaces, at
    most L{MAX_REASON} bytes), else C{backend failure} (never a traceback
    or internal detail).

    @type failure: L{Failure}
    @rtype: L{bytes}
    """
    if failure.check(FirstError):
        # one of several keys of a multi-key request
        failure = failure.value.subFailure
    if failure.check(KeyspaceError) and failure.value.args:
        text = str(failure.value.args[0]).encode("ascii", "replace")[:MAX_REASON]
        text = bytes(c if 32 <= c < 127 else 32 for c in text).strip()
        if text:
            return text
    return b"backend failure"


def renderDetailDump(rows):
    """
    memcached's C{stats detail dump} text (both protocols carry it).

    @param rows: (prefix, get, hit, set, del) tuples.
    """
    return b"".join(
        b"PREFIX %b get %d hit %d set %d del %d\r\n" % row for row in rows
    ) + b"END\r\n"


@implementer(IPullProducer, IPushProducer)
class CodecProtocol(Protocol):
    """
    Base class of the ASCII and binary codecs: the ordered-reply pipeline
    and back-pressure (see the module docstring).

    Codecs use L{emit} for replies that are ready, L{later} for a
    L{Deferred} answer, L{failedNow} for a keyspace that raised, L{hold}
    to stop parsing, L{closeAfterReplies} to close in order, and implement
    L{resumeParsing}.

    @ivar session: the connection's L{memcachier.protocols.session.Session}.
    @ivar _close: the connection's close (see the module docstring).
    @ivar _directSend: the fast path's socket finder, or L{None}.
    @ivar _producing: whether we are the transport's producer.
    @ivar _sock: the socket to send on directly, or L{None} when every
        write must go through the transport.
    @ivar _queued: bytes handed to the transport since it last drained
        (direct sends must wait while this is non-zero, to keep order).
    @ivar _backlogged: whether too much output is queued: reading is paused
        and codecs must stop answering until it drained.
    @ivar _slots: replies waiting behind a late answer, oldest first: each
        a 1-list holding the reply bytes, or L{None} while pending.  Empty
        on the synchronous hot path.
    @ivar _held: input kept unparsed while parsing holds (a list of
        L{bytes}), or L{None} when parsing goes on.
    @ivar _closing: close once every slot has been sent; ignore input.
    @ivar _heldBack: whether the fair share holds reading back.
    """

    _log = Logger()

    def __init__(
        self,
        session,
        close: Optional[Callable[[], None]] = None,
        directSend: Optional[Callable[[ITransport], Optional[socket.socket]]] = None,
    ) -> None:
        """
        @param session: the connection's session.
        @param close: the connection's one way to close
            (L{memcachier.protocols.sniff.SniffingProtocol.close}); a codec
            used on its own (tests) stops producing and asks its transport
            to close.
        @param directSend: the transport's socket to send on directly, or
            L{None} (L{memcachier.node.fastpaths.directSocket}); L{None}
            for the public path.
        """
        self.session = session
        self._close = close if close is not None else self._loseConnection
        self._directSend = directSend
        self._producing = False
        self._sock = None
        self._queued = 0
        self._readingPaused = False
        self._backlogged = False
        self._heldBack = False
        self._slots = deque()
        self._held = None
        self._barrier = None
        self._closing = False
        self._lost = False
        self._releasing = False
        self._draining = False

    def connectionMade(self) -> None:
        transport = self.transport
        directSend = self._directSend
        sock = directSend(transport) if directSend is not None else None
        self._producing = True
        if sock is not None:
            transport.registerProducer(self, False)
            self._sock = sock
        else:
            transport.registerProducer(self, True)

    def stopBeingProducer(self) -> None:
        """
        Unregister from the transport if we are its producer (before a
        close: TLS does not close while a producer is registered); sends
        go through C{transport.write} from now on.
        """
        self._sock = None
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def _loseConnection(self) -> None:
        """
        The close of a codec used without a connection's close.
        """
        self.stopBeingProducer()
        self.transport.loseConnection()

    # -- the pipeline --------------------------------------------------------

    def emit(self, data):
        """
        Send C{data}, the replies to requests parsed after every earlier
        one: at once when nothing is pending, else behind the pending
        answers.
        """
        if self._slots:
            self._slots.append([data])
        else:
            self.send(data)

    def later(self, deferred, render, renderFailure, out, barrier=False):
        """
        Give a request answered by C{deferred} its place in the pipeline.

        @param render: called with the result; returns the reply L{bytes}.
        @param renderFailure: called with the reason L{bytes} (see
            L{failureReason}) when the answer failed; returns the reply.
        @param out: the replies gathered so far by the codec's parse loop;
            they precede this one and are emitted (and C{out} emptied).
        @param barrier: whether the rest of the input must wait for this
            answer (the codec calls L{hold} when this returns true).
        @return: whether C{barrier} was asked and the answer is pending.
        """
        if out:
            self.emit(b"".join(out))
            del out[:]
        slot = [None]
        self._slots.append(slot)
        deferred.addCallback(render)
        deferred.addErrback(self._ebAnswer, renderFailure)
        deferred.addCallback(self._cbAnswer, slot)
        if slot[0] is not None:
            return False
        if not self._readingPaused:
            self._readingPaused = True
            if not (self._backlogged or self._heldBack):
                self.transport.pauseProducing()
        if barrier:
            self._barrier = slot
            return True
        return False

    def failedNow(self, renderFailure):
        """
        The keyspace raised while answering a request: log the exception
        being handled and return the request's error reply.
        """
        failure = Failure()
        self._log.failure("keyspace call failed", failure=failure)
        return renderFailure(failureReason(failure))

    def _ebAnswer(self, failure, renderFailure):
        self._log.failure("keyspace call failed", failure=failure)
        return renderFailure(failureReason(failure))

    def _cbAnswer(self, reply, slot):
        slot[0] = reply
        if self._lost:
            return None
        slots = self._slots
        if slots and slots[0] is slot:
            self._advance()
        return None

    def _advance(self):
        """
        Send every answered slot at the head, then, once none is pending,
        resume reading and parsing.
        """
        slots = self._slots
        while slots and slots[0][0] is not None:
            data = slots.popleft()[0]
            if data:
                self.send(data)
        if self._barrier is not None and self._barrier[0] is not None:
            self._barrier = None
        if slots:
            return
        if self._closing:
            self._close()
            return
        if self._readingPaused:
            self._readingPaused = False
            if not (self._backlogged or self._heldBack):
                self.transport.resumeProducing()
        self._release()

    def hold(self, rest):
        """
        Stop parsing: keep C{rest} and whatever arrives next unparsed until
        the barrier is answered and the client reads again.
        """
        held = self._held
        if held is None:
            self._held = [rest] if rest else []
        elif rest:
            held.insert(0, rest)

    def _release(self):
        if not (
            self._held is None or self._barrier is not None or self._backlogged
            or self._closing or self._releasing
        ):
            self._releasing = True
            try:
                while self._held is not None and self._barrier is None and not self._backlogged:
                    held, self._held = self._held, None
                    self.resumeParsing(b"".join(held))
                    if self._closing or self._lost:
                        break
            finally:
                self._releasing = False
        if self._draining:
            self.checkDrained()

    def resumeParsing(self, data):
        """
        Parsing may go on: parse C{data}, the input held since L{hold}.
        Codecs override this.
        """

    def partialRequest(self):
        """
        Whether part of a request has been received and the rest not yet
        (codecs override this), or input is held unparsed.
        """
        return bool(self._held)

    def drain(self):
        """
        The node is stopping: close once no request is partly received
        and every reply has been sent.  A client in the middle of sending
        a request may finish it (within the shutdown deadline) and gets
        its answer; what it sends after that is ignored.
        """
        self._draining = True
        # a request partly received must be read to the end
        self.release()
        self.checkDrained()

    def checkDrained(self):
        """
        Close if draining and no request is partly received; codecs call
        this after parsing what arrived.
        """
        if (
            self._draining and not self._closing and not self._releasing
            and not self.partialRequest()
        ):
            self.closeAfterReplies()

    def closeAfterReplies(self):
        """
        Close the connection once every reply so far has been sent, and
        ignore further input.
        """
        self._closing = True
        self._held = None
        if not self._slots:
            self._close()

    # -- sending ---------------------------------------------------------------

    @property
    def backlogged(self):
        """
        Whether the client is not reading its answers fast enough: a codec
        must stop answering (L{hold}) until it drained.
        """
        return self._backlogged

    def waitForDrain(self):
        """
        Whether a codec that just sent a large reply must wait before
        answering more: the client is L{backlogged}, or anything is queued
        at the transport at all (it reads slower than we answer).  Reading
        then pauses until the transport drained, and L{drained} is called.
        Waiting as soon as anything is queued keeps what a client that
        does not read holds to about one large reply; L{MAX_QUEUED} still
        bounds many small ones.
        """
        if self._backlogged:
            return True
        if self._queued:
            self.pauseProducing()
            return True
        return False

    def send(self, data):
        """
        Send C{data} now if nothing is queued, else through the transport.

        @param data: L{bytes}, or a L{memoryview} of a stored item (a big
            value sent without copying it into the reply); what must wait
            in the transport is copied then, as transports take only bytes.
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
        if data.__class__ is not bytes:
            data = bytes(data)
        self.transport.write(data)

    # IPullProducer (TCP): the transport calls this each time its buffer
    # drained.  IPushProducer (other transports): the transport's buffer
    # drained after a pauseProducing.

    def resumeProducing(self):
        self._queued = 0
        transport = self.transport
        if self._sock is not None and transport.disconnecting:
            # a registered pull producer would keep a closing transport open
            self.stopBeingProducer()
            return
        if self._backlogged:
            self._backlogged = False
            if not (self._readingPaused or self._heldBack):
                transport.resumeProducing()
            self.drained()
            self._release()

    def pauseProducing(self):
        if not self._backlogged:
            self._backlogged = True
            self.transport.pauseProducing()

    # the fair share's gate (see the module docstring)

    def holdBack(self):
        """
        Stop reading from the client until L{release}: the cache is over
        its share or its budget.  Requests already received are answered.
        """
        if not self._heldBack and not self._lost:
            self._heldBack = True
            if not (self._readingPaused or self._backlogged):
                self.transport.pauseProducing()

    def release(self):
        """
        Read from the client again, unless another reason to wait holds.
        """
        if self._heldBack:
            self._heldBack = False
            if not (self._readingPaused or self._backlogged or self._lost):
                self.transport.resumeProducing()

    def stopProducing(self):
        self._sock = None
        self._producing = False

    def drained(self):
        """
        Called once queued output has been written after L{backlogged}
        was true, before held input is parsed; codecs override it to go on
        with a reply they had to stop in the middle.
        """

    def connectionLost(self, reason):
        self._sock = None
        self._producing = False
        self._lost = True
        self._closing = True
        self._held = None
        self._slots.clear()
        self.session.connectionLost()
