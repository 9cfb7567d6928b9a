"""
Tests for L{memcachier.protocols.binary} and L{memcachier.protocols.sasl}:
request frames in through C{dataReceived}, response frames out of a string
transport.  Expected statuses and bodies are what memcached 1.6 answers.
"""

import struct
from collections import namedtuple

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransportWithDisconnection

from memcachier.commands import U64, DeleteResult, StoreResult
from memcachier.control.model import MiB, Plan
from memcachier.protocols import binary as B
from memcachier.protocols.binary import BinaryProtocol
from memcachier.protocols.sasl import MECHANISMS, parsePlain
from memcachier.protocols.session import Session
from memcachier.protocols.throttle import AuthThrottle
from memcachier.runtime import CacheRegistry
from memcachier.testing import MemoryControlIndex

from tests.unit.helpers import STORES, World

HEADER = struct.Struct(">BBHBBHIIQ")
Response = namedtuple("Response", "opcode status extras key value cas opaque")

STORE_EXTRAS = struct.pack(">II", 0, 0)


def frame(opcode, key=b"", extras=b"", value=b"", cas=0, opaque=0, magic=0x80, bodylen=None):
    if bodylen is None:
        bodylen = len(key) + len(extras) + len(value)
    return (
        HEADER.pack(magic, opcode, len(key), len(extras), 0, 0, bodylen, opaque, cas)
        + extras + key + value
    )


def setFrame(key, value, flags=0, exptime=0, opcode=B.SET, cas=0, opaque=0):
    return frame(opcode, key, struct.pack(">II", flags, exptime), value, cas, opaque)


def deltaFrame(key, delta=1, initial=0, exptime=0, opcode=B.INCREMENT, cas=0):
    return frame(opcode, key, struct.pack(">QQI", delta, initial, exptime), cas=cas)


def parse(data):
    responses = []
    offset = 0
    while offset < len(data):
        magic, opcode, keylen, extlen, _, status, bodylen, opaque, cas = HEADER.unpack_from(
            data, offset
        )
        assert magic == 0x81
        body = data[offset + 24:offset + 24 + bodylen]
        assert len(body) == bodylen
        responses.append(
            Response(opcode, status, body[:extlen], body[extlen:extlen + keylen],
                     body[extlen + keylen:], cas, opaque)
        )
        offset += 24 + bodylen
    return responses


def plainAuth(user, password):
    return frame(B.SASL_AUTH, b"PLAIN", value=b"\0" + user + b"\0" + password)


class Connection:
    """
    A L{BinaryProtocol} on a string transport, talking to C{world}.
    """

    def __init__(self, world, throttle=None, peer="10.0.0.1"):
        self.world = world
        self.transport = StringTransportWithDisconnection()
        self.session = Session(
            world.registry, world.clock, throttle or AuthThrottle(), peer,
            self.transport.loseConnection, authTimeout=5.0,
        )
        self.proto = BinaryProtocol(self.session)
        self.transport.protocol = self.proto
        self.proto.makeConnection(self.transport)

    def send(self, *frames):
        """
        Feed frames and return the parsed responses written since the last
        call.
        """
        self.proto.dataReceived(b"".join(frames))
        return self.responses()

    def responses(self):
        self.world.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return parse(data)

    def one(self, *frames):
        (response,) = self.send(*frames)
        return response

    @property
    def closed(self):
        return not self.transport.connected

    def auth(self, user=b"rw", password=b"secret"):
        response = self.one(plainAuth(user, password))
        assert (response.status, response.value) == (0, b"Authenticated")
        return self


@pytest.fixture(params=sorted(STORES))
def world(request):
    """
    A node over the memory store, and over the same store answering
    through Deferreds: every test of the codec runs against both.
    """
    return World(store=STORES[request.param])


@pytest.fixture
def conn(world):
    return Connection(world).auth()


# -- SASL ---------------------------------------------------------------------


def test_parsePlain():
    """
    L{parsePlain} splits C{authzid NUL user NUL pass} and rejects anything
    else with L{ValueError}.
    """
    assert parsePlain(b"\0user\0pass") == (b"", b"user", b"pass")
    assert parsePlain(b"z\0user\0pass") == (b"z", b"user", b"pass")
    for bad in (b"", b"user\0pass", b"\0\0pass", b"\0user\0", b"a\0b\0c\0d", b"\0" + b"u" * 256 + b"\0p"):
        with pytest.raises(ValueError):
            parsePlain(bad)
    assert MECHANISMS == (b"PLAIN",)


