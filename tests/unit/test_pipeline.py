"""
The ordered-reply pipeline of L{memcachier.protocols.base.CodecProtocol},
through both codecs: pipelines mixing immediate, late and failing answers
come back in request order; reading pauses while the oldest answer is
pending; a failed answer is an error for that request alone; a
synchronous keyspace is served without a single L{Deferred}.
"""

import struct

import pytest
from twisted.internet import defer
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from memcachier.commands import KeyspaceError
from memcachier.protocols import binary as B
from memcachier.stores.memory import MemoryStore
from memcachier.testing import AsyncStore, FailingStore

from tests.unit.helpers import World
from tests.unit.test_binary import Connection, frame, plainAuth, setFrame


def mixedSchedule(method, args):
    """
    Keys named C{late...} answer after 2 s of the clock (C{later...} after 1 s, so
    answers arrive out of order), C{fail...} fail, C{boom...} fail with an
    unexpected exception; anything else answers synchronously.
    """
    key = args[0] if method != "store" else args[1]
    if isinstance(key, list):
        key = key[0]
    if key.startswith(b"later"):
        return 1.0
    if key.startswith(b"late"):
        return 2.0
    if key.startswith(b"fail"):
        return KeyspaceError("shard 3 down")
    if key.startswith(b"boom"):
        return RuntimeError("internal detail /var/lib/x")
    return None


@pytest.fixture
def world():
    return World(store=lambda clock: AsyncStore(MemoryStore(clock), clock, mixedSchedule))


@pytest.fixture
def failures():
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    yield lambda: [e for e in observer if "log_failure" in e]
    globalLogPublisher.removeObserver(observer)


def asciiLogin(world):
    proto, transport = world.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    assert transport.value() == b"STORED\r\n"
    transport.clear()
    return proto, transport


# -- ASCII ---------------------------------------------------------------------


def test_asciiMixedPipelineInOrder(world, failures):
    """
    Immediate, late (answering out of order) and failing answers in one
    read come back in request order; what precedes the first late answer
    leaves at once; a failure answers C{SERVER_ERROR <reason>} for its
    request alone, logged once; reading pauses until the last answer.
    """
    proto, transport = asciiLogin(world)
    proto.dataReceived(
        b"set a 0 0 1\r\n1\r\n"
        b"get a\r\n"
        b"get late1\r\n"
        b"set late2 0 0 2\r\nxx\r\n"
        b"get fail1\r\n"
        b"get later3\r\n"
        b"get boom\r\n"
        b"version\r\n"
        b"get a\r\n"
    )
    assert transport.value() == b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    assert transport.producerState == "paused"
    world.clock.advance(1)
    # later3 and the failure answered, but wait behind late1
    assert transport.value() == b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    world.clock.advance(1)
    assert transport.value() == (
        b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
        b"END\r\n"
        b"STORED\r\n"
        b"SERVER_ERROR shard 3 down\r\n"
        b"END\r\n"
        b"SERVER_ERROR backend failure\r\n"
        b"VERSION 1.6.21\r\n"
        b"VALUE a 0 1\r\n1\r\nEND\r\n"
    )
    assert transport.producerState == "producing"
    assert len(failures()) == 2
    transport.clear()
    proto.dataReceived(b"get late2\r\n")
    world.clock.advance(2)
    assert transport.value() == b"VALUE late2 0 2\r\nxx\r\nEND\r\n"


def test_asciiBytesWhilePendingQueueBehind(world):
    """
    Bytes arriving while an answer is pending (a transport may deliver
    what it had read) are answered behind it.
    """
    proto, transport = asciiLogin(world)
    proto.dataReceived(b"get late\r\n")
    proto.dataReceived(b"version\r\nget fail\r\n")
    assert transport.value() == b""
    world.clock.advance(2)
    assert transport.value() == b"END\r\nVERSION 1.6.21\r\nSERVER_ERROR shard 3 down\r\n"


def test_asciiQuitAfterLateAnswer(world):
    """
    C{quit} behind a late answer closes once that answer has been sent.
    """
    proto, transport = asciiLogin(world)
    proto.dataReceived(b"get late\r\nquit\r\nversion\r\n")
    assert transport.connected
    world.clock.advance(2)
    assert transport.value() == b"END\r\n"
    assert not transport.connected


def test_asciiLateAnswerAfterDisconnect(world):
    """
    An answer arriving after the client left is dropped.
    """
    proto, transport = asciiLogin(world)
    proto.dataReceived(b"get late\r\n")
    transport.loseConnection()
    world.clock.advance(2)
    assert transport.value() == b""


