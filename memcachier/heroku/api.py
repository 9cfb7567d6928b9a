# -*- test-case-name: tests.unit.test_heroku -*-
"""
Heroku's add-on partner API v3, the provider side, under
C{/heroku/resources}: provision (idempotent on the resource uuid), plan
change, deprovision.

Heroku calls with HTTP Basic C{<manifest id>:<api.password>} (C{[heroku]
id} and C{password}); an empty password turns these routes off (404).
Answers and refusals are JSON with a C{message}, as Heroku shows it to the
user.  Unknown JSON fields are accepted: Heroku adds fields over time.

The oauth grant of a provisioning is only recorded here; the
L{memcachier.heroku.sync.HerokuSync} service exchanges it in the
background, so provisioning never waits on Heroku's identity service.
"""

import hmac
from typing import Any, Dict, List, Optional, Tuple

from treq.client import HTTPClient
from twisted.application.service import IService
from twisted.logger import Logger
from twisted.web.client import Agent

from memcachier.control.provisioning import Provisioner
from memcachier.control.repository import ControlPlane, UnknownCache, UnknownPlan
from memcachier.heroku.manifest import CONFIG_VARS
from memcachier.heroku.records import (
    AsyncHerokuRecords,
    HerokuRecords,
    HerokuResource,
    ResourceGone,
    UnknownResource,
)
from memcachier.heroku.sync import HerokuPlatform, HerokuSync, parseExpiry
from memcachier.web.common import (
    NO_OBJECT,
    ApiError,
    JSONErrors,
    basicCredentials,
    emptyResponse,
    jsonResponse,
    readJSONObject,
)
from memcachier.web.router import Route

_CHALLENGE = {b"WWW-Authenticate": b'Basic realm="heroku"'}


def requireString(body: Dict[str, Any], name: str) -> str:
    """
    @return: C{body[name]}, a non-empty string.
    @raise ApiError: 400 naming the field.
    """
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{name}: expected a non-empty string")
    return value


class HerokuErrors(JSONErrors):
    """
    The partner API's errors: JSON with a C{message}, as Heroku shows it
    to the user.
    """

    _log = Logger()

    def __init__(self) -> None:
        super().__init__("message")

    def routingError(self, request: Any, error: Any) -> bytes:
        if error.code == 405 and error.valid_methods:
            request.setHeader(b"Allow", ", ".join(error.valid_methods).encode())
        return self.body(request, error.code, error.name)

    def unexpected(self, request: Any, failure: Any) -> bytes:
        self._log.failure("heroku partner API request failed", failure)
        return self.body(request, 500, "internal error")


