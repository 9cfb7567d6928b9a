# -*- test-case-name: tests.unit.test_analytics -*-
"""
Analytics in the control-plane database: rollup buckets of samples,
latency, watched prefixes.

L{AnalyticsRepository} is synchronous, one short transaction per method,
like L{memcachier.control.repository.ControlPlane}; L{AsyncAnalytics} runs
the same methods in the control plane's thread pool and returns Deferreds,
so nothing on the reactor waits on SQL.

Each node writes only rows of its own server name, so read-then-write
upserts cannot race with another node.
"""

import json

import sqlalchemy as sa

from memcachier.analytics import series
from memcachier.control import schema
from memcachier.control.repository import ControlPlaneError, UnknownCache, checkLimit
from memcachier.tx.threads import ThreadPoolRunner


class UnknownPrefix(ControlPlaneError):
    """
    The cache watches no prefix with this id.
    """

    def __init__(self, prefixId):
        self.prefixId = prefixId
        super().__init__(f"no watched prefix with id {prefixId!r}")


class DuplicatePrefix(ControlPlaneError):
    """
    The cache already watches this prefix.
    """

    def __init__(self, name):
        self.name = name
        super().__init__(f"prefix {name!r} is already watched")


class InvalidPrefix(ControlPlaneError):
    """
    Not a usable prefix: empty, too long, or with spaces or control
    characters (which no key can contain).
    """


#: Gauges of a prefix bucket (the rest are summed counts).
PREFIX_GAUGES = frozenset(("num_keys", "total_size"))


def checkPrefixName(name):
    """
    @raise InvalidPrefix: C{name} cannot start any key.
    """
    if not isinstance(name, str) or not name:
        raise InvalidPrefix("a prefix is a non-empty string")
    raw = name.encode("utf-8")
    if len(raw) > 250:
        raise InvalidPrefix("a prefix is at most 250 bytes, as keys are")
    if any(b <= 32 or b == 127 for b in raw):
        raise InvalidPrefix("a prefix cannot contain spaces or control characters")


