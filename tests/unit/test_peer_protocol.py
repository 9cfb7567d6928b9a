"""
Unit tests of the versioned peer protocol: the hello a peer connection
opens with, the capabilities both sides use, a peer from before the hello,
what a peer cannot serve (a miss, never an error), and what a lost
connection tells the cluster keyspace.  The client side is a
L{PeerConnection} on a L{StringTransport}; the serving side a node's real
binary codec.
"""

import pytest
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from memcachier.cluster.keyspace import PeerUnavailable
from memcachier.cluster.hello import (
    CAP_ITEM,
    CAP_STATS_TUNNEL,
    PEER_CAPABILITIES,
    PEER_PROTOCOL_VERSION,
    VERSION0_CAPABILITIES,
    parseHello,
)
from memcachier.cluster.peer import PeerAuthenticator, PeerConnection, request
from memcachier.commands import KeyspaceError, StoreMode, StoreResult, itemExptime, itemFlags, itemValue
from memcachier.protocols import binary as B
from tests.unit.helpers import World


def frames(data):
    """
    The request frames in C{data}.

    @return: L{list} of (opcode, key, extras, value).
    """
    out = []
    offset = 0
    while offset < len(data):
        (_, opcode, keylen, extlen, _, _, bodylen, _, _) = B.FRAME_HEADER.unpack_from(data, offset)
        start = offset + B.HEADER_LENGTH
        extras = data[start:start + extlen]
        key = data[start + extlen:start + extlen + keylen]
        value = data[start + extlen + keylen:start + bodylen]
        out.append((opcode, key, extras, value))
        offset = start + bodylen
    return out


def response(opcode, status=B.SUCCESS, key=b"", extras=b"", value=b"", cas=0):
    return B.FRAME_HEADER.pack(
        B.RESPONSE_MAGIC, opcode, len(key), len(extras), 0, status,
        len(extras) + len(key) + len(value), 0, cas,
    ) + extras + key + value


def helloAnswer(version, capabilities):
    return (
        response(B.STAT, key=b"version", value=str(version).encode())
        + response(B.STAT, key=b"capabilities", value=capabilities.encode())
        + response(B.STAT)
    )


class Peer:
    """
    A L{PeerConnection} whose connections are L{StringTransport}s.
    """

    def __init__(self, capabilities=PEER_CAPABILITIES):
        self.clock = Clock()
        self.clock.advance(1000)
        self.transports = []
        self.events = []
        self.connection = PeerConnection(
            "b:1", 1, "s3cret", self.clock, self.connect, 2.0, self.down, capabilities
        )

    def connect(self, node, protocol):
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append((transport, protocol))
        return succeed(protocol)

    def down(self, node):
        self.events.append(("down", node))

    def sent(self):
        transport, _ = self.transports[-1]
        out = frames(transport.value())
        transport.clear()
        return out

    def answer(self, data):
        self.transports[-1][1].dataReceived(data)

    def open(self, hello):
        """
        Send a get (which opens the connection), answer the auth and the
        hello with C{hello}, and return the frames sent after it.
        """
        results = []
        self.connection.get(b"k").addBoth(results.append)
        assert [f[0] for f in self.sent()] == [B.SASL_AUTH, B.STAT]
        self.answer(response(B.SASL_AUTH, value=b"Authenticated") + hello)
        return results


def test_helloParses():
    assert parseHello("1 item,stats_tunnel") == (1, frozenset((CAP_ITEM, CAP_STATS_TUNNEL)))
    assert parseHello("2 ") == (2, frozenset())
    assert parseHello("x item") is None
    assert parseHello("") is None


