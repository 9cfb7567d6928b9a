# -*- test-case-name: tests.unit.test_cluster -*-
"""
The cluster keyspace: a cache's keys spread over its cluster's live nodes,
behind the same L{IKeyspace} the codecs and sessions already use.

A key this node owns goes to the local keyspace (answered at once, as on a
single node); another goes to its owner over the peer connection (a
L{Deferred}, which rides the ordered-reply pipeline).  Cache-wide calls
(C{flush}, C{resetStats}) act here and on every live peer.  Plan memory is
divided by ring share: the local keyspace gets the plan's memory times the
share of the hash circle this node owns.

A forwarded request never answers with an error: one that got no answer
(L{memcachier.cluster.peer.PeerUnavailable}: the owner was unreachable,
stalled or left, which also takes it out of the ring) is sent once more
to the key's owner as the ring now says (this node, another peer, or the
same one on a fresh connection) when that is safe: a read, a set, a
delete or a touch, or any request that had not been written yet.  What
still fails, or what a peer cannot serve, falls back as a miss: a get
misses, a store is not stored, a delete or an incr finds nothing.

Warm paths (C{[cluster] warmup} > 0): when the ring changes, for the
warm-up window a local miss of a key this node newly owns asks the key's
previous owner (one extra hop), answers its value and keeps a copy; a
write or a delete of such a key also deletes it on the previous owner, so
a later fallback never brings an older value back.  A node whose range a
joining node takes keeps it (as that node's fallback) until the window
ends, then drops it.

Drains: a draining node pushes its items to their new owners as
hand-offs (L{ClusterKeyspace.acceptHandOff}), which an owner takes as
adds only in its warm-up window and never for a key deleted or flushed
there in that window (a delete that crossed the pushed item).  A write a
peer that has not yet seen the drain sends to the draining node goes on
to the key's new owner (L{ClusterKeyspace._handedOn}).

On the other side, L{memcachier.cluster.peer.PeerAuthenticator} lets a
peer connection in with the cluster secret, onto the cache's I{local}
keyspace (never forwarded again).
"""

import json
from collections import deque

from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults
from twisted.logger import Logger
from zope.interface import implementer

from memcachier.analytics.introspection import decodeKeyCounts, decodePopular
from memcachier.cluster.ring import Ring
from memcachier.cluster.states import DRAINING
from memcachier.commands import (
    DeleteResult,
    DeltaResult,
    KeyspaceError,
    itemExptime,
    itemFlags,
    itemValue,
    StoreMode,
    StoreResult,
)
from memcachier.interfaces import IKeyspace, ISnapshottableStore, IStore


class PeerUnavailable(KeyspaceError):
    """
    A forwarded request got no answer: the peer was unreachable, stalled,
    dropped the connection or left.

    @ivar sent: whether the request had been written to the peer (it may
        then have been carried out).
    """

    def __init__(self, reason, sent=True):
        KeyspaceError.__init__(self, reason)
        self.sent = sent