class HerokuAPI:
    """
    The partner API's routes, a part of the site's router
    (L{memcachier.web.router.makeRouter}).
    """

    _log = Logger()

    def __init__(
        self, records: AsyncHerokuRecords, provisioner: Provisioner, settings: Any,
        sync: Optional[HerokuSync] = None,
    ) -> None:
        """
        @param records: the L{AsyncHerokuRecords}.
        @param provisioner: the L{Provisioner}.
        @param settings: L{memcachier.node.settings.Settings}.
        @param sync: the L{HerokuSync} to L{kick} after a provisioning
            (grant exchange), or L{None}.
        """
        self.records = records
        self.provisioner = provisioner
        self.settings = settings
        self.sync = sync
        self.errors = HerokuErrors()

    def endpoints(self) -> List[Route]:
        """
        The partner API's routes, for L{memcachier.web.router.makeRouter}.
        """
        return [
            ("/heroku/resources", ("POST",), self.provision, False),
            ("/heroku/resources/<uuid>", ("PUT",), self.changePlan, False),
            ("/heroku/resources/<uuid>", ("DELETE",), self.deprovision, False),
        ]

    # -- helpers

    def _authorize(self, request: Any) -> None:
        if not self.settings.heroku.password:
            raise ApiError(404, "the Heroku partner API is not enabled here")
        pair = basicCredentials(request)
        expected = (
            self.settings.heroku.id.encode("utf-8"),
            self.settings.heroku.password.encode("utf-8"),
        )
        if pair is None:
            raise ApiError(401, "authentication required", _CHALLENGE)
        user = hmac.compare_digest(pair[0], expected[0])
        password = hmac.compare_digest(pair[1], expected[1])
        if not (user and password):
            raise ApiError(401, "wrong add-on id or password", _CHALLENGE)

    def _plan(self, body: Dict[str, Any]) -> str:
        slug = requireString(body, "plan")
        # Heroku may send "memcachier:100" or just "100".
        prefix = self.settings.heroku.id + ":"
        if slug.startswith(prefix):
            slug = slug[len(prefix):]
        if slug not in self.settings.plans:
            raise ApiError(422, f"unknown plan {slug!r}; plans: {', '.join(self.settings.plans)}")
        return slug

    # -- routes

    async def provision(self, request: Any) -> bytes:
        self._authorize(request)
        body = readJSONObject(request, empty=None, notObject=NO_OBJECT)
        uuid = requireString(body, "uuid")
        if len(uuid) > 64:
            raise ApiError(400, "uuid: longer than 64 characters")
        slug = self._plan(body)
        grant = body.get("oauth_grant")
        code = expiresAt = None
        if isinstance(grant, dict) and isinstance(grant.get("code"), str):
            code = grant["code"][:512]
            expiresAt = parseExpiry(grant.get("expires_at"))
        name = body.get("name")
        name = name if isinstance(name, str) else ""
        region = body.get("region")
        region = region if isinstance(region, str) else ""
        cluster = self.provisioner.clusterFor(self.settings.plans[slug])
        try:
            resource, created = await self.records.herokuProvision(
                uuid, slug, cluster, name[:256], region[:128], code, expiresAt
            )
        except ResourceGone as e:
            raise ApiError(410, str(e))
        if created and self.sync is not None:
            self.sync.kick()
        config = self.provisioner.configVars(resource.cache_id)
        return jsonResponse(
            request,
            {
                "id": resource.uuid,
                "config": config,
                "message": f"Your cache is ready: {len(CONFIG_VARS)} config vars were set.",
            },
        )

    async def _live(self, uuid: str) -> HerokuResource:
        try:
            return await self.records.liveResource(uuid)
        except UnknownResource as e:
            raise ApiError(404, str(e))
        except ResourceGone as e:
            raise ApiError(410, str(e))

    async def changePlan(self, request: Any, uuid: str) -> bytes:
        self._authorize(request)
        body = readJSONObject(request, empty=None, notObject=NO_OBJECT)
        slug = self._plan(body)
        resource = await self._live(uuid)
        # liveResource raised ResourceGone for a resource without a cache
        assert resource.cache_id is not None
        changed: Tuple[Any, bool]
        try:
            changed = await self.provisioner.changePlan(resource.cache_id, slug)
        except UnknownCache:
            raise ApiError(410, f"resource {uuid!r} was deprovisioned")
        except UnknownPlan as e:
            raise ApiError(422, str(e))
        cache: Any
        kept: bool
        cache, kept = changed
        message = f"Your cache is now on plan {slug}"
        message += "; its data was kept." if kept else "; it moved to new servers and is empty."
        return jsonResponse(
            request, {"config": self.provisioner.configVars(cache.id), "message": message}
        )

    async def deprovision(self, request: Any, uuid: str) -> bytes:
        self._authorize(request)
        try:
            await self.records.herokuDeprovision(uuid)
        except UnknownResource as e:
            raise ApiError(404, str(e))
        except ResourceGone as e:
            raise ApiError(410, str(e))
        return emptyResponse(request, 204)


def makeHeroku(
    controlPlane: ControlPlane,
    pool: Any,
    index: Any,
    provisioner: Provisioner,
    settings: Any,
    reactor: Any,
    http: Any = None,
) -> Tuple[HerokuAPI, List[IService]]:
    """
    Heroku's side of a node: the partner API's routes and, when they are
    on (C{[heroku] password}), the L{HerokuSync} service that talks back
    to Heroku.

    @param controlPlane: the synchronous
        L{memcachier.control.repository.ControlPlane} (the records run it
        in C{pool}).
    @param pool: the control plane's thread pool.
    @param index: the L{memcachier.control.index.ControlIndex}.
    @param provisioner: the L{Provisioner} our own provisioning API uses.
    @param http: a treq C{HTTPClient} for Heroku's services; a real one on
        C{reactor} if L{None}.
    @return: the L{HerokuAPI} (for C{makeSite(heroku=...)}) and the
        services to start.
    """
    records = AsyncHerokuRecords(
        HerokuRecords(controlPlane, reactor), pool, reactor, afterWrite=index.refresh
    )
    services: List[IService] = []
    sync = None
    if settings.heroku.password:
        if http is None:
            http = HTTPClient(Agent(reactor))
        platform = HerokuPlatform(http, settings, reactor)
        sync = HerokuSync(
            records, index, provisioner, platform, reactor,
            interval=settings.database.poll_interval,
        )
        services.append(sync)
    return HerokuAPI(records, provisioner, settings, sync), services
