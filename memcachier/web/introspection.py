# -*- test-case-name: tests.unit.test_analytics_web -*-
"""
C{introspection/...} routes of the API v2: recent logs, compound stats,
popular items, key stats and watched prefixes.
"""


from twisted.internet.defer import maybeDeferred

from memcachier.analytics.repository import DuplicatePrefix, InvalidPrefix, UnknownPrefix
from memcachier.control.repository import LimitReached
from memcachier.web.common import (
    MAX_ID,
    NOT_FOUND,
    ApiError,
    emptyResponse,
    jsonResponse,
    readJSONObject,
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


#: The status of each refusal of the prefix store: an unknown id is not
#: found, a prefix watched already conflicts with the cache's state (the
#: same body is fine for another cache), a name no key can start with is
#: a bad request.
_PREFIX_ERRORS = {UnknownPrefix: 404, DuplicatePrefix: 409, InvalidPrefix: 400, LimitReached: 409}


#: What a prefix's creation takes, said when it gets anything else.
_PREFIX_BODY = 'expected a JSON object {"name": "<prefix>"} and nothing else'


def _prefixError(failure):
    error = failure.trap(*_PREFIX_ERRORS)
    raise ApiError(_PREFIX_ERRORS[error], str(failure.value))


def _prefixId(text):
    """
    @param text: the C{<prefixId>} path segment.
    @raise ApiError: 400 if it is not a decimal number up to L{MAX_ID}, as
        the document's C{prefixId} schema says.
    """
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
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
    "description": "The id of a watched prefix (as created).",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
}

#: What a watched prefix's id can be used for (OpenAPI links: stateful
#: testers follow them).
_PREFIX_LINKS = {
    "UnwatchPrefix": "delete /introspection/prefixes/{prefixId}",
    "PrefixStats": "get /introspection/prefixes/{prefixId}/stats",
    "PrefixPopularItems": "get /introspection/prefixes/{prefixId}/popular_items",
}

#: A prefix name as L{memcachier.analytics.repository.checkPrefixName}
#: takes it: no spaces or control characters, 1 to 250 bytes (the
#: schema can count characters only; a longer UTF-8 name is a 400).
PREFIX_NAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 250,
    "pattern": "^[^\\x00-\\x20\\x7f]+$",
    "description": "1 to 250 bytes of UTF-8, without spaces or control characters.",
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
    async def recentLogs(self, request, cacheId):
        caller = self._caller(request, cacheId)
        logs = await maybeDeferred(self.analytics.recentLogs, caller.cacheId)
        return jsonResponse(request, logs)

    @route("/introspection/compound_stats", ["GET"])
    def compoundStats(self, request, cacheId):
        caller = self._caller(request, cacheId)
        return answer(request, self.analytics.compoundStats, caller.cacheId, queryArgs(request))

    @route("/introspection/popular_items", ["GET"])
    async def popularItems(self, request, cacheId):
        caller = self._caller(request, cacheId)
        popular = await maybeDeferred(self.analytics.popularItems, caller.cacheId)
        return jsonResponse(request, popular)

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
        body = readJSONObject(
            request, empty=None, malformed='expected a JSON object {{"name": ...}}: {error}',
            notObject=_PREFIX_BODY,
        )
        if set(body) != {"name"} or not isinstance(body["name"], str):
            raise ApiError(400, _PREFIX_BODY)
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
        key = {
            "name": "key", "in": "query", "required": True,
            "description": "The key, 1 to 250 bytes of UTF-8 (a longer one is a 400).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 250},
        }
        body = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": PREFIX_NAME_SCHEMA},
        }}}}
        create = jsonOperation("Watch a prefix",
                               "Start collecting stats for a prefix; 409 if it is watched already "
                               "or the cache watches limits.watched_prefixes (50) already.",
                               PREFIX_SCHEMA, codes=(400, 401, 403, 404, 409, 413))
        create["requestBody"] = body
        create["responses"]["200"]["links"] = {
            name: {
                "operationRef": "#/paths/" + ("/api/v2/caches/{cacheId}" + path)
                .replace("~", "~0").replace("/", "~1") + "/" + method,
                "parameters": {"cacheId": "$request.path.cacheId",
                               "prefixId": "$response.body#/id"},
            }
            for name, (method, path) in (
                (name, target.split(" ", 1)) for name, target in _PREFIX_LINKS.items()
            )
        }
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