def test_listMechs(world):
    """
    SASL_LIST_MECHS answers C{PLAIN} before authentication.
    """
    c = Connection(world)
    r = c.one(frame(B.SASL_LIST_MECHS, opaque=7))
    assert (r.opcode, r.status, r.value, r.opaque) == (B.SASL_LIST_MECHS, 0, b"PLAIN", 7)


def test_authSuccessAndFailure(world):
    """
    A wrong password gets 0x20 "Auth failure." and the connection stays
    open; the right one gets "Authenticated" and opens the cache.
    """
    c = Connection(world)
    r = c.one(plainAuth(b"rw", b"wrong"))
    assert (r.status, r.value, r.cas) == (0x20, b"Auth failure.", 0)
    assert not c.closed
    r = c.one(plainAuth(b"rw", b"secret"))
    assert (r.opcode, r.status, r.value) == (B.SASL_AUTH, 0, b"Authenticated")
    assert c.one(setFrame(b"k", b"v")).status == 0


@pytest.mark.parametrize(
    "request_",
    [
        frame(B.SASL_AUTH, b"CRAM-MD5", value=b"\0rw\0secret"),
        frame(B.SASL_AUTH, b"PLAIN", value=b"rw\0secret"),
        frame(B.SASL_AUTH, b"PLAIN", value=b"other\0rw\0secret"),
        frame(B.SASL_STEP, b"PLAIN", value=b"\0rw\0secret"),
    ],
)
def test_authRefused(world, request_):
    """
    Unknown mechanisms, malformed PLAIN messages, an authzid naming someone
    else and SASL_STEP (PLAIN has one step) all get 0x20.
    """
    c = Connection(world)
    r = c.one(request_)
    assert (r.status, r.value) == (0x20, b"Auth failure.")
    assert not c.session.authenticated
    assert not c.closed


def test_authzidSameAsUser(world):
    c = Connection(world)
    r = c.one(frame(B.SASL_AUTH, b"PLAIN", value=b"rw\0rw\0secret"))
    assert r.status == 0


def test_tooManyConnections():
    """
    When the plan's connection limit is reached SASL_AUTH answers 0x20
    "Too many connections".
    """
    world = World(plans=[Plan("dev", 25 * MiB, 1, MiB, True)])
    Connection(world).auth()
    c = Connection(world)
    r = c.one(plainAuth(b"rw", b"secret"))
    assert (r.status, r.value) == (0x20, b"Too many connections")
    assert not c.session.authenticated


@pytest.mark.parametrize("opcode", [B.GET, B.SET, B.FLUSH, B.STAT, B.TOUCH, 0x7F, B.VERBOSITY])
def test_unauthenticatedCloses(world, opcode):
    """
    Before authentication any command but SASL, VERSION, NOOP and QUIT gets
    0x20 and the connection closes after the write, like memcached with
    C{-S}.  Unknown opcodes too: memcached checks auth first.
    """
    c = Connection(world)
    r = c.one(frame(opcode, b"k", opaque=3), frame(B.NOOP))
    assert (r.opcode, r.status, r.value, r.opaque) == (opcode, 0x20, b"Auth failure.", 3)
    assert c.closed


def test_preauthAllowed(world):
    c = Connection(world)
    rs = c.send(frame(B.VERSION_OP), frame(B.NOOP), frame(B.QUIT))
    assert [(r.opcode, r.status) for r in rs] == [(B.VERSION_OP, 0), (B.NOOP, 0), (B.QUIT, 0)]
    assert rs[0].value == b"1.6.21"
    assert c.closed


def test_throttledAuthClosesAfterTheFailure(world):
    """
    Past the budget SASL_AUTH gets 0x20 without its password being
    checked, and the connection closes: frames pipelined behind it are
    not answered.
    """
    c = Connection(world, throttle=AuthThrottle(rate=1.0, burst=1))
    assert c.one(plainAuth(b"rw", b"bad")).status == 0x20
    assert not c.closed
    rs = c.send(plainAuth(b"rw", b"secret"), frame(B.NOOP, opaque=9))
    assert [(r.opcode, r.status) for r in rs] == [(B.SASL_AUTH, 0x20)]
    assert c.closed


