# -*- test-case-name: tests.unit.test_api -*-
"""
The OpenAPI 3 document of the analytics API v2, served at
C{/api/v2/openapi.json}.

L{corePaths} describes the routes of L{memcachier.web.api.CacheAPI};
other route groups describe theirs in their own C{openapiPaths()} and may
use the shared pieces here (L{errors}, L{SCHEMAS} references).  A unit test
checks that every route is in the document, and an integration test runs
schemathesis against the live server with it.
"""

from memcachier.web.common import MAX_BODY, MAX_ID
from memcachier.web.serialize import HELD_BACK, STATS_FIELDS


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _boolean(description):
    return {"type": "boolean", "description": description}


SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What went wrong."}},
    },
    "Credential": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id", "cache_id", "sasl_username", "sasl_password",
            "write_capability", "flush_capability", "api_capability", "primary",
        ],
        "properties": {
            "id": {"type": "integer"},
            "cache_id": {"type": "integer"},
            "sasl_username": {"type": "string"},
            "sasl_password": {"type": "string"},
            "write_capability": _boolean("May store, change and delete items."),
            "flush_capability": _boolean("May flush the cache (flush_all)."),
            "api_capability": _boolean("May use this API."),
            "primary": _boolean("The credential of MEMCACHIER_USERNAME."),
        },
    },
    "Capabilities": {
        "type": "object",
        "additionalProperties": False,
        "required": ["write_capability", "flush_capability", "api_capability"],
        "properties": {
            "write_capability": {"type": "boolean"},
            "flush_capability": {"type": "boolean"},
            "api_capability": {"type": "boolean"},
        },
    },
    "CapabilitiesBody": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "write_capability": {"type": "boolean"},
            "flush_capability": {"type": "boolean"},
            "api_capability": {"type": "boolean"},
        },
    },
    "CacheInfo": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id", "name", "label", "cache_type", "plan", "provider", "enabled",
            "cluster_name", "servers", "credentials", "can_switch",
            "can_manage_credentials", "can_update_capabilities",
        ],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "label": {"type": "string"},
            "cache_type": {"type": "string", "enum": ["memcachier"]},
            "plan": {"type": "integer", "description": "Memory of the plan, in bytes."},
            "provider": {"type": "string"},
            "enabled": {"type": "boolean"},
            "cluster_name": {"type": "string"},
            "servers": {"type": "array", "items": {"type": "string"}},
            "credentials": {"type": "array", "items": _ref("Credential")},
            "can_switch": _boolean("Another cluster of the same kind exists."),
            "can_manage_credentials": _boolean("False on development plans."),
            "can_update_capabilities": _boolean("False on development plans."),
            "uuid": {"type": "string", "description": "Heroku's resource id (or a random uuid)."},
            "plan_name": {"type": "string", "description": "The plan's slug."},
            "connection_limit": {
                "type": "integer", "description": "Concurrent connections the plan allows.",
            },
        },
    },
    # What the provisioning API (memcachier.web.provisioning) answers.
    "ProvisionedCache": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "name", "label", "plan", "cluster_name", "servers", "config"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "label": {"type": "string"},
            "plan": {"type": "string", "description": "The plan's slug."},
            "cluster_name": {"type": "string"},
            "servers": {"type": "array", "items": {"type": "string"}},
            "config": {
                "type": "object",
                "additionalProperties": False,
                "required": ["MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD"],
                "properties": {
                    "MEMCACHIER_SERVERS": {"type": "string"},
                    "MEMCACHIER_USERNAME": {"type": "string"},
                    "MEMCACHIER_PASSWORD": {"type": "string"},
                },
            },
            "data_kept": {"type": "boolean"},
        },
    },
    "Stats": {
        "type": "object",
        "additionalProperties": False,
        "required": [*STATS_FIELDS, HELD_BACK],
        "properties": {
            **{name: {"type": "integer", "minimum": 0} for name in STATS_FIELDS},
            HELD_BACK: {"type": "number", "minimum": 0, "description": "Beyond MemCachier's fields: "
                        "seconds the cache was held back by the fair share or its budgets, summed over "
                        "its servers."},
        },
    },
}

_MESSAGES = {
    400: "The cache ID is not a number, or the request is invalid.",
    401: "Missing or wrong credentials.",
    403: "The credential is of another cache or lacks the API capability, "
    "or (credential management) the cache is on a development plan.",
    404: "No such cache, or no such credential in this cache.",
    409: "The cache's state forbids it: no other cluster of its kind to switch to, "
    "the credential to delete is the primary one, the prefix is watched already, or the "
    "cache has as many credentials, watched prefixes, alerts or delivery configs as the "
    "node's [limits] allow.",
    413: f"The request body is larger than {MAX_BODY} bytes.",
}


