# -*- test-case-name: tests.unit.test_analytics -*-
"""
The node's analytics services and the queries the API makes.

  - L{Sampler}: every C{period} seconds, each served cache's counters
    (L{memcachier.runtime.CacheRuntime.statsDict}) become a sample of
    deltas, stored per server in every resolution's bucket; watched
    prefixes get their counts and footprint stored the same way.
  - L{LatencyProbe}: every 20 s, a C{version} round trip over a real TCP
    connection to each server of every cluster.
  - L{PrefixWatcher}: keeps the watched prefixes of the control plane in
    memory for the introspection batches.
  - L{Analytics}: what the HTTP routes call; every method returns a
    L{Deferred} (or a value for in-memory introspection) and raises
    L{QueryError} for bad parameters.

All of them take the reactor as their clock; the database work runs in the
thread pool through L{AsyncAnalytics}.
"""

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from memcachier.analytics import series
from memcachier.analytics.introspection import (
    POPULAR_LIMIT,
    IntrospectionService,
    keyStatsRows,
    mergePopular,
)
from memcachier.analytics.repository import AnalyticsRepository, AsyncAnalytics
from memcachier.commands import itemValueLength
from memcachier.analytics.series import QueryError
from memcachier.tx.ceiling import Bursts
from memcachier.tx.periodic import PeriodicService


class Sampler(PeriodicService):
    """
    Samples every cache this node serves.

    @ivar pending: the L{Deferred} of the last write (tests wait on it).
    """

    def __init__(self, registry, analytics, server, reactor, period=60.0,
                 introspection=None, pruneEvery=3600.0):
        """
        @param registry: the L{memcachier.runtime.CacheRegistry}.
        @param analytics: an L{AsyncAnalytics}.
        @param server: this node's name (C{settings.node.name}).
        @param introspection: the L{IntrospectionService}, for watched
            prefixes, or L{None}.
        """
        PeriodicService.__init__(self, period, self.tick, reactor, "Sampler", now=False)
        self.registry = registry
        self.analytics = analytics
        self.server = server
        self._reactor = reactor
        self.period = period
        self.introspection = introspection
        self.pruneEvery = pruneEvery
        self._last = {}
        self._lastPrune = None
        self.pending = None

    def tick(self):
        """
        Take one sample of every cache and store it.

        @return: a L{Deferred} firing when it is stored.
        """
        now = self._reactor.seconds()
        samples = {}
        last = {}
        for runtime in self.registry.runtimes():
            current = runtime.statsDict()
            previous = self._last.get(runtime.cacheId)
            if previous is not None and previous[0] is runtime:
                seconds, before = now - previous[1], previous[2]
            else:
                seconds, before = self.period, None
            samples[runtime.cacheId] = (seconds, series.delta(before, current))
            last[runtime.cacheId] = (runtime, now, current)
        self._last = last
        prefixSamples = self._prefixSamples()
        d = self.analytics.addSamples(self.server, now, samples, prefixSamples)
        if self._lastPrune is None or now - self._lastPrune >= self.pruneEvery:
            self._lastPrune = now
            d.addCallback(lambda _: self.analytics.prune(now))
        self.pending = d
        return d

    def _prefixSamples(self):
        out = {}
        if self.introspection is None or not self.introspection.enabled:
            return out
        for cacheId, intro in self.introspection.introspectors().items():
            counts = intro.takePrefixCounts()
            if not counts:
                continue
            footprint = intro.prefixFootprint()
            for pid, (hits, misses, mutations) in counts.items():
                keys, size = footprint.get(pid, (0, 0))
                out[pid] = (self.period, {
                    "hits": hits, "misses": misses, "mutations": mutations,
                    "num_keys": keys, "total_size": size,
                })
        return out


class _VersionProbe(Protocol):
    """
    Sends C{version} and fires C{done} with the round trip in nanoseconds
    once the C{VERSION ...} line is back.
    """

    def __init__(self, clock):
        self._clock = clock
        self.done = defer.Deferred()
        self._buffer = b""

    def connectionMade(self):
        self._sent = self._clock.seconds()
        self.transport.write(b"version\r\n")

    def dataReceived(self, data):
        self._buffer += data
        if b"\r\n" in self._buffer and not self.done.called:
            line = self._buffer.split(b"\r\n", 1)[0]
            elapsed = int((self._clock.seconds() - self._sent) * 1e9)
            self.transport.loseConnection()
            if line.startswith(b"VERSION"):
                self.done.callback(elapsed)
            else:
                self.done.errback(ValueError(f"unexpected reply {line[:40]!r}"))

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


