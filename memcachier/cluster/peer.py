# -*- test-case-name: tests.unit.test_cluster -*-
"""
Forwarding to the node that owns a key: one persistent, pipelined,
authenticated binary-protocol connection per (peer node, cache).

The connection opens with SASL PLAIN as user C{@peer:<cache id>} and the
cluster secret as password (L{PeerAuthenticator} checks them on the other
side), then carries the cache's requests as binary frames laid out by the
same structures the server's codec parses
(L{memcachier.protocols.binary.FRAME_HEADER} and its extras).  Only
non-quiet opcodes are sent, so every request gets exactly one response (a
C{STAT} several, ended by an empty one), in order.  Gets, peeks and
get-and-touches use the peer-only opcodes (L{B.PEER_GET}, ...), whose
answers carry the item's time to live, idle time and bits: a forwarded
item reports its expiry as the owner would.

The connection is versioned: after the SASL exchange the client sends a
hello (C{stats peer_hello <version> <capabilities>}, answered by
L{PeerRuntime.statsGroup} with the serving node's version and
capabilities), and the requests behind it wait for the answer, then use
only what both sides understand (L{PeerConnection.common}).  A node that
does not know the hello answers it as an unknown stats group: it is
version 0, with L{VERSION0_CAPABILITIES}.  Without L{CAP_ITEM} gets and
touches go as plain C{GET}/C{GAT} (the owner's expiry is then unknown
here) and peeks are misses; without L{CAP_STATS_TUNNEL} the
C{cluster_*} stats groups are not asked for.

A peer cannot stall anyone else: each request has a deadline
(C{[cluster] request_timeout}); one that passes fails that request with
L{PeerUnavailable}, drops the connection (failing what was in flight on
it) and reports the peer down; so do a refused connection and a lost
one.  The peer is reported down I{before} the requests fail, so that the
cluster keyspace, which retries such a request once, finds the key's new
owner.  At most L{PeerConnection.maxPending} requests wait per
connection; beyond, a request fails at once.

The serving side is here too: L{PeerAuthenticator} lets a peer's
connection in onto a L{PeerRuntime}, the cache's I{local} keyspace (never
forwarded again) with counters of its own, so that forwarded requests are
counted once, on the node the client talked to; its
L{PeerRuntime.statsGroup} answers the C{stats} groups a node asks its
peers for (the stats tunnel of recent logs and introspection sketches).
"""

import hmac
import json
import math
from collections import deque
from typing import List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from memcachier.analytics.introspection import encodeKeyCounts, encodePopular
from memcachier.cluster.hello import (
    CAP_HANDOFF,
    CAP_ITEM,
    CAP_STATS_TUNNEL,
    HELLO_GROUP,
    PEER_CAPABILITIES,
    PEER_PROTOCOL_VERSION,
    VERSION0_CAPABILITIES,
    helloRequest,
    parseHello,
)
from memcachier.cluster.keyspace import ClusterKeyspace, PeerUnavailable
from memcachier.commands import (
    REALTIME_MAXDELTA,
    DeleteResult,
    DeltaResult,
    KeyspaceError,
    StoreMode,
    StoreResult,
    packItem,
)
from memcachier.protocols import binary as B
from memcachier.runtime import CacheStats

#: the username prefix of peer connections
PEER_USER_PREFIX = b"@peer:"

_pack = B.FRAME_HEADER.pack
_unpack = B.FRAME_HEADER.unpack_from
_packStore = B.STORE_EXTRAS.pack
_packDelta = B.DELTA_EXTRAS.pack
_HEADER_LENGTH = B.HEADER_LENGTH
_unpackPeerItem = B.PEER_ITEM.unpack