@implementer(IKeyspace)
class ClusterKeyspace:
    """
    One cache's keyspace over its cluster.

    @ivar local: this node's L{IKeyspace} of the cache.
    """

    synchronous = False
    _log = Logger()

    def __init__(self, cacheId, local, cluster, maxBytes, maxItemSize):
        """
        @param cluster: the L{Cluster} (membership, peers, this node's name).
        """
        self.cacheId = cacheId
        self.local = local
        self.cluster = cluster
        self.maxBytes = maxBytes
        self.maxItemSize = maxItemSize
        self.name = cluster.name
        self.ring = None
        #: forwarded requests answered by a retry or a fallback
        self.fallbacks = 0
        #: what a peer node's connection to this node serves
        self.peerSide = PeerSide(self)
        #: (ring, local keys left to check) of the ranges this node lost
        self._losses = deque()
        self._dropping = None
        #: the ring before the last change, during its warm-up window
        self._previous = None
        self._warmEnd = 0.0
        #: keys deleted here in the warm-up window: hand-offs of them are
        #: older than the delete (at most L{MAX_TOMBSTONES}; past that, or
        #: after a flush, the window takes no hand-off at all)
        self._tombstones = set()
        self._refuseHandOffs = False
        self.refresh()
        state = cluster.state
        if state is not None and state.joinEnd > self._now():
            self.joinWindow()

    def _now(self):
        return self.cluster.peers.reactor.seconds()

    def joinWindow(self):
        """
        This node joined a cluster whose other nodes held its range: warm
        it from them until the join's window ends.
        """
        state = self.cluster.state
        if state is None or not self.cluster.warmup:
            return
        self._previous = Ring([s for s in self.ring.servers if s != self.name])
        self._warmEnd = state.joinEnd

    def refresh(self):
        """
        Take the cache's current ring (membership or cluster changed) and
        resize the local keyspace to this node's share.  When a server
        joined the ring, this node may have lost part of its range: what
        it holds there is dropped (see L{_dropLost}).
        """
        old = self.ring
        self.ring = self.cluster.ringOf(self.cacheId)
        # every live node suspected (two nodes that suspect each other):
        # no node can answer for a key alone, so every key is a miss
        self._nobody = not self.ring.servers and bool(self.cluster.liveOf(self.cacheId))
        self.local.configure(self._localBytes(), self.maxItemSize)
        if old is None:
            return
        before, after = set(old.servers), set(self.ring.servers)
        if before == after:
            return
        warmup = self.cluster.warmup
        if warmup:
            self._previous = old
            self._warmEnd = self._now() + warmup
            gained = self.name in after and (self.name not in before or before - after)
            if gained and self.cluster.state is not None:
                self.cluster.state.warming()
        if not after <= before:
            if warmup:
                # the joined node's fallback until its window ends; then
                # what the ring of that time gives others goes (a range
                # back meanwhile stays: every write the joined node took
                # in its window deleted the copy here)
                self.cluster.peers.reactor.callLater(warmup, lambda: self._dropLost(self.ring))
            else:
                self._dropLost(self.ring)

    def _previousOwner(self, key):
        """
        The previous owner of a key this node owns, while the warm-up
        window runs and that node still answers its peers; else L{None}.
        """
        previous = self._previous
        if previous is None:
            return None
        if self._now() >= self._warmEnd:
            self._windowOver()
            return None
        owner = previous.owner(key)
        if owner is None or owner == self.name:
            return None
        if owner not in self.cluster.reachableOf(self.cacheId):
            return None
        return owner

    def _windowOver(self):
        self._previous = None
        self._tombstones = set()
        self._refuseHandOffs = False

    def _inWindow(self):
        """
        Whether a warm-up window runs (and end it if its time is up).
        """
        if self._previous is None:
            return False
        if self._now() >= self._warmEnd:
            self._windowOver()
            return False
        return True

    def _deletedInWindow(self, key):
        tombstones = self._tombstones
        if len(tombstones) < MAX_TOMBSTONES:
            tombstones.add(key)
        else:
            self._refuseHandOffs = True

    def acceptHandOff(self, key, value, flags, exptime):
        """
        An item a draining node pushed here: kept as an C{add} (a value
        written here meanwhile is newer and stays), in a warm-up window
        only, and never for a key deleted here in the window or after a
        flush in it: the pushed item may have crossed that delete.  Out
        of a window (the drain was not seen here, or its window is over,
        and deletes no longer reach the draining node) it is refused: a
        miss later instead of a value that may be stale.

        @return: (L{StoreResult}, CAS) as C{store}.
        """
        if not self._inWindow() or self._refuseHandOffs or key in self._tombstones:
            return _NOT_STORED
        return self.local.store(StoreMode.ADD, key, value, flags, exptime, 0)

    def _handedOn(self, key):
        """
        The connection to C{key}'s owner when this node drains: a write a
        peer that has not yet seen the drain sent here belongs there (here
        it would be lost, or older than what the owner holds).  L{None}
        otherwise.
        """
        state = self.cluster.state
        if state is None or state.state != DRAINING:
            return None
        owner = self.ring.owner(key)
        if owner is None or owner == self.name:
            return None
        try:
            return self.cluster.peers.connection(owner, self.cacheId)
        except KeyspaceError:
            return None

    def _passOn(self, peer, method, key, args):
        """
        Apply a peer's write on the key's owner (L{_handedOn}) and drop
        the copy here; if the owner does not answer, apply it here.
        """
        local = self.local
        local.delete(key, 0)
        return getattr(peer, method)(*args).addErrback(lambda _: getattr(local, method)(*args))

    def _fetchPrevious(self, owner, key):
        """
        Ask C{owner} (the key's previous owner) for C{key}; keep a copy
        (unless a write got here first) and answer the local item.
        """
        local = self.local

        def got(item):
            if item is None:
                return local.get(key)
            result = local.store(
                StoreMode.ADD, key, itemValue(item), itemFlags(item), itemExptime(item), 0
            )
            if result[0] == StoreResult.STORED and self.cluster.state is not None:
                self.cluster.state.takenOver += 1
            return local.get(key)

        try:
            d = self.cluster.peers.connection(owner, self.cacheId).get(key)
        except KeyspaceError:
            return None
        return d.addCallbacks(got, lambda _: None)

    def _warmGet(self, key):
        owner = self._previousOwner(key)
        if owner is None:
            return None
        return self._fetchPrevious(owner, key)

    def _warmWrite(self, owner, key, method, args, pull):
        """
        A write of a key the previous owner may still hold: bring its
        value over first when the write depends on it (C{pull}), write
        here, and delete it there, so a later fallback cannot answer an
        older value.
        """
        local = self.local

        def write(_=None):
            result = getattr(local, method)(*args)
            try:
                peer = self.cluster.peers.connection(owner, self.cacheId)
                peer.delete(key, 0).addErrback(lambda _: None)
            except KeyspaceError:
                pass
            return result

        if pull and local.peek(key) is None:
            fetched = self._fetchPrevious(owner, key)
            if fetched is not None:
                return fetched.addCallback(write)
        return write()

    def _dropLost(self, ring):
        """
        Drop the local items of keys C{ring} gives to another node, a
        slice per reactor turn.  They are unreachable while that node owns
        them, and when the range comes back (the node leaves again) they
        would be older than what the other node was given meanwhile: a
        miss instead.  A ring that changes again while this runs is
        checked after it, each against the keys held when it came.
        """
        self._losses.append((ring, self.local.keys()))
        if self._dropping is None:
            self._dropping = self.cluster.peers.reactor.callLater(0, self._dropSlice)

    def _dropSlice(self):
        self._dropping = None
        budget = DROP_SLICE
        local = self.local
        name = self.name
        while self._losses and budget:
            ring, keys = self._losses[0]
            owner = ring.owner
            take = min(budget, len(keys))
            budget -= take
            for _ in range(take):
                key = keys.pop()
                if owner(key) not in (name, None):
                    local.delete(key, 0)
            if not keys:
                self._losses.popleft()
        if self._losses:
            self._dropping = self.cluster.peers.reactor.callLater(0, self._dropSlice)

    def _localBytes(self):
        share = self.ring.shares().get(self.name) if self.ring is not None else None
        if not share:
            return self.maxBytes
        return max(1, int(self.maxBytes * share))

    def _peer(self, key):
        """
        The peer connection of the owner of C{key}, or L{None} when this
        node owns it.
        """
        owner = self.ring.owner(key)
        if owner is None or owner == self.name:
            return _NOBODY if owner is None and self._nobody else None
        return self.cluster.peers.connection(owner, self.cacheId)

    # -- what this node answers as a key's owner -------------------------------------

    def ownGet(self, key):
        item = self.local.get(key)
        if item is None and self._previous is not None:
            return self._warmGet(key)
        return item

    def ownGetMany(self, keys):
        found = self.local.getMany(keys)
        if self._previous is not None and not isinstance(found, Deferred) and None in found:
            return self._warmMany(keys, found)
        return found

    def ownTouch(self, key, exptime):
        if self._previous is not None:
            owner = self._previousOwner(key)
            if owner is not None:
                return self._warmWrite(owner, key, "touch", (key, exptime), True)
        return self.local.touch(key, exptime)

    def ownStore(self, mode, key, value, flags, exptime, cas):
        if self._previous is not None:
            owner = self._previousOwner(key)
            if owner is not None:
                return self._warmWrite(
                    owner, key, "store", (mode, key, value, flags, exptime, cas),
                    mode != StoreMode.SET,
                )
        return self.local.store(mode, key, value, flags, exptime, cas)

    def ownDelete(self, key, cas):
        if self._previous is not None:
            self._deletedInWindow(key)
            owner = self._previousOwner(key)
            if owner is not None:
                return self._warmWrite(owner, key, "delete", (key, cas), True)
        return self.local.delete(key, cas)

    def ownDelta(self, key, incr, delta, initial, exptime, cas):
        if self._previous is not None:
            owner = self._previousOwner(key)
            if owner is not None:
                return self._warmWrite(
                    owner, key, "delta", (key, incr, delta, initial, exptime, cas), True
                )
        return self.local.delta(key, incr, delta, initial, exptime, cas)

    # -- what a peer asks of this node -------------------------------------------------
    #
    # A key this node owns (as its ring says) is answered as above; any
    # other is a previous owner's fallback get or a new owner's delete of
    # its copy here: answered from the local items alone, so neither
    # travels further.

    def _mine(self, key):
        owner = self.ring.owner(key)
        return owner is None or owner == self.name

    def peerGet(self, key):
        if self._previous is not None and self._mine(key):
            return self.ownGet(key)
        return self.local.get(key)

    def peerGetMany(self, keys):
        found = self.local.getMany(keys)
        if self._previous is not None and not isinstance(found, Deferred) and None in found:
            return self._warmMany(keys, found, self._mine)
        return found

    def peerTouch(self, key, exptime):
        if self._previous is not None and self._mine(key):
            return self.ownTouch(key, exptime)
        peer = self._handedOn(key)
        if peer is not None:
            return self._passOn(peer, "touch", key, (key, exptime))
        return self.local.touch(key, exptime)

    def peerStore(self, mode, key, value, flags, exptime, cas):
        if self._previous is not None and self._mine(key):
            return self.ownStore(mode, key, value, flags, exptime, cas)
        peer = self._handedOn(key)
        if peer is not None:
            return self._passOn(peer, "store", key, (mode, key, value, flags, exptime, cas))
        return self.local.store(mode, key, value, flags, exptime, cas)

    def peerDelete(self, key, cas):
        if self._previous is not None and self._mine(key):
            return self.ownDelete(key, cas)
        peer = self._handedOn(key)
        if peer is not None:
            return self._passOn(peer, "delete", key, (key, cas))
        return self.local.delete(key, cas)

    def peerDelta(self, key, incr, delta, initial, exptime, cas):
        if self._previous is not None and self._mine(key):
            return self.ownDelta(key, incr, delta, initial, exptime, cas)
        peer = self._handedOn(key)
        if peer is not None:
            return self._passOn(peer, "delta", key, (key, incr, delta, initial, exptime, cas))
        return self.local.delta(key, incr, delta, initial, exptime, cas)

    # -- keyed calls ---------------------------------------------------------------

    def get(self, key):
        peer = self._peer(key)
        if peer is None:
            item = self.local.get(key)
            if item is None and self._previous is not None:
                return self._warmGet(key)
            return item
        return peer.get(key).addErrback(self._again, key, "get", (key,), None, True)

    def getMany(self, keys):
        byPeer = {}
        for i, key in enumerate(keys):
            peer = self._peer(key)
            if peer is not None:
                byPeer.setdefault(peer, []).append(i)
        if not byPeer:
            return self.ownGetMany(keys)
        results = [None] * len(keys)
        remote = set()
        calls = []
        for peer, indexes in byPeer.items():
            for i in indexes:
                remote.add(i)
                key = keys[i]
                calls.append(
                    peer.get(key)
                    .addErrback(self._again, key, "get", (key,), None, True)
                    .addCallback(_place, results, i)
                )
        localIndexes = [i for i in range(len(keys)) if i not in remote]
        if localIndexes:
            found = self.local.getMany([keys[i] for i in localIndexes])

            def place(found):
                warms = []
                for i, item in zip(localIndexes, found):
                    results[i] = item
                    if item is None and self._previous is not None:
                        warm = self._warmGet(keys[i])
                        if warm is not None:
                            warms.append(warm.addCallback(_place, results, i))
                if warms:
                    return gatherResults(warms, consumeErrors=True)
                return None

            if isinstance(found, Deferred):
                calls.append(found.addCallback(place))
            else:
                warms = place(found)
                if warms is not None:
                    calls.append(warms)
        return _plain(gatherResults(calls, consumeErrors=True).addCallback(lambda _: results))

    def _warmMany(self, keys, found, only=None):
        results = list(found)
        calls = []
        for i, item in enumerate(found):
            if item is None and (only is None or only(keys[i])):
                warm = self._warmGet(keys[i])
                if warm is not None:
                    calls.append(warm.addCallback(_place, results, i))
        if not calls:
            return found
        return _plain(gatherResults(calls, consumeErrors=True).addCallback(lambda _: results))

    def peek(self, key):
        peer = self._peer(key)
        if peer is None:
            return self.local.peek(key)
        return peer.peek(key).addErrback(self._again, key, "peek", (key,), None, True)

    def touch(self, key, exptime):
        peer = self._peer(key)
        if peer is None:
            return self.ownTouch(key, exptime)
        return peer.touch(key, exptime).addErrback(
            self._again, key, "touch", (key, exptime), None, True
        )

    def store(self, mode, key, value, flags, exptime, cas):
        peer = self._peer(key)
        if peer is None:
            return self.ownStore(mode, key, value, flags, exptime, cas)
        return peer.store(mode, key, value, flags, exptime, cas).addErrback(
            self._again, key, "store", (mode, key, value, flags, exptime, cas),
            _NOT_STORED, mode in _IDEMPOTENT_STORES,
        )

    def delete(self, key, cas):
        peer = self._peer(key)
        if peer is None:
            return self.ownDelete(key, cas)
        return peer.delete(key, cas).addErrback(
            self._again, key, "delete", (key, cas), DeleteResult.NOT_FOUND, True
        )

    def delta(self, key, incr, delta, initial, exptime, cas):
        peer = self._peer(key)
        if peer is None:
            return self.ownDelta(key, incr, delta, initial, exptime, cas)
        return peer.delta(key, incr, delta, initial, exptime, cas).addErrback(
            self._again, key, "delta", (key, incr, delta, initial, exptime, cas),
            _DELTA_NOT_FOUND, False,
        )

    def _again(self, failure, key, method, args, fallback, idempotent):
        """
        A forwarded request failed.  If the owner did not answer at all,
        and sending it again is safe, send it once more to the key's owner
        as the ring now says; otherwise, or if that fails too, answer
        C{fallback} (a miss), never an error.
        """
        self.fallbacks += 1
        if not failure.check(PeerUnavailable):
            return fallback
        if not (idempotent or not failure.value.sent):
            return fallback
        peer = self._peer(key)
        if peer is None:
            return getattr(self.local, method)(*args)
        try:
            retried = getattr(peer, method)(*args)
        except KeyspaceError:
            return fallback
        return retried.addErrback(lambda _: fallback)

    # -- cache-wide ----------------------------------------------------------------

    def _peers(self):
        return [
            self.cluster.peers.connection(node, self.cacheId)
            for node in self.cluster.liveOf(self.cacheId)
            if node != self.name
        ]

    def flush(self, delay):
        """
        Flush here and on every live peer; fires when all answered (a
        peer that fails is logged: it is dead or about to be out).  The
        flush is also recorded as the cache's next flush generation (in
        the background), which the nodes the fan-out missed apply when
        they see it (L{memcachier.cluster.flushes}).
        """
        if self.cluster.flushes is not None:
            self.cluster.flushes.flushed(self.cacheId, delay)
        if self._previous is not None:
            self._refuseHandOffs = True
        calls = [self._quietly(peer.flush(delay), "flush", peer.node) for peer in self._peers()]
        result = self.local.flush(delay)
        if isinstance(result, Deferred):
            calls.append(result)
        if not calls:
            return result
        return _plain(gatherResults(calls).addCallback(lambda _: None))

    def flushFromPeer(self, delay):
        """
        A peer fanned a flush out to this node: flush the local items and
        note it (its generation then finds it applied).
        """
        if self.cluster.flushes is not None:
            self.cluster.flushes.peerFlushed(self.cacheId, delay)
        if self._previous is not None:
            self._refuseHandOffs = True
        return self.local.flush(delay)

    def _quietly(self, d, what, node):
        def failed(failure):
            self._log.warn(
                "{what} of cache {cacheId} on peer {node} failed: {error}",
                what=what, cacheId=self.cacheId, node=node, error=failure.getErrorMessage(),
            )
        return d.addErrback(failed)

    def resetStats(self):
        for peer in self._peers():
            self._quietly(peer.resetStats(), "reset_stats", peer.node)
        self.local.resetStats()

    def _askPeers(self, group, parse):
        """
        Send C{stats <group>} to every live peer and parse each answer.
        A peer that fails or does not answer within the request timeout
        (the peer connection's deadline) is left out.

        @param parse: called with a peer's L{dict} of lines; what it
            returns is that peer's answer (it may raise to leave it out).
        @return: a L{Deferred} firing with a L{list} of (node, answer), in
            the cluster's server order, for the peers that answered.
        """
        peers = self._peers()

        def gathered(results):
            out = []
            for peer, (ok, value) in zip(peers, results):
                if not ok:
                    continue
                try:
                    out.append((peer.node, parse(value)))
                except Exception:
                    self._log.failure(
                        "peer {node} answered stats {group} with something unreadable",
                        node=peer.node, group=group.decode("ascii", "replace"),
                    )
            return out

        return _plain(DeferredList(
            [peer.stats(group) for peer in peers], consumeErrors=True
        ).addCallback(gathered))

    def peerStats(self):
        """
        Every live peer's C{stats} of this cache.

        @return: a L{Deferred} firing with a L{list} of (node, L{dict} of
            counters) for the peers that answered.
        """
        return self._askPeers(b"", lambda value: {k: _number(v) for k, v in value.items()})

    def peerRecentLogs(self):
        """
        Every live peer's recent commands of this cache (what clients
        connected to it sent).

        @return: a L{Deferred} firing with a L{dict} of node to its log
            entries, for the peers that answered.
        """
        def parse(value):
            return [json.loads(v) for _, v in sorted(value.items(), key=lambda kv: int(kv[0]))]

        return self._askPeers(b"cluster_recent_logs", parse).addCallback(dict)

    def peerPopular(self, prefixId=None):
        """
        Every live peer's heavy-hitter sketches of this cache (or of one
        watched prefix), for C{introspection/popular_items}.

        @return: a L{Deferred} firing with a L{list} of (node, what
            L{memcachier.analytics.introspection.decodePopular} returns, or
            L{None} for a peer without traffic of the cache).
        """
        group = b"cluster_popular" if prefixId is None else b"cluster_popular %d" % prefixId
        return self._askPeers(group, lambda value: decodePopular(value) if value else None)

    def peerKeyCounts(self):
        """
        Every live peer's per-slice key count sketches of this cache, for
        C{introspection/key_stats}.

        @return: a L{Deferred} firing with a L{list} of (node, L{list} of
            (slice start, C{count_min_sketch})).
        """
        return self._askPeers(b"cluster_key_counts", decodeKeyCounts)

    def stats(self):
        return self.local.stats()

    def configure(self, maxBytes, maxItemSize):
        self.maxBytes = maxBytes
        self.maxItemSize = maxItemSize
        self.local.configure(self._localBytes(), maxItemSize)

    def keys(self):
        """
        The live keys this node owns (introspection peeks at each: they
        must be local; keys it holds but no longer owns are unreachable
        until evicted).
        """
        name = self.name
        owner = self.ring.owner
        for key in self.local.keys():
            if owner(key) in (name, None):
                yield key