def tcpConnector(reactor, timeout=5.0):
    """
    A C{connect(server, protocol) -> Deferred} over TCP for L{LatencyProbe}.
    """
    def connect(server, protocol):
        host, _, port = server.rpartition(":")
        endpoint = TCP4ClientEndpoint(reactor, host.strip("[]"), int(port), timeout=timeout)
        return endpoint.connect(_QuietFactory(protocol))

    return connect


class _QuietFactory(Factory):
    """
    Hands out one protocol, without the "Starting factory" and "Stopping
    factory" lines Twisted logs for every connection of a noisy factory
    (two log lines per probe, every 20 seconds, per server).
    """

    noisy = False

    def __init__(self, protocol):
        self._protocol = protocol

    def buildProtocol(self, addr):
        return self._protocol


class LatencyProbe(PeriodicService):
    """
    Measures each server's round trip through the real memcache protocol
    (C{version}, which needs no authentication) every C{period} seconds.
    """

    def __init__(self, servers, analytics, reactor, connect=None, period=series.LATENCY_PERIOD,
                 timeout=5.0):
        """
        @param servers: a callable returning the C{host:port}s to probe.
        @param connect: C{connect(server, protocol)} returning a Deferred
            (L{tcpConnector} by default).
        """
        PeriodicService.__init__(self, period, self.tick, reactor, "LatencyProbe", now=False)
        self.servers = servers
        self.analytics = analytics
        self._reactor = reactor
        self.connect = connect or tcpConnector(reactor, timeout)
        self.period = period
        self.timeout = timeout
        self._failures = {}

    def tick(self):
        now = self._reactor.seconds()
        return defer.DeferredList(
            [self._probe(server, now) for server in self.servers()], consumeErrors=True
        )

    def _probe(self, server, now):
        protocol = _VersionProbe(self._reactor)
        d = self.connect(server, protocol)
        d.addCallback(lambda _: protocol.done)
        timer = self._reactor.callLater(self.timeout, d.cancel)

        def stop(result):
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stop)
        d.addCallback(lambda ns: self.analytics.addLatency(server, now, ns))
        d.addErrback(self._ebProbe, server)
        return d

    def _ebProbe(self, failure, server):
        """
        A server did not answer: log the first failure of a run of them
        (a peer down for an hour is one line, not 180).
        """
        bursts = self._failures.setdefault(server, Bursts(self.period * 2.5))
        previous = bursts.occurred(self._reactor.seconds())
        if previous is not None:
            self._log.warn(
                "latency probe of {server} failed: {error} (logged once until it "
                "answers again)",
                event="latency_probe_failed", server=server,
                error=failure.getErrorMessage(),
            )


class PrefixWatcher(PeriodicService):
    """
    Loads the watched prefixes into the introspection service at start,
    after every change made through this node, and every C{period} seconds
    (changes made through other nodes).
    """

    def __init__(self, analytics, introspection, reactor, period=5.0):
        PeriodicService.__init__(self, period, self.tick, reactor, "PrefixWatcher")
        self.analytics = analytics
        self.introspection = introspection
        self._reactor = reactor
        self.period = period

    def tick(self):
        return self.analytics.listPrefixes().addCallback(self.introspection.setPrefixes)


def _aggregate(buckets):
    """
    Sum buckets of several servers with the same time: counters and
    gauges add up; the seconds are the longest any server sampled.

    @return: L{list} of (time, seconds, data) by time.
    """
    byTime = {}
    for _server, time, seconds, data in buckets:
        entry = byTime.get(time)
        if entry is None:
            byTime[time] = [seconds, dict(data)]
        else:
            entry[0] = max(entry[0], seconds)
            for name, value in data.items():
                entry[1][name] = entry[1].get(name, 0) + value
    return [(t, s, d) for t, (s, d) in sorted(byTime.items())]


def _byServer(buckets):
    out = {}
    for server, time, seconds, data in buckets:
        out.setdefault(server, []).append((time, seconds, data))
    return out


