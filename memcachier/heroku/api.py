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
import json

from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException

from memcachier.control.provisioning import ResourceGone, UnknownResource
from memcachier.control.repository import UnknownCache, UnknownPlan
from memcachier.heroku.sync import parseExpiry
from memcachier.web.common import ApiError, basicCredentials, emptyResponse, jsonResponse, readBody

#: The config vars every provisioned cache gets, as the manifest declares.
CONFIG_VARS = ("MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD")

_CHALLENGE = {b"WWW-Authenticate": b'Basic realm="heroku"'}


def _message(request, code, message):
    return jsonResponse(request, {"message": message}, code)


def readObject(request):
    """
    The body as a JSON object (any members).

    @raise ApiError: 400 for anything else, 413 for a huge body.
    """
    data = readBody(request)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(400, f"malformed JSON body: {e}")
    if not isinstance(value, dict):
        raise ApiError(400, "expected a JSON object as the request body")
    return value


def requireString(body, name, required=True):
    """
    @return: C{body[name]}, a non-empty string (or L{None} when optional
        and absent).
    @raise ApiError: 400 naming the field.
    """
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{name}: expected a non-empty string")
    return value


def manifest(settings):
    """
    The add-on's C{addon-manifest.json}, from the configuration: the
    production URLs under C{[web] public_url}, the test ones (kensa's, on
    a developer's machine) on the web listener's port.

    @type settings: L{memcachier.node.settings.Settings}
    @rtype: L{dict}
    """
    from memcachier.node.settings import _endpointArgs

    base = settings.web.public_url
    args, kw = _endpointArgs(settings.web.listen)
    port = kw.get("port", args[1] if len(args) > 1 else "8080")
    scheme = "https" if args and args[0] == "ssl" else "http"
    local = f"{scheme}://localhost:{port}"
    return {
        "id": settings.heroku.id,
        "name": "MemCachier",
        "api": {
            "version": "3",
            "password": settings.heroku.password,
            "sso_salt": settings.heroku.sso_salt,
            "regions": ["us", "eu"],
            "requires": [],
            "config_vars": list(CONFIG_VARS),
            "production": {
                "base_url": base + "/heroku/resources",
                "sso_url": base + "/sso/login",
            },
            "test": {
                "base_url": local + "/heroku/resources",
                "sso_url": local + "/sso/login",
            },
        },
    }


class HerokuAPI:
    """
    The partner API's routes.  Mount L{resource} at C{/heroku}.
    """

    _log = Logger()

    def __init__(self, records, provisioner, settings, sync=None):
        """
        @param records: an L{AsyncProvisioningRecords}.
        @param provisioner: the L{Provisioner}.
        @param settings: L{memcachier.node.settings.Settings}.
        @param sync: the L{HerokuSync} to L{kick} after a provisioning
            (grant exchange), or L{None}.
        """
        self.records = records
        self.provisioner = provisioner
        self.settings = settings
        self.sync = sync
        self.app = self._buildApp()

    def resource(self):
        return self.app.resource()

    def _buildApp(self):
        app = Klein()
        app.route("/resources", methods=["POST"])(self.provision)
        app.route("/resources/<uuid>", methods=["PUT"])(self.changePlan)
        app.route("/resources/<uuid>", methods=["DELETE"])(self.deprovision)

        @app.handle_errors(ApiError)
        def apiError(request, failure):
            for name, value in failure.value.headers.items():
                request.setHeader(name, value)
            return _message(request, failure.value.code, failure.value.message)

        @app.handle_errors(HTTPException)
        def httpError(request, failure):
            code = failure.value.code or 500
            if code == 405 and failure.value.valid_methods:
                request.setHeader(b"Allow", ", ".join(failure.value.valid_methods).encode())
            return _message(request, code, failure.value.name)

        @app.handle_errors(Exception)
        def unexpected(request, failure):
            self._log.failure("heroku partner API request failed", failure)
            return _message(request, 500, "internal error")

        return app

    # -- helpers

    def _authorize(self, request):
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

    def _plan(self, body):
        slug = requireString(body, "plan")
        # Heroku may send "memcachier:100" or just "100".
        prefix = self.settings.heroku.id + ":"
        if slug.startswith(prefix):
            slug = slug[len(prefix):]
        if slug not in self.settings.plans:
            raise ApiError(422, f"unknown plan {slug!r}; plans: {', '.join(self.settings.plans)}")
        return slug

    # -- routes

    async def provision(self, request):
        self._authorize(request)
        body = readObject(request)
        uuid = requireString(body, "uuid")
        if len(uuid) > 64:
            raise ApiError(400, "uuid: longer than 64 characters")
        slug = self._plan(body)
        grant = body.get("oauth_grant")
        code = expiresAt = None
        if isinstance(grant, dict) and isinstance(grant.get("code"), str):
            code = grant["code"][:512]
            expiresAt = parseExpiry(grant.get("expires_at"))
        name = body.get("name") if isinstance(body.get("name"), str) else ""
        region = body.get("region") if isinstance(body.get("region"), str) else ""
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

    async def _live(self, uuid):
        try:
            return await self.records.liveResource(uuid)
        except UnknownResource as e:
            raise ApiError(404, str(e))
        except ResourceGone as e:
            raise ApiError(410, str(e))

    async def changePlan(self, request, uuid):
        self._authorize(request)
        body = readObject(request)
        slug = self._plan(body)
        resource = await self._live(uuid)
        try:
            cache, kept = await self.provisioner.changePlan(resource.cache_id, slug)
        except UnknownCache:
            raise ApiError(410, f"resource {uuid!r} was deprovisioned")
        except UnknownPlan as e:
            raise ApiError(422, str(e))
        message = f"Your cache is now on plan {slug}"
        message += "; its data was kept." if kept else "; it moved to new servers and is empty."
        return jsonResponse(
            request, {"config": self.provisioner.configVars(cache.id), "message": message}
        )

    async def deprovision(self, request, uuid):
        self._authorize(request)
        try:
            await self.records.herokuDeprovision(uuid)
        except UnknownResource as e:
            raise ApiError(404, str(e))
        except ResourceGone as e:
            raise ApiError(410, str(e))
        return emptyResponse(request, 204)