_STORE_OPCODES = {
    StoreMode.SET: B.SET, StoreMode.ADD: B.ADD, StoreMode.REPLACE: B.REPLACE,
    StoreMode.APPEND: B.APPEND, StoreMode.PREPEND: B.PREPEND, StoreMode.CAS: B.SET,
}
_DELTA_RESULTS = {
    B.DELTA_BADVAL: DeltaResult.NON_NUMERIC,
    B.ENOMEM: DeltaResult.NO_MEMORY,
    B.KEY_ENOENT: DeltaResult.NOT_FOUND,
    B.KEY_EEXISTS: DeltaResult.EXISTS,
}
_DELETE_RESULTS = {
    B.SUCCESS: DeleteResult.DELETED,
    B.KEY_ENOENT: DeleteResult.NOT_FOUND,
    B.KEY_EEXISTS: DeleteResult.EXISTS,
}


def request(opcode, key=b"", extras=b"", value=b"", cas=0, opaque=0):
    """
    One binary request frame.

    @rtype: L{bytes}
    """
    return (
        _pack(
            B.REQUEST_MAGIC, opcode, len(key), len(extras), 0, 0,
            len(extras) + len(key) + len(value), opaque, cas,
        )
        + extras + key + value
    )


def wireExptime(exptime, now):
    """
    An absolute expiry of the keyspace API as a binary-protocol exptime
    the peer's session turns back into the same absolute time.
    """
    if exptime == 0:
        return 0
    if exptime <= now:
        # an absolute time in the past: already expired
        return REALTIME_MAXDELTA + 1
    if exptime > REALTIME_MAXDELTA:
        return int(math.ceil(exptime))
    return max(1, int(math.ceil(exptime - now)))


class Response:
    """
    One response frame.
    """

    __slots__ = ("opcode", "status", "cas", "extras", "key", "value")

    def __init__(self, opcode, status, cas, extras, key, value):
        self.opcode = opcode
        self.status = status
        self.cas = cas
        self.extras = extras
        self.key = key
        self.value = value


def _failure(node, response):
    return KeyspaceError(f"peer {node} answered status {response.status:#x}")


class PeerProtocol(Protocol):
    """
    The client side of a peer connection: sends frames, matches the
    responses with the requests in order.

    @ivar owner: the L{PeerConnection}.
    """

    def __init__(self, owner):
        self.owner = owner
        self._buffer = b""
        self._stats = []

    def connectionMade(self):
        self.owner._connected(self)

    def dataReceived(self, data):
        buffer = self._buffer + data if self._buffer else data
        offset = 0
        n = len(buffer)
        while n - offset >= _HEADER_LENGTH:
            (magic, opcode, keylen, extlen, _, status, bodylen, _, cas) = _unpack(buffer, offset)
            end = offset + _HEADER_LENGTH + bodylen
            if end > n:
                break
            if magic != B.RESPONSE_MAGIC:
                self.transport.abortConnection()
                return
            start = offset + _HEADER_LENGTH
            extras = buffer[start:start + extlen]
            key = buffer[start + extlen:start + extlen + keylen]
            value = buffer[start + extlen + keylen:end]
            offset = end
            response = Response(opcode, status, cas, extras, key, value)
            if opcode == B.STAT and status == B.SUCCESS and key:
                self._stats.append((key, value))
                continue
            if opcode == B.STAT:
                response.value, self._stats = self._stats, []
            self.owner._answered(response)
        self._buffer = buffer[offset:]

    def connectionLost(self, reason):
        self.owner._lost(self, reason)


class _Pending:
    """
    A request waiting for its answer.

    @ivar parse: (parse function, its extra argument).
    @ivar build: L{None} once the frame was written; before, the method
        that builds it (from the common capabilities) and its arguments.
    """

    __slots__ = ("deferred", "parse", "timer", "build")

    def __init__(self, deferred, parse, timer, build=None):
        self.deferred = deferred
        self.parse = parse
        self.timer = timer
        self.build = build


