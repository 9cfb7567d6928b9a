# -*- test-case-name: tests.unit.test_session -*-
"""
The per-connection session: authentication state, capabilities, limits and
counters, between a codec and a cache's keyspace.

Codecs call one method per memcached operation and render what it returns.
For a synchronous keyspace every method returns its result directly (no
L{Deferred} on the hot path); for an asynchronous one a method may return a
L{Deferred} firing with the same result, and the codec keeps responses in
request order.
"""

import enum
import os
import resource
import struct

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from memcachier.commands import (
    ITEM_PREFIX_SIZE,
    ITEM_SUFFIX_LENGTH_AT,
    REALTIME_MAXDELTA,
    U64,
    VERSION,
    DeleteResult,
    DeltaResult,
    Refused,
    StoreMode,
    StoreResult,
    itemValueLength,
)
from memcachier.analytics.events import (
    DECR, DELETE, FLUSH, GAT, GET, GET_MANY, INCR, STATS, TOUCH, discard,
)
from memcachier.runtime import CacheStats

#: the key prefix delimiter of C{stats detail} (memcached's default)
DETAIL_DELIMITER = ":"


_READ_ONLY = (Refused.READ_ONLY, 0)
_TOO_LARGE = (StoreResult.TOO_LARGE, 0)

# Enum members the hot path compares with, as module globals: reading one
# from its class goes through C{EnumType.__getattr__} (~0.1 us each).
_CAS = StoreMode.CAS
_ADD = StoreMode.ADD
_STORED = StoreResult.STORED
_NOT_STORED_CODE = int(StoreResult.NOT_STORED)
_TOO_LARGE_CODE = StoreResult.TOO_LARGE
_NO_MEMORY_CODE = StoreResult.NO_MEMORY


class AuthResult(enum.IntEnum):
    """
    Outcome of an authentication attempt.
    """

    OK = 0
    #: wrong username or password, or a disabled cache
    FAILED = 1
    #: the cache's plan allows no more connections
    TOO_MANY_CONNECTIONS = 2
    #: too many failures from this address or for this username: refused
    #: without checking the password; the codec closes the connection
    THROTTLED = 3


def absoluteExptime(exptime, now):
    """
    Convert memcached's wire exptime into an absolute time of the store
    clock.

    @param exptime: C{0} (never), up to 30 days (relative seconds), beyond
        (absolute unix time) or negative (already expired).
    @return: C{0} for never, else absolute seconds; a value not after
        C{now} means already expired.
    """
    if exptime == 0:
        return 0
    if exptime < 0:
        return -1
    if exptime <= REALTIME_MAXDELTA:
        return now + exptime
    return exptime