def test_helloFirstRequestsWaitForIt():
    """
    A connection opens with the SASL exchange and the hello (this node's
    version and capabilities); the requests wait for the hello's answer,
    then use the peer-only opcodes both sides have.
    """
    peer = Peer()
    results = []
    peer.connection.get(b"k").addBoth(results.append)
    peer.connection.store(StoreMode.SET, b"s", b"v", 0, 0, 0).addBoth(results.append)
    auth, hello = peer.sent()
    assert auth[0] == B.SASL_AUTH and auth[3] == b"\0@peer:1\0s3cret"
    assert hello[:2] == (
        B.STAT, f"peer_hello {PEER_PROTOCOL_VERSION} handoff,item,stats_tunnel".encode()
    )
    peer.answer(response(B.SASL_AUTH, value=b"Authenticated"))
    assert peer.sent() == []
    peer.answer(helloAnswer(1, "item,stats_tunnel"))
    assert [(f[0], f[1]) for f in peer.sent()] == [(B.PEER_GET, b"k"), (B.SET, b"s")]
    assert peer.connection.peerVersion == 1
    assert peer.connection.common == {CAP_ITEM, CAP_STATS_TUNNEL}
    peer.answer(response(B.PEER_GET, B.KEY_ENOENT) + response(B.SET, cas=5))
    assert results == [None, (StoreResult.STORED, 5)]
    # once open, a request goes at once
    peer.connection.peek(b"p")
    assert [(f[0], f[1]) for f in peer.sent()] == [(B.PEER_PEEK, b"p")]


@pytest.mark.parametrize("theirs, opcode", [
    ("handoff,item,stats_tunnel", B.PEER_HANDOFF),
    ("item,stats_tunnel", B.ADD),
])
def test_handOffFrame(theirs, opcode):
    """
    A draining node's push goes as the peer-only hand-off when both sides
    have it, else as a plain C{ADD}; laid out as an add either way, and a
    refusal is "not stored".
    """
    peer = Peer()
    opened = peer.open(helloAnswer(1, theirs))
    peer.sent()
    peer.answer(response(B.PEER_GET, B.KEY_ENOENT))
    assert opened == [None]
    results = []
    peer.connection.handOff(b"h", b"value", 7, 0).addBoth(results.append)
    [frame] = peer.sent()
    assert (frame[0], frame[1], frame[3]) == (opcode, b"h", b"value")
    assert frame[2] == B.STORE_EXTRAS.pack(7, 0)
    peer.answer(response(opcode, B.KEY_EEXISTS, value=b"Data exists for key."))
    assert results == [(StoreResult.NOT_STORED, 0)]


def test_peerWithoutTheHelloIsVersion0():
    """
    A node from before the hello answers it as an unknown stats group: it
    is version 0, with the capabilities such nodes had.
    """
    peer = Peer()
    peer.open(response(B.STAT, B.KEY_ENOENT, value=b"Not found"))
    assert peer.connection.peerVersion == 0
    assert peer.connection.common == VERSION0_CAPABILITIES
    assert [f[0] for f in peer.sent()] == [B.PEER_GET]


def test_unknownCapabilitiesAreNeverCommon():
    peer = Peer()
    peer.open(helloAnswer(7, "item,stats_tunnel,teleport"))
    assert peer.connection.peerVersion == 7
    assert peer.connection.common == {CAP_ITEM, CAP_STATS_TUNNEL}


@pytest.mark.parametrize("ours, theirs", [
    (PEER_CAPABILITIES, "stats_tunnel"),
    ((CAP_STATS_TUNNEL,), "item,stats_tunnel"),
])
def test_withoutItemPlainOpcodes(ours, theirs):
    """
    When one side lacks the item capability (whichever side), gets and
    touches go as plain GET and GAT, a peek is a miss (a no-op keeps the
    answers in order) and the stats tunnel still works.
    """
    peer = Peer(ours)
    results = peer.open(helloAnswer(1, theirs))
    assert peer.connection.common == {CAP_STATS_TUNNEL}
    assert [(f[0], f[1]) for f in peer.sent()] == [(B.GET, b"k")]
    peer.answer(response(B.GET, extras=(9).to_bytes(4, "big"), value=b"value", cas=3))
    [item] = results
    assert (itemValue(item), itemFlags(item), itemExptime(item)) == (b"value", 9, 0)
    out = []
    peer.connection.touch(b"t", 1100).addBoth(out.append)
    peer.connection.peek(b"p").addBoth(out.append)
    peer.connection.stats(b"cluster_recent_logs").addBoth(out.append)
    sent = peer.sent()
    assert [(f[0], f[1]) for f in sent] == [(B.GAT, b"t"), (B.NOOP, b""), (B.STAT, b"cluster_recent_logs")]
    assert sent[0][2] == (100).to_bytes(4, "big")
    peer.answer(
        response(B.GAT, extras=(1).to_bytes(4, "big"), value=b"tv")
        + response(B.NOOP)
        + response(B.STAT)
    )
    assert itemExptime(out[0]) == 1100 and itemValue(out[0]) == b"tv"
    assert out[1] is None
    assert out[2] == {}


