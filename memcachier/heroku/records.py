# -*- test-case-name: tests.unit.test_provisioning -*-
"""
The records of Heroku-provisioned caches: L{HerokuRecords} keeps the
Heroku side of a cache (the resource uuid, on which provisioning is
idempotent since Heroku delivers at least once; the oauth tokens; one row
per config var push that follows a credential promotion or a move to
another cluster), synchronously
like L{memcachier.control.repository.ControlPlane}.
L{AsyncHerokuRecords} runs it in the control plane's thread pool.
"""

from typing import Any, Callable, Generator, List, Optional, Tuple

import attr
import sqlalchemy as sa
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from memcachier.control import schema
from memcachier.control.repository import ControlPlane, ControlPlaneError, UnknownCache
from memcachier.tx.threads import ThreadPoolRunner


class UnknownResource(ControlPlaneError):
    """
    No Heroku resource has this uuid.
    """

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        super().__init__(f"no resource {uuid!r}")


class ResourceGone(ControlPlaneError):
    """
    The Heroku resource was deprovisioned.
    """

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        super().__init__(f"resource {uuid!r} was deprovisioned")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class HerokuResource:
    """
    A cache's Heroku side (a row of C{heroku_resources}).
    """

    id: int
    uuid: str
    cache_id: Optional[int]
    app_name: str
    region: str
    created_at: float
    deleted_at: Optional[float]
    grant_code: Optional[str] = attr.ib(repr=False)
    grant_expires_at: Optional[float]
    access_token: Optional[str] = attr.ib(repr=False)
    refresh_token: Optional[str] = attr.ib(repr=False)
    token_expires_at: Optional[float]
    token_error: Optional[str]
    token_claimed_until: Optional[float]
    config_username: Optional[str]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ConfigPush:
    """
    One config var update sent (or to send) to Heroku's Platform API after
    a promotion (a row of C{heroku_config_pushes}).
    """

    id: int
    resource_id: int
    username: str
    state: str
    attempts: int
    next_attempt_at: float
    last_status: Optional[int]
    last_error: Optional[str]
    created_at: float
    finished_at: Optional[float]


PENDING, DONE, SUPERSEDED = "pending", "done", "superseded"


def _resource(row: Any) -> "HerokuResource":
    return HerokuResource(**{f.name: getattr(row, f.name) for f in attr.fields(HerokuResource)})


def _push(row: Any) -> "ConfigPush":
    return ConfigPush(**{f.name: getattr(row, f.name) for f in attr.fields(ConfigPush)})


def _clip(text: object, limit: int = 1000) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