class PeerSide:
    """
    A cache's local keyspace as a peer node's connection sees it: the
    local keyspace's own methods (no indirection per request) or, with
    warm paths on, the owner's calls of the cluster keyspace; a flush is
    noted as one a peer fanned out.
    """

    def __init__(self, keyspace):
        """
        @param keyspace: the L{ClusterKeyspace}.
        """
        local = keyspace.local
        self._keyspace = keyspace
        self._local = local
        self.peek = local.peek
        self.stats = local.stats
        self.resetStats = local.resetStats
        if keyspace.cluster.warmup:
            # what a peer forwards here is this node's to answer as an
            # owner does in a warm-up window (a miss asks the previous
            # owner, a write deletes its copy): answers may be Deferreds
            self.synchronous = False
            self.get = keyspace.peerGet
            self.getMany = keyspace.peerGetMany
            self.touch = keyspace.peerTouch
            self.store = keyspace.peerStore
            self.delete = keyspace.peerDelete
            self.delta = keyspace.peerDelta
            self.handOff = keyspace.acceptHandOff
        else:
            self.synchronous = local.synchronous
            self.get = local.get
            self.getMany = local.getMany
            self.touch = local.touch
            self.store = local.store
            self.delete = local.delete
            self.delta = local.delta

    def flush(self, delay):
        return self._keyspace.flushFromPeer(delay)

    def __getattr__(self, name):
        # what the codecs do not call per request
        return getattr(self._local, name)


