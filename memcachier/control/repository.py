# -*- test-case-name: tests.unit.test_control -*-
"""
Reading and writing the control plane.

L{ControlPlane} is synchronous: each method is one short transaction, in
the style of Buildbot's database connectors.  Code outside the reactor (the
admin CLI, migrations, tests) calls it directly.  L{AsyncControlPlane}
exposes the same methods to code on the reactor: each call runs in a
thread pool and returns a L{Deferred}.

Every write also bumps the single C{control_version} row in the same
transaction (L{ControlPlane.announceChange}), so that any process can tell
that something changed by reading one integer (see
L{memcachier.control.index}).

Plans are configuration, not data: the repository is handed the configured
plans and refuses slugs it does not know.
"""

import secrets
import uuid as uuidModule
from collections.abc import Mapping

import attr
import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from memcachier.control import schema
from memcachier.control.model import Cache, Credential
from memcachier.tx.threads import ThreadPoolRunner


class ControlPlaneError(Exception):
    """
    A request the control plane refuses; C{str()} is a message fit for an
    operator or an API client.
    """


class UnknownCache(ControlPlaneError):
    """
    No cache has this id.
    """

    def __init__(self, cacheId):
        self.cacheId = cacheId
        super().__init__(f"no cache with id {cacheId!r}")


class UnknownCredential(ControlPlaneError):
    """
    No credential has this username.
    """

    def __init__(self, username):
        self.username = username
        super().__init__(f"no credential with username {username!r}")


class UnknownPlan(ControlPlaneError):
    """
    The plan slug is not one of the configured plans.
    """

    def __init__(self, slug, known=()):
        self.slug = slug
        self.known = tuple(known)
        message = f"unknown plan {slug!r}"
        if self.known:
            message += " (plans: " + ", ".join(self.known) + ")"
        super().__init__(message)


class UnknownCluster(ControlPlaneError):
    """
    The cluster is not one of the configured clusters.
    """

    def __init__(self, name, known=()):
        self.name = name
        self.known = tuple(known)
        message = f"unknown cluster {name!r}"
        if self.known:
            message += " (clusters: " + ", ".join(self.known) + ")"
        super().__init__(message)


class DuplicateCacheName(ControlPlaneError):
    """
    Another cache already has this name.
    """

    def __init__(self, name):
        self.name = name
        super().__init__(f"a cache named {name!r} already exists")


class CannotDeletePrimary(ControlPlaneError):
    """
    The primary credential of a cache cannot be deleted; promote another
    credential first.
    """

    def __init__(self, username):
        self.username = username
        super().__init__(
            f"{username!r} is the primary credential of its cache; "
            "promote another credential before deleting it"
        )


class LimitReached(ControlPlaneError):
    """
    A cache already has as many of something as the configuration's
    C{[limits]} allow (the API answers 409).
    """

    def __init__(self, what, limit, key):
        self.what = what
        self.limit = limit
        super().__init__(
            f"a cache may have at most {limit} {what} (limits.{key}); delete one first"
        )


def lockCache(conn, cacheId):
    """
    Hold the cache's row until C{conn}'s transaction ends, so that what
    the transaction counts and then inserts for the cache cannot be
    raced by another transaction doing the same, in this process or on
    another node: on PostgreSQL, C{SELECT ... FOR UPDATE} on the row;
    on SQLite, which has one writer at a time, a write that makes this
    transaction that writer now (pysqlite would otherwise begin it only
    at the insert, after the count).

    @return: whether the cache exists.
    """
    c = schema.caches.c
    if conn.dialect.name == "sqlite":
        result = conn.execute(
            schema.caches.update().where(c.id == cacheId).values(enabled=c.enabled)
        )
        return result.rowcount > 0
    row = conn.execute(sa.select(c.id).where(c.id == cacheId).with_for_update()).first()
    return row is not None


def checkLimit(conn, table, cacheId, limit, what, key):
    """
    Before inserting one more row of a cache into C{table}: lock the cache
    (L{lockCache}) and count its rows, so that concurrent insertions,
    from several API requests or several nodes, never pass the limit
    together.  Call it in the inserting transaction.

    @param table: a table with a C{cache_id} column.
    @param limit: the rows a cache may have.
    @param what: the rows' name in the error (C{"alerts"}).
    @param key: the C{[limits]} key of C{limit}.
    @raise LimitReached: the cache has C{limit} rows already.
    """
    lockCache(conn, cacheId)
    count = conn.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.cache_id == cacheId)
    ).scalar()
    if count >= limit:
        raise LimitReached(what, limit, key)


