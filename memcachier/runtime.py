# -*- test-case-name: tests.unit.test_session -*-
"""
The live side of each cache on this node: its keyspace, its counters and
its connection count, looked up by the session after authentication.

The control plane says what a cache I{is} (plan, credentials, enabled);
this module holds what a cache I{does} on this node.  It listens to the
in-memory control index so that plan changes and deletions apply without a
restart.
"""

from twisted.logger import Logger


#: Counters the session keeps per cache, with memcached's names.  The
#: keyspace adds its own (curr_items, bytes, evictions, ...).
COMMAND_COUNTERS = (
    "cmd_get", "cmd_set", "cmd_flush", "cmd_touch", "cmd_delete", "cmd_meta",
    "get_hits", "get_misses",
    "delete_hits", "delete_misses",
    "incr_hits", "incr_misses", "decr_hits", "decr_misses",
    "cas_hits", "cas_misses", "cas_badval",
    "touch_hits", "touch_misses",
    "store_too_large", "store_no_memory",
    "auth_cmds", "auth_errors",
    "bytes_read", "bytes_written",
    "total_connections", "rejected_connections",
)

#: Seconds the cache's reading was held back (by the fair share or its
#: budget, L{memcachier.protocols.fairshare}), averaged over its
#: connections: it grows by at most one a second.  A float; reset with
#: the counters.
HELD_BACK = "held_back_seconds"


class CacheStats:
    """
    Per-cache command counters, shared by every connection of the cache on
    this node.  Plain attributes: incrementing one is the cheapest thing
    the hot path can do.
    """

    __slots__ = COMMAND_COUNTERS + ("curr_connections", HELD_BACK)

    def __init__(self):
        self.curr_connections = 0
        self.reset()

    def reset(self):
        """
        Zero the cumulative counters (memcached's C{stats reset}); the
        connection gauge is kept.
        """
        for name in COMMAND_COUNTERS:
            setattr(self, name, 0)
        self.held_back_seconds = 0.0

    def asDict(self):
        """
        @return: every counter by name.
        @rtype: L{dict}
        """
        d = {name: getattr(self, name) for name in COMMAND_COUNTERS}
        d["curr_connections"] = self.curr_connections
        d[HELD_BACK] = self.held_back_seconds
        return d


class CacheRuntime:
    """
    One cache as served by this node.

    @ivar cacheId: the cache's id.
    @ivar plan: its current L{memcachier.control.model.Plan}.
    @ivar keyspace: its L{memcachier.interfaces.IKeyspace}.
    @ivar stats: its L{CacheStats}.
    @ivar lastActive: clock seconds of the last authentication or
        disconnection, for the inactivity reaper.
    @ivar startTime: when this node started serving the cache.
    @ivar connections: its open, authenticated connections on this node
        (what the fair share holds back: each has C{holdBack} and
        C{release}, L{memcachier.protocols.sniff.SniffingProtocol}).
    """

    #: a peer node's view of the cache (L{memcachier.cluster.peer.PeerRuntime})
    peer = False

    #: the cluster the cache was on when this node last looked
    cluster = None

    def __init__(self, cacheId, plan, keyspace, now):
        self.cacheId = cacheId
        self.plan = plan
        self.keyspace = keyspace
        self.stats = CacheStats()
        self.lastActive = now
        self.startTime = now
        self.gone = False
        self.connections = set()

    def statsDict(self):
        """
        The command counters and the keyspace counters together, as the
        C{stats} command and the API report them.
        """
        d = self.stats.asDict()
        d.update(self.keyspace.stats())
        d["cmd_delete"] = d["delete_hits"] + d["delete_misses"]
        return d

    def resetStats(self):
        self.stats.reset()
        self.keyspace.resetStats()


class ServedCaches:
    """
    The caches this node serves now: cache id to L{CacheRuntime}.

    Built before the registry that fills it, so that what reports this
    node's usage (the cluster heartbeat) can be built before the keyspaces
    it will count.
    """

    def __init__(self):
        self.runtimes = {}

    def usage(self):
        """
        This node's open connections, memory in use, and connections per
        cache, for the cluster heartbeat.

        @return: a 3-tuple (L{int}, L{int}, L{dict} of cache id to L{int}).
        """
        runtimes = list(self.runtimes.values())
        return (
            sum(r.stats.curr_connections for r in runtimes),
            sum(r.keyspace.stats().get("bytes", 0) for r in runtimes),
            {r.cacheId: r.stats.curr_connections for r in runtimes},
        )