def test_cacheGoneCloses(world, conn):
    """
    When the cache is disabled after authentication the next command gets
    0x20 and the connection closes.
    """
    world.index.addCache(1, "dev", enabled=False)
    r = conn.one(frame(B.GET, b"k"))
    assert (r.status, r.value) == (0x20, b"Auth failure.")
    assert conn.closed


# -- gets, stores -------------------------------------------------------------


def test_setGet(conn):
    r = conn.one(setFrame(b"k", b"value", flags=0xDEADBEEF, opaque=5))
    assert (r.opcode, r.status, r.value, r.opaque) == (B.SET, 0, b"", 5)
    cas = r.cas
    assert cas
    r = conn.one(frame(B.GET, b"k", opaque=6))
    assert r == Response(B.GET, 0, struct.pack(">I", 0xDEADBEEF), b"", b"value", cas, 6)
    r = conn.one(frame(B.GETK, b"k"))
    assert (r.key, r.value, r.cas) == (b"k", b"value", cas)
    r = conn.one(frame(B.GETQ, b"k"))
    assert (r.opcode, r.key, r.value) == (B.GETQ, b"", b"value")
    r = conn.one(frame(B.GETKQ, b"k"))
    assert (r.opcode, r.key, r.value) == (B.GETKQ, b"k", b"value")


def test_getMiss(conn):
    """
    GET misses say "Not found"; GETK misses carry the key instead (as
    memcached does); quiet misses say nothing.
    """
    rs = conn.send(
        frame(B.GET, b"nope"), frame(B.GETK, b"nope"), frame(B.GETQ, b"nope"),
        frame(B.GETKQ, b"nope"), frame(B.NOOP),
    )
    assert [(r.opcode, r.status, r.key, r.value) for r in rs] == [
        (B.GET, 1, b"", b"Not found"),
        (B.GETK, 1, b"nope", b""),
        (B.NOOP, 0, b"", b""),
    ]


def test_addReplaceAppendPrepend(conn):
    """
    ADD of an existing key is 0x02, REPLACE of a missing key 0x01,
    APPEND/PREPEND of a missing key 0x05, as memcached's binary protocol.
    """
    assert conn.one(setFrame(b"k", b"mid", opcode=B.REPLACE)).status == 0x01
    assert conn.one(frame(B.APPEND, b"k", value=b"x")).status == 0x05
    r = conn.one(frame(B.PREPEND, b"k", value=b"x"))
    assert (r.status, r.value) == (0x05, b"Not stored.")
    assert conn.one(setFrame(b"k", b"mid", opcode=B.ADD)).status == 0
    r = conn.one(setFrame(b"k", b"mid", opcode=B.ADD))
    assert (r.status, r.value, r.cas) == (0x02, b"Data exists for key.", 0)
    assert conn.one(setFrame(b"k", b"mid", flags=3, opcode=B.REPLACE)).status == 0
    r = conn.one(frame(B.APPEND, b"k", value=b">"))
    assert r.status == 0 and r.cas
    assert conn.one(frame(B.PREPEND, b"k", value=b"<")).status == 0
    r = conn.one(frame(B.GET, b"k"))
    assert (r.value, r.extras) == (b"<mid>", struct.pack(">I", 3))


def test_quietStores(conn):
    """
    Quiet mutations say nothing on success and still report errors.
    """
    rs = conn.send(
        setFrame(b"k", b"1", opcode=B.SETQ),
        setFrame(b"k", b"1", opcode=B.ADDQ),
        setFrame(b"k", b"2", opcode=B.REPLACEQ),
        frame(B.APPENDQ, b"k", value=b"0"),
        frame(B.PREPENDQ, b"missing", value=b"0"),
        deltaFrame(b"k", 5, opcode=B.INCREMENTQ),
        deltaFrame(b"k", 1, opcode=B.DECREMENTQ),
        frame(B.DELETEQ, b"missing"),
        frame(B.NOOP),
    )
    assert [(r.opcode, r.status) for r in rs] == [
        (B.ADDQ, 0x02), (B.PREPENDQ, 0x05), (B.DELETEQ, 0x01), (B.NOOP, 0)
    ]
    assert conn.one(frame(B.GET, b"k")).value == b"24"
    assert conn.send(frame(B.DELETEQ, b"k")) == []
    assert conn.one(frame(B.GET, b"k")).status == 1