class PeerConnection:
    """
    The connection to one peer node for one cache, opened on first use and
    again after it dropped.

    @ivar node: the peer's C{host:port}.
    @ivar capabilities: what this node understands (and says in its hello).
    @ivar peerVersion: the peer's protocol version once it answered the
        hello (0: it has none), else L{None}.
    @ivar common: the capabilities both sides have, once the hello was
        answered.
    """

    _log = Logger()
    #: requests waiting for an answer (or to be sent) beyond which new
    #: ones fail at once
    maxPending = 10000

    def __init__(self, node, cacheId, secret, reactor, connect, timeout, onDown,
                 capabilities=PEER_CAPABILITIES):
        """
        @param connect: called with (node, protocol); returns a L{Deferred}
            that fails if the connection cannot be made.
        @param onDown: called with the node name when it failed or stalled.
        @param capabilities: the capabilities this node advertises.
        """
        self.node = node
        self.cacheId = cacheId
        self.secret = secret
        self.reactor = reactor
        self.connect = connect
        self.timeout = timeout
        self.onDown = onDown
        self.capabilities = frozenset(capabilities)
        self.peerVersion = None
        self.common = frozenset()
        self._protocol = None
        self._connecting = None
        self._ready = False
        self._handshake = []
        self._pending = deque()

    # -- the keyspace calls ------------------------------------------------------

    def get(self, key):
        return self._call(self._buildGet, (key,), key)

    def peek(self, key):
        return self._call(self._buildPeek, (key,), key)

    def touch(self, key, exptime):
        return self._call(self._buildTouch, (key, exptime), exptime)

    def store(self, mode, key, value, flags, exptime, cas):
        return self._call(self._buildStore, (mode, key, value, flags, exptime, cas), mode)

    def delete(self, key, cas):
        return self._call(self._buildDelete, (key, cas), None)

    def handOff(self, key, value, flags, exptime):
        """
        Push an item of this draining node to the key's new owner: an add
        that the owner refuses for a key deleted there in its warm-up
        window (L{CAP_HANDOFF}); a plain add to a peer without it.
        """
        return self._call(self._buildHandOff, (key, value, flags, exptime), StoreMode.ADD)

    def delta(self, key, incr, delta, initial, exptime, cas):
        return self._call(self._buildDelta, (key, incr, delta, initial, exptime, cas), None)

    def flush(self, delay):
        return self._call(self._buildFlush, (delay,), None)

    def stats(self, group=b""):
        """
        The peer's C{stats [group]} lines for this cache.

        @return: a L{Deferred} firing with a L{dict} of L{str} to L{str}.
        """
        return self._call(self._buildStats, (group,), group)

    def resetStats(self):
        return self._call(self._buildStats, (b"reset",), None)

    # -- frames, from what both sides understand ------------------------------

    def _buildGet(self, key):
        if CAP_ITEM in self.common:
            return request(B.PEER_GET, key), self._parseItem
        return request(B.GET, key), self._parsePlainItem

    def _buildPeek(self, key):
        if CAP_ITEM in self.common:
            return request(B.PEER_PEEK, key), self._parseItem
        # a plain get would bump the item: a miss instead (a no-op keeps
        # the answers in order)
        return request(B.NOOP), self._parseMiss

    def _buildTouch(self, key, exptime):
        extras = wireExptime(exptime, self.reactor.seconds()).to_bytes(4, "big")
        if CAP_ITEM in self.common:
            return request(B.PEER_GAT, key, extras), self._parseItem
        return request(B.GAT, key, extras), self._parsePlainItem

    def _buildStore(self, mode, key, value, flags, exptime, cas):
        opcode = _STORE_OPCODES[mode]
        if opcode in (B.APPEND, B.PREPEND):
            extras = b""
        else:
            extras = _packStore(flags, wireExptime(exptime, self.reactor.seconds()))
        return request(opcode, key, extras, value, cas), self._parseStore

    def _buildHandOff(self, key, value, flags, exptime):
        if CAP_HANDOFF not in self.common:
            return self._buildStore(StoreMode.ADD, key, value, flags, exptime, 0)
        extras = _packStore(flags, wireExptime(exptime, self.reactor.seconds()))
        return request(B.PEER_HANDOFF, key, extras, value), self._parseStore

    def _buildDelete(self, key, cas):
        return request(B.DELETE, key, cas=cas), self._parseDelete

    def _buildDelta(self, key, incr, delta, initial, exptime, cas):
        if initial is None:
            extras = _packDelta(delta, 0, B.NO_CREATE)
        else:
            extras = _packDelta(delta, initial, wireExptime(exptime, self.reactor.seconds()))
        opcode = B.INCREMENT if incr else B.DECREMENT
        return request(opcode, key, extras, cas=cas), self._parseDelta

    def _buildFlush(self, delay):
        extras = int(delay).to_bytes(4, "big") if delay else b""
        return request(B.FLUSH, extras=extras), self._parseEmpty

    def _buildStats(self, group):
        if group == b"reset":
            return request(B.STAT, group), self._parseEmpty
        if group.startswith(b"cluster_") and CAP_STATS_TUNNEL not in self.common:
            return request(B.NOOP), self._parseNoTunnel
        return request(B.STAT, group), self._parseStats

    # -- answers -----------------------------------------------------------------

    def _parseItem(self, response, key):
        if response.status == B.KEY_ENOENT or response.status == B.UNKNOWN_COMMAND:
            return None
        if response.status != B.SUCCESS:
            raise _failure(self.node, response)
        flags, ttl, idle, bits = _unpackPeerItem(response.extras)
        # the owner's item as stores hand it to codecs, its times made
        # relative to this node's clock
        now = self.reactor.seconds()
        return packItem(
            response.value, flags, now + ttl if ttl else 0, response.cas, now - idle, bits
        )

    def _parsePlainItem(self, response, exptime):
        """
        A plain C{GET} or C{GAT} answer (a peer without L{CAP_ITEM}): the
        expiry is the one a touch set, else unknown (0).
        """
        if response.status == B.KEY_ENOENT or response.status == B.UNKNOWN_COMMAND:
            return None
        if response.status != B.SUCCESS or len(response.extras) != 4:
            raise _failure(self.node, response)
        flags = int.from_bytes(response.extras, "big")
        now = self.reactor.seconds()
        return packItem(response.value, flags, exptime if isinstance(exptime, (int, float)) else 0,
                        response.cas, now)

    def _parseMiss(self, response, _):
        return None

    def _parseNoTunnel(self, response, _):
        raise KeyspaceError(f"peer {self.node} has no stats tunnel")

    def _parseStore(self, response, mode):
        status = response.status
        if status == B.SUCCESS:
            return (StoreResult.STORED, response.cas)
        if status == B.NOT_STORED:
            return (StoreResult.NOT_STORED, 0)
        if status == B.KEY_EEXISTS:
            return (StoreResult.NOT_STORED if mode == StoreMode.ADD else StoreResult.EXISTS, 0)
        if status == B.KEY_ENOENT:
            return (StoreResult.NOT_STORED if mode == StoreMode.REPLACE else StoreResult.NOT_FOUND, 0)
        if status == B.E2BIG:
            return (StoreResult.TOO_LARGE, 0)
        if status == B.ENOMEM:
            return (StoreResult.NO_MEMORY, 0)
        raise _failure(self.node, response)

    def _parseDelete(self, response, _):
        result = _DELETE_RESULTS.get(response.status)
        if result is None:
            raise _failure(self.node, response)
        return result

    def _parseDelta(self, response, _):
        if response.status == B.SUCCESS:
            return (DeltaResult.OK, int.from_bytes(response.value, "big"), response.cas)
        result = _DELTA_RESULTS.get(response.status)
        if result is None:
            raise _failure(self.node, response)
        return (result, 0, 0)

    def _parseEmpty(self, response, _):
        if response.status != B.SUCCESS:
            raise _failure(self.node, response)
        return None

    def _parseStats(self, response, _):
        if response.status != B.SUCCESS:
            raise _failure(self.node, response)
        return {k.decode("ascii", "replace"): v.decode("ascii", "replace") for k, v in response.value}

    def _parseAuth(self, response, _):
        if response.status != B.SUCCESS:
            self._log.warn("peer {node} refused the cluster secret", node=self.node)
            raise PeerUnavailable(f"peer {self.node} refused the cluster secret", sent=False)
        return None

    def _parseHello(self, response, _):
        """
        The peer's hello: from now on use what both sides have, and send
        the requests that waited for it.
        """
        hello = None
        if response.status == B.SUCCESS:
            fields = {k: v.decode("ascii", "replace") for k, v in response.value}
            hello = parseHello(f"{fields.get(b'version', '')} {fields.get(b'capabilities', '')}")
        if hello is None:
            # a node from before the hello
            hello = (0, VERSION0_CAPABILITIES)
        self.peerVersion = hello[0]
        self.common = self.capabilities & hello[1]
        self._ready = True
        frames = []
        for pending in self._pending:
            if pending.build is not None:
                build, args = pending.build
                pending.build = None
                frame, parse = build(*args)
                pending.parse = (parse, pending.parse[1])
                frames.append(frame)
        if frames:
            self._protocol.transport.write(b"".join(frames))
        return None

    # -- the pipeline ------------------------------------------------------------

    def _call(self, build, args, extra):
        if len(self._pending) >= self.maxPending:
            raise KeyspaceError(f"peer {self.node} queue full")
        d = Deferred()
        timer = self.reactor.callLater(self.timeout, self._timedOut)
        if self._ready:
            frame, parse = build(*args)
            self._pending.append(_Pending(d, (parse, extra), timer))
            self._protocol.transport.write(frame)
        else:
            # sent once the hello said what the peer understands
            self._pending.append(_Pending(d, (None, extra), timer, (build, args)))
            if self._connecting is None and self._protocol is None:
                self._open()
        return d

    def _open(self):
        secret = self.secret.encode("utf-8")
        user = PEER_USER_PREFIX + str(self.cacheId).encode("ascii")
        auth = request(B.SASL_AUTH, b"PLAIN", value=b"\0" + user + b"\0" + secret)
        hello = request(B.STAT, helloRequest(PEER_PROTOCOL_VERSION, self.capabilities))
        for parse in (self._parseHello, self._parseAuth):
            d = Deferred()
            d.addErrback(lambda f: None)
            timer = self.reactor.callLater(self.timeout, self._timedOut)
            self._pending.appendleft(_Pending(d, (parse, None), timer))
        self._handshake = [auth, hello]
        self.peerVersion = None
        protocol = PeerProtocol(self)
        self._connecting = protocol
        connecting = self.connect(self.node, protocol)
        connecting.addErrback(self._connectFailed, protocol)

    def _connected(self, protocol):
        if self._connecting is not protocol:
            protocol.transport.loseConnection()
            return
        self._connecting = None
        self._protocol = protocol
        handshake, self._handshake = self._handshake, []
        protocol.transport.write(b"".join(handshake))

    def _connectFailed(self, failure, protocol):
        if self._connecting is protocol:
            self._connecting = None
            # down first: what fails below is retried on the key's new owner
            self.onDown(self.node)
            self._failAll(f"peer {self.node} unreachable")

    def _answered(self, response):
        if not self._pending:
            return
        pending = self._pending.popleft()
        if pending.timer.active():
            pending.timer.cancel()
        parse, extra = pending.parse
        try:
            result = parse(response, extra)
        except Exception as e:
            pending.deferred.errback(e)
            if parse == self._parseAuth:
                # what was sent after the refused auth fails the same way
                self._drop(str(e))
            return
        pending.deferred.callback(result)

    def _timedOut(self):
        """
        The oldest request is overdue: the peer stalls.  Fail what waits
        on it and drop the connection.
        """
        self._log.warn("peer {node} timed out; dropping its connection", node=self.node)
        self.onDown(self.node)
        self._drop(f"peer {self.node} timed out")

    def _drop(self, reason):
        protocol, self._protocol = self._protocol, None
        self._connecting = None
        self._ready = False
        self._failAll(reason)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abortConnection()

    def _lost(self, protocol, reason):
        if protocol is self._protocol:
            self._protocol = None
            self._ready = False
            self.onDown(self.node)
            self._failAll(f"peer {self.node} connection lost")

    def _failAll(self, reason):
        pending, self._pending = self._pending, deque()
        self._handshake = []
        for p in pending:
            if p.timer.active():
                p.timer.cancel()
            p.deferred.errback(PeerUnavailable(reason, sent=p.build is None))

    def close(self):
        """
        Drop the connection (the node left), failing what waits.
        """
        self._drop(f"peer {self.node} left")


