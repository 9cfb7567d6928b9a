"""
The fast paths' gate (L{memcachier.node.fastpaths}), the direct send's
socket, and the streamlined epoll loop: the same dispatch as
Twisted's, without the per-event log context, and what escapes a
selectable is logged while the others are still served.
"""

import os
import socket
from types import SimpleNamespace

from incremental import Version
from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from memcachier.node import fastpaths
from memcachier.node.fastpaths import streamlinePolling


class PipeReader:
    """
    The read end of a pipe as a reactor reader, recording its calls.
    """

    def __init__(self, failOnLost=False):
        self.readFd, self.writeFd = os.pipe()
        self.reads = 0
        self.lost = []
        self.failOnLost = failOnLost

    def fileno(self):
        return self.readFd

    def logPrefix(self):
        return "PipeReader"

    def doRead(self):
        self.reads += 1
        os.read(self.readFd, 100)
        if self.failOnLost:
            return Failure(RuntimeError("closed"))
        return None

    def connectionLost(self, reason):
        self.lost.append(reason)
        if self.failOnLost:
            raise ValueError("connectionLost failed")

    def close(self):
        for fd in (self.readFd, self.writeFd):
            try:
                os.close(fd)
            except OSError:
                pass


class StreamlinePollingTests(SynchronousTestCase):
    def setUp(self):
        # the loop itself is tested even where the suite runs with the
        # fast paths off
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != fastpaths.SWITCH})
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def reader(self, **kwargs):
        reader = PipeReader(**kwargs)
        self.addCleanup(reader.close)
        self.addCleanup(self.reactor.removeReader, reader)
        self.reactor.addReader(reader)
        return reader

    def test_onlyEpoll(self):
        """
        Other reactors are left as they are.
        """
        clock = Clock()
        self.assertFalse(streamlinePolling(clock))
        self.assertFalse(hasattr(clock, "doIteration"))
        self.assertTrue(streamlinePolling(self.reactor))

    def test_readsDispatched(self):
        """
        A readable descriptor gets its C{doRead}, as under Twisted's loop.
        """
        streamlinePolling(self.reactor)
        reader = self.reader()
        self.reactor.doIteration(0)
        self.assertEqual(reader.reads, 0)
        os.write(reader.writeFd, b"x")
        self.reactor.doIteration(0)
        self.assertEqual(reader.reads, 1)

    def test_escapedErrorLoggedOthersServed(self):
        """
        An exception escaping C{_doReadOrWrite} (here from a
        C{connectionLost}) is logged; the other ready descriptors of the
        same iteration are still served and the loop goes on.
        """
        streamlinePolling(self.reactor)
        failing = self.reader(failOnLost=True)
        healthy = self.reader()
        os.write(failing.writeFd, b"x")
        os.write(healthy.writeFd, b"x")
        self.reactor.doIteration(0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual((failing.reads, len(failing.lost)), (1, 1))
        self.assertEqual(healthy.reads, 1)
        os.write(healthy.writeFd, b"y")
        self.reactor.doIteration(0)
        self.assertEqual(healthy.reads, 2)


class GateTests(SynchronousTestCase):
    """
    One gate for every fast path: the tested Twisted range and
    C{MEMCACHIER_FAST_PATHS=off}; off, the node takes the public path and
    says so once.
    """

    def setUp(self):
        self.patch(fastpaths, "_said", False)

    def test_versionRange(self):
        """
        Releases within L{fastpaths.TESTED} pass, others do not.
        """
        self.assertTrue(fastpaths.twistedTested())
        for version, expected in (
            ("24.7.0", True), ("26.10.0", True), ("24.3.0", False), ("27.1.0", False),
        ):
            self.assertEqual(fastpaths.twistedTested(Version("Twisted", *map(int, version.split(".")))), expected)

    def test_switchedOff(self):
        """
        C{MEMCACHIER_FAST_PATHS=off} turns every fast path off, with one
        log line however often it is asked.
        """
        self.patch(os, "environ", dict(os.environ, MEMCACHIER_FAST_PATHS="off"))
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        with capturedLogs() as events:
            self.assertFalse(fastpaths.enabled())
            self.assertIsNone(fastpaths.directSender())
            self.assertFalse(streamlinePolling(reactor))
        self.assertEqual([e["event"] for e in events], ["fast_paths_off"])
        self.assertIn("MEMCACHIER_FAST_PATHS=off", fastpaths.describe())

    def test_outsideTheTestedRange(self):
        """
        A Twisted outside the tested range turns them off too.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != fastpaths.SWITCH})
        self.patch(fastpaths.twisted, "version", Version("Twisted", 27, 1, 0))
        with capturedLogs() as events:
            self.assertIsNone(fastpaths.directSender())
        self.assertEqual(len(events), 1)
        self.assertIn("outside the tested", fastpaths.describe())

    def test_on(self):
        """
        Within the range and not switched off, the composition gets
        L{fastpaths.directSocket}.
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != fastpaths.SWITCH})
        self.assertIs(fastpaths.directSender(), fastpaths.directSocket)
        self.assertTrue(fastpaths.describe().startswith("on "))