class Analytics(MultiService):
    """
    The analytics of a node: its services, and the queries of the API.

    @ivar introspection: the L{IntrospectionService}.
    @ivar store: the L{AsyncAnalytics}.
    """

    _log = Logger()

    def __init__(self, registry, index, store, introspection, settings, reactor):
        super().__init__()
        self.registry = registry
        self.index = index
        self.store = store
        self.introspection = introspection
        self.settings = settings
        self._reactor = reactor
        self.server = settings.node.name

    # -- helpers

    def _servers(self, cacheId):
        cache = self.index.cache(cacheId)
        cluster = cache.cluster if cache is not None else self.settings.caches.default_cluster
        return self.settings.clusters.get(cluster, (self.server,))

    def _range(self, args, finest=None, retention=series.RETENTION):
        now = self._reactor.seconds()
        start, end = series.timeRange(args, now)
        resolution = series.granularity(start, end, now, retention, finest)
        return start, end, resolution

    # -- insight

    def processedStats(self, cacheId, args, perServer=False):
        """
        C{insight/processed_stats[/per_server]}.

        @param args: query parameters, L{str} to L{str}.
        @raise QueryError: bad parameters.
        @return: a L{Deferred} of the contract's list of series.
        """
        names = series.parseNames(args.get("names"))
        start, end, resolution = self._range(args)
        columns = ["time"] + names

        def rows(buckets):
            return [
                [series.formatTime(t)] + [series.processed(n, data, seconds) for n in names]
                for t, seconds, data in buckets
            ]

        def shape(buckets):
            if not perServer:
                return [{"name": "processed_stats", "columns": columns,
                         "values": rows(_aggregate(buckets))}]
            byServer = _byServer(buckets)
            servers = list(self._servers(cacheId))
            servers += sorted(s for s in byServer if s not in servers)
            return [
                {"name": "processed_stats", "tags": {"server": s}, "columns": columns,
                 "values": rows(byServer.get(s, []))}
                for s in servers
            ]

        return self.store.statBuckets(cacheId, resolution, start, end).addCallback(shape)

    def latency(self, cacheId, args):
        """
        C{insight/latency}: mean round trip per bucket, nanoseconds, per
        server of the cache's cluster.
        """
        start, end, resolution = self._range(
            args, finest=series.LATENCY_PERIOD, retention=series.LATENCY_RETENTION
        )
        servers = list(self._servers(cacheId))

        def shape(rows):
            byServer = {}
            for server, time, ns in rows:
                byServer.setdefault(server, []).append([series.formatTime(time), ns])
            return [
                {"name": "latency", "tags": {"server": s}, "columns": ["time", "duration"],
                 "values": byServer.get(s, [])}
                for s in servers
            ]

        return self.store.latencyBuckets(servers, resolution, start, end).addCallback(shape)

    # -- introspection

    def compoundStats(self, cacheId, args):
        start, end, resolution = self._range(args)

        def shape(buckets):
            return [{
                "name": "compound_stats",
                "columns": list(series.COMPOUND_COLUMNS),
                "values": [
                    series.compoundRow(series.formatTime(t), data, seconds)
                    for t, seconds, data in _aggregate(buckets)
                ],
            }]

        return self.store.statBuckets(cacheId, resolution, start, end).addCallback(shape)

    def prefixStats(self, cacheId, prefixId, args):
        start, end, resolution = self._range(args)

        def shape(buckets):
            return [{
                "name": "prefix_stats",
                "columns": list(series.COMPOUND_COLUMNS),
                "values": [
                    series.prefixRow(series.formatTime(t), data, seconds)
                    for t, seconds, data in _aggregate(buckets)
                ],
            }]

        d = self.store.getPrefix(cacheId, prefixId)
        d.addCallback(lambda _: self.store.prefixBuckets(prefixId, resolution, start, end))
        return d.addCallback(shape)

    def _introspector(self, cacheId):
        runtime = self.registry.existing(cacheId)
        if runtime is None or not self.introspection.enabled:
            return None
        return self.introspection.introspector(runtime)

    def recentLogs(self, cacheId):
        """
        @return: C{{server: [log lines]}}: this node's, and with several
            nodes every live peer's (a L{Deferred} then).
        """
        intro = self._introspector(cacheId)
        logs = {self.server: intro.recentLogs() if intro is not None else []}
        if getattr(self.registry, "cluster", None) is None:
            return logs
        keyspace = self.registry.runtime(cacheId).keyspace

        def merged(peers):
            logs.update(peers)
            return logs

        return keyspace.peerRecentLogs().addCallback(merged)

    def _clusterKeyspace(self, cacheId):
        """
        The cache's cluster keyspace when this node is one of several
        (peers to ask), else L{None}.
        """
        if getattr(self.registry, "cluster", None) is None:
            return None
        try:
            return self.registry.runtime(cacheId).keyspace
        except KeyError:
            return None

    def popularItems(self, cacheId, prefixId=None):
        """
        C{introspection/popular_items} (of a watched prefix's keys if
        C{prefixId}): with several nodes, every live node's heavy hitters
        merged (a L{Deferred} then); a peer that does not answer within
        C{[cluster] request_timeout} is left out.
        """
        intro = self._introspector(cacheId)
        limit = intro.popularLimit if intro is not None else POPULAR_LIMIT
        parts = [intro.popularSketches(prefixId)] if intro is not None else []
        keyspace = self._clusterKeyspace(cacheId)
        if keyspace is None:
            return mergePopular(self._reactor.seconds(), parts, limit)

        def merged(peers):
            parts.extend(part for _, part in peers if part is not None)
            return mergePopular(self._reactor.seconds(), parts, limit)

        return keyspace.peerPopular(prefixId).addCallback(merged)

    def prefixPopularItems(self, cacheId, prefixId):
        d = self.store.getPrefix(cacheId, prefixId)
        return d.addCallback(lambda _: self.popularItems(cacheId, prefixId))

    def keyStats(self, cacheId, key):
        """
        C{introspection/key_stats}: with several nodes, every live node's
        counts of the key merged slice by slice, and its size and presence
        as its owner has it (a L{Deferred} then).
        """
        if not key:
            raise QueryError("query parameter key is required")
        if len(key.encode("utf-8")) > 250:
            raise QueryError("key: a key is at most 250 bytes")
        intro = self._introspector(cacheId)
        keyspace = self._clusterKeyspace(cacheId)
        if keyspace is None:
            if intro is None:
                return []
            return intro.keyStats(key)
        slices = intro.slices if intro is not None else self.settings.analytics.slices
        counts = [intro.keyCounts()] if intro is not None else []
        found = []

        def peeked(item):
            found.append(item)

        def gathered(peers):
            counts.extend(c for _, c in peers)
            item = found[0] if found else None
            size = itemValueLength(item) if item is not None else 0
            return keyStatsRows(key, counts, size, item is not None, slices)

        # the owner's answer, not bumping the key (a peer that fails: not in the cache)
        d = maybeDeferred(keyspace.peek, key.encode("utf-8"))
        d.addCallbacks(peeked, lambda f: None)
        d.addCallback(lambda _: keyspace.peerKeyCounts())
        return d.addCallback(gathered)

    # -- watched prefixes

    def _reloadPrefixes(self, result):
        return self.reloadPrefixes().addCallback(lambda _: result)

    def reloadPrefixes(self):
        """
        Load every watched prefix into the introspection taps (after a
        change here, or another node's, told by C{NOTIFY}).

        @return: a L{Deferred} firing when loaded.
        """
        d = self.store.listPrefixes()
        return d.addCallback(self.introspection.setPrefixes)

    def _ebReload(self, failure):
        self._log.failure("reloading the watched prefixes failed", failure)

    def prefixesChanged(self):
        """
        Another node created or deleted a watched prefix.
        """
        if self.introspection.enabled:
            self.reloadPrefixes().addErrback(self._ebReload)

    def listPrefixes(self, cacheId):
        d = self.store.listPrefixes(cacheId)
        return d.addCallback(lambda ps: [{"id": p["id"], "name": p["name"]} for p in ps])

    def createPrefix(self, cacheId, name):
        d = self.store.createPrefix(cacheId, name)
        d.addCallback(self._reloadPrefixes)
        return d.addCallback(lambda p: {"id": p["id"], "name": p["name"]})

    def deletePrefix(self, cacheId, prefixId):
        return self.store.deletePrefix(cacheId, prefixId).addCallback(self._reloadPrefixes)