def test_cas(conn):
    """
    The request CAS guards set, replace, append, prepend, delete and incr:
    a mismatch is 0x02, a missing key 0x01.
    """
    cas = conn.one(setFrame(b"k", b"1")).cas
    for request in (
        setFrame(b"k", b"2", cas=cas + 100),
        setFrame(b"k", b"2", opcode=B.REPLACE, cas=cas + 100),
        frame(B.APPEND, b"k", value=b"2", cas=cas + 100),
        frame(B.PREPEND, b"k", value=b"2", cas=cas + 100),
        frame(B.DELETE, b"k", cas=cas + 100),
        deltaFrame(b"k", cas=cas + 100),
    ):
        r = conn.one(request)
        assert (r.status, r.value, r.cas) == (0x02, b"Data exists for key.", 0)
    r = conn.one(setFrame(b"missing", b"1", cas=cas))
    assert (r.status, r.value) == (0x01, b"Not found")
    assert conn.one(frame(B.DELETE, b"missing", cas=cas)).status == 0x01
    r = conn.one(setFrame(b"k", b"2", cas=cas))
    assert r.status == 0 and r.cas != cas
    cas = r.cas
    r = conn.one(frame(B.APPEND, b"k", value=b"3", cas=cas))
    assert r.status == 0
    r = conn.one(deltaFrame(b"k", 1, cas=r.cas))
    assert (r.status, r.value) == (0, struct.pack(">Q", 24))
    assert conn.one(frame(B.DELETE, b"k", cas=r.cas)).status == 0
    stats = conn.session.stats
    # the session counts every store carrying a CAS
    assert (stats.cas_hits, stats.cas_badval, stats.cas_misses) == (2, 4, 1)


# -- incr/decr ----------------------------------------------------------------


def test_delta(conn):
    """
    incr/decr create a missing key with the initial value unless exptime is
    0xffffffff, answer the new value as a u64 with the new CAS, wrap at
    2**64 and floor at 0.
    """
    r = conn.one(deltaFrame(b"n", 5, initial=10, exptime=0xFFFFFFFF))
    assert (r.status, r.value, r.cas) == (0x01, b"Not found", 0)
    r = conn.one(deltaFrame(b"n", 5, initial=10))
    assert (r.opcode, r.status, r.value) == (B.INCREMENT, 0, struct.pack(">Q", 10))
    assert r.cas
    r = conn.one(deltaFrame(b"n", 5))
    assert r.value == struct.pack(">Q", 15)
    r = conn.one(deltaFrame(b"n", 100, opcode=B.DECREMENT))
    assert (r.opcode, r.value) == (B.DECREMENT, struct.pack(">Q", 0))
    conn.one(setFrame(b"n", b"%d" % (U64 - 1)))
    r = conn.one(deltaFrame(b"n", 2))
    assert r.value == struct.pack(">Q", 1)
    conn.one(setFrame(b"n", b"abc"))
    r = conn.one(deltaFrame(b"n", 1))
    assert (r.status, r.value) == (0x06, b"Non-numeric server-side value for incr or decr")
    r = conn.one(deltaFrame(b"d", 1, initial=7, opcode=B.DECREMENT))
    assert r.value == struct.pack(">Q", 7)


# -- touch / gat --------------------------------------------------------------