class _Nobody:
    """
    The owner of every key while every live node of the ring is
    suspected: each request fails as unanswered, unsent, and so falls
    back as a miss.
    """

    node = None

    def _unanswered(self, *args):
        return fail(PeerUnavailable("every node of the ring is suspected", sent=False))

    get = peek = touch = store = delete = delta = _unanswered


_NOBODY = _Nobody()

#: local keys checked per reactor turn when dropping a lost range
DROP_SLICE = 5000
#: items pushed to their new owners per round when a node drains
HANDOFF_SLICE = 2000
#: keys a cache remembers as deleted in a warm-up window (see
#: L{ClusterKeyspace.acceptHandOff})
MAX_TOMBSTONES = 100_000

#: what a store that could not be carried out answers
_NOT_STORED = (StoreResult.NOT_STORED, 0)
#: what an incr or decr that could not be carried out answers
_DELTA_NOT_FOUND = (DeltaResult.NOT_FOUND, 0, 0)
#: stores that do the same when sent twice
_IDEMPOTENT_STORES = frozenset((StoreMode.SET, StoreMode.CAS))


def _place(item, results, i):
    results[i] = item


def _plain(d):
    """
    A plain L{Deferred} with C{d}'s result: sessions recognise answers by
    C{result.__class__ is Deferred}, which a L{DeferredList} is not.
    """
    plain = Deferred()
    d.chainDeferred(plain)
    return plain