def makeIntrospection(settings, reactor):
    """
    The node's L{IntrospectionService}, configured from C{[analytics]};
    given to the L{memcachier.runtime.CacheRegistry} (whose sessions tap
    it) and then to L{makeAnalytics}.
    """
    return IntrospectionService(
        reactor,
        enabled=settings.analytics.introspection,
        interval=settings.analytics.drain_interval,
        sliceSeconds=settings.analytics.time_slice,
        slices=settings.analytics.slices,
        batchLimit=settings.analytics.batch_limit,
    )


def makeAnalytics(registry, index, engine, pool, settings, reactor, connect=None):
    """
    Build the L{Analytics} service of a node around the introspection the
    registry was built with (L{makeIntrospection}).

    @param engine: the control plane's engine.
    @param pool: the control plane's thread pool.
    @rtype: L{Analytics}
    """
    repository = AnalyticsRepository(engine, reactor, maxPrefixes=settings.limits.watched_prefixes)
    store = AsyncAnalytics(repository, pool, reactor)
    introspection = registry.introspection
    if introspection is None:
        raise ValueError("the registry was built without introspection (makeIntrospection)")
    analytics = Analytics(registry, index, store, introspection, settings, reactor)
    introspection.setServiceParent(analytics)
    Sampler(
        registry, store, settings.node.name, reactor,
        period=settings.analytics.sample_period, introspection=introspection,
    ).setServiceParent(analytics)

    def servers():
        if settings.clustered:
            # every node probes itself: one writer per latency series in
            # the shared database
            return [settings.node.name]
        seen = []
        for cluster in settings.clusters.values():
            seen += [s for s in cluster if s not in seen]
        return seen

    LatencyProbe(
        servers, store, reactor, connect=connect, period=settings.analytics.latency_period
    ).setServiceParent(analytics)
    if settings.analytics.introspection:
        PrefixWatcher(store, introspection, reactor, period=5 * settings.database.poll_interval
                      ).setServiceParent(analytics)
    return analytics