class PeerPool:
    """
    The peer connections of this node, one per (node, cache).
    """

    def __init__(self, secret, reactor, timeout, onDown, connect=None,
                 capabilities=PEER_CAPABILITIES):
        """
        @param connect: see L{PeerConnection}; by default a TCP connection
            to the node's C{host:port}.
        @param capabilities: what this node's connections advertise in
            their hello (fewer than it has only to test mixed versions).
        """
        self.secret = secret
        self.reactor = reactor
        self.timeout = timeout
        self.onDown = onDown
        self.capabilities = tuple(capabilities)
        self.connect = connect if connect is not None else self._tcpConnect
        self._connections = {}

    def _tcpConnect(self, node, protocol):
        host, _, port = node.rpartition(":")
        endpoint = TCP4ClientEndpoint(self.reactor, host, int(port), timeout=max(1, int(self.timeout)))
        return connectProtocol(endpoint, protocol)

    def connection(self, node, cacheId):
        """
        @rtype: L{PeerConnection}
        """
        connection = self._connections.get((node, cacheId))
        if connection is None:
            connection = PeerConnection(
                node, cacheId, self.secret, self.reactor, self.connect, self.timeout, self.onDown,
                self.capabilities,
            )
            self._connections[(node, cacheId)] = connection
        return connection

    def forget(self, keep):
        """
        Close the connections to nodes not in C{keep}.
        """
        for key in [k for k in self._connections if k[0] not in keep]:
            self._connections.pop(key).close()

    def closeAll(self):
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()