class Session:
    """
    One client connection's view of the service.

    @ivar authenticated: whether the connection has authenticated.
    @ivar credential: the L{memcachier.control.model.Credential} used.
    @ivar runtime: the cache's L{memcachier.runtime.CacheRuntime}.
    @ivar keyspace: the cache's keyspace (L{None} before auth).
    @ivar stats: the cache's L{CacheStats}; before authentication a
        private throwaway instance, so codecs can always count bytes.
    @ivar canWrite: the credential's write capability.
    @ivar canFlush: the credential's flush capability.
    @ivar synchronous: whether the keyspace never returns Deferreds.
    @ivar tap: where each command's introspection event goes (the bound
        C{append} of the cache's event list, or L{discard}); see
        L{memcachier.analytics.introspection}.
    """

    _log = Logger()

    def __init__(self, registry, reactor, throttle, peerHost, disconnect, authTimeout=5.0,
                 connection=None):
        """
        @param disconnect: the connection's one way to close
            (L{memcachier.protocols.sniff.SniffingProtocol.close}), called
            without arguments when the auth timeout expires; never a
            transport method captured here.
        @param connection: what the fair share may hold back once the
            connection belongs to a cache (C{holdBack}, C{release}: the
            L{memcachier.protocols.sniff.SniffingProtocol}), or L{None}.
        """
        self.registry = registry
        self.reactor = reactor
        self.throttle = throttle
        self.peerHost = peerHost
        self._disconnect = disconnect
        self._connection = connection
        self.authenticated = False
        self.credential = None
        self.runtime = None
        self.keyspace = None
        self.stats = CacheStats()
        self.canWrite = False
        self.canFlush = False
        self.synchronous = True
        self.tap = discard
        self._authTimer = None
        if authTimeout:
            self._authTimer = reactor.callLater(authTimeout, self._authTimedOut)

    # -- lifecycle --------------------------------------------------------

    def _authTimedOut(self):
        self._authTimer = None
        if not self.authenticated:
            self._disconnect()

    def connectionLost(self):
        """
        The connection closed: release its slot in the cache.
        """
        if self._authTimer is not None:
            self._authTimer.cancel()
            self._authTimer = None
        if self.runtime is not None:
            self.runtime.stats.curr_connections -= 1
            self.runtime.lastActive = self.reactor.seconds()
            if self._connection is not None and not self.runtime.peer:
                self.runtime.connections.discard(self._connection)
            self.runtime = None

    # -- authentication ----------------------------------------------------

    def authenticate(self, username, password):
        """
        Authenticate with a username and password (SASL PLAIN or
        MemCachier's ASCII auth).  A connection may authenticate again; it
        then moves to the new credential's cache.

        @type username: L{bytes}
        @type password: L{bytes}
        @return: an L{AuthResult}.
        """
        now = self.reactor.seconds()
        throttle = self.throttle
        if not throttle.admit(self.peerHost, username, now):
            found = None
            result = AuthResult.THROTTLED
        else:
            found = self.registry.authenticate(username, password)
            result = AuthResult.FAILED
        if found is None:
            # count it against the cache the username names, if any
            target = self.registry.runtimeOfUser(username) or self.runtime
            if target is not None:
                target.stats.auth_cmds += 1
                target.stats.auth_errors += 1
            if result is AuthResult.FAILED:
                throttle.failed(self.peerHost, username, now)
            return result
        credential, runtime = found
        # this address keeps its access under the username's budget
        throttle.succeeded(self.peerHost, username, now)
        stats = runtime.stats
        stats.auth_cmds += 1
        if runtime is not self.runtime:
            # the limit counts the cache's connections on every node (peer
            # connections are not the cache's clients)
            elsewhere = 0 if runtime.peer else self.registry.connectionsElsewhere(
                credential.cache_id
            )
            if stats.curr_connections + elsewhere >= runtime.plan.connections:
                stats.rejected_connections += 1
                return AuthResult.TOO_MANY_CONNECTIONS
            if self.runtime is not None:
                self.runtime.stats.curr_connections -= 1
                if self._connection is not None and not self.runtime.peer:
                    self.runtime.connections.discard(self._connection)
            if self._connection is not None and not runtime.peer:
                runtime.connections.add(self._connection)
            stats.curr_connections += 1
            stats.total_connections += 1
            # bytes counted before auth belong to the cache now
            stats.bytes_read += self.stats.bytes_read
            stats.bytes_written += self.stats.bytes_written
        if self._authTimer is not None:
            self._authTimer.cancel()
            self._authTimer = None
        runtime.lastActive = self.reactor.seconds()
        self.authenticated = True
        self.credential = credential
        self.runtime = runtime
        self.keyspace = runtime.keyspace
        self.stats = stats
        self.canWrite = credential.write
        self.canFlush = credential.flush
        self.synchronous = bool(runtime.keyspace.synchronous)
        introspection = self.registry.introspection
        # forwarded requests were tapped on the node the client talked to
        self.tap = (
            discard if introspection is None or runtime.peer else introspection.tapFor(runtime)
        )
        return AuthResult.OK

    @property
    def itemSizeLimit(self):
        """
        The largest key+value this cache accepts.
        """
        return self.runtime.plan.item_size

    @property
    def gone(self):
        """
        Whether the cache was disabled or deleted after authentication.
        """
        return self.runtime is not None and self.runtime.gone

    # -- reads -------------------------------------------------------------

    def get(self, key):
        """
        Fetch an item.

        @return: the packed item (L{memcachier.commands.packItem}) or L{None}
            (or a Deferred).
        """
        stats = self.stats
        stats.cmd_get += 1
        item = self.keyspace.get(key)
        if item is None:
            stats.get_misses += 1
            self.tap((GET, key, -1))
        elif item.__class__ is Deferred:
            return item.addCallback(self._countGet).addCallback(self._tapped, GET, key)
        else:
            stats.get_hits += 1
            # itemValueLength, inline
            self.tap((GET, key, len(item) - ITEM_PREFIX_SIZE - item[ITEM_SUFFIX_LENGTH_AT]))
        return item

    def getRun(self, run, data, pos, budget):
        """
        Answer the run of one-key gets of C{data} from C{pos} on with
        C{run}, a codec's loop in C (C{memcachier._speedups.get_run} or
        C{binary_get_run}): each looked up, counted and tapped as L{get}
        does it, at most about C{budget} bytes of replies.  Synchronous
        keyspaces only.

        @return: the position after the gets answered, and their replies
            (empty for quiet misses).
        """
        pos, reply, hits, misses = run(data, pos, self.keyspace.get, self.tap, GET, budget)
        if hits or misses:
            stats = self.stats
            stats.cmd_get += hits + misses
            stats.get_hits += hits
            stats.get_misses += misses
        return pos, reply

    def getMany(self, keys):
        """
        Fetch several items (multi-get).

        @return: a L{list} of items or L{None}s in the order of C{keys}
            (or a Deferred).
        """
        items = self.keyspace.getMany(keys)
        if items.__class__ is Deferred:
            return items.addCallback(self._countGetMany).addCallback(self._tapped, GET_MANY, keys)
        self.tap((GET_MANY, keys, items))
        return self._countGetMany(items)

    def _tapped(self, result, op, key):
        """
        Tap an asynchronous result once it is known, in the same atomic
        form as the synchronous taps (see L{memcachier.analytics.events}).
        """
        if op == GET_MANY:
            self.tap((op, key, result))
        elif op == DELETE:
            self.tap((op, key, int(result)))
        elif op == INCR or op == DECR:
            self.tap((op, key, int(result[0])))
        else:
            self.tap((op, key, -1 if result is None else itemValueLength(result)))
        return result

    def _countGetMany(self, items):
        stats = self.stats
        # count(None) only reads the items: list(filter(None, items)),
        # faster in a warm cache, took 4x the samples under ascii_mget100
        misses = items.count(None)
        stats.cmd_get += len(items)
        stats.get_misses += misses
        stats.get_hits += len(items) - misses
        return items

    def _countGet(self, item):
        if item is None:
            self.stats.get_misses += 1
        else:
            self.stats.get_hits += 1
        return item

    def gat(self, key, exptime):
        """
        Fetch an item and set its expiry (C{gat}, binary GAT).  A
        read-only credential gets the item without the touch.
        """
        if not self.canWrite:
            return self.get(key)
        stats = self.stats
        stats.cmd_get += 1
        stats.cmd_touch += 1
        item = self.keyspace.touch(key, absoluteExptime(exptime, self.reactor.seconds()))
        if item.__class__ is Deferred:
            return item.addCallback(self._countGat).addCallback(self._tapped, GAT, key)
        self.tap((GAT, key, -1 if item is None else itemValueLength(item)))
        return self._countGat(item)

    def _countGat(self, item):
        stats = self.stats
        if item is None:
            stats.get_misses += 1
            stats.touch_misses += 1
        else:
            stats.get_hits += 1
            stats.touch_hits += 1
        return item

    def peek(self, key):
        """
        Look at an item without bumping it (meta C{me}, C{mg} flags that
        report state from before the fetch).
        """
        return self.keyspace.peek(key)

    # -- mutations ---------------------------------------------------------

    def touch(self, key, exptime):
        """
        Set an item's expiry.

        @return: the item, L{None} if missing, or L{Refused.READ_ONLY}.
        """
        if not self.canWrite:
            return Refused.READ_ONLY
        self.stats.cmd_touch += 1
        item = self.keyspace.touch(key, absoluteExptime(exptime, self.reactor.seconds()))
        if item.__class__ is Deferred:
            return item.addCallback(self._countTouch).addCallback(self._tapped, TOUCH, key)
        self.tap((TOUCH, key, -1 if item is None else itemValueLength(item)))
        return self._countTouch(item)

    def _countTouch(self, item):
        if item is None:
            self.stats.touch_misses += 1
        else:
            self.stats.touch_hits += 1
        return item

    def store(self, mode, key, value, flags, exptime, cas=0):
        """
        Store an item (set/add/replace/append/prepend/cas).

        @return: a 2-tuple (L{StoreResult}, new CAS), or a Deferred.  A
            read-only credential gets C{(Refused.READ_ONLY, 0)} (rendered
            as "not stored").
        """
        if len(key) + len(value) > self.runtime.plan.item_size:
            return self.refuseTooLarge(mode, key, cas, len(value))
        stats = self.stats
        stats.cmd_set += 1
        if not self.canWrite:
            self.tap((int(mode), key, _NOT_STORED_CODE, len(value)))
            return _READ_ONLY
        if exptime:
            # (absoluteExptime of 0 is 0: no clock read for most sets)
            exptime = absoluteExptime(exptime, self.reactor.seconds())
        result = self.keyspace.store(mode, key, value, flags, exptime, cas)
        if cas or mode == _CAS or result.__class__ is Deferred:
            if result.__class__ is Deferred:
                return result.addCallback(
                    self._countStore, cas or mode == _CAS
                ).addCallback(self._tappedStore, mode, key, len(value))
            self.tap((int(mode), key, int(result[0]), len(value)))
            return self._countStore(result, True)
        code = result[0]
        self.tap((int(mode), key, int(code), len(value)))
        if code != _STORED:
            if code == _TOO_LARGE_CODE:
                stats.store_too_large += 1
            elif code == _NO_MEMORY_CODE:
                stats.store_no_memory += 1
        return result

    def handOff(self, key, value, flags, exptime):
        """
        An item a draining peer node pushes here (peer connections only):
        stored as an add, unless the keyspace refuses it for a key deleted
        here meanwhile (a keyspace without C{handOff} takes a plain add).

        @return: as L{store}.
        """
        self.stats.cmd_set += 1
        if exptime:
            exptime = absoluteExptime(exptime, self.reactor.seconds())
        handOff = getattr(self.keyspace, "handOff", None)
        if handOff is None:
            return self.keyspace.store(_ADD, key, value, flags, exptime, 0)
        return handOff(key, value, flags, exptime)

    def fits(self, key, length):
        """
        Whether a value of C{length} bytes under C{key} is within the
        cache's item size limit (codecs ask before reading a value body).
        """
        return len(key) + length <= self.runtime.plan.item_size

    def refuseTooLarge(self, mode, key, cas=0, length=0, meta=False):
        """
        A storage command whose key and value exceed the item size limit:
        count it and, as memcached does, unlink the old item so that no
        reader sees the value the writer meant to replace.  memcached
        unlinks on a classic or binary C{set} without CAS, and on every
        meta set (C{ms}, whatever its mode).

        @return: C{(StoreResult.TOO_LARGE, 0)}.
        """
        stats = self.stats
        stats.cmd_set += 1
        stats.store_too_large += 1
        if self.canWrite and (meta or (mode == StoreMode.SET and not cas)):
            unlinked = self.keyspace.delete(key, 0)
            if unlinked.__class__ is Deferred:
                unlinked.addErrback(self._ebUnlink)
        self.tap((int(mode), key, int(StoreResult.TOO_LARGE), length))
        return _TOO_LARGE

    def _ebUnlink(self, failure):
        self._log.failure("unlinking a too large item's old value failed", failure=failure)

    def vivify(self, key, exptime):
        """
        Meta get's C{N} flag on a miss: create an empty item (an C{add},
        so one client of several wins) and fetch it.

        @return: a 2-tuple (item or L{None}, whether this call created
            it), or a Deferred firing with one.
        """
        result = self.store(StoreMode.ADD, key, b"", 0, exptime, 0)
        if result.__class__ is Deferred:
            return result.addCallback(self._vivified, key)
        return self._vivified(result, key)

    def _vivified(self, result, key):
        if result[0] != StoreResult.STORED:
            return (None, False)
        item = self.keyspace.peek(key)
        if item.__class__ is Deferred:
            return item.addCallback(lambda found: (found, True))
        return (item, True)

    def countMeta(self):
        """
        Count a meta command (C{cmd_meta}).
        """
        self.stats.cmd_meta += 1

    def _tappedStore(self, result, mode, key, size):
        self.tap((int(mode), key, int(result[0]), size))
        return result

    def _countStore(self, result, isCas):
        stats = self.stats
        code = result[0]
        if isCas:
            if code == StoreResult.STORED:
                stats.cas_hits += 1
            elif code == StoreResult.EXISTS:
                stats.cas_badval += 1
            elif code == StoreResult.NOT_FOUND:
                stats.cas_misses += 1
        if code == StoreResult.TOO_LARGE:
            stats.store_too_large += 1
        elif code == StoreResult.NO_MEMORY:
            stats.store_no_memory += 1
        return result

    def delete(self, key, cas=0):
        """
        @return: a L{DeleteResult}, L{Refused.READ_ONLY}, or a Deferred.
        """
        if not self.canWrite:
            return Refused.READ_ONLY
        result = self.keyspace.delete(key, cas)
        if result.__class__ is Deferred:
            return result.addCallback(self._countDelete).addCallback(self._tapped, DELETE, key)
        self.tap((DELETE, key, int(result)))
        return self._countDelete(result)

    def _countDelete(self, result):
        if result == DeleteResult.DELETED:
            self.stats.delete_hits += 1
        else:
            self.stats.delete_misses += 1
        return result

    def delta(self, key, incr, delta, initial=None, exptime=0, cas=0):
        """
        incr/decr.

        @return: a 3-tuple (L{DeltaResult}, value, CAS), C{(Refused.READ_ONLY,
            0, 0)} for a read-only credential, or a Deferred.
        """
        if not self.canWrite:
            return (Refused.READ_ONLY, 0, 0)
        result = self.keyspace.delta(
            key, incr, delta % U64, initial,
            absoluteExptime(exptime, self.reactor.seconds()), cas,
        )
        if result.__class__ is Deferred:
            return result.addCallback(self._countDelta, incr).addCallback(
                self._tapped, INCR if incr else DECR, key
            )
        self.tap((INCR if incr else DECR, key, int(result[0])))
        return self._countDelta(result, incr)

    def _countDelta(self, result, incr):
        hit = result[0] != DeltaResult.NOT_FOUND
        stats = self.stats
        if incr:
            if hit:
                stats.incr_hits += 1
            else:
                stats.incr_misses += 1
        elif hit:
            stats.decr_hits += 1
        else:
            stats.decr_misses += 1
        return result

    def flush(self, delay=0):
        """
        flush_all.

        @return: L{None}, L{Refused.FLUSH_NOT_ALLOWED}, or a Deferred.
        """
        self.stats.cmd_flush += 1
        if not self.canFlush:
            return Refused.FLUSH_NOT_ALLOWED
        self.tap((FLUSH, b"", 0))
        return self.keyspace.flush(max(0, delay))

    def discovery(self):
        """
        What C{config get cluster} reports: the live nodes of this
        connection's cache's cluster (this node's cluster before
        authentication).

        @return: a 2-tuple (version L{int}, L{tuple} of C{host:port}).
        """
        return self.registry.discovery(None if self.runtime is None else self.runtime.cacheId)

    # -- stats -------------------------------------------------------------

    def resetStats(self):
        """
        C{stats reset}: zero this cache's counters on this node, the
        C{stats detail} prefix counts included (as memcached does).
        """
        self.tap((STATS, b"reset", 0))
        self.runtime.resetStats()
        introspector = self._introspector()
        if introspector is not None:
            introspector.clearDetail()

    def _introspector(self):
        introspection = self.registry.introspection
        if introspection is None or not introspection.enabled or self.runtime.peer:
            return None
        return introspection.introspector(self.runtime)

    def statsDetail(self, subcommand):
        """
        memcached's C{stats detail on|off|dump}, for this connection's
        cache: per-prefix counts of gets, hits, sets and deletes (the
        prefix is the key up to the first C{:}), counted from the
        introspection taps.

        @param subcommand: C{"on"}, C{"off"} or C{"dump"} (L{str}).
        @return: L{None} when introspection is off on this server (nothing
            to count from); for C{dump} a L{list} of (prefix L{bytes}, get,
            hit, set, del); else L{True}.
        """
        event = (STATS, b"detail " + subcommand.encode("ascii", "replace"), 0)
        introspector = self._introspector()
        if introspector is None:
            self.tap(event)
            return None
        if subcommand == "dump":
            # the dump drains the taps: its own line follows what it counted
            dump = introspector.detailDump()
            self.tap(event)
            return dump
        self.tap(event)
        introspector.setDetail(subcommand == "on")
        return True

    def statsGroup(self, group):
        """
        The lines of C{stats [group]}, scoped to this connection's cache.

        @param group: C{""}, C{"settings"}, C{"items"}, C{"slabs"} or
            C{"sizes"} (L{str}); on a peer node's connection also the
            groups its runtime answers (C{statsGroup(name, argument)},
            L{memcachier.cluster.peer.PeerRuntime.statsGroup}).
        @return: a L{list} of (name, value) L{str} pairs, or L{None} for an
            unknown group.
        """
        self.tap((STATS, group.encode("utf-8", "replace"), 0))
        name, _, argument = group.partition(" ")
        if self.runtime.peer:
            # a peer node's connection: the runtime answers the groups
            # the cluster asks its peers for
            lines = self.runtime.statsGroup(name, argument)
            if lines is not None:
                return lines
        if argument:
            return None
        method = getattr(self, "_stats_" + (group or "general"), None)
        if method is None:
            return None
        return method()

    def _stats_general(self):
        now = self.reactor.seconds()
        s = self.runtime.statsDict()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        plan = self.runtime.plan
        pairs = [
            ("pid", os.getpid()),
            ("uptime", int(now - self.registry.startTime)),
            ("time", int(now)),
            ("version", VERSION),
            ("libevent", "twisted"),
            ("pointer_size", struct.calcsize("P") * 8),
            ("rusage_user", f"{usage.ru_utime:.6f}"),
            ("rusage_system", f"{usage.ru_stime:.6f}"),
            ("max_connections", plan.connections),
        ]
        names = (
            "curr_connections total_connections rejected_connections "
            "cmd_get cmd_set cmd_flush cmd_touch cmd_meta get_hits get_misses "
            "get_expired get_flushed delete_misses delete_hits incr_misses "
            "incr_hits decr_misses decr_hits cas_misses cas_hits cas_badval "
            "touch_hits touch_misses store_too_large store_no_memory auth_cmds "
            "auth_errors bytes_read bytes_written limit_maxbytes"
        ).split()
        pairs.extend((name, s[name]) for name in names)
        pairs.append(("held_back_seconds", f"{s['held_back_seconds']:.6f}"))
        pairs.append(("threads", 1))
        pairs.extend(
            (name, s.get(name, 0))
            for name in (
                "curr_items total_items bytes evictions reclaimed "
                "expired_unfetched evicted_unfetched"
            ).split()
        )
        return [(name, str(value)) for name, value in pairs]

    def _stats_settings(self):
        plan = self.runtime.plan
        pairs = [
            ("maxbytes", plan.memory),
            ("maxconns", plan.connections),
            ("evictions", "on"),
            ("cas_enabled", "yes"),
            ("binding_protocol", "auto-negotiate"),
            ("auth_enabled_sasl", "yes"),
            ("auth_enabled_ascii", "yes"),
            ("item_size_max", plan.item_size),
            ("stat_key_prefix", DETAIL_DELIMITER),
            ("detail_enabled", "yes" if self._detailOn() else "no"),
            ("flush_enabled", "yes" if self.canFlush else "no"),
            ("write_enabled", "yes" if self.canWrite else "no"),
            ("plan", plan.slug),
        ]
        return [(name, str(value)) for name, value in pairs]

    def _detailOn(self):
        introspector = self._introspector()
        return introspector is not None and introspector.detail

    def _stats_items(self):
        s = self.runtime.statsDict()
        pairs = [
            ("items:1:number", s.get("curr_items", 0)),
            ("items:1:mem_requested", s.get("bytes", 0)),
            ("items:1:evicted", s.get("evictions", 0)),
            ("items:1:evicted_unfetched", s.get("evicted_unfetched", 0)),
            ("items:1:expired_unfetched", s.get("expired_unfetched", 0)),
            ("items:1:reclaimed", s.get("reclaimed", 0)),
            ("items:1:outofmemory", s.get("store_no_memory", 0)),
        ]
        return [(name, str(value)) for name, value in pairs]

    def _stats_slabs(self):
        s = self.runtime.statsDict()
        pairs = [("1:used_chunks", s.get("curr_items", 0))]
        pairs.extend(
            ("1:" + name, s[name])
            for name in (
                "get_hits cmd_set delete_hits incr_hits decr_hits cas_hits "
                "cas_badval touch_hits"
            ).split()
        )
        # a store without slabs reports what it holds as one class
        pairs += [("active_slabs", 1), ("total_malloced", s.get("total_malloced", s.get("bytes", 0)))]
        return [(name, str(value)) for name, value in pairs]

    def _stats_sizes(self):
        return [("sizes_status", "disabled")]
