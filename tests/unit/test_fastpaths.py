"""
The streamlined epoll loop (L{memcachier.node.fastpaths}): the same dispatch as
Twisted's, without the per-event log context, and what escapes a
selectable is logged while the others are still served.
"""

import os

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

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