class HerokuRecords:
    """
    The provisioning tables: synchronous, one transaction per method.
    """

    _log = Logger()

    def __init__(self, controlPlane: ControlPlane, clock: IReactorTime) -> None:
        """
        @param controlPlane: the synchronous
            L{memcachier.control.repository.ControlPlane} (caches are made
            and deleted through it).
        @param clock: provides C{seconds()}.
        """
        self.controlPlane = controlPlane
        self.engine = controlPlane.engine
        self._clock = clock

    # -- resources

    def herokuResource(self, uuid: str) -> Optional[HerokuResource]:
        """
        @return: the L{HerokuResource} of C{uuid} (deprovisioned too), or
            L{None}.
        """
        t = schema.heroku_resources
        with self.engine.connect() as conn:
            row = conn.execute(t.select().where(t.c.uuid == uuid)).first()
        return None if row is None else _resource(row)

    def storedResource(self, uuid: str) -> HerokuResource:
        """
        @return: the L{HerokuResource} of C{uuid}, which was just written.
        """
        resource = self.herokuResource(uuid)
        assert resource is not None, uuid
        return resource

    def herokuResources(self) -> List[HerokuResource]:
        """
        @return: every live (not deprovisioned) L{HerokuResource}, by id.
        """
        t = schema.heroku_resources
        with self.engine.connect() as conn:
            rows = conn.execute(t.select().where(t.c.deleted_at.is_(None)).order_by(t.c.id))
            return [_resource(r) for r in rows]

    def herokuProvision(
        self, uuid: str, plan: str, cluster: str, appName: str = "", region: str = "",
        grantCode: Optional[str] = None, grantExpiresAt: Optional[float] = None,
    ) -> Tuple[HerokuResource, bool]:
        """
        Create a cache for a Heroku resource, or find the one made for the
        same uuid before.

        @return: a 2-tuple: the L{HerokuResource} and whether it was made
            now.
        @raise ResourceGone: the uuid was deprovisioned (or its cache
            deleted).
        @raise memcachier.control.repository.UnknownPlan: unknown C{plan}.
        """
        existing = self.herokuResource(uuid)
        if existing is None:
            cache, credential = self.controlPlane.createCache(
                plan=plan, cluster=cluster, label=appName or None
            )
            t = schema.heroku_resources
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        t.insert().values(
                            uuid=uuid,
                            cache_id=cache.id,
                            app_name=appName,
                            region=region,
                            created_at=self._clock.seconds(),
                            grant_code=grantCode,
                            grant_expires_at=grantExpiresAt,
                            config_username=credential.username,
                        )
                    )
                    # The cache takes Heroku's uuid (SSO logins name it),
                    # once this call has won the uuid.
                    conn.execute(
                        schema.caches.update()
                        .where(schema.caches.c.id == cache.id)
                        .values(uuid=uuid)
                    )
                    self.controlPlane.announceChange(conn)
            except sa.exc.IntegrityError:
                # The same call delivered twice at once: the other one won.
                self.controlPlane.deleteCache(cache.id)
            else:
                self._log.info(
                    "heroku resource {uuid} provisioned as cache {cacheId} (plan {plan})",
                    uuid=uuid,
                    cacheId=cache.id,
                    plan=plan,
                )
                return self.storedResource(uuid), True
            existing = self.storedResource(uuid)
        if existing.deleted_at is not None or existing.cache_id is None:
            # Deprovisioned, or its cache deleted by an operator.
            raise ResourceGone(uuid)
        return existing, False

    def liveResource(self, uuid: str) -> HerokuResource:
        """
        @rtype: L{HerokuResource}
        @raise UnknownResource: never provisioned.
        @raise ResourceGone: deprovisioned (or its cache deleted).
        """
        resource = self.herokuResource(uuid)
        if resource is None:
            raise UnknownResource(uuid)
        if resource.deleted_at is not None or resource.cache_id is None:
            raise ResourceGone(uuid)
        return resource

    def herokuDeprovision(self, uuid: str) -> None:
        """
        Delete a resource's cache and credentials; the resource is kept as
        deprovisioned.

        @raise UnknownResource: never provisioned.
        @raise ResourceGone: deprovisioned already.
        """
        resource = self.herokuResource(uuid)
        if resource is None:
            raise UnknownResource(uuid)
        if resource.deleted_at is not None:
            raise ResourceGone(uuid)
        if resource.cache_id is not None:
            try:
                self.controlPlane.deleteCache(resource.cache_id)
            except UnknownCache:
                pass
        t = schema.heroku_resources
        with self.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(t.c.id == resource.id)
                .values(deleted_at=self._clock.seconds(), access_token=None, refresh_token=None)
            )
        self._log.info("heroku resource {uuid} deprovisioned", uuid=uuid)

    # -- oauth tokens

    def claimTokens(self, resourceId: int, seconds: float = 60.0) -> bool:
        """
        Take the tokens of a resource for an exchange or a refresh, unless
        another node holds them: a grant and a refresh token work once.

        @return: whether this caller holds them now (until
            L{storeTokens}, L{tokenFailed} or C{seconds}).
        """
        t = schema.heroku_resources
        now = self._clock.seconds()
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    t.update()
                    .where(
                        t.c.id == resourceId,
                        sa.or_(t.c.token_claimed_until.is_(None), t.c.token_claimed_until < now),
                    )
                    .values(token_claimed_until=now + seconds)
                ).rowcount
            )

    def storeTokens(
        self, resourceId: int, accessToken: str, refreshToken: Optional[str], expiresAt: float
    ) -> None:
        """
        Keep the tokens of an exchange or refresh; the grant is used up.
        """
        t = schema.heroku_resources
        values = dict(
            access_token=accessToken,
            token_expires_at=expiresAt,
            token_error=None,
            token_claimed_until=None,
            grant_code=None,
            grant_expires_at=None,
        )
        if refreshToken:
            values["refresh_token"] = refreshToken
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == resourceId).values(**values))

    def tokenFailed(self, resourceId: int, error: object, dropGrant: bool = False) -> None:
        """
        Record why an exchange or refresh failed; C{dropGrant} forgets a
        grant that can no longer work (expired, refused).
        """
        t = schema.heroku_resources
        values = dict(token_error=_clip(error), token_claimed_until=None)
        if dropGrant:
            values.update(grant_code=None, grant_expires_at=None)
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == resourceId).values(**values))

    # -- config var pushes

    def recordPromotion(self, resourceId: int, username: str) -> bool:
        """
        Note that C{username} became the primary credential of a resource's
        cache, and queue a push of its values, unless Heroku has them
        already or another process queued it first.

        @return: whether a push was queued.
        """
        t, p = schema.heroku_resources, schema.heroku_config_pushes
        now = self._clock.seconds()
        with self.engine.begin() as conn:
            moved = conn.execute(
                t.update()
                .where(
                    t.c.id == resourceId,
                    t.c.deleted_at.is_(None),
                    sa.or_(t.c.config_username.is_(None), t.c.config_username != username),
                )
                .values(config_username=username)
            ).rowcount
            if not moved:
                return False
            conn.execute(
                p.update()
                .where(p.c.resource_id == resourceId, p.c.state == PENDING)
                .values(state=SUPERSEDED, finished_at=now)
            )
            conn.execute(
                p.insert().values(
                    resource_id=resourceId,
                    username=username,
                    state=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        self._log.info(
            "queued a config var push of {username} for heroku resource {resourceId}",
            username=username,
            resourceId=resourceId,
        )
        return True

    def duePushes(self) -> List[Tuple[ConfigPush, HerokuResource]]:
        """
        @return: pending pushes due now, each with its live resource: a
            L{list} of (L{ConfigPush}, L{HerokuResource}).
        """
        t, p = schema.heroku_resources, schema.heroku_config_pushes
        now = self._clock.seconds()
        query = (
            sa.select(p, *[c.label("r_" + c.name) for c in t.c])
            .join(t, t.c.id == p.c.resource_id)
            .where(p.c.state == PENDING, p.c.next_attempt_at <= now, t.c.deleted_at.is_(None))
            .order_by(p.c.id)
        )
        found = []
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                resource = HerokuResource(
                    **{f.name: getattr(row, "r_" + f.name) for f in attr.fields(HerokuResource)}
                )
                found.append((_push(row), resource))
        return found

    def nextPushAt(self) -> Optional[float]:
        """
        @return: when the earliest pending push is due, or L{None}.
        """
        p = schema.heroku_config_pushes
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(p.c.next_attempt_at)).where(p.c.state == PENDING)
            ).scalar()

    def claimPush(self, pushId: int, seconds: float = 60.0) -> bool:
        """
        Take a due push for one attempt, unless another node took it: its
        next attempt moves C{seconds} away, so only one node sends it.

        @return: whether this caller holds it.
        """
        p = schema.heroku_config_pushes
        now = self._clock.seconds()
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    p.update()
                    .where(p.c.id == pushId, p.c.state == PENDING, p.c.next_attempt_at <= now)
                    .values(next_attempt_at=now + seconds)
                ).rowcount
            )

    def pushSucceeded(self, pushId: int, status: Optional[int]) -> None:
        p = schema.heroku_config_pushes
        now = self._clock.seconds()
        with self.engine.begin() as conn:
            conn.execute(
                p.update()
                .where(p.c.id == pushId)
                .values(
                    state=DONE,
                    attempts=p.c.attempts + 1,
                    last_status=status,
                    last_error=None,
                    finished_at=now,
                )
            )

    def pushFailed(
        self, pushId: int, status: Optional[int], error: object, retryAt: float
    ) -> None:
        """
        Record a failed attempt and when to try again.
        """
        p = schema.heroku_config_pushes
        with self.engine.begin() as conn:
            conn.execute(
                p.update()
                .where(p.c.id == pushId)
                .values(
                    attempts=p.c.attempts + 1,
                    last_status=status,
                    last_error=_clip(error),
                    next_attempt_at=retryAt,
                )
            )

    def cacheCluster(self, cacheId: int) -> Optional[str]:
        """
        @return: the cluster a cache is on in the database (which the
            control index of this node may not show yet), or L{None} if
            it is gone.
        """
        t = schema.caches
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.c.cluster).where(t.c.id == cacheId)).scalar()

    def pushes(self, uuid: str) -> List[ConfigPush]:
        """
        @return: every push of a resource, oldest first.
        @rtype: L{list} of L{ConfigPush}
        """
        t, p = schema.heroku_resources, schema.heroku_config_pushes
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(p).join(t, t.c.id == p.c.resource_id).where(t.c.uuid == uuid).order_by(p.c.id)
            )
            return [_push(r) for r in rows]


class AsyncHerokuRecords:
    """
    L{HerokuRecords} on the reactor: each method runs in the control
    plane's thread pool and returns a L{Deferred}.  Methods that create or
    delete caches then wait for C{afterWrite} (the control index's
    C{refresh}), so the change is in force on this node's memcache port
    when their Deferred fires.
    """

    _log = Logger()

    _WRITES_CACHES = frozenset({"herokuProvision", "herokuDeprovision"})

    def __init__(
        self, records: HerokuRecords, threadpool: Any, reactor: Any,
        afterWrite: Optional[Callable[[], Any]] = None,
    ) -> None:
        self.records = records
        self._threads = ThreadPoolRunner(reactor, threadpool)
        self._afterWrite = afterWrite

    @defer.inlineCallbacks
    def _call(
        self, method: str, *args: Any, **kwargs: Any
    ) -> Generator[defer.Deferred[Any], Any, Any]:
        result = yield self._threads.run(getattr(self.records, method), *args, **kwargs)
        if method in self._WRITES_CACHES and self._afterWrite is not None:
            yield self._afterWrite()
        return result

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(HerokuRecords, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)
