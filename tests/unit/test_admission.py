"""
L{memcachier.protocols.admission}: a storm of new connections is read a
batch at a time, and their first reads handled a batch per reactor turn.
"""

import attr
from twisted.internet.testing import StringTransportWithDisconnection

from memcachier.control.model import DEFAULT_PLANS
from memcachier.protocols.admission import LoginAdmission
from memcachier.protocols.sniff import MemcacheFactory
from tests.unit.helpers import World as _World

DEV = {p.slug: p for p in DEFAULT_PLANS}["dev"]
LOGIN = b"set rw 0 0 6\r\nsecret\r\n"


def World():
    """
    The codec tests' node, its dev plan allowing 100 connections.
    """
    return _World(plans=[attr.evolve(DEV, connections=100)])


def stormFactory(world, batch, patience=0.01):
    return MemcacheFactory(
        world.registry, world.clock, authTimeout=5.0,
        admission=LoginAdmission(world.clock, batch, patience=patience),
    )


def turn(clock):
    """
    One reactor turn of C{clock}: run the calls due now, not those they
    schedule (as the reactor runs them on its next turn).
    """
    due = [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


def connectVia(factory):
    proto = factory.buildProtocol(None)
    transport = StringTransportWithDisconnection()
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto, transport


def test_loginStormBatches():
    """
    First reads of connections let in while their clients were silent
    (no patience: every one is let in) are handled C{batch} per reactor
    turn, oldest first; a connection waiting is not read further;
    one closed while waiting is skipped; the rest are answered in their
    turn.  A connection that has sent nothing does not hold up the others.
    """
    world = World()
    factory = MemcacheFactory(
        world.registry, world.clock, authTimeout=5.0,
        admission=LoginAdmission(world.clock, 2, patience=0),
    )
    silent = connectVia(factory)
    conns = [connectVia(factory) for _ in range(7)]
    assert [t.producerState for _, t in conns] == ["producing"] * 7
    for proto, _ in conns:
        proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    answered = lambda: [t.value() == b"STORED\r\n" for _, t in conns]
    assert answered() == [True] * 2 + [False] * 5
    conns[2][0].close()
    turn(world.clock)
    assert answered()[3:] == [True] * 2 + [False] * 2
    turn(world.clock)
    assert answered() == [True] * 2 + [False] + [True] * 4
    assert [t.producerState for _, t in conns[3:]] == ["producing"] * 4
    assert silent[1].producerState == "producing"
    # the turns stop once nobody waits
    turn(world.clock)
    turn(world.clock)
    assert not [c for c in world.clock.getDelayedCalls() if c.getTime() == world.clock.seconds()]


def test_loginStormKeepsWhatArrived():
    """
    A waiting connection that receives more (a wrapping transport may
    deliver it after the pause) keeps it, and its turn handles it all, in
    order.
    """
    world = World()
    factory = MemcacheFactory(
        world.registry, world.clock, authTimeout=5.0,
        admission=LoginAdmission(world.clock, 1, patience=0),
    )
    first, waiting = connectVia(factory), connectVia(factory)
    first[0].dataReceived(b"version\r\n")
    waiting[0].dataReceived(b"set rw 0 0 6\r\nsec")
    assert waiting[1].producerState == "producing"
    waiting[0].dataReceived(b"ret\r\nset k 0 0 1\r\nv\r\n")
    assert waiting[1].value() == b""
    assert waiting[1].producerState == "paused"
    turn(world.clock)
    assert waiting[1].value() == b"STORED\r\nSTORED\r\n"
    assert waiting[1].producerState == "producing"


def test_drainAdmitsTheWaiting():
    """
    A stopping node drains every connection, waiting ones included: their
    first request is answered, then they close.
    """
    world = World()
    factory = MemcacheFactory(
        world.registry, world.clock, authTimeout=5.0,
        admission=LoginAdmission(world.clock, 1, patience=0),
    )
    conns = [connectVia(factory) for _ in range(3)]
    for proto, _ in conns:
        proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    assert [t.value() for _, t in conns] == [b"STORED\r\n", b"", b""]
    factory.drain()
    assert [t.value() for _, t in conns] == [b"STORED\r\n"] * 3
    assert not any(t.connected for _, t in conns)


def test_newConnectionsWaitForAPlace():
    """
    Of a storm of new connections, C{batch} are read at once; the others
    are not read at all (paused) until one of those was read for the
    first time or closed, oldest first.  One that closed while it waited
    is skipped.
    """
    world = World()
    factory = stormFactory(world, 2)
    conns = [connectVia(factory) for _ in range(5)]
    states = lambda: [t.producerState for _, t in conns]
    assert states() == ["producing"] * 2 + ["paused"] * 3
    conns[2][0].close()
    conns[0][0].dataReceived(LOGIN)
    assert conns[0][1].value() == b"STORED\r\n"
    assert states()[3:] == ["producing", "paused"]
    conns[1][1].loseConnection()
    assert states()[4] == "producing"
    assert not factory.admission.arriving


def test_silentConnectionHoldsItsPlaceForPatience():
    """
    A connection whose client sends nothing holds its place for
    C{patience} seconds only: then the next one is read, and the silent
    one waits for its next turn, at the back, not read meanwhile.
    """
    world = World()
    factory = stormFactory(world, 1, patience=0.01)
    silent, waiting = connectVia(factory), connectVia(factory)
    assert waiting[1].producerState == "paused"
    world.clock.advance(0.005)
    assert waiting[1].producerState == "paused"
    world.clock.advance(0.005)
    assert waiting[1].producerState == "producing"
    assert silent[1].producerState == "paused"
    waiting[0].dataReceived(LOGIN)
    assert waiting[1].value() == b"STORED\r\n"
    assert silent[1].producerState == "producing"
    silent[0].dataReceived(LOGIN)
    world.clock.advance(0)  # the first-read gate's next turn (a batch of one)
    assert silent[1].value() == b"STORED\r\n"
    assert not factory.admission.arriving and not factory.admission.unread


def test_drainLetsTheArrivingIn():
    """
    A stopping node lets in connections still waiting for a place: having
    sent nothing, they close at once.
    """
    world = World()
    factory = stormFactory(world, 1)
    conns = [connectVia(factory) for _ in range(3)]
    assert [t.producerState for _, t in conns] == ["producing", "paused", "paused"]
    factory.drain()
    assert not any(t.connected for _, t in conns)