# -- the serving side: a peer node's connection to this one


class PeerCredential:
    """
    What a peer connection authenticates as: every capability, on one
    cache.
    """

    write = True
    flush = True
    api = False
    primary = False

    def __init__(self, cacheId, username):
        self.cache_id = cacheId
        self.username = username


class PeerRuntime:
    """
    A cache's runtime as a peer connection sees it: the local keyspace,
    and counters of its own (forwarded requests were counted where the
    client connected), the plan and state of the real runtime.
    """

    peer = True

    def __init__(self, runtime, introspection=None, capabilities=PEER_CAPABILITIES):
        """
        @param runtime: the cache's L{memcachier.runtime.CacheRuntime}.
        @param introspection: the node's
            L{memcachier.analytics.introspection.IntrospectionService}, or
            L{None}: what the peer stats groups read.
        @param capabilities: what this node answers the hello with.
        """
        self.runtime = runtime
        self.introspection = introspection
        self.capabilities = frozenset(capabilities)
        #: the connecting node's version and capabilities, once it said hello
        self.peerVersion = 0
        self.peerCapabilities = VERSION0_CAPABILITIES
        self.cacheId = runtime.cacheId
        keyspace = runtime.keyspace
        self.keyspace = keyspace.peerSide if isinstance(keyspace, ClusterKeyspace) else keyspace
        self.stats = CacheStats()
        self.lastActive = runtime.lastActive
        self.startTime = runtime.startTime

    @property
    def plan(self):
        return self.runtime.plan

    @property
    def gone(self):
        return self.runtime.gone

    def statsDict(self):
        return self.runtime.statsDict()

    def resetStats(self):
        self.runtime.stats.reset()
        self.keyspace.resetStats()

    # -- the stats tunnel: what a node asks its peers for over C{stats}

    def statsGroup(self, name: str, argument: str) -> Optional[List[Tuple[str, str]]]:
        """
        The C{stats} groups only a peer node's connection has, which
        L{memcachier.cluster.keyspace.ClusterKeyspace} asks every live
        peer for and merges with this node's own:

          - C{cluster_recent_logs}: the cache's recent commands on this
            node (C{introspection/recent_logs} keyed by node);
          - C{cluster_popular [prefix id]}: the heavy-hitter sketches of
            the cache, or of one watched prefix
            (C{introspection/popular_items});
          - C{cluster_key_counts}: the per-key count sketches, one per
            time slice (C{introspection/key_stats});
          - C{peer_hello <version> <capabilities>}: the hello a peer
            connection opens with, answered with this node's version
            and capabilities.

        The C{cluster_*} groups are unknown when this node does not
        advertise L{CAP_STATS_TUNNEL}.

        @param name: the group's name (L{str}).
        @param argument: what followed it, C{""} if nothing.
        @return: a L{list} of (name, value) L{str} pairs (empty when this
            node does not introspect the cache), or L{None} when C{name}
            and C{argument} are not one of these groups.
        """
        if name == HELLO_GROUP:
            return self._hello(argument)
        if name.startswith("cluster_") and CAP_STATS_TUNNEL not in self.capabilities:
            return None
        if name == "cluster_popular":
            if not argument:
                return self._popular(None)
            try:
                return self._popular(int(argument))
            except ValueError:
                return None
        if argument:
            return None
        if name == "cluster_recent_logs":
            return self._recentLogs()
        if name == "cluster_key_counts":
            return self._keyCounts()
        return None

    def _hello(self, argument: str) -> Optional[List[Tuple[str, str]]]:
        """
        The connecting node's hello: note what it has, answer what this
        node has.
        """
        hello = parseHello(argument)
        if hello is None:
            return None
        self.peerVersion, self.peerCapabilities = hello
        return [
            ("version", str(PEER_PROTOCOL_VERSION)),
            ("capabilities", ",".join(sorted(self.capabilities))),
        ]

    def _enabled(self) -> bool:
        return self.introspection is not None and self.introspection.enabled

    def _recentLogs(self) -> List[Tuple[str, str]]:
        if not self._enabled():
            return []
        logs = self.introspection.introspector(self.runtime).recentLogs()
        return [(str(i), json.dumps(entry)) for i, entry in enumerate(logs)]

    def _popular(self, prefixId: Optional[int]) -> List[Tuple[str, str]]:
        # a cache without traffic here has no introspector: nothing to merge
        introspector = self.introspection.existing(self.cacheId) if self._enabled() else None
        if introspector is None:
            return []
        return encodePopular(introspector.popularSketches(prefixId))

    def _keyCounts(self) -> List[Tuple[str, str]]:
        introspector = self.introspection.existing(self.cacheId) if self._enabled() else None
        if introspector is None:
            return []
        return encodeKeyCounts(introspector.keyCounts())


class PeerAuthenticator:
    """
    Checks a peer connection's SASL PLAIN (C{@peer:<cache id>}, the
    cluster secret) for L{memcachier.runtime.CacheRegistry.authenticate}.
    """

    def __init__(self, secret, capabilities=PEER_CAPABILITIES):
        """
        @param capabilities: what this node answers a hello with.
        """
        self.secret = secret.encode("utf-8")
        self.capabilities = tuple(capabilities)

    def __call__(self, registry, username, password):
        """
        @return: (L{PeerCredential}, L{PeerRuntime}), or L{None}.
        """
        if not hmac.compare_digest(password, self.secret):
            return None
        try:
            cacheId = int(username[len(PEER_USER_PREFIX):])
            runtime = registry.runtime(cacheId)
        except (ValueError, KeyError):
            return None
        return (
            PeerCredential(cacheId, username.decode("ascii")),
            PeerRuntime(runtime, registry.introspection, self.capabilities),
        )