class CacheRegistry:
    """
    The caches this node serves, created on first authentication.

    @ivar index: the in-memory control index (C{authenticate}, C{cache},
        C{planOf}, C{addListener}).
    @ivar introspection: the L{memcachier.analytics.introspection.IntrospectionService}
        sessions tap, or L{None} (no taps at all).
    @ivar cluster: the L{memcachier.cluster.keyspace.Cluster} when this
        node is one of several, else L{None}.
    @ivar peerAuthenticator: checks peer connections' credentials
        (L{memcachier.cluster.peer.PeerAuthenticator}), or L{None}.
    """

    _log = Logger()

    def __init__(self, store, index, settings, reactor, served=None, introspection=None,
                 cluster=None, peerAuthenticator=None):
        """
        @param served: the L{ServedCaches} to fill; a new one if L{None}.
        """
        self.store = store
        self.introspection = introspection
        self.index = index
        self.settings = settings
        self.reactor = reactor
        self.cluster = cluster
        self.peerAuthenticator = peerAuthenticator
        self._runtimes = (served if served is not None else ServedCaches()).runtimes
        self.startTime = reactor.seconds()
        index.addListener(self._controlChanged)

    def authenticate(self, username, password):
        """
        Check a username and password against the control index.

        @type username: L{bytes}
        @type password: L{bytes}
        @return: a 2-tuple (credential, L{CacheRuntime}) or L{None}.
        """
        if self.peerAuthenticator is not None and username.startswith(b"@peer:"):
            return self.peerAuthenticator(self, username, password)
        credential = self.index.authenticate(username, password)
        if credential is None:
            return None
        return credential, self.runtime(credential.cache_id)

    def discovery(self, cacheId=None):
        """
        The version and live servers of a cache's cluster (or this node's
        cluster), for ElastiCache-style auto discovery.

        @return: a 2-tuple (version L{int}, L{tuple} of C{host:port}).
        """
        if self.cluster is None:
            return (1, (self.settings.node.name,))
        membership = self.cluster.membership
        name = self.cluster.clusterOf(cacheId) if cacheId is not None else None
        if name is None:
            name = membership.cluster
        return (membership.version(name), membership.servers(name))

    def connectionsElsewhere(self, cacheId):
        """
        A cache's open connections on the other nodes of the cluster (0
        on a single node), for its plan's connection limit.
        """
        if self.cluster is None:
            return 0
        return self.cluster.membership.connectionsElsewhere(cacheId)

    def runtimeOfUser(self, username):
        """
        The runtime of the cache a username belongs to, to count a failed
        login against it.

        @type username: L{bytes}
        @return: a L{CacheRuntime}, or L{None} for an unknown username.
        """
        credential = self.index.credential(username.decode("utf-8", "replace"))
        if credential is None or self.index.cache(credential.cache_id) is None:
            return None
        return self.runtime(credential.cache_id)

    def runtime(self, cacheId):
        """
        The L{CacheRuntime} of a cache, created (with an empty keyspace
        sized by its plan) on first use.

        @raise KeyError: the cache does not exist.
        """
        runtime = self._runtimes.get(cacheId)
        if runtime is None:
            if self.index.cache(cacheId) is None:
                raise KeyError(cacheId)
            plan = self.index.planOf(cacheId)
            keyspace = self.store.keyspace(cacheId, plan.memory, plan.item_size)
            runtime = CacheRuntime(cacheId, plan, keyspace, self.reactor.seconds())
            runtime.cluster = self.index.cache(cacheId).cluster
            self._runtimes[cacheId] = runtime
        return runtime

    def existing(self, cacheId):
        """
        The runtime of a cache this node already serves, or L{None}.
        """
        return self._runtimes.get(cacheId)

    def runtimes(self):
        return list(self._runtimes.values())

    def activity(self):
        """
        When each served cache was last active: now for caches with open
        connections.

        @return: L{dict} of cache id to clock seconds.
        """
        now = self.reactor.seconds()
        return {
            r.cacheId: (now if r.stats.curr_connections else r.lastActive)
            for r in self._runtimes.values()
        }

    def _controlChanged(self):
        """
        Apply plan changes and deletions from the control plane.
        """
        for cacheId, runtime in list(self._runtimes.items()):
            cache = self.index.cache(cacheId)
            if cache is None:
                runtime.gone = True
                del self._runtimes[cacheId]
                self.store.dropKeyspace(cacheId)
                self._log.info(
                    "cache {cacheId} deleted; keyspace dropped",
                    event="cache_dropped", cacheId=cacheId,
                )
                continue
            runtime.gone = not cache.enabled
            if cache.cluster != runtime.cluster:
                self._moved(runtime, cache.cluster)
            plan = self.index.planOf(cacheId)
            if plan != runtime.plan:
                runtime.plan = plan
                runtime.keyspace.configure(plan.memory, plan.item_size)
                self._log.info(
                    "cache {cacheId} now on plan {plan}",
                    event="plan_applied", cacheId=cacheId, plan=plan.slug,
                )

    def _moved(self, runtime, cluster):
        """
        The cache moved to another cluster (C{switch_cluster}, a plan
        change between development and production, by any node or the
        admin CLI): its data does not follow it, as MemCachier documents.
        Every node empties what it holds of the cache when it sees the
        move, so a node the mover could not reach is emptied too, and a
        cache that moves back finds nothing stale.
        """
        old, runtime.cluster = runtime.cluster, cluster
        # with several nodes, only this node's share: the others do the same
        keyspace = getattr(runtime.keyspace, "local", runtime.keyspace)
        result = keyspace.flush(0)
        if hasattr(result, "addErrback"):
            result.addErrback(
                lambda f: self._log.failure("emptying moved cache {cacheId} failed", f,
                                            cacheId=runtime.cacheId)
            )
        self._log.info(
            "cache {cacheId} moved from cluster {old} to {new}; emptied here",
            event="cache_moved", cacheId=runtime.cacheId, old=old, new=cluster,
        )