@pytest.mark.parametrize("late", [False, True], ids=["raising", "failing-late"])
def test_asciiFailingKeyspace(late, failures):
    """
    Over a keyspace whose every call fails (raising, or through a
    Deferred), every command gets C{SERVER_ERROR <reason>} and the
    connection keeps answering, C{version} included.
    """
    world = World(store=lambda clock: FailingStore(clock, late))
    proto, transport = asciiLogin(world)
    requests = [
        b"get k\r\n", b"get a b\r\n", b"gets k\r\n", b"gat 0 k\r\n", b"touch k 0\r\n",
        b"set k 0 0 1\r\nx\r\n", b"append k 0 0 1\r\nx\r\n", b"cas k 0 0 1 5\r\nx\r\n",
        b"delete k\r\n", b"incr k 1\r\n", b"decr k 1\r\n", b"flush_all\r\n",
        b"mg k v\r\n", b"ms k 1\r\nx\r\n", b"md k\r\n", b"ma k\r\n", b"me k\r\n",
    ]
    proto.dataReceived(b"".join(requests) + b"version\r\n")
    world.clock.advance(0)
    assert transport.value() == (
        b"SERVER_ERROR store unavailable\r\n" * len(requests) + b"VERSION 1.6.21\r\n"
    )
    assert transport.connected
    assert len(failures()) == len(requests)


def test_asciiNoreplyFailureStillAnswers(world):
    """
    A failed store with C{noreply} still reports the error, as memcached
    reports server errors whatever C{noreply} says.
    """
    proto, transport = asciiLogin(world)
    proto.dataReceived(b"set fail 0 0 1 noreply\r\nx\r\nset late 0 0 1 noreply\r\nx\r\nmn\r\n")
    world.clock.advance(2)
    assert transport.value() == b"SERVER_ERROR shard 3 down\r\nMN\r\n"


def _lateAuthentication(proto, clock, delay=1.0, result=None):
    """
    Make C{proto}'s session answer authentication through a L{Deferred}
    fired C{delay} seconds later by C{clock} (a registry that checks
    credentials elsewhere would), with its real outcome or C{result}.
    """
    from twisted.internet.task import deferLater

    authenticate = proto.session.authenticate

    def late(username, password):
        outcome = authenticate(username, password)
        return deferLater(clock, delay, lambda: outcome if result is None else result)

    proto.session.authenticate = late


def test_asciiLateAuthIsABarrier():
    """
    An authentication answered later holds what follows: it is parsed only
    then (it depends on the outcome), in order.
    """
    world = World()
    proto, transport = world.connect()
    _lateAuthentication(proto, world.clock)
    proto.dataReceived(b"set rw 0 0 3\r\nbad\r\nget k\r\nset rw 0 0 6\r\nsecret\r\n")
    assert transport.value() == b""
    assert transport.producerState == "paused"
    world.clock.advance(1.0)
    assert transport.value() == b"CLIENT_ERROR authentication failure\r\nCLIENT_ERROR unauthenticated\r\n"
    world.clock.advance(1.0)
    assert transport.value().endswith(b"STORED\r\n")
    assert proto.session.authenticated
    assert transport.producerState == "producing"


def test_asciiLateThrottledAuthClosesAfterItsReply():
    """
    A late answer that the login was throttled is sent, then the
    connection closes; nothing pipelined behind it is answered.
    """
    from memcachier.protocols.session import AuthResult

    world = World()
    proto, transport = world.connect()
    _lateAuthentication(proto, world.clock, result=AuthResult.THROTTLED)
    proto.dataReceived(b"set rw 0 0 3\r\nbad\r\nversion\r\n")
    world.clock.advance(1.0)
    assert transport.value() == b"CLIENT_ERROR authentication failure\r\n"
    assert not transport.connected


def test_binaryLateThrottledAuthClosesAfterItsReply():
    """
    Over the binary protocol too: the late 0x20 is sent, then the
    connection closes and the NOOP behind it is not answered.
    """
    from memcachier.protocols.session import AuthResult

    world = World()
    c = Connection(world)
    _lateAuthentication(c, world.clock, result=AuthResult.THROTTLED)
    assert c.send(plainAuth(b"rw", b"bad"), frame(B.NOOP, opaque=9)) == []
    world.clock.advance(1.0)
    assert [(r.opcode, r.status) for r in c.responses()] == [(B.SASL_AUTH, 0x20)]
    assert c.closed


# -- binary --------------------------------------------------------------------