def test_touchAndGat(world, conn):
    """
    TOUCH answers the flags as extras and the CAS; GAT* answer like GET*
    and set the expiry.
    """
    cas = conn.one(setFrame(b"k", b"v", flags=7)).cas
    r = conn.one(frame(B.TOUCH, b"k", struct.pack(">I", 10)))
    assert (r.status, r.extras, r.value, r.cas) == (0, struct.pack(">I", 7), b"", cas)
    r = conn.one(frame(B.GAT, b"k", struct.pack(">I", 100)))
    assert (r.opcode, r.extras, r.key, r.value) == (B.GAT, struct.pack(">I", 7), b"", b"v")
    r = conn.one(frame(B.GATK, b"k", struct.pack(">I", 100)))
    assert (r.key, r.value) == (b"k", b"v")
    r = conn.one(frame(B.GATQ, b"k", struct.pack(">I", 100)))
    assert r.value == b"v"
    r = conn.one(frame(B.GATKQ, b"k", struct.pack(">I", 1)))
    assert (r.key, r.value) == (b"k", b"v")
    world.clock.advance(2)
    rs = conn.send(
        frame(B.TOUCH, b"k", struct.pack(">I", 10)),
        frame(B.GAT, b"k", struct.pack(">I", 10)),
        frame(B.GATK, b"k", struct.pack(">I", 10)),
        frame(B.GATQ, b"k", struct.pack(">I", 10)),
        frame(B.GATKQ, b"k", struct.pack(">I", 10)),
        frame(B.NOOP),
    )
    assert [(r.opcode, r.status, r.key, r.value) for r in rs] == [
        (B.TOUCH, 1, b"", b"Not found"),
        (B.GAT, 1, b"", b"Not found"),
        (B.GATK, 1, b"k", b""),
        (B.NOOP, 0, b"", b""),
    ]


# -- other commands -----------------------------------------------------------


def test_flush(world, conn):
    conn.one(setFrame(b"k", b"v"))
    assert conn.send(frame(B.FLUSHQ)) == []
    assert conn.one(frame(B.GET, b"k")).status == 1
    conn.one(setFrame(b"k", b"v"))
    r = conn.one(frame(B.FLUSH, extras=struct.pack(">I", 10)))
    assert (r.opcode, r.status) == (B.FLUSH, 0)
    assert conn.one(frame(B.GET, b"k")).status == 0
    world.clock.advance(11)
    assert conn.one(frame(B.GET, b"k")).status == 1


def test_flushNotAllowed(world):
    """
    A credential without the flush capability gets 0x20 for FLUSH (memcached
    with C{-F}); the connection stays open.
    """
    c = Connection(world).auth(b"nf")
    c.one(setFrame(b"k", b"v"))
    for opcode in (B.FLUSH, B.FLUSHQ):
        r = c.one(frame(opcode))
        assert (r.opcode, r.status, r.value) == (opcode, 0x20, b"Auth failure.")
    assert not c.closed
    assert c.one(frame(B.GET, b"k")).status == 0


def test_readOnly(world):
    """
    Every mutation by a read-only credential gets 0x05 "Not stored."; reads
    work and GAT does not touch.
    """
    Connection(world).auth().one(setFrame(b"k", b"1"))
    c = Connection(world).auth(b"ro")
    for request in (
        setFrame(b"k", b"2"),
        setFrame(b"new", b"2", opcode=B.ADD),
        setFrame(b"k", b"2", opcode=B.REPLACE),
        frame(B.APPEND, b"k", value=b"2"),
        frame(B.PREPEND, b"k", value=b"2"),
        frame(B.DELETE, b"k"),
        deltaFrame(b"k"),
        deltaFrame(b"k", opcode=B.DECREMENT),
        frame(B.TOUCH, b"k", struct.pack(">I", 1)),
    ):
        r = c.one(request)
        assert (r.status, r.value) == (0x05, b"Not stored.")
    assert c.one(frame(B.GAT, b"k", struct.pack(">I", 1))).value == b"1"
    world.clock.advance(5)
    assert c.one(frame(B.GET, b"k")).value == b"1"


def test_noopVersionQuit(conn):
    rs = conn.send(frame(B.NOOP, opaque=1), frame(B.VERSION_OP, opaque=2))
    assert [(r.opcode, r.status, r.value, r.opaque) for r in rs] == [
        (B.NOOP, 0, b"", 1), (B.VERSION_OP, 0, b"1.6.21", 2)
    ]
    rs = conn.send(frame(B.QUIT, opaque=3), frame(B.NOOP))
    assert [(r.opcode, r.opaque) for r in rs] == [(B.QUIT, 3)]
    assert conn.closed