def _number(text):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


@implementer(IStore)
class ClusterStore:
    """
    Wraps the node's store: every keyspace it hands out is a
    L{ClusterKeyspace} over the inner store's.
    """

    _log = Logger()

    def __init__(self, inner, cluster):
        self.inner = inner
        self.cluster = cluster
        self._keyspaces = {}

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        keyspace = self._keyspaces.get(cacheId)
        if keyspace is None:
            local = self.inner.keyspace(cacheId, maxBytes, maxItemSize)
            keyspace = ClusterKeyspace(cacheId, local, self.cluster, maxBytes, maxItemSize)
            self._keyspaces[cacheId] = keyspace
        return keyspace

    def dropKeyspace(self, cacheId):
        self._keyspaces.pop(cacheId, None)
        self.inner.dropKeyspace(cacheId)

    def close(self):
        self.cluster.peers.closeAll()
        return self.inner.close()

    def refresh(self):
        for keyspace in list(self._keyspaces.values()):
            keyspace.refresh()

    def joined(self):
        """
        This node joined a cluster whose other nodes are live (it started,
        or it is in again after its heartbeat had stopped).  What it holds
        is dropped: while it was away its range was theirs, and what they
        were given is newer (what it held went to them as it drained).
        Then it warms what it now owns from them for the window
        (L{ClusterKeyspace.joinWindow}).
        """
        membership = self.cluster.membership
        if not set(membership.reachable(membership.cluster)) - {self.cluster.name}:
            return
        dropped = self._dropAll()
        if dropped:
            self._log.info(
                "joined a cluster whose other nodes are live: dropped the {items} items "
                "this node held (theirs are newer)",
                event="joined_dropped", items=dropped,
            )
        state = self.cluster.state
        if state is None or not self.cluster.warmup:
            return
        others = set(membership.reachable(membership.cluster)) - {self.cluster.name}
        if not any(r.memory for r in membership.records if r.name in others):
            # they hold nothing (a cluster starting): nothing to warm from
            return
        state.joined()
        for keyspace in list(self._keyspaces.values()):
            keyspace.joinWindow()

    def suspected(self):
        """
        A peer suspects this node: every node (this one included) sends
        its keys to others until the suspicion ends, so what it holds
        would be older than what they are given.  Drop it all (misses)
        before the suspicion is acknowledged.
        """
        dropped = self._dropAll()
        self._log.info(
            "suspected by a peer: dropped the {items} items this node held",
            event="suspected_dropped", items=dropped,
        )

    def _dropAll(self):
        """
        Empty every cache's local items (a delayed flush still falls due
        when it was to).

        @return: how many items were dropped.
        """
        inner = self.inner
        locals_ = {cacheId: ks.local for cacheId, ks in self._keyspaces.items()}
        if ISnapshottableStore.providedBy(inner):
            for cacheId in inner.snapshotCaches():
                locals_.setdefault(cacheId, inner.keyspace(cacheId, 1, 1))
        dropped = 0
        for cacheId, local in locals_.items():
            items = local.stats().get("curr_items", 0)
            if not items:
                continue
            dropped += items
            due = inner.pendingFlush(cacheId) if ISnapshottableStore.providedBy(inner) else None
            local.flush(0)
            if due is not None:
                # a delayed flush still falls due when it was to
                local.flush(max(0.0, due - self.cluster.peers.reactor.seconds()))
        return dropped

    def handOff(self):
        """
        Push every item this node holds to its owner on the ring without
        this node (a drain), as a hand-off: an C{add} (a value its new
        owner was given meanwhile is newer and stays) that the owner also
        refuses for a key deleted there meanwhile.  A slice of keys per
        reactor turn, each slice's answers awaited before the next.

        @return: a L{Deferred} firing with the items handed off.
        """
        name = self.cluster.name
        work = deque()
        for keyspace in list(self._keyspaces.values()):
            servers = [s for s in keyspace.ring.servers if s != name]
            if servers:
                work.append((keyspace, Ring(servers), list(keyspace.local.keys())))
        done = Deferred()
        handed = [0]
        reactor = self.cluster.peers.reactor
        state = self.cluster.state

        def counted(result):
            if result[0] == StoreResult.STORED:
                handed[0] += 1
                if state is not None:
                    state.handedOff += 1

        def slice_(_=None):
            calls = []
            budget = HANDOFF_SLICE
            while work and budget:
                keyspace, ring, keys = work[0]
                local = keyspace.local
                while keys and budget:
                    budget -= 1
                    key = keys.pop()
                    item = local.peek(key)
                    owner = ring.owner(key)
                    if item is None or owner is None:
                        continue
                    try:
                        peer = self.cluster.peers.connection(owner, keyspace.cacheId)
                        calls.append(peer.handOff(
                            key, itemValue(item), itemFlags(item), itemExptime(item),
                        ).addCallbacks(counted, lambda _: None))
                    except KeyspaceError:
                        pass
                if not keys:
                    work.popleft()
            if not calls and not work:
                done.callback(handed[0])
                return
            DeferredList(calls, consumeErrors=True).addCallback(
                lambda _: reactor.callLater(0, slice_)
            )

        reactor.callLater(0, slice_)
        return done

    def applyFlushes(self):
        """
        Flush the local items of the caches whose recorded flush
        generation this node has not applied (the control index changed).
        """
        flushes = self.cluster.flushes
        if flushes is None:
            return
        for cacheId, delay in flushes.due():
            keyspace = self._keyspaces.get(cacheId)
            self._log.info(
                "cache {cacheId}: applying a flush recorded in the control plane{when}",
                cacheId=cacheId, when=f" in {delay:.0f}s" if delay else "",
            )
            if keyspace is not None:
                keyspace.local.flush(delay)


