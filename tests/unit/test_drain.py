"""
A graceful stop lets a memcache request that is partly received finish:
the codecs say whether they hold a partial request, and the factory's
drain closes each connection only once it holds none and its replies are
sent.
"""

import pytest

from tests.unit.helpers import STORES, World
from tests.unit.test_binary import parse, plainAuth, setFrame


@pytest.fixture(params=sorted(STORES))
def world(request):
    return World(store=STORES[request.param])


def _login(world, data=b"set rw 0 0 6\r\nsecret\r\n"):
    proto, transport = world.connect()
    proto.dataReceived(data)
    world.clock.advance(0)
    transport.clear()
    return proto, transport


def _drain(world):
    drained = world.factory.drain()
    world.clock.advance(0)
    return drained


def test_idleClosesAtOnce(world):
    """
    Connections with nothing partly received close at once, those that
    never sent a byte too.
    """
    proto, transport = _login(world)
    silent, silentTransport = world.connect()
    drained = _drain(world)
    assert not transport.connected and not silentTransport.connected
    assert drained.called


@pytest.mark.parametrize("first, rest, reply", [
    (b"set k 0 0 5\r\nab", b"cde\r\n", b"STORED\r\n"),
    (b"set k 0 0", b" 5\r\nabcde\r\n", b"STORED\r\n"),
    (b"get k", b"\r\n", b"END\r\n"),
])
def test_asciiPartialRequestFinishes(world, first, rest, reply):
    """
    A request partly received when the drain starts is answered once it
    has arrived; then the connection closes.
    """
    proto, transport = _login(world)
    proto.dataReceived(first)
    drained = _drain(world)
    assert transport.connected and not drained.called
    proto.dataReceived(rest)
    world.clock.advance(0)
    assert transport.value() == reply
    assert not transport.connected
    assert drained.called


def test_asciiPipelinedAfterPartialIsAnswered(world):
    """
    What arrived with the end of the partial request is answered too (it
    was received before the close); nothing after the close is.
    """
    proto, transport = _login(world)
    proto.dataReceived(b"set k 0 0 1\r\n")
    _drain(world)
    proto.dataReceived(b"x\r\nget k\r\n")
    world.clock.advance(0)
    assert transport.value() == b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n"
    assert not transport.connected


def test_binaryPartialFrameFinishes(world):
    """
    The same for a binary frame cut after its header.
    """
    proto, transport = _login(world, plainAuth(b"rw", b"secret"))
    frame = setFrame(b"k", b"value", opaque=9)
    proto.dataReceived(frame[:30])
    drained = _drain(world)
    assert transport.connected and not drained.called
    proto.dataReceived(frame[30:])
    world.clock.advance(0)
    (response,) = parse(transport.value())
    assert (response.status, response.opaque) == (0, 9)
    assert not transport.connected and drained.called


def test_unansweredPartialIsLeftToTheDeadline(world):
    """
    A client that never sends the rest keeps its connection open: the
    node's deadline aborts it (L{memcachier.node.shutdown.NodeService}).
    """
    proto, transport = _login(world)
    proto.dataReceived(b"set k 0 0 100\r\nabc")
    drained = _drain(world)
    world.clock.advance(5)
    assert transport.connected and not drained.called
    assert world.factory.abort() == 1


def test_nodeStopsItsServicesOneAtATime():
    """
    L{NodeService} stops its services last added first, each once the one
    before has finished: the thread pool, added first, stops only after a
    job still running SQL through it is done.
    """
    from twisted.application.service import Service
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    from memcachier.node.shutdown import NodeService

    stopped = []
    jobDone = Deferred()

    class Pool(Service):
        def stopService(self):
            super().stopService()
            stopped.append("pool")

    class Job(Service):
        def stopService(self):
            super().stopService()
            stopped.append("job stopping")
            return jobDone

    node = NodeService(Clock(), shutdownTimeout=1)
    Pool().setServiceParent(node)
    Job().setServiceParent(node)
    node.startService()
    finished = node.stopService()
    assert stopped == ["job stopping"]
    jobDone.callback(None)
    assert stopped == ["job stopping", "pool"]
    assert finished.called
