# -*- test-case-name: tests.unit.test_provisioning -*-
"""
The provisioning API, for platforms that are not Heroku: create a cache
(with its first credential), change its plan, delete it.  Same rules as
Heroku's partner API (L{memcachier.control.provisioning.Provisioner}).

It takes the operator's bearer token (C{[provisioning] token}); with no
token configured the routes answer 404.  It lives in the analytics API's
Klein app and OpenAPI document, with its own security scheme.
"""

import hmac
from typing import Any, Dict, Optional

from memcachier.control.provisioning import Provisioner
from memcachier.control.repository import DuplicateCacheName, UnknownCache, UnknownPlan
from memcachier.web.common import (
    NO_OBJECT,
    ApiError,
    emptyResponse,
    jsonResponse,
    parseCacheId,
    readJSONObject,
    requireNoBody,
    route,
)
from memcachier.web.openapi import _ref

_CHALLENGE = {b"WWW-Authenticate": b'Bearer realm="memcachier-provisioning"'}

#: What POST takes: all optional.
CREATE_FIELDS = ("plan", "label", "name")


def bearerToken(request: Any) -> Optional[bytes]:
    """
    The token of an C{Authorization: Bearer ...} header, or L{None}.

    @rtype: L{bytes} or L{None}
    """
    header = request.getHeader(b"Authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def checkBearer(request: Any, expected: str, what: str) -> None:
    """
    Refuse a request without the bearer token C{expected} (L{str}).

    @param what: the feature's name, for the message when it is off.
    @raise ApiError: 401 when the token is missing or wrong, or when
        C{expected} is empty (the feature is off: no token is right).
    """
    if not expected:
        raise ApiError(401, f"the {what} is off: no token is configured", _CHALLENGE)
    token = bearerToken(request)
    if token is None:
        raise ApiError(401, "a bearer token is required", _CHALLENGE)
    if not hmac.compare_digest(token, expected.encode("utf-8")):
        raise ApiError(401, "wrong bearer token", _CHALLENGE)


class ProvisioningAPI:
    """
    C{POST /api/v2/caches}, C{DELETE /api/v2/caches/<id>},
    C{PUT /api/v2/caches/<id>/plan}: a route group of
    L{memcachier.web.api.CacheAPI} with its own prefix.
    """

    routePrefix = "/api/v2/caches"
    openapiPrefix = "/api/v2/caches"

    def __init__(
        self, controlPlane: Any, index: Any, provisioner: Provisioner, settings: Any
    ) -> None:
        self.controlPlane = controlPlane
        self.index = index
        self.provisioner = provisioner
        self.settings = settings

    def _authorize(self, request):
        checkBearer(request, self.settings.provisioning.token, "provisioning API")

    def _body(self, request, fields):
        body = readJSONObject(request, fields, required=False, notObject=NO_OBJECT)
        for name, value in body.items():
            if not isinstance(value, str) or not value or len(value) > 128:
                raise ApiError(400, f"{name}: expected a non-empty string of at most 128 characters")
        return body

    def _cacheJSON(self, cache, **extra):
        return {
            "id": cache.id,
            "name": cache.name,
            "label": cache.label,
            "plan": cache.plan,
            "cluster_name": cache.cluster,
            "servers": self.provisioner.servers(cache),
            "config": self.provisioner.configVars(cache.id),
            **extra,
        }

    @route("", ["POST"])
    async def create(self, request: Any) -> bytes:
        self._authorize(request)
        body = self._body(request, CREATE_FIELDS)
        slug = body.get("plan", self.settings.caches.default_plan)
        try:
            cache, _ = await self.provisioner.createCache(
                slug, label=body.get("label"), name=body.get("name")
            )
        except UnknownPlan as e:
            raise ApiError(422, str(e))
        except DuplicateCacheName as e:
            raise ApiError(409, str(e))
        return jsonResponse(request, self._cacheJSON(cache), 201)

    @route("/<cacheId>", ["DELETE"])
    async def delete(self, request: Any, cacheId: str) -> bytes:
        self._authorize(request)
        cacheId = parseCacheId(cacheId)
        requireNoBody(request)
        try:
            await self.controlPlane.deleteCache(cacheId)
        except UnknownCache as e:
            raise ApiError(404, str(e))
        return emptyResponse(request, 204)

    @route("/<cacheId>/plan", ["PUT"])
    async def changePlan(self, request: Any, cacheId: str) -> bytes:
        self._authorize(request)
        cacheId = parseCacheId(cacheId)
        body = self._body(request, ("plan",))
        if "plan" not in body:
            raise ApiError(400, "plan: required")
        if self.index.cache(cacheId) is None:
            raise ApiError(404, f"no cache with id {cacheId}")
        try:
            cache, kept = await self.provisioner.changePlan(cacheId, body["plan"])
        except UnknownPlan as e:
            raise ApiError(422, str(e))
        except UnknownCache as e:
            raise ApiError(404, str(e))
        return jsonResponse(request, self._cacheJSON(cache, data_kept=kept))

    # -- the document

    def openapiPaths(self) -> Dict[str, Any]:
        def errors(*codes):
            texts = {
                400: "A malformed body or cache id.",
                401: "No bearer token, or a wrong one, or the provisioning API is off "
                "(no [provisioning] token).",
                404: "No such cache.",
                409: "The name is taken.",
                413: "The request body is too large.",
                422: "Unknown plan.",
            }
            return {
                str(code): {
                    "description": texts[code],
                    "content": {"application/json": {"schema": _ref("Error")}},
                }
                for code in codes
            }

        security = [{"provisioningToken": []}]
        cacheId = {
            "name": "cacheId",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        }
        created = {
            "description": "The cache, with its first (primary) credential in config.",
            "content": {"application/json": {"schema": _ref("ProvisionedCache")}},
            # What a created cache's id can be used for (stateful testers
            # follow these).
            "links": {
                name: {
                    "operationRef": "#/paths/"
                    + ("/api/v2/caches" + path).replace("~", "~0").replace("/", "~1")
                    + "/" + method,
                    "parameters": {"cacheId": "$response.body#/id"},
                }
                for name, method, path in (
                    ("ChangePlan", "put", "/{cacheId}/plan"),
                    ("DeleteCache", "delete", "/{cacheId}"),
                )
            },
        }
        string = {"type": "string", "minLength": 1, "maxLength": 128}
        plan = {"type": "string", "enum": sorted(self.settings.plans), "description": "A plan slug."}
        return {
            "": {
                "post": {
                    "summary": "Create a cache (with its first credential).",
                    "security": security,
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "plan": plan,
                                        "label": string,
                                        "name": string,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"201": created, **errors(400, 401, 409, 413, 422)},
                }
            },
            "/{cacheId}": {
                "delete": {
                    "summary": "Delete a cache and its credentials at once.",
                    "security": security,
                    "parameters": [cacheId],
                    "responses": {"204": {"description": "Deleted."}, **errors(400, 401, 404, 413)},
                }
            },
            "/{cacheId}/plan": {
                "put": {
                    "summary": "Change a cache's plan; between development and production "
                    "plans it moves to the other cluster kind and is emptied.",
                    "security": security,
                    "parameters": [cacheId],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["plan"],
                                    "properties": {"plan": plan},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The cache on its new plan; data_kept says whether "
                            "its items were kept.",
                            "content": {"application/json": {"schema": _ref("ProvisionedCache")}},
                        },
                        **errors(400, 401, 404, 413, 422),
                    },
                }
            },
        }


def makeProvisioning(
    controlPlane: Any, index: Any, registry: Any, settings: Any
) -> ProvisioningAPI:
    """
    Our own provisioning API (a route group of
    L{memcachier.web.api.CacheAPI}) and the L{Provisioner} of its rules,
    which Heroku's partner API shares (C{.provisioner}, see
    L{memcachier.heroku.api.makeHeroku}).

    @param controlPlane: the L{memcachier.control.repository.AsyncControlPlane}.
    @param index: the L{memcachier.control.index.ControlIndex}.
    @param registry: the L{memcachier.runtime.CacheRegistry}.
    @param settings: the L{memcachier.node.settings.Settings}.
    """
    provisioner = Provisioner(controlPlane, index, registry, settings)
    return ProvisioningAPI(controlPlane, index, provisioner, settings)