#: credentials per cache unless configured (C{limits.credentials})
DEFAULT_MAX_CREDENTIALS = 20


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Snapshot:
    """
    Everything in the control plane at one version, for the in-memory index.

    @ivar version: the C{control_version} read I{before} the rows, so the
        rows are at least this new.
    @ivar caches: L{list} of L{Cache}.
    @ivar credentials: L{list} of L{Credential}.
    @ivar flushes: L{dict} of cache id to its last flush, a
        L{FlushGeneration}.
    """

    version: int
    caches: list
    credentials: list
    flushes: dict = attr.Factory(dict)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class FlushGeneration:
    """
    A cache's last flush as the control plane records it.

    @ivar generation: 1 for the cache's first flush, one more for each
        flush after.
    @ivar flush_at: wall-clock seconds from which the items stored before
        it are invalid (in the future for a delayed C{flush_all}).
    """

    generation: int
    flush_at: float


def generateUsername():
    """
    A MemCachier-style username: six upper-case hex digits (C{A1B2C3}).
    """
    return secrets.token_hex(3).upper()


def generatePassword():
    """
    A MemCachier-style password: 32 upper-case hex digits.
    """
    return secrets.token_hex(16).upper()


def generateCacheName():
    """
    A cache name when the operator gives none: C{mc-} and 8 hex digits.
    """
    return "mc-" + secrets.token_hex(4)


def generateSsoSecret():
    """
    The secret that signs a cache's dashboard single sign-on.
    """
    return secrets.token_hex(20)


def _cacheFromRow(row):
    return Cache(
        id=row.id,
        name=row.name,
        label=row.label,
        plan=row.plan,
        enabled=bool(row.enabled),
        cluster=row.cluster,
        sso_secret=row.sso_secret,
        created_at=float(row.created_at),
        last_active=float(row.last_active),
        uuid=row.uuid,
    )


def _credentialFromRow(row):
    return Credential(
        id=row.id,
        cache_id=row.cache_id,
        username=row.username,
        password=row.password,
        write=bool(row.write_capability),
        flush=bool(row.flush_capability),
        api=bool(row.api_capability),
        primary=bool(row.primary),
    )


#: How many times a generated name or username is redrawn on a collision.
_ATTEMPTS = 10


