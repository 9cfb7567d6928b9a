# -*- test-case-name: tests.unit.test_analytics_web -*-
"""
C{introspection/...} routes of the API v2: recent logs, compound stats,
popular items, key stats and watched prefixes.
"""

import json

from twisted.internet.defer import maybeDeferred

from memcachier.analytics.repository import DuplicatePrefix, InvalidPrefix, UnknownPrefix
from memcachier.web.common import (
    NOT_FOUND,
    ApiError,
    emptyResponse,
    jsonResponse,
    readBody,
    requireNoBody,
    route,
)
from memcachier.web.insight import (
    SERIES_SCHEMA,
    TIME_PARAMETERS,
    answer,
    badQuery,
    jsonOperation,
    queryArgs,
)


def _prefixError(failure):
    error = failure.trap(UnknownPrefix, InvalidPrefix, DuplicatePrefix)
    raise ApiError(404 if error is UnknownPrefix else 400, str(failure.value))


def _prefixId(text):
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ApiError(400, f"the prefix id must be a number, not {text!r}")
    return int(text)


_NAMED = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "popularity"],
        "properties": {"name": {"type": "string"}, "popularity": {"type": "integer"}},
    },
}
POPULAR_SCHEMA = {
    "type": "object",
    "required": ["time_slice", "most_hit_keys", "most_missed_keys", "most_mutated_keys",
                 "popular_prefixes"],
    "properties": {
        "time_slice": {"type": "integer", "description": "Nanoseconds the figures cover."},
        "most_hit_keys": _NAMED,
        "most_missed_keys": _NAMED,
        "most_mutated_keys": _NAMED,
        "popular_prefixes": _NAMED,
    },
}
PREFIX_SCHEMA = {
    "type": "object",
    "required": ["id", "name"],
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
}
_PREFIX_ID = {
    "name": "prefixId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


class IntrospectionAPI:
    """
    The C{introspection} route group.
    """

    def __init__(self, auth, analytics):
        self.auth = auth
        self.analytics = analytics

    def _caller(self, request, cacheId):
        return self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)

    @route("/introspection/recent_logs", ["GET"])
    def recentLogs(self, request, cacheId):
        caller = self._caller(request, cacheId)
        return jsonResponse(request, self.analytics.recentLogs(caller.cacheId))

    @route("/introspection/compound_stats", ["GET"])
    def compoundStats(self, request, cacheId):
        caller = self._caller(request, cacheId)
        return answer(request, self.analytics.compoundStats, caller.cacheId, queryArgs(request))

    @route("/introspection/popular_items", ["GET"])
    def popularItems(self, request, cacheId):
        caller = self._caller(request, cacheId)
        return jsonResponse(request, self.analytics.popularItems(caller.cacheId))

    @route("/introspection/key_stats", ["GET"])
    def keyStats(self, request, cacheId):
        caller = self._caller(request, cacheId)
        return answer(
            request, self.analytics.keyStats, caller.cacheId, queryArgs(request).get("key")
        )

    @route("/introspection/prefixes", ["GET"])
    def listPrefixes(self, request, cacheId):
        caller = self._caller(request, cacheId)
        return self.analytics.listPrefixes(caller.cacheId).addCallback(
            lambda value: jsonResponse(request, value)
        )

    @route("/introspection/prefixes", ["POST"])
    def createPrefix(self, request, cacheId):
        caller = self._caller(request, cacheId)
        data = readBody(request)
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ApiError(400, f"expected a JSON object {{\"name\": ...}}: {e}")
        if not isinstance(body, dict) or set(body) != {"name"} or not isinstance(body["name"], str):
            raise ApiError(400, 'expected a JSON object {"name": "<prefix>"} and nothing else')
        d = self.analytics.createPrefix(caller.cacheId, body["name"])
        d.addErrback(_prefixError)
        return d.addCallback(lambda value: jsonResponse(request, value))

    @route("/introspection/prefixes/<prefixId>", ["DELETE"])
    def deletePrefix(self, request, cacheId, prefixId):
        caller = self._caller(request, cacheId)
        pid = _prefixId(prefixId)
        requireNoBody(request)
        d = self.analytics.deletePrefix(caller.cacheId, pid)
        d.addErrback(_prefixError)
        return d.addCallback(lambda _: emptyResponse(request, 204))

    @route("/introspection/prefixes/<prefixId>/stats", ["GET"])
    def prefixStats(self, request, cacheId, prefixId):
        caller = self._caller(request, cacheId)
        pid = _prefixId(prefixId)
        d = maybeDeferred(self.analytics.prefixStats, caller.cacheId, pid, queryArgs(request))
        d.addErrback(badQuery)
        d.addErrback(_prefixError)
        return d.addCallback(lambda value: jsonResponse(request, value))

    @route("/introspection/prefixes/<prefixId>/popular_items", ["GET"])
    def prefixPopularItems(self, request, cacheId, prefixId):
        caller = self._caller(request, cacheId)
        pid = _prefixId(prefixId)
        d = self.analytics.prefixPopularItems(caller.cacheId, pid)
        d.addErrback(_prefixError)
        return d.addCallback(lambda value: jsonResponse(request, value))

    def openapiPaths(self):
        logs = {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {
                "type": "object",
                "required": ["timestamp", "key", "command", "status", "size"],
                "properties": {
                    "timestamp": {"type": "string"}, "key": {"type": "string"},
                    "command": {"type": "string"}, "status": {"type": "string"},
                    "size": {"type": "integer"},
                },
            }},
        }
        keyStats = {"type": "array", "items": {
            "type": "object",
            "required": ["timestamp", "name", "size", "hit_count", "miss_count",
                         "mutation_count", "in_cache"],
            "properties": {
                "timestamp": {"type": "string"}, "name": {"type": "string"},
                "size": {"type": "integer"}, "hit_count": {"type": "integer"},
                "miss_count": {"type": "integer"}, "mutation_count": {"type": "integer"},
                "in_cache": {"type": "boolean"},
            },
        }}
        key = {"name": "key", "in": "query", "required": True, "schema": {"type": "string"}}
        body = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 250}},
        }}}}
        create = jsonOperation("Watch a prefix", "Start collecting stats for a prefix.",
                               PREFIX_SCHEMA, codes=(400, 401, 403, 404, 413))
        create["requestBody"] = body
        delete = {
            "summary": "Unwatch a prefix",
            "parameters": [_PREFIX_ID],
            "responses": {"204": {"description": "Prefix unwatched."},
                          **jsonOperation("", "", {}, codes=(400, 401, 403, 404, 413))["responses"]},
        }
        del delete["responses"]["200"]
        return {
            "/introspection/recent_logs": {"get": jsonOperation(
                "Last 100 commands per server", "Recent commands of this cache.", logs)},
            "/introspection/compound_stats": {"get": jsonOperation(
                "Compound stats", "Keys, size, and hit, miss and mutation rates.",
                SERIES_SCHEMA, TIME_PARAMETERS)},
            "/introspection/popular_items": {"get": jsonOperation(
                "Popular items", "Most hit, missed and mutated keys and popular prefixes.",
                POPULAR_SCHEMA)},
            "/introspection/key_stats": {"get": jsonOperation(
                "Key stats", "Hit, miss and mutation counts of a key per time slice.",
                keyStats, [key])},
            "/introspection/prefixes": {
                "get": jsonOperation("Watched prefixes", "Every watched prefix.",
                                     {"type": "array", "items": PREFIX_SCHEMA}),
                "post": create,
            },
            "/introspection/prefixes/{prefixId}": {"delete": delete},
            "/introspection/prefixes/{prefixId}/stats": {"get": jsonOperation(
                "Prefix stats", "Keys, size, and hit, miss and mutation rates of a prefix.",
                SERIES_SCHEMA, [_PREFIX_ID] + TIME_PARAMETERS)},
            "/introspection/prefixes/{prefixId}/popular_items": {"get": jsonOperation(
                "Prefix popular items", "Popular items among the prefix's keys.",
                POPULAR_SCHEMA, [_PREFIX_ID])},
        }
