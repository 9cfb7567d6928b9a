"""
The session and codecs over an asynchronous keyspace: answers leave in
request order even when the keyspace answers out of order; and the
session's counters, limits and throttling.
"""

from twisted.internet.defer import Deferred
from zope.interface import implementer

from memcachier.interfaces import IKeyspace, IStore
from memcachier.protocols.session import absoluteExptime
from tests.unit.helpers import World


@implementer(IKeyspace)
class DeferringKeyspace:
    """
    A keyspace over a real memory keyspace whose every answer is an unfired
    L{Deferred}, fired only when the test says so.
    """

    synchronous = False

    def __init__(self, inner):
        self.inner = inner
        self.pending = []

    def _later(self, method, *args):
        d = Deferred()
        self.pending.append((d, getattr(self.inner, method), args))
        return d

    def fire(self, index):
        d, method, args = self.pending.pop(index)
        d.callback(method(*args))

    def __getattr__(self, name):
        return lambda *args: self._later(name, *args)


@implementer(IStore)
class DeferringStore:
    def __init__(self, inner):
        self.inner = inner
        self.keyspaces = {}

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        if cacheId not in self.keyspaces:
            self.keyspaces[cacheId] = DeferringKeyspace(
                self.inner.keyspace(cacheId, maxBytes, maxItemSize)
            )
        return self.keyspaces[cacheId]

    def dropKeyspace(self, cacheId):
        pass

    def close(self):
        pass


def asyncWorld():
    world = World()
    world.store = DeferringStore(world.store)
    world.registry.store = world.store
    return world


def test_asciiOrderWithAsyncKeyspace():
    """
    With an asynchronous keyspace the ASCII codec dispatches the pipelined
    requests it has read, stops reading while the oldest answer is pending,
    and answers in request order whatever order the keyspace answers in.
    (This keyspace runs a call when the test fires it.)
    """
    world = asyncWorld()
    proto, transport = world.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    ks = world.store.keyspaces[1]
    transport.clear()
    proto.dataReceived(b"set a 0 0 1\r\n1\r\nget a\r\ndelete a\r\nget a\r\n")
    assert transport.value() == b""
    assert transport.producerState == "paused"
    assert len(ks.pending) == 4
    ks.fire(0)  # set
    assert transport.value() == b"STORED\r\n"
    ks.fire(1)  # delete: waits for the get before it
    ks.fire(1)  # the last get
    assert transport.value() == b"STORED\r\n"
    assert transport.producerState == "paused"
    ks.fire(0)  # the first get, run after the delete: a miss
    assert transport.value() == b"STORED\r\nEND\r\nDELETED\r\nEND\r\n"
    assert transport.producerState == "producing"


def test_asciiBytesWhilePendingAreKept():
    """
    Bytes that arrive while an answer is pending are parsed afterwards.
    """
    world = asyncWorld()
    proto, transport = world.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    ks = world.store.keyspaces[1]
    transport.clear()
    proto.dataReceived(b"get x\r\n")
    proto.dataReceived(b"version\r\n")
    ks.fire(0)
    assert transport.value().startswith(b"END\r\nVERSION ")


def test_binaryOrderWithAsyncKeyspace():
    """
    The binary codec keeps order too: a quiet set and a get answered out
    of order by the keyspace still reply in request order.
    """
    import struct

    def frame(op, key=b"", extras=b"", value=b"", opaque=0):
        return struct.pack(
            ">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0,
            len(key) + len(extras) + len(value), opaque, 0,
        ) + extras + key + value

    world = asyncWorld()
    proto, transport = world.connect()
    proto.dataReceived(frame(0x21, b"PLAIN", b"", b"\0rw\0secret"))
    ks = world.store.keyspaces[1]
    transport.clear()
    proto.dataReceived(
        frame(0x01, b"k", struct.pack(">II", 0, 0), b"v", opaque=1)
        + frame(0x00, b"k", opaque=2)
    )
    ks.fire(0)
    ks.fire(0)
    data = transport.value()
    first = struct.unpack(">BBHBBHIIQ", data[:24])
    assert first[7] == 1
    second = struct.unpack(">BBHBBHIIQ", data[24:48])
    assert second[7] == 2 and second[5] == 0


def test_countersAcrossConnections():
    """
    Counters are per cache and shared by its connections.
    """
    world = World()
    a, _ = world.connect()
    b, _ = world.connect()
    for proto in (a, b):
        proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\nget k\r\n")
    stats = world.registry.runtime(1).statsDict()
    assert (stats["cmd_get"], stats["get_misses"], stats["curr_connections"]) == (2, 2, 2)
    assert stats["auth_cmds"] == 2
    a.connectionLost(None)
    assert world.registry.runtime(1).stats.curr_connections == 1


def test_throttledLoginIsRefusedAndClosed():
    """
    Past the failure budget an ASCII login gets memcached's auth failure
    at once, even with the right password, and the connection closes.
    """
    world = World()
    for _ in range(10):
        proto, transport = world.connect()
        proto.dataReceived(b"set rw 0 0 5\r\nwrong\r\n")
        assert transport.value() == b"CLIENT_ERROR authentication failure\r\n"
        assert transport.connected
    proto, transport = world.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\nversion\r\n")
    assert transport.value() == b"CLIENT_ERROR authentication failure\r\n"
    assert not transport.connected
    stats = world.registry.runtime(1).statsDict()
    assert (stats["auth_cmds"], stats["auth_errors"]) == (11, 11)


def test_absoluteExptime():
    """
    memcached's exptime rules: 0 never, up to 30 days relative, beyond
    absolute, negative already expired.
    """
    assert absoluteExptime(0, 1000) == 0
    assert absoluteExptime(10, 1000) == 1010
    assert absoluteExptime(2592000, 1000) == 2593000
    assert absoluteExptime(2592001, 1000) == 2592001
    assert absoluteExptime(-5, 1000) <= 1000


def test_deletedCacheDropped():
    """
    Deleting a cache in the control plane drops its keyspace and closes
    its connections at their next request.
    """
    world = World()
    proto, transport = world.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\nset k 0 0 1\r\nx\r\n")
    world.index.removeCache(1)
    transport.clear()
    proto.dataReceived(b"get k\r\n")
    assert transport.value() == b"SERVER_ERROR cache disabled\r\n"
    assert not transport.connected
    assert world.registry.existing(1) is None


def test_planChangeResizes():
    """
    A plan change reaches the live keyspace at once.
    """
    world = World()
    proto, transport = world.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    world.index._caches[1] = world.index._caches[1].__class__(
        *[("100" if f == "plan" else getattr(world.index._caches[1], f))
          for f in ("id", "name", "label", "plan", "enabled", "cluster", "sso_secret",
                    "created_at", "last_active")]
    )
    world.index.changed()
    assert world.registry.runtime(1).keyspace.stats()["limit_maxbytes"] == 100 * 1024 * 1024


def test_failedLoginCountsAgainstTheNamedCache():
    """
    A wrong password for a known username counts in that cache's
    C{auth_cmds} and C{auth_errors}, even on a fresh connection; an
    unknown username counts nowhere.
    """
    world = World()
    proto, _ = world.connect()
    proto.dataReceived(b"set rw 0 0 5\r\nwrong\r\nset nobody 0 0 5\r\nwrong\r\n")
    stats = world.registry.runtime(1).statsDict()
    assert (stats["auth_cmds"], stats["auth_errors"]) == (1, 1)
    assert world.registry.existing(2) is None