def test_quitQuiet(conn):
    assert conn.send(frame(B.QUITQ), frame(B.NOOP)) == []
    assert conn.closed


def test_stats(conn):
    """
    STAT answers one packet per stat and an empty terminator; C{reset}
    answers only the terminator; an unknown group is 0x01.
    """
    conn.one(setFrame(b"k", b"v"))
    rs = conn.send(frame(B.STAT, opaque=4))
    assert rs[-1] == Response(B.STAT, 0, b"", b"", b"", 0, 4)
    stats = {r.key: r.value for r in rs[:-1]}
    assert stats[b"cmd_set"] == b"1"
    assert stats[b"version"] == b"1.6.21"
    assert all(r.opaque == 4 for r in rs)
    for group in (b"settings", b"items", b"slabs", b"sizes"):
        rs = conn.send(frame(B.STAT, group))
        assert rs[-1].key == b"" and len(rs) > 1
    rs = conn.send(frame(B.STAT, b"settings"))
    assert (b"item_size_max", b"1048576") in [(r.key, r.value) for r in rs]
    assert conn.send(frame(B.STAT, b"reset")) == [Response(B.STAT, 0, b"", b"", b"", 0, 0)]
    assert conn.session.stats.cmd_set == 0
    r = conn.one(frame(B.STAT, b"bogus"))
    assert (r.status, r.value) == (0x01, b"Not found")


@pytest.mark.parametrize("opcode", [B.VERBOSITY, 0x30, 0x7F, 0xFF])
def test_unknownCommand(conn, opcode):
    """
    Unimplemented opcodes (VERBOSITY included, as memcached 1.6) get 0x81
    "Unknown command"; the body is skipped and the connection stays open.
    """
    rs = conn.send(frame(opcode, extras=b"\0\0\0\1", value=b"body"), frame(B.NOOP))
    assert [(r.opcode, r.status, r.value) for r in rs] == [
        (opcode, 0x81, b"Unknown command"), (B.NOOP, 0, b"")
    ]
    assert not conn.closed


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        frame(B.GET, b"k", extras=b"abcd"),
        frame(B.GET, b""),
        frame(B.GET, b"k" * 251),
        frame(B.GET, b"k", value=b"v"),
        frame(B.SET, b"k", value=b"v"),
        frame(B.SET, b"", STORE_EXTRAS, b"v"),
        frame(B.APPEND, b"", value=b"v"),
        frame(B.DELETE, b"k", value=b"v"),
        frame(B.INCREMENT, b"k", struct.pack(">QQ", 1, 1)),
        frame(B.TOUCH, b"k"),
        frame(B.FLUSH, extras=b"ab"),
        frame(B.NOOP, b"k"),
        frame(B.VERSION_OP, value=b"x"),
        frame(B.STAT, value=b"x"),
        frame(B.QUIT, b"k"),
    ],
)
def test_invalidArguments(conn, request_):
    """
    A frame whose extras, key or value do not fit its opcode gets 0x04
    "Invalid arguments" and the connection closes, as memcached.
    """
    rs = conn.send(request_, frame(B.NOOP))
    assert [(r.status, r.value) for r in rs] == [(0x04, b"Invalid arguments")]
    assert conn.closed


def test_keyAndExtrasLongerThanBody(conn):
    """
    memcached answers 0x81 and closes when key and extras exceed the body.
    """
    r = conn.one(frame(B.GET, b"k", bodylen=0))
    assert (r.status, r.value) == (0x81, b"Unknown command")
    assert conn.closed


def test_badMagic(conn):
    """
    A frame without the request magic closes the connection silently,
    after answering the good frames before it.
    """
    rs = conn.send(frame(B.NOOP), frame(B.NOOP, magic=0x81), frame(B.NOOP))
    assert [r.opcode for r in rs] == [B.NOOP]
    assert conn.closed
    conn.proto.dataReceived(frame(B.NOOP))
    assert conn.responses() == []