class AnalyticsRepository:
    """
    Synchronous access to the analytics tables.

    @ivar engine: the control plane's engine (migrated to revision 0002).
    """

    def __init__(self, engine, clock, maxPrefixes=50):
        """
        @param maxPrefixes: prefixes a cache may watch
            (C{limits.watched_prefixes}).
        """
        self.engine = engine
        self._clock = clock
        self.maxPrefixes = maxPrefixes

    # -- writing samples

    def _upsert(self, conn, table, match, seconds, data, gauges):
        row = conn.execute(
            sa.select(table.c.id, table.c.seconds, table.c.data).where(
                *[table.c[k] == v for k, v in match.items()]
            )
        ).first()
        if row is None:
            conn.execute(
                table.insert().values(seconds=seconds, data=json.dumps(data), **match)
            )
        else:
            merged = series.merge(json.loads(row.data), data, gauges)
            conn.execute(
                table.update()
                .where(table.c.id == row.id)
                .values(seconds=row.seconds + seconds, data=json.dumps(merged))
            )

    def addSamples(self, server, time, samples, prefixSamples=None):
        """
        Add one sampling round to every resolution's bucket.

        @param time: when the round was taken (POSIX seconds); it falls in
            the bucket it was taken in.
        @param samples: cache id to a 2-tuple (seconds covered, data) as
            L{series.delta} makes it.
        @param prefixSamples: prefix id to (seconds, data) with C{hits},
            C{misses}, C{mutations}, C{num_keys}, C{total_size}.
        """
        with self.engine.begin() as conn:
            knownCaches = {
                r[0] for r in conn.execute(sa.select(schema.caches.c.id))
            }
            knownPrefixes = {
                r[0] for r in conn.execute(sa.select(schema.prefixes.c.id))
            }
            for resolution in series.RESOLUTIONS:
                bucket = series.bucketStart(time, resolution)
                for cacheId, (seconds, data) in samples.items():
                    if cacheId not in knownCaches:
                        continue  # deleted meanwhile
                    self._upsert(
                        conn, schema.stat_samples,
                        dict(cache_id=cacheId, server=server, resolution=resolution, time=bucket),
                        seconds, data, series.GAUGES,
                    )
                for prefixId, (seconds, data) in (prefixSamples or {}).items():
                    if prefixId not in knownPrefixes:
                        continue
                    self._upsert(
                        conn, schema.prefix_samples,
                        dict(prefix_id=prefixId, server=server, resolution=resolution, time=bucket),
                        seconds, data, PREFIX_GAUGES,
                    )

    def addLatency(self, server, time, nanoseconds):
        """
        Add one probe round trip to every latency resolution's bucket.
        """
        t = schema.latency_samples
        with self.engine.begin() as conn:
            for resolution in series.LATENCY_RESOLUTIONS:
                bucket = series.bucketStart(time, resolution)
                match = (t.c.server == server, t.c.resolution == resolution, t.c.time == bucket)
                row = conn.execute(sa.select(t.c.id).where(*match)).first()
                if row is None:
                    conn.execute(t.insert().values(
                        server=server, resolution=resolution, time=bucket,
                        total_ns=nanoseconds, count=1,
                    ))
                else:
                    conn.execute(t.update().where(t.c.id == row.id).values(
                        total_ns=t.c.total_ns + nanoseconds, count=t.c.count + 1,
                    ))

    def prune(self, now):
        """
        Delete buckets older than their resolution's retention.

        @return: how many rows were deleted.
        """
        deleted = 0
        with self.engine.begin() as conn:
            for table, retention in (
                (schema.stat_samples, series.RETENTION),
                (schema.prefix_samples, series.RETENTION),
                (schema.latency_samples, series.LATENCY_RETENTION),
            ):
                for resolution, keep in retention.items():
                    deleted += conn.execute(
                        table.delete().where(
                            table.c.resolution == resolution,
                            table.c.time < now - keep - resolution,
                        )
                    ).rowcount
        return deleted

    # -- reading series

    def _series(self, table, key, value, resolution, start, end):
        t = table
        rows = self.engine.connect()
        with rows as conn:
            result = conn.execute(
                sa.select(t.c.server, t.c.time, t.c.seconds, t.c.data)
                .where(
                    t.c[key] == value,
                    t.c.resolution == resolution,
                    t.c.time >= series.bucketStart(start, resolution),
                    t.c.time <= end,
                )
                .order_by(t.c.time, t.c.server)
            )
            return [(r.server, r.time, r.seconds, json.loads(r.data)) for r in result]

    def statBuckets(self, cacheId, resolution, start, end):
        """
        @return: L{list} of (server, bucket time, seconds, data), by time,
            for buckets overlapping [start, end].
        """
        return self._series(schema.stat_samples, "cache_id", cacheId, resolution, start, end)

    def prefixBuckets(self, prefixId, resolution, start, end):
        """
        @return: as L{statBuckets}, for a watched prefix.
        """
        return self._series(schema.prefix_samples, "prefix_id", prefixId, resolution, start, end)

    def latencyBuckets(self, servers, resolution, start, end):
        """
        @return: L{list} of (server, bucket time, mean nanoseconds).
        """
        t = schema.latency_samples
        with self.engine.connect() as conn:
            result = conn.execute(
                sa.select(t.c.server, t.c.time, t.c.total_ns, t.c.count)
                .where(
                    t.c.server.in_(list(servers)),
                    t.c.resolution == resolution,
                    t.c.time >= series.bucketStart(start, resolution),
                    t.c.time <= end,
                )
                .order_by(t.c.server, t.c.time)
            )
            return [(r.server, r.time, r.total_ns / r.count) for r in result if r.count]

    # -- watched prefixes

    def _checkCache(self, conn, cacheId):
        if conn.execute(
            sa.select(schema.caches.c.id).where(schema.caches.c.id == cacheId)
        ).first() is None:
            raise UnknownCache(cacheId)

    def listPrefixes(self, cacheId=None):
        """
        @param cacheId: one cache's prefixes, or every cache's if L{None}.
        @return: L{list} of dicts C{{id, cache_id, name}} by id.
        """
        p = schema.prefixes
        query = sa.select(p.c.id, p.c.cache_id, p.c.name).order_by(p.c.id)
        with self.engine.connect() as conn:
            if cacheId is not None:
                self._checkCache(conn, cacheId)
                query = query.where(p.c.cache_id == cacheId)
            return [dict(id=r.id, cache_id=r.cache_id, name=r.name) for r in conn.execute(query)]

    def getPrefix(self, cacheId, prefixId):
        """
        @raise UnknownPrefix: the cache has no such prefix.
        """
        for prefix in self.listPrefixes(cacheId):
            if prefix["id"] == prefixId:
                return prefix
        raise UnknownPrefix(prefixId)

    def createPrefix(self, cacheId, name):
        """
        Watch a prefix.

        @raise InvalidPrefix: see L{checkPrefixName}.
        @raise DuplicatePrefix: already watched.
        @raise UnknownCache: no such cache.
        @raise LimitReached: the cache watches C{maxPrefixes} already.
        """
        checkPrefixName(name)
        p = schema.prefixes
        try:
            with self.engine.begin() as conn:
                self._checkCache(conn, cacheId)
                checkLimit(
                    conn, p, cacheId, self.maxPrefixes, "watched prefixes", "watched_prefixes"
                )
                result = conn.execute(
                    p.insert().values(cache_id=cacheId, name=name, created_at=self._clock.seconds())
                )
                _notifyPrefixes(conn)
                return dict(id=result.inserted_primary_key[0], cache_id=cacheId, name=name)
        except sa.exc.IntegrityError:
            raise DuplicatePrefix(name) from None

    def deletePrefix(self, cacheId, prefixId):
        """
        Stop watching a prefix and drop its samples.

        @raise UnknownPrefix: the cache has no such prefix.
        """
        p = schema.prefixes
        with self.engine.begin() as conn:
            conn.execute(
                schema.prefix_samples.delete().where(schema.prefix_samples.c.prefix_id == prefixId)
            )
            deleted = conn.execute(
                p.delete().where(p.c.id == prefixId, p.c.cache_id == cacheId)
            ).rowcount
            if not deleted:
                raise UnknownPrefix(prefixId)
            _notifyPrefixes(conn)


def _notifyPrefixes(conn):
    """
    Tell the other nodes (at commit, on PostgreSQL) that the watched
    prefixes changed: they reload them at once rather than at their next
    prefix poll (L{memcachier.cluster.membership.PREFIXES_CHANNEL}).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("NOTIFY memcachier_prefixes"))


class AsyncAnalytics:
    """
    L{AnalyticsRepository} for code on the reactor: each method runs in the
    thread pool and returns a L{Deferred} of the synchronous result
    (Buildbot's C{pool.do(thd)} shape).
    """

    def __init__(self, repository, threadpool, reactor):
        self.repository = repository
        self._threads = ThreadPoolRunner(reactor, threadpool)

    def __getattr__(self, name):
        method = getattr(self.repository, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._threads.run(method, *args, **kwargs)