class ControlPlane:
    """
    The control plane's repository: synchronous, one transaction per
    method, safe to call from several threads at once.

    @ivar engine: the SQLAlchemy engine (see L{schema.makeEngine}).
    @ivar plans: plan slug to L{memcachier.control.model.Plan}.
    @ivar clusters: the configured cluster names, or L{None} to accept any.
    """

    _log = Logger()

    def __init__(
        self, engine, clock, plans, defaultPlan="dev", defaultCluster="default", clusters=None,
        maxCredentials=DEFAULT_MAX_CREDENTIALS,
    ):
        """
        @param engine: an engine on a database that L{upgrade} migrated.
        @param clock: provides C{seconds()}; every timestamp comes from it.
        @param plans: L{dict} of plan slug to L{Plan}.
        @param defaultPlan: the plan of caches created without one.
        @param defaultCluster: the cluster of caches created without one.
        @param clusters: the names of the configured clusters (any
            container); L{None} accepts any name.
        @param maxCredentials: credentials a cache may have, its primary
            included.
        """
        self.maxCredentials = maxCredentials
        self.engine = engine
        self._clock = clock
        self.plans = dict(plans)
        self.defaultPlan = defaultPlan
        self.defaultCluster = defaultCluster
        self.clusters = None if clusters is None else frozenset(clusters)

    # -- helpers

    def _checkPlan(self, slug):
        if slug not in self.plans:
            raise UnknownPlan(slug, sorted(self.plans))

    def _checkCluster(self, name):
        if self.clusters is not None and name not in self.clusters:
            raise UnknownCluster(name, sorted(self.clusters))

    def announceChange(self, conn):
        """
        Make a write visible to every process and node: bump the control
        version inside the write's transaction C{conn} (pollers compare
        it) and, on PostgreSQL, notify the listening nodes at commit.
        Every write to the control plane's tables calls it, those made
        outside this class (provisioning records) included.
        """
        conn.execute(
            schema.control_version.update()
            .where(schema.control_version.c.id == schema.VERSION_ROW)
            .values(version=schema.control_version.c.version + 1)
        )
        if conn.dialect.name == "postgresql":
            # other nodes LISTEN (memcachier.cluster.membership): they reload
            # at commit instead of at their next poll
            conn.execute(sa.text("NOTIFY memcachier_control"))

    def _cacheRow(self, conn, cacheId):
        row = conn.execute(
            schema.caches.select().where(schema.caches.c.id == cacheId)
        ).first()
        if row is None:
            raise UnknownCache(cacheId)
        return row

    def _credentialRow(self, conn, username):
        row = conn.execute(
            schema.credentials.select().where(schema.credentials.c.username == username)
        ).first()
        if row is None:
            raise UnknownCredential(username)
        return row

    def _freshUsername(self, conn):
        c = schema.credentials.c
        for _ in range(_ATTEMPTS):
            username = generateUsername()
            taken = conn.execute(
                sa.select(c.id).where(c.username == username)
            ).first()
            if taken is None:
                return username
        raise RuntimeError("could not find a free username")  # pragma: no cover

    def _insertCredential(self, conn, cacheId, write, flush, api, primary):
        username = self._freshUsername(conn)
        password = generatePassword()
        result = conn.execute(
            schema.credentials.insert().values(
                cache_id=cacheId,
                username=username,
                password=password,
                write_capability=write,
                flush_capability=flush,
                api_capability=api,
                primary=primary,
            )
        )
        return Credential(
            id=result.inserted_primary_key[0],
            cache_id=cacheId,
            username=username,
            password=password,
            write=write,
            flush=flush,
            api=api,
            primary=primary,
        )

    def _retrying(self, work):
        """
        Run C{work(conn)} in a transaction, again if another writer took a
        generated name or username in the meantime.
        """
        for attempt in range(_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except sa.exc.IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise

    # -- reading

    def version(self):
        """
        @return: the current control version, an L{int} that every write
            increases.
        """
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(schema.control_version.c.version).where(
                    schema.control_version.c.id == schema.VERSION_ROW
                )
            ).scalar_one()

    def snapshot(self):
        """
        Read everything, for the in-memory index.

        The version is read first, so the rows are at least as new as it:
        a write landing in between makes the next poll reload again rather
        than be missed.

        @rtype: L{Snapshot}
        """
        with self.engine.begin() as conn:
            version = conn.execute(
                sa.select(schema.control_version.c.version).where(
                    schema.control_version.c.id == schema.VERSION_ROW
                )
            ).scalar_one()
            caches = [
                _cacheFromRow(r)
                for r in conn.execute(schema.caches.select().order_by(schema.caches.c.id))
            ]
            credentials = [
                _credentialFromRow(r)
                for r in conn.execute(
                    schema.credentials.select().order_by(schema.credentials.c.id)
                )
            ]
            flushes = {
                r.cache_id: FlushGeneration(r.generation, float(r.flush_at))
                for r in conn.execute(schema.flush_generations.select())
            }
        return Snapshot(version, caches, credentials, flushes)

    def recordFlush(self, cacheId, flushAt, requestedAt):
        """
        Record a flush of a cache as its next generation, for every node
        to apply.

        The flush time kept is the latest one, except that a flush replaces
        a delayed one still to come (as a second C{flush_all} does in
        memcached).

        @param flushAt: wall-clock seconds from which items stored before
            are invalid.
        @param requestedAt: wall-clock seconds of the request.
        @return: the recorded L{FlushGeneration}.
        @raise UnknownCache: no such cache.
        """
        table = schema.flush_generations

        def work(conn):
            self._cacheRow(conn, cacheId)
            row = conn.execute(
                sa.select(table.c.generation, table.c.flush_at)
                .where(table.c.cache_id == cacheId)
                .with_for_update()
            ).first()
            if row is None:
                recorded = FlushGeneration(1, flushAt)
                conn.execute(table.insert().values(
                    cache_id=cacheId, generation=1, flush_at=flushAt
                ))
            else:
                at = flushAt if row.flush_at > requestedAt else max(row.flush_at, flushAt)
                recorded = FlushGeneration(row.generation + 1, at)
                conn.execute(
                    table.update().where(table.c.cache_id == cacheId)
                    .values(generation=recorded.generation, flush_at=at)
                )
            self.announceChange(conn)
            return recorded

        return self._retrying(work)

    def listCaches(self):
        """
        @return: every cache, by id.
        @rtype: L{list} of L{Cache}
        """
        with self.engine.connect() as conn:
            return [
                _cacheFromRow(r)
                for r in conn.execute(schema.caches.select().order_by(schema.caches.c.id))
            ]

    def getCache(self, cacheId):
        """
        @rtype: L{Cache}
        @raise UnknownCache: no such cache.
        """
        with self.engine.connect() as conn:
            return _cacheFromRow(self._cacheRow(conn, cacheId))

    def listCredentials(self, cacheId):
        """
        @return: the credentials of a cache, the primary first.
        @rtype: L{list} of L{Credential}
        @raise UnknownCache: no such cache.
        """
        c = schema.credentials.c
        with self.engine.connect() as conn:
            self._cacheRow(conn, cacheId)
            rows = conn.execute(
                schema.credentials.select()
                .where(c.cache_id == cacheId)
                .order_by(c.primary.desc(), c.id)
            )
            return [_credentialFromRow(r) for r in rows]

    def getCredential(self, username):
        """
        @rtype: L{Credential}
        @raise UnknownCredential: no such username.
        """
        with self.engine.connect() as conn:
            return _credentialFromRow(self._credentialRow(conn, username))

    # -- caches

    def createCache(self, name=None, plan=None, cluster=None, label=None, uuid=None):
        """
        Create a cache with a primary credential holding every capability.

        @param name: unique name; generated (C{mc-...}) if L{None}.
        @param plan: plan slug; the default plan if L{None}.
        @param cluster: cluster name; the default cluster if L{None}.
        @param label: free text for operators; the name if L{None}.
        @param uuid: the cache's uuid (Heroku's resource id); a random
            one if L{None}.
        @return: a 2-tuple of the new L{Cache} and its primary L{Credential}.
        @raise UnknownPlan: C{plan} is not configured.
        @raise UnknownCluster: C{cluster} is not configured.
        @raise DuplicateCacheName: C{name} is taken.
        """
        plan = self.defaultPlan if plan is None else plan
        cluster = self.defaultCluster if cluster is None else cluster
        self._checkPlan(plan)
        self._checkCluster(cluster)
        now = self._clock.seconds()

        def work(conn):
            cacheName = name
            c = schema.caches.c
            if cacheName is None:
                for _ in range(_ATTEMPTS):  # pragma: no branch
                    cacheName = generateCacheName()
                    if conn.execute(sa.select(c.id).where(c.name == cacheName)).first() is None:
                        break
            elif conn.execute(sa.select(c.id).where(c.name == cacheName)).first() is not None:
                raise DuplicateCacheName(cacheName)
            values = dict(
                name=cacheName,
                label=cacheName if label is None else label,
                plan=plan,
                enabled=True,
                cluster=cluster,
                sso_secret=generateSsoSecret(),
                created_at=now,
                last_active=now,
                uuid=str(uuidModule.uuid4()) if uuid is None else uuid,
            )
            result = conn.execute(schema.caches.insert().values(**values))
            cacheId = result.inserted_primary_key[0]
            credential = self._insertCredential(conn, cacheId, True, True, True, True)
            self.announceChange(conn)
            return Cache(id=cacheId, **values), credential

        try:
            cache, credential = self._retrying(work)
        except sa.exc.IntegrityError:
            if name is not None:
                raise DuplicateCacheName(name)
            raise  # pragma: no cover
        self._log.info(
            "created cache {cacheId} {name!r} on plan {plan}",
            event="cache_created",
            cacheId=cache.id,
            name=cache.name,
            plan=plan,
        )
        return cache, credential

    def deleteCache(self, cacheId):
        """
        Delete a cache and its credentials.

        @raise UnknownCache: no such cache.
        """
        with self.engine.begin() as conn:
            self._cacheRow(conn, cacheId)
            # ON DELETE CASCADE does this too; saying it keeps SQLite
            # connections made without the foreign-keys pragma honest.
            conn.execute(
                schema.credentials.delete().where(schema.credentials.c.cache_id == cacheId)
            )
            conn.execute(
                schema.flush_generations.delete()
                .where(schema.flush_generations.c.cache_id == cacheId)
            )
            conn.execute(schema.caches.delete().where(schema.caches.c.id == cacheId))
            self.announceChange(conn)
        self._log.info("deleted cache {cacheId}", event="cache_deleted", cacheId=cacheId)

    def _updateCache(self, cacheId, **values):
        with self.engine.begin() as conn:
            result = conn.execute(
                schema.caches.update().where(schema.caches.c.id == cacheId).values(**values)
            )
            if result.rowcount == 0:
                raise UnknownCache(cacheId)
            self.announceChange(conn)
            return _cacheFromRow(self._cacheRow(conn, cacheId))

    def setEnabled(self, cacheId, enabled):
        """
        Enable or disable a cache; a disabled cache refuses authentication.

        @return: the updated L{Cache}.
        @raise UnknownCache: no such cache.
        """
        cache = self._updateCache(cacheId, enabled=bool(enabled))
        self._log.info(
            "cache {cacheId} {state}",
            event="cache_enabled" if enabled else "cache_disabled",
            cacheId=cacheId,
            state="enabled" if enabled else "disabled",
        )
        return cache

    def setPlan(self, cacheId, slug):
        """
        Move a cache to another plan.

        @return: the updated L{Cache}.
        @raise UnknownPlan: C{slug} is not configured.
        @raise UnknownCache: no such cache.
        """
        self._checkPlan(slug)
        cache = self._updateCache(cacheId, plan=slug)
        self._log.info(
            "cache {cacheId} moved to plan {plan}", event="plan_changed", cacheId=cacheId, plan=slug
        )
        return cache

    def setCluster(self, cacheId, name):
        """
        Move a cache to another cluster.

        @return: the updated L{Cache}.
        @raise UnknownCluster: C{name} is not configured.
        @raise UnknownCache: no such cache.
        """
        self._checkCluster(name)
        with self.engine.begin() as conn:
            before = self._cacheRow(conn, cacheId)
            conn.execute(
                schema.caches.update().where(schema.caches.c.id == cacheId).values(cluster=name)
            )
            if before.cluster != name:
                self._queueHerokuServers(conn, cacheId)
            self.announceChange(conn)
            return _cacheFromRow(self._cacheRow(conn, cacheId))

    def _queueHerokuServers(self, conn, cacheId):
        """
        A cache moved: if Heroku provisioned it, queue a push of its config
        vars (the new C{MEMCACHIER_SERVERS}) in the move's own transaction,
        exactly as a promotion is queued
        (L{memcachier.heroku.records.HerokuRecords.recordPromotion}): older
        pending pushes are superseded, and the Heroku sync service sends it
        with retries.  Every door moves a cache through L{setCluster} (the
        API, a plan change, C{memcachier-admin} in another process), so
        none is missed, and a move is never committed without its push.
        """
        t, p, c = schema.heroku_resources, schema.heroku_config_pushes, schema.credentials
        resource = conn.execute(
            sa.select(t.c.id).where(t.c.cache_id == cacheId, t.c.deleted_at.is_(None))
        ).first()
        primary = conn.execute(
            sa.select(c.c.username).where(c.c.cache_id == cacheId)
            .order_by(c.c.primary.desc(), c.c.id).limit(1)
        ).scalar()
        if resource is None or primary is None:
            return
        now = self._clock.seconds()
        conn.execute(
            p.update().where(p.c.resource_id == resource.id, p.c.state == "pending")
            .values(state="superseded", finished_at=now)
        )
        conn.execute(t.update().where(t.c.id == resource.id).values(config_username=primary))
        conn.execute(p.insert().values(
            resource_id=resource.id, username=primary, state="pending", attempts=0,
            next_attempt_at=now, created_at=now,
        ))
        self._log.info(
            "queued a config var push of the servers of cache {cacheId} for Heroku",
            event="heroku_servers_queued", cacheId=cacheId,
        )

    def setLabel(self, cacheId, label):
        """
        Change a cache's label.

        @return: the updated L{Cache}.
        @raise UnknownCache: no such cache.
        """
        return self._updateCache(cacheId, label=label)

    def rotateSso(self, cacheId):
        """
        Replace a cache's SSO secret, invalidating dashboard links signed
        with the old one.

        @return: the new secret (L{str}).
        @raise UnknownCache: no such cache.
        """
        return self._updateCache(cacheId, sso_secret=generateSsoSecret()).sso_secret

    def touchActive(self, ids, when=None):
        """
        Record when caches were last active.  A time never moves
        C{last_active} backwards, and unknown ids are ignored (a cache
        deleted meanwhile).

        @param ids: cache ids all active at C{when}, or a mapping of cache
            id to the seconds it was last active (then C{when} is unused).
        @param when: clock seconds; now if L{None}.
        @return: how many caches were updated.
        @rtype: L{int}
        """
        if isinstance(ids, Mapping):
            times = dict(ids)
        else:
            when = self._clock.seconds() if when is None else when
            times = {cacheId: when for cacheId in ids}
        if not times:
            return 0
        c = schema.caches.c
        updated = 0
        with self.engine.begin() as conn:
            for cacheId, seconds in times.items():
                result = conn.execute(
                    schema.caches.update()
                    .where(c.id == cacheId, c.last_active < seconds)
                    .values(last_active=seconds)
                )
                updated += result.rowcount
            if updated:
                self.announceChange(conn)
        return updated

    # -- credentials

    def createCredential(self, cacheId, write=True, flush=True, api=True):
        """
        Add a (non-primary) credential to a cache.

        @rtype: L{Credential}
        @raise UnknownCache: no such cache.
        @raise LimitReached: the cache has C{maxCredentials} already.
        """

        def work(conn):
            self._cacheRow(conn, cacheId)
            checkLimit(
                conn, schema.credentials, cacheId, self.maxCredentials, "credentials",
                "credentials",
            )
            credential = self._insertCredential(
                conn, cacheId, bool(write), bool(flush), bool(api), False
            )
            self.announceChange(conn)
            return credential

        credential = self._retrying(work)
        self._log.info(
            "created credential {username} for cache {cacheId}",
            username=credential.username,
            cacheId=cacheId,
        )
        return credential

    def deleteCredential(self, username):
        """
        Delete a credential; connections already authenticated with it are
        the runtime's business.

        @raise UnknownCredential: no such username.
        @raise CannotDeletePrimary: it is its cache's primary credential.
        """
        with self.engine.begin() as conn:
            row = self._credentialRow(conn, username)
            if row.primary:
                raise CannotDeletePrimary(username)
            conn.execute(schema.credentials.delete().where(schema.credentials.c.id == row.id))
            self.announceChange(conn)
        self._log.info("deleted credential {username}", username=username)

    def promoteCredential(self, username):
        """
        Make a credential its cache's primary one (the one in
        C{MEMCACHIER_USERNAME}); the previous primary stays as an ordinary
        credential.

        @return: the promoted L{Credential}.
        @raise UnknownCredential: no such username.
        """
        c = schema.credentials.c
        with self.engine.begin() as conn:
            row = self._credentialRow(conn, username)
            conn.execute(
                schema.credentials.update()
                .where(c.cache_id == row.cache_id, c.id != row.id)
                .values(primary=False)
            )
            conn.execute(schema.credentials.update().where(c.id == row.id).values(primary=True))
            self.announceChange(conn)
            return _credentialFromRow(self._credentialRow(conn, username))

    def updateCredential(self, username, write=None, flush=None, api=None):
        """
        Change a credential's capabilities; L{None} leaves one as it is.

        @return: the updated L{Credential}.
        @raise UnknownCredential: no such username.
        """
        values = {}
        if write is not None:
            values["write_capability"] = bool(write)
        if flush is not None:
            values["flush_capability"] = bool(flush)
        if api is not None:
            values["api_capability"] = bool(api)
        with self.engine.begin() as conn:
            row = self._credentialRow(conn, username)
            if values:
                conn.execute(
                    schema.credentials.update()
                    .where(schema.credentials.c.id == row.id)
                    .values(**values)
                )
                self.announceChange(conn)
            return _credentialFromRow(self._credentialRow(conn, username))