def test_tooLargeSwallowed(conn):
    """
    A body over the item size plus slack gets 0x03 "Too large." before it
    arrives; it is counted and swallowed without being buffered, and the
    connection goes on.
    """
    value = b"x" * (MiB + 1000)
    data = setFrame(b"k", value, opaque=1) + frame(B.NOOP, opaque=2)
    conn.proto.dataReceived(data[:100])
    r = conn.one()
    assert (r.opcode, r.status, r.value, r.opaque) == (B.SET, 0x03, b"Too large.", 1)
    for i in range(100, len(data), 65536):
        conn.proto.dataReceived(data[i:i + 65536])
        assert conn.proto._pendingLength < 100
    assert [(r.opcode, r.opaque) for r in conn.responses()] == [(B.NOOP, 2)]
    assert conn.session.stats.store_too_large == 1
    assert conn.session.stats.bytes_read == len(data) + len(plainAuth(b"rw", b"secret"))


def test_tooLargeJustOverLimit(conn):
    """
    A value just over the item size (within the slack) reaches the
    session, which answers TOO_LARGE (0x03) and unlinks the old item.
    """
    conn.one(setFrame(b"k", b"old"))
    r = conn.one(setFrame(b"k", b"x" * MiB))
    assert (r.status, r.value) == (0x03, b"Too large.")
    assert conn.one(frame(B.GET, b"k")).status == 1
    assert conn.one(setFrame(b"k", b"x" * (MiB - 1))).status == 0


def test_tooLargeBeforeAuth(world):
    c = Connection(world)
    rs = c.send(frame(B.SASL_AUTH, b"PLAIN", value=b"x" * 5000), frame(B.NOOP))
    assert [(r.opcode, r.status) for r in rs] == [(B.SASL_AUTH, 0x03), (B.NOOP, 0)]


def test_byteByByte(conn):
    """
    Frames split anywhere wait for the rest.
    """
    data = setFrame(b"key", b"value", opaque=1) + frame(B.GETK, b"key", opaque=2)
    for i in range(len(data)):
        conn.proto.dataReceived(data[i:i + 1])
    rs = conn.responses()
    assert [(r.opcode, r.opaque) for r in rs] == [(B.SET, 1), (B.GETK, 2)]
    assert rs[1].value == b"value"


def test_oneSendPerRead(conn):
    """
    All responses to one read leave in a single write, and the bytes are
    counted.
    """
    writes = []
    conn.proto.send = writes.append
    conn.proto.dataReceived(b"".join(frame(B.NOOP, opaque=i) for i in range(10)))
    assert len(writes) == 1
    assert len(parse(writes[0])) == 10


# -- asynchronous keyspaces ----------------------------------------------------


class AsyncKeyspace:
    """
    A keyspace answering every call with an unfired L{Deferred}, recorded
    in C{calls} as (method, args, deferred).
    """

    synchronous = False

    def __init__(self):
        self.calls = []

    def _call(self, name, *args):
        d = Deferred()
        self.calls.append((name, args, d))
        return d

    def get(self, key):
        return self._call("get", key)

    def touch(self, key, exptime):
        return self._call("touch", key, exptime)

    def store(self, mode, key, value, flags, exptime, cas):
        return self._call("store", mode, key, value)

    def delete(self, key, cas):
        return self._call("delete", key)

    def delta(self, key, incr, delta, initial, exptime, cas):
        return self._call("delta", key)

    def flush(self, delay):
        return self._call("flush", delay)

    def stats(self):
        return {}

    def resetStats(self):
        pass

    def configure(self, maxBytes, maxItemSize):
        pass


class AsyncStore:
    def __init__(self):
        self.ks = AsyncKeyspace()

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        return self.ks

    def dropKeyspace(self, cacheId):
        pass


@pytest.fixture
def asyncConn(world):
    store = AsyncStore()
    world.registry = CacheRegistry(store, world.index, None, world.clock)
    c = Connection(world).auth()
    c.ks = store.ks
    return c