class Cluster:
    """
    What a cluster keyspace needs to place keys: this node's name, the
    membership, the control index (a cache's cluster) and the peer pool;
    and the flush generations (L{memcachier.cluster.flushes}), or L{None}
    to rely on the fan-out alone; this node's
    L{memcachier.cluster.states.NodeState} (or L{None}) and the warm-up
    window in seconds (0: warm paths off).
    """

    def __init__(self, name, membership, index, peers, flushes=None, state=None, warmup=0.0):
        self.name = name
        self.membership = membership
        self.index = index
        self.peers = peers
        self.flushes = flushes
        self.state = state
        self.warmup = warmup

    def clusterOf(self, cacheId):
        cache = self.index.cache(cacheId)
        return None if cache is None else cache.cluster

    def ringOf(self, cacheId):
        cluster = self.clusterOf(cacheId)
        return self.membership.ring(cluster if cluster is not None else self.membership.cluster)

    def reachableOf(self, cacheId):
        """
        The nodes of the cache's cluster that answer peers (live or
        draining).
        """
        cluster = self.clusterOf(cacheId)
        return self.membership.reachable(cluster if cluster is not None else self.membership.cluster)

    def liveOf(self, cacheId):
        cluster = self.clusterOf(cacheId)
        return self.membership.servers(cluster if cluster is not None else self.membership.cluster)