class DirectSocketTests(SynchronousTestCase):
    """
    L{fastpaths.directSocket} gives a plain TCP connection's own socket,
    and L{None} for any other transport.
    """

    def test_tcp(self):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        connection = tcp.Connection(ours, Protocol(), reactor)
        self.assertIs(fastpaths.directSocket(connection), ours)

    def test_other(self):
        self.assertIsNone(fastpaths.directSocket(StringTransport()))


class BoundAcceptsTests(SynchronousTestCase):
    """
    L{fastpaths.boundAccepts} caps how many connections a TCP port accepts
    per read of its socket, however far Twisted grew it.
    """

    def test_capped(self):
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        port = tcp.Port(0, None, interface="127.0.0.1", reactor=reactor)
        seen = []

        def doRead():
            # what Twisted's doRead does after accepting all it may
            seen.append(port.numberAccepts)
            port.numberAccepts += 20

        port.doRead = doRead
        port.numberAccepts = 500
        self.assertTrue(fastpaths.boundAccepts(port, 64))
        port.doRead()
        port.doRead()
        self.assertEqual(seen, [64, 64])
        port.numberAccepts = 10
        port.doRead()
        self.assertEqual(seen[-1], 10)

    def test_otherPorts(self):
        """
        Anything but a TCP port, or no bound, is left alone.
        """
        self.assertFalse(fastpaths.boundAccepts(object(), 64))
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.assertFalse(fastpaths.boundAccepts(tcp.Port(0, None, reactor=reactor), 0))

    def test_gated(self):
        self.patch(os, "environ", {**os.environ, fastpaths.SWITCH: "off"})
        self.assertIsNone(fastpaths.acceptBounder())
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != fastpaths.SWITCH})
        self.assertIs(fastpaths.acceptBounder(), fastpaths.boundAccepts)


class Recorder(Protocol):
    """
    Records what it receives and how it was lost; raises on C{b"boom"}.
    """

    def __init__(self):
        self.received = []
        self.lost = []

    def dataReceived(self, data):
        self.received.append(data)
        if data == b"boom":
            raise ValueError("boom")

    def connectionLost(self, reason):
        self.lost.append(reason)


class ServerReadTests(SynchronousTestCase):
    """
    L{fastpaths.poll} reads a server-side TCP connection with input itself,
    as Twisted's C{doRead} would: the data to the protocol, an error from
    it logged and the connection dropped, the end of input through
    Twisted's own path.
    """

    def setUp(self):
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != fastpaths.SWITCH})
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def connection(self):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.addCleanup(theirs.close)
        protocol = Recorder()
        port = SimpleNamespace(_realPortNumber=11211)
        server = tcp.Server(ours, protocol, ("127.0.0.1", 1), port, 1, self.reactor)
        protocol.makeConnection(server)
        self.addCleanup(lambda: server.connected and server.connectionLost(Failure(Exception())))
        server.startReading()
        return theirs, protocol, server

    def test_data(self):
        theirs, protocol, _ = self.connection()
        theirs.sendall(b"get k\r\n")
        fastpaths.poll(self.reactor, 0)
        self.assertEqual(protocol.received, [b"get k\r\n"])
        self.assertEqual(protocol.lost, [])

    def test_errorDropsTheConnection(self):
        theirs, protocol, server = self.connection()
        other, otherProtocol, _ = self.connection()
        theirs.sendall(b"boom")
        other.sendall(b"fine")
        with capturedLogs() as events:
            fastpaths.poll(self.reactor, 0)
        self.assertEqual(otherProtocol.received, [b"fine"])
        self.assertEqual(len(protocol.lost), 1)
        self.assertEqual([e["log_failure"].type for e in events if "log_failure" in e], [ValueError])
        self.assertNotIn(server, self.reactor.getReaders())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_end(self):
        from twisted.internet.error import ConnectionDone

        theirs, protocol, server = self.connection()
        theirs.close()
        fastpaths.poll(self.reactor, 0)
        self.assertEqual(protocol.received, [])
        self.assertEqual(len(protocol.lost), 1)
        protocol.lost[0].trap(ConnectionDone)
        self.assertNotIn(server, self.reactor.getReaders())


def test_pollcostBench():
    """
    C{python -m memcachier.bench.pollcost} prints both paths' cost, and
    leaves the fast read on.
    """
    from io import StringIO

    from memcachier.bench import pollcost

    out = StringIO()
    assert pollcost.main(["1"], out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("read in the loop: best ")
    assert lines[1].startswith("through Twisted's _doReadOrWrite: best ")
    assert fastpaths._SERVER is tcp.Server