def test_binaryMixedPipelineInOrder(world, failures):
    """
    The binary codec keeps the same order: immediate, late, failing (0x84)
    and quiet requests, one reply per request in request order.
    """
    c = Connection(world).auth()
    c.proto.dataReceived(b"".join([
        setFrame(b"a", b"1", opaque=1),
        frame(B.GET, b"late1", opaque=2),
        frame(B.GETQ, b"later2", opaque=3),          # quiet miss: no reply
        frame(B.GET, b"fail1", opaque=4),
        setFrame(b"later4", b"v", opcode=B.SETQ, opaque=5),  # quiet success
        frame(B.GET, b"a", opaque=6),
        frame(B.DELETE, b"boom", opaque=7),
        frame(B.NOOP, opaque=8),
    ]))
    first = c.responses()
    assert [r.opaque for r in first] == [1]
    assert c.transport.producerState == "paused"
    c.world.clock.advance(1)
    assert c.responses() == []
    c.world.clock.advance(1)
    rs = c.responses()
    assert [(r.opaque, r.status) for r in rs] == [
        (2, 0x01), (4, 0x84), (6, 0), (7, 0x84), (8, 0),
    ]
    assert rs[2].value == b"1"
    assert c.transport.producerState == "producing"
    assert len(failures()) == 2
    c.proto.dataReceived(frame(B.GET, b"later4"))
    c.world.clock.advance(1)
    assert c.responses()[0].value == b"v"


@pytest.mark.parametrize("late", [False, True], ids=["raising", "failing-late"])
def test_binaryFailingKeyspace(late, failures):
    """
    Over a failing keyspace every data opcode answers 0x84 for itself and
    the connection goes on.
    """
    world = World(store=lambda clock: FailingStore(clock, late))
    c = Connection(world).auth()
    requests = [
        frame(B.GET, b"k", opaque=1), frame(B.GETK, b"k", opaque=2),
        setFrame(b"k", b"v", opaque=3), frame(B.APPEND, b"k", value=b"x", opaque=4),
        frame(B.DELETE, b"k", opaque=5),
        frame(B.INCREMENT, b"k", struct.pack(">QQI", 1, 0, 0), opaque=6),
        frame(B.TOUCH, b"k", struct.pack(">I", 0), opaque=7),
        frame(B.GAT, b"k", struct.pack(">I", 0), opaque=8),
        frame(B.FLUSH, opaque=9),
        setFrame(b"k", b"v", opcode=B.SETQ, opaque=10),
    ]
    rs = c.send(*requests, frame(B.VERSION_OP, opaque=11))
    assert [(r.opaque, r.status) for r in rs] == [(i, 0x84) for i in range(1, 11)] + [(11, 0)]
    assert not c.closed
    assert len(failures()) == 10


# -- the hot path ----------------------------------------------------------------


def test_synchronousKeyspaceMakesNoDeferred(monkeypatch):
    """
    A synchronous keyspace is served without creating a single Deferred,
    over both protocols, for every kind of request.
    """
    world = World()
    ascii_ = asciiLogin(world)
    binary = Connection(world).auth()

    def noDeferred(*args, **kwargs):
        raise AssertionError("a Deferred was created on the synchronous path")

    monkeypatch.setattr(defer.Deferred, "__init__", noDeferred)
    proto, transport = ascii_
    proto.dataReceived(
        b"set a 0 0 1\r\n1\r\nget a\r\nget a b\r\ngets a\r\ngat 0 a\r\ntouch a 0\r\n"
        b"incr n 1\r\ndelete a\r\nms m 1\r\nx\r\nmg m v\r\nma m\r\nmd m\r\nflush_all\r\n"
        b"stats\r\n"
    )
    assert b"SERVER_ERROR" not in transport.value()
    rs = binary.send(
        setFrame(b"b", b"2"), frame(B.GET, b"b"), frame(B.DELETE, b"b"),
        frame(B.INCREMENT, b"n", struct.pack(">QQI", 1, 0, 0)), frame(B.FLUSH),
    )
    assert [r.status for r in rs] == [0, 0, 0, 0, 0]


def test_failureReasonIsShortAndPrintable():
    """
    A keyspace's reason reaches the client as one printable line of at
    most 64 bytes (no reply can be forged with CR/LF); other exceptions
    show nothing of themselves.
    """
    from twisted.python.failure import Failure

    from memcachier.protocols.base import failureReason

    forged = Failure(KeyspaceError("down\r\nSTORED\r\n" + "x" * 100))
    reason = failureReason(forged)
    assert reason.startswith(b"down  STORED  xx") and len(reason) == 64
    assert failureReason(Failure(RuntimeError("/etc/secret"))) == b"backend failure"
    assert failureReason(Failure(KeyspaceError())) == b"backend failure"
    assert failureReason(Failure(KeyspaceError("\r\n"))) == b"backend failure"