def test_withoutStatsTunnelPeersAreNotAsked():
    peer = Peer()
    peer.open(helloAnswer(1, "item"))
    out = []
    peer.connection.stats(b"cluster_popular").addErrback(out.append)
    peer.connection.stats(b"").addBoth(out.append)
    assert [f[0] for f in peer.sent()] == [B.PEER_GET, B.NOOP, B.STAT]
    peer.answer(response(B.PEER_GET, B.KEY_ENOENT) + response(B.NOOP) + response(B.STAT))
    assert out[0].check(KeyspaceError) and "no stats tunnel" in out[0].getErrorMessage()
    assert out[1] == {}


def test_requestAPeerCannotServeIsAMiss():
    """
    A peer that does not know an item opcode (0x81) answers a miss.
    """
    peer = Peer()
    results = peer.open(helloAnswer(1, "item,stats_tunnel"))
    peer.sent()
    peer.answer(response(B.PEER_GET, B.UNKNOWN_COMMAND, value=b"Unknown command"))
    assert results == [None]


def test_lostConnectionReportsDownFirstAndSaysWhatWasSent():
    """
    When the connection drops, the peer is reported down before the
    requests fail (so a retry finds the new owner), each with
    L{PeerUnavailable} saying whether it had been written.
    """
    peer = Peer()
    peer.open(helloAnswer(1, "item,stats_tunnel"))
    written = peer.connection.get(b"a")
    written.addErrback(lambda f: peer.events.append(("failed", type(f.value), f.value.sent)))
    _, protocol = peer.transports[-1]
    protocol.connectionLost(Failure(ConnectionLost()))
    assert peer.events == [("down", "b:1"), ("failed", PeerUnavailable, True)]
    # the next request opens a fresh connection, and waits for its hello
    waiting = peer.connection.get(b"b")
    waiting.addErrback(lambda f: peer.events.append(("waiting", f.value.sent)))
    assert len(peer.transports) == 2
    peer.connection.close()
    assert peer.events[-1] == ("waiting", False)


def test_servingSideAnswersTheHello():
    """
    A node answers a peer connection's hello with its version and the
    capabilities it advertises, notes the other side's, and without the
    stats tunnel capability does not know the C{cluster_*} groups.
    """
    world = World()
    world.registry.peerAuthenticator = PeerAuthenticator("s3cret", (CAP_ITEM,))
    proto, transport = world.connect()
    proto.dataReceived(request(B.SASL_AUTH, b"PLAIN", value=b"\0@peer:1\0s3cret"))
    transport.clear()
    proto.dataReceived(
        request(B.STAT, b"peer_hello 1 item,stats_tunnel") + request(B.STAT, b"cluster_recent_logs")
    )
    out = transport.value()
    answers = []
    offset = 0
    while offset < len(out):
        header = B.FRAME_HEADER.unpack_from(out, offset)
        start = offset + B.HEADER_LENGTH
        key = out[start + header[3]:start + header[3] + header[2]]
        value = out[start + header[3] + header[2]:start + header[6]]
        answers.append((header[5], key, value))
        offset = start + header[6]
    assert answers == [
        (B.SUCCESS, b"version", str(PEER_PROTOCOL_VERSION).encode()),
        (B.SUCCESS, b"capabilities", b"item"),
        (B.SUCCESS, b"", b""),
        (B.KEY_ENOENT, b"", b"Not found"),
    ]
    runtime = proto.session.runtime
    assert runtime.peerVersion == 1
    assert runtime.peerCapabilities == {CAP_ITEM, CAP_STATS_TUNNEL}
