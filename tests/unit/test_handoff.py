"""
Drains never leave an older value on a key's new owner: a pushed item
(a hand-off) is refused for a key deleted or flushed there in the warm-up
window, and out of a window; a write a lagging peer sends to the draining
node goes on to the key's new owner.
"""

from memcachier.cluster.peer import PeerAuthenticator, request
from memcachier.cluster.states import DRAINING, NodeState
from memcachier.commands import DeleteResult, StoreMode, StoreResult, itemValue
from memcachier.protocols import binary as B
from tests.unit.helpers import World
from tests.unit.test_cluster import Pair

WINDOW = 30.0


def _stored(keyspace, key):
    item = keyspace.get(key)
    return None if item is None else itemValue(item)


def _bDrains(pair):
    """
    Node B leaves the ring and drains; A, the new owner of B's keys, opens
    its warm-up window.
    """
    pair.membership.live = ("a:1",)
    pair.membership.draining = ("b:1",)
    pair.keyspace.refresh()


def test_handOffOfAKeyDeletedInTheWindowIsRefused():
    """
    A client deletes a key on its new owner while the draining node's
    push of the older value is under way: the push arrives after the
    delete and is refused, so the delete holds.  A key never deleted is
    taken, and a value written here meanwhile stays.
    """
    pair = Pair(warmup=WINDOW)
    deleted, kept, written = pair.remote[:3]
    for key in (deleted, kept, written):
        pair.bKeyspace().store(StoreMode.SET, key, b"old", 0, 0, 0)
    _bDrains(pair)
    assert pair.run(pair.keyspace.delete(deleted, 0)) == DeleteResult.DELETED
    assert pair.run(pair.keyspace.store(StoreMode.SET, written, b"new", 0, 0, 0))[0] == StoreResult.STORED
    local = pair.keyspace.local
    assert pair.keyspace.acceptHandOff(deleted, b"old", 0, 0)[0] == StoreResult.NOT_STORED
    assert pair.keyspace.acceptHandOff(kept, b"old", 0, 0)[0] == StoreResult.STORED
    assert pair.keyspace.acceptHandOff(written, b"old", 0, 0)[0] == StoreResult.NOT_STORED
    assert (_stored(local, deleted), _stored(local, kept), _stored(local, written)) == (
        None, b"old", b"new"
    )


def test_handOffsAfterAFlushOrOutOfTheWindowAreRefused():
    pair = Pair(warmup=WINDOW)
    first, second = pair.remote[:2]
    # no window: the drain was not seen here
    assert pair.keyspace.acceptHandOff(first, b"old", 0, 0)[0] == StoreResult.NOT_STORED
    _bDrains(pair)
    pair.run(pair.keyspace.flush(0))
    assert pair.keyspace.acceptHandOff(first, b"old", 0, 0)[0] == StoreResult.NOT_STORED
    pair.clock.advance(WINDOW + 1)
    assert pair.keyspace.acceptHandOff(second, b"old", 0, 0)[0] == StoreResult.NOT_STORED
    assert _stored(pair.keyspace.local, first) is _stored(pair.keyspace.local, second) is None


def test_tombstonesAreBounded(monkeypatch):
    """
    Past its bound the window remembers no more deletes and takes no
    hand-off at all: a miss later rather than a value that may be stale.
    """
    from memcachier.cluster import keyspace as K

    monkeypatch.setattr(K, "MAX_TOMBSTONES", 2)
    pair = Pair(warmup=WINDOW)
    _bDrains(pair)
    for key in pair.remote[:3]:
        pair.run(pair.keyspace.delete(key, 0))
    assert len(pair.keyspace._tombstones) == 2
    assert pair.keyspace.acceptHandOff(pair.remote[5], b"v", 0, 0)[0] == StoreResult.NOT_STORED


def test_drainingNodePassesAPeersWritesOn():
    """
    A peer that has not yet seen the drain sends a write to the draining
    node A: it is applied on the key's new owner B, and A's copy goes (it
    would otherwise be pushed, older, or answer a fallback get).
    """
    state = NodeState(None, WINDOW)
    pair = Pair(warmup=WINDOW, state=state)
    state.clock = pair.clock
    setKey, deletedKey = pair.local[:2]
    for key in (setKey, deletedKey):
        pair.keyspace.local.store(StoreMode.SET, key, b"old", 0, 0, 0)
        pair.bKeyspace().store(StoreMode.SET, key, b"old", 0, 0, 0)
    pair.membership.live = ("b:1",)
    pair.membership.draining = ("a:1",)
    pair.keyspace.refresh()
    state.drain(WINDOW)
    assert state.state == DRAINING
    result = pair.run(pair.keyspace.peerStore(StoreMode.SET, setKey, b"new", 0, 0, 0))
    assert result[0] == StoreResult.STORED
    assert pair.run(pair.keyspace.peerDelete(deletedKey, 0)) == DeleteResult.DELETED
    assert _stored(pair.bKeyspace(), setKey) == b"new"
    assert _stored(pair.bKeyspace(), deletedKey) is None
    assert _stored(pair.keyspace.local, setKey) is None


def test_handOffOverTheWire():
    """
    The hand-off opcode on a peer connection: stored as an add (a node
    whose keyspace has no hand-off of its own), "exists" the second time;
    a client's connection does not have it.
    """
    world = World()
    world.registry.peerAuthenticator = PeerAuthenticator("s3cret")
    proto, transport = world.connect()
    proto.dataReceived(request(B.SASL_AUTH, b"PLAIN", value=b"\0@peer:1\0s3cret"))
    transport.clear()
    frame = request(B.PEER_HANDOFF, b"h", B.STORE_EXTRAS.pack(3, 0), b"value")
    proto.dataReceived(frame + frame)
    world.clock.advance(0)
    out = transport.value()
    first = B.FRAME_HEADER.unpack_from(out)
    second = B.FRAME_HEADER.unpack_from(out, 24 + first[6])
    assert (first[5], second[5]) == (B.SUCCESS, B.KEY_EEXISTS)
    assert itemValue(world.registry.runtime(1).keyspace.get(b"h")) == b"value"

    client, clientTransport = world.connect()
    client.dataReceived(request(B.SASL_AUTH, b"PLAIN", value=b"\0rw\0secret"))
    clientTransport.clear()
    client.dataReceived(frame + request(B.NOOP))
    answer = clientTransport.value()
    assert B.FRAME_HEADER.unpack_from(answer)[5] == B.UNKNOWN_COMMAND
