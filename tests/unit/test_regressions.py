"""
Regression tests for server bugs found by the integration tier
(C{tests/integration}), each reproduced here without sockets.
"""

from memcachier.control.model import MiB
from memcachier.protocols import binary as B

from tests.unit.test_binary import Connection, frame, setFrame
from tests.unit.helpers import World


def test_binarySetFarOverLimitUnlinksOldItem():
    """
    A binary SET whose body is far over the item size (refused from its
    header, never buffered) unlinks the old item, as memcached does and as
    a SET just over the limit already did: a reader must not see the
    stale value the writer meant to replace.  Found with pylibmc setting
    2 MiB over an existing key (memcached 1.6.18: the key is gone).
    """
    conn = Connection(World()).auth()
    conn.one(setFrame(b"k", b"old"))
    conn.one(setFrame(b"other", b"kept"))
    data = setFrame(b"k", b"x" * (2 * MiB), opaque=7)
    # header only: nothing is answered until the key arrives
    assert conn.send(data[:24]) == []
    r = conn.one(data[24:40])
    assert (r.opcode, r.status, r.opaque) == (B.SET, 0x03, 7)
    for i in range(40, len(data), 65536):
        conn.proto.dataReceived(data[i:i + 65536])
        assert conn.proto._pendingLength < 100
    assert conn.one(frame(B.GET, b"k")).status == 0x01
    assert conn.one(frame(B.GET, b"other")).value == b"kept"


def test_binaryTooLargeQuietSetAndCas():
    """
    SETQ far over the limit unlinks too (and, being an error, is
    answered); a SET with a CAS, or an ADD, leaves the item alone, as a
    refused cas or add does in memcached.
    """
    conn = Connection(World()).auth()
    conn.one(setFrame(b"q", b"old"))
    conn.one(setFrame(b"c", b"old"))
    conn.one(setFrame(b"a", b"old"))
    big = b"x" * (2 * MiB)
    assert conn.one(setFrame(b"q", big, opcode=B.SETQ)).status == 0x03
    assert conn.one(setFrame(b"c", big, cas=12345)).status == 0x03
    assert conn.one(setFrame(b"a", big, opcode=B.ADD)).status == 0x03
    assert conn.one(frame(B.GET, b"q")).status == 0x01
    assert conn.one(frame(B.GET, b"c")).value == b"old"
    assert conn.one(frame(B.GET, b"a")).value == b"old"


def test_binaryTooLargeReadOnlyKeepsItem():
    """
    A read-only credential's oversized SET unlinks nothing.
    """
    world = World()
    Connection(world).auth().one(setFrame(b"k", b"old"))
    ro = Connection(world).auth(b"ro")
    assert ro.one(setFrame(b"k", b"x" * (2 * MiB))).status == 0x03
    assert ro.one(frame(B.GET, b"k")).value == b"old"


def test_sniffingEmptyReadWaitsForAByte():
    """
    An empty read before the first byte does not pick a codec (it raised
    C{IndexError}); found by the fuzz generators, which can mutate an input
    down to nothing.
    """
    world = World()
    proto, transport = world.connect()
    proto.dataReceived(b"")
    assert proto.codec is None and transport.connected
    proto.dataReceived(b"version\r\n")
    assert transport.value().startswith(b"VERSION ")