class AsyncControlPlane:
    """
    L{ControlPlane} for code on the reactor: the same methods, each run in
    a thread pool, each returning a L{Deferred} of what the synchronous
    method returns (or failing with its exception).

    After a successful write the Deferred waits for every write observer
    (the in-memory index's C{refresh}), so a caller that got its answer
    finds the change already visible in this process.

    @ivar controlPlane: the wrapped L{ControlPlane}.
    """

    _log = Logger()

    def __init__(self, controlPlane, threadpool, reactor):
        """
        @param controlPlane: a L{ControlPlane}.
        @param threadpool: a L{twisted.python.threadpool.ThreadPool},
            started before the first call (see
            L{memcachier.tx.threads.ThreadPoolService}).  With an
            in-memory SQLite database it must have one thread.
        @param reactor: the reactor the results are delivered on.
        """
        self.controlPlane = controlPlane
        self._threads = ThreadPoolRunner(reactor, threadpool)
        self._writeObservers = []

    @property
    def plans(self):
        return self.controlPlane.plans

    def addWriteObserver(self, observer):
        """
        Call C{observer()} after every successful write made through this
        object; it may return a L{Deferred}, which the write's caller then
        waits for.  Its failures are logged, not passed on.
        """
        self._writeObservers.append(observer)

    def _run(self, method, /, *args, **kwargs):
        return self._threads.run(getattr(self.controlPlane, method), *args, **kwargs)

    @defer.inlineCallbacks
    def _write(self, method, /, *args, **kwargs):
        result = yield self._run(method, *args, **kwargs)
        for observer in list(self._writeObservers):
            try:
                yield observer()
            except Exception:
                self._log.failure("write observer {observer!r} failed", observer=observer)
        return result

    # Each method: see the L{ControlPlane} method of the same name.

    def version(self):
        return self._run("version")

    def snapshot(self):
        return self._run("snapshot")

    def listCaches(self):
        return self._run("listCaches")

    def getCache(self, cacheId):
        return self._run("getCache", cacheId)

    def listCredentials(self, cacheId):
        return self._run("listCredentials", cacheId)

    def getCredential(self, username):
        return self._run("getCredential", username)

    def createCache(self, name=None, plan=None, cluster=None, label=None, uuid=None):
        return self._write(
            "createCache", name=name, plan=plan, cluster=cluster, label=label, uuid=uuid
        )

    def deleteCache(self, cacheId):
        return self._write("deleteCache", cacheId)

    def setEnabled(self, cacheId, enabled):
        return self._write("setEnabled", cacheId, enabled)

    def setPlan(self, cacheId, slug):
        return self._write("setPlan", cacheId, slug)

    def setCluster(self, cacheId, name):
        return self._write("setCluster", cacheId, name)

    def setLabel(self, cacheId, label):
        return self._write("setLabel", cacheId, label)

    def rotateSso(self, cacheId):
        return self._write("rotateSso", cacheId)

    def touchActive(self, ids, when=None):
        return self._write("touchActive", ids, when)

    def createCredential(self, cacheId, write=True, flush=True, api=True):
        return self._write("createCredential", cacheId, write, flush, api)

    def deleteCredential(self, username):
        return self._write("deleteCredential", username)

    def promoteCredential(self, username):
        return self._write("promoteCredential", username)

    def updateCredential(self, username, write=None, flush=None, api=None):
        return self._write("updateCredential", username, write, flush, api)

    def recordFlush(self, cacheId, flushAt, requestedAt):
        return self._write("recordFlush", cacheId, flushAt, requestedAt)


def makeThreadPool(engine):
    """
    The thread pool for an L{AsyncControlPlane} on C{engine}: one thread
    for SQLite (a single writer at a time is all SQLite allows anyway, and
    an in-memory database has a single connection), a few for PostgreSQL.

    @rtype: L{ThreadPool}
    """
    maxthreads = 1 if schema.isSQLite(engine) else 4
    return ThreadPool(minthreads=1, maxthreads=maxthreads, name="memcachier-control")