def errors(*codes):
    """
    The error responses C{codes}, each a JSON L{SCHEMAS} C{Error}.

    @rtype: L{dict}
    """
    return {
        str(code): {
            "description": _MESSAGES[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code in codes
    }


def _json(description, schema, code="200"):
    return {code: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _empty(description, code):
    return {str(code): {"description": description}}


_USERNAME = {
    "name": "username",
    "in": "path",
    "required": True,
    "description": "The credential's sasl_username.",
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
}


#: What a created credential's username can be used for (OpenAPI links:
#: stateful testers follow them).
_CREDENTIAL_LINKS = {
    "UpdateCredential": ("patch", "/credentials/{username}"),
    "DeleteCredential": ("delete", "/credentials/{username}"),
    "PromoteCredential": ("post", "/credentials/primary/{username}"),
}


def _withLinks(responses, code, links):
    response = responses[code]
    response["links"] = {
        name: {
            "operationRef": "#/paths/"
            + ("/api/v2/caches/{cacheId}" + path).replace("~", "~0").replace("/", "~1")
            + "/"
            + method,
            "parameters": {
                "cacheId": "$request.path.cacheId",
                "username": "$response.body#/sasl_username",
            },
        }
        for name, (method, path) in links.items()
    }
    return responses


def _operation(summary, responses, parameters=(), body=None):
    operation = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    return operation


def corePaths():
    """
    Info, credentials, management and commands, relative to
    C{/api/v2/caches/{cacheId}}.

    @rtype: L{dict}
    """
    auth = (400, 401, 403)
    capabilitiesBody = {"content": {"application/json": {"schema": _ref("CapabilitiesBody")}}}
    return {
        "/info": {
            "get": _operation(
                "The cache, its plan, cluster, servers and credentials.",
                {**_json("A cache object.", _ref("CacheInfo")), **errors(*auth)},
            )
        },
        "/credentials": {
            "get": _operation(
                "The cache's credentials, the primary first.",
                {**_json("A list of credentials.", {"type": "array", "items": _ref("Credential")}),
                 **errors(*auth)},
            ),
            "post": _operation(
                "Create a credential. Capabilities left out of the (optional) body are true; "
                "409 once the cache has limits.credentials (20) of them.",
                {**_withLinks(_json("The new credential.", _ref("Credential"), "201"), "201", _CREDENTIAL_LINKS),
                 **errors(*auth, 409, 413)},
                body={**capabilitiesBody, "required": False},
            ),
        },
        "/credentials/{username}": {
            "patch": _operation(
                "Set a credential's capabilities; a capability left out becomes false.",
                {**_json("The credential's capabilities.", _ref("Capabilities")),
                 **errors(*auth, 404, 413)},
                [_USERNAME],
                body={**capabilitiesBody, "required": True},
            ),
            "delete": _operation(
                "Delete a credential (not the primary one: 409).",
                {**_empty("Deleted.", 200), **errors(*auth, 404, 409, 413)},
                [_USERNAME],
            ),
        },
        "/credentials/primary/{username}": {
            "post": _operation(
                "Make a credential the primary one.",
                {**_json("The promoted credential.", _ref("Credential")),
                 **errors(*auth, 404, 413)},
                [_USERNAME],
            )
        },
        "/rotate_sso": {
            "post": _operation(
                "Replace the dashboard SSO secret; links signed with the old one stop working.",
                {**_json("The new SSO secret.", {"type": "string"}), **errors(*auth, 413)},
            )
        },
        "/enable_cache": {
            "post": _operation(
                "Enable a disabled cache.",
                {**_empty("Enabled.", 200), **errors(*auth, 413)},
            )
        },
        "/switch_cluster": {
            "post": _operation(
                "Move the cache to the next cluster of the same kind; its data does not follow. "
                "409 when there is no other cluster of that kind.",
                {**_json("The new cluster's name.", {"type": "string"}), **errors(*auth, 409, 413)},
            )
        },
        "/flush": {
            "post": _operation(
                "Remove every item of the cache.",
                {**_empty("Flushed.", 204), **errors(*auth, 404, 413)},
            )
        },
        "/reset_stats": {
            "post": _operation(
                "Zero the cache's cumulative counters.",
                {**_empty("Reset.", 204), **errors(*auth, 404, 413)},
            )
        },
        "/stats": {
            "get": _operation(
                "The cache's counters, summed over its servers.",
                {**_json("Stats for this cache.", _ref("Stats")), **errors(*auth, 404)},
            )
        },
    }


def document(paths):
    """
    The whole document.

    @param paths: OpenAPI path items by absolute path (C{/api/v2/caches/{cacheId}/...}).
    @rtype: L{dict}
    """
    cacheId = {
        "name": "cacheId",
        "in": "path",
        "required": True,
        "description": "The cache's ID.",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    }
    withCacheId = {}
    for path, item in paths.items():
        item = dict(item)
        if "{cacheId}" in path:
            item["parameters"] = [cacheId] + list(item.get("parameters", ()))
        withCacheId[path] = item
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "memcachier analytics API",
            "version": "2",
            "description": (
                "MemCachier's analytics API v2. Every /api/v2/caches/{cacheId} path "
                "takes HTTP Basic authentication with a credential of that cache that "
                "has the API capability. Errors are JSON objects with an `error` message."
            ),
        },
        "security": [{"basicAuth": []}],
        "paths": {
            "/api/v2/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            **withCacheId,
        },
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                # The provisioning API's operator token ([provisioning] token).
                "provisioningToken": {"type": "http", "scheme": "bearer"},
            },
            "schemas": SCHEMAS,
        },
    }