def test_asyncInOrder(asyncConn):
    """
    While a keyspace Deferred is pending, the requests already read are
    dispatched, reading pauses, and replies leave in request order however
    the Deferreds fire.
    """
    from memcachier.commands import packItem

    c = asyncConn
    rs = c.send(
        frame(B.NOOP, opaque=1),
        frame(B.GET, b"a", opaque=2),
        setFrame(b"b", b"v", opaque=3),
        frame(B.DELETE, b"c", opaque=4),
        frame(B.NOOP, opaque=5),
    )
    assert [r.opaque for r in rs] == [1]
    assert [name for name, _, _ in c.ks.calls] == ["get", "store", "delete"]
    assert c.transport.producerState == "paused"
    # more data while waiting is parsed and queued behind
    c.proto.dataReceived(frame(B.NOOP, opaque=6))
    assert c.responses() == []
    c.ks.calls[2][2].callback(DeleteResult.NOT_FOUND)
    c.ks.calls[1][2].callback((StoreResult.STORED, 43))
    assert c.responses() == []
    assert c.transport.producerState == "paused"
    c.ks.calls[0][2].callback(packItem(b"A", 0, 0, 42))
    rs = c.responses()
    assert [(r.opaque, r.status, r.value, r.cas) for r in rs] == [
        (2, 0, b"A", 42), (3, 0, b"", 43), (4, 1, b"Not found", 0), (5, 0, b"", 0),
        (6, 0, b"", 0),
    ]
    assert c.transport.producerState == "producing"


def test_asyncAlreadyFired(asyncConn, monkeypatch):
    """
    A Deferred that has already fired is answered at once, without pausing.
    """
    c = asyncConn
    monkeypatch.setattr(c.ks, "get", lambda key: succeed(None))
    rs = c.send(frame(B.GET, b"a", opaque=1), frame(B.NOOP, opaque=2))
    assert [(r.opaque, r.status) for r in rs] == [(1, 1), (2, 0)]
    assert c.transport.producerState == "producing"


def test_asyncFailure(asyncConn, monkeypatch):
    """
    A failed keyspace call answers 0x84 and the connection goes on.
    """
    c = asyncConn
    monkeypatch.setattr(c.ks, "get", lambda key: fail(RuntimeError("backend down")))
    rs = c.send(frame(B.GET, b"a", opaque=1), frame(B.NOOP, opaque=2))
    assert [(r.opaque, r.status) for r in rs] == [(1, 0x84), (2, 0)]


def test_asyncLostConnection(asyncConn):
    """
    A reply that arrives after the connection closed is dropped.
    """
    c = asyncConn
    c.send(frame(B.GET, b"a"), frame(B.NOOP))
    c.transport.loseConnection()
    c.ks.calls[0][2].callback(None)
    assert c.responses() == []


def test_statDetail():
    """
    STAT C{detail on|off|dump} as memcached 1.6.18 answers it: on and off
    answer the terminator alone; dump is one stat C{detailed} holding the
    ASCII dump, scoped to the caller's cache; an unknown subcommand is
    0x01; C{detail} alone is an empty success.
    """
    from memcachier.analytics.introspection import IntrospectionService

    world = World(introspection=lambda clock: IntrospectionService(clock))
    c = Connection(world).auth()
    rs = c.send(frame(B.STAT, b"detail on", opaque=1))
    assert [(r.status, r.key, r.value, r.opaque) for r in rs] == [(0, b"", b"", 1)]
    c.send(frame(B.GET, b"user:1"), setFrame(b"user:2", b"v"), frame(B.GET, b"user:2"),
           frame(B.DELETE, b"user:3"))
    rs = c.send(frame(B.STAT, b"detail dump", opaque=2))
    assert [(r.status, r.key, r.value) for r in rs] == [
        (0, b"detailed", b"PREFIX user get 2 hit 1 set 1 del 1\r\nEND\r\n"),
        (0, b"", b""),
    ]
    assert [(r.status, r.value) for r in c.send(frame(B.STAT, b"detail off"))] == [(0, b"")]
    assert [(r.status, r.value) for r in c.send(frame(B.STAT, b"detail"))] == [(0, b"")]
    assert c.one(frame(B.STAT, b"detail foo")).status == 0x01
    assert c.one(frame(B.STAT, b"detailx on")).status == 0x01
    other = Connection(world).auth(b"other")
    rs = other.send(frame(B.STAT, b"detail dump"))
    assert [(r.key, r.value) for r in rs] == [(b"detailed", b"END\r\n"), (b"", b"")]


def test_statDetailNeedsIntrospection(conn):
    r = conn.one(frame(B.STAT, b"detail on"))
    assert (r.status, r.value) == (0x84, b"stats detail needs introspection, which is off")
