# -*- test-case-name: tests.unit.test_analytics_web -*-
"""
C{insight/...} routes of the API v2: processed stats (aggregate and per
server) and latency, read from the analytics rollups
(L{memcachier.analytics.service.Analytics}).
"""

from twisted.internet.defer import maybeDeferred

from memcachier.analytics.series import LATENCY_PERIOD, NAMES_PATTERN, PROCESSED_NAMES, QueryError
from memcachier.web.common import NOT_FOUND, ApiError, jsonResponse, route
from memcachier.web.openapi import errors


def queryArgs(request):
    """
    The query parameters of C{request} as C{{str: str}} (the first value
    of each).

    @raise ApiError: 400 if a parameter is not UTF-8.
    """
    try:
        return {
            k.decode("utf-8"): v[0].decode("utf-8") for k, v in request.args.items() if v
        }
    except UnicodeDecodeError:
        raise ApiError(400, "query parameters must be UTF-8") from None


def badQuery(failure):
    """
    Errback: a L{QueryError} becomes a 400 with its message.
    """
    failure.trap(QueryError)
    raise ApiError(400, str(failure.value))


def answer(request, call, *args):
    """
    Run C{call(*args)}, which may raise L{QueryError} or return a
    Deferred, and answer its result in JSON.
    """
    d = maybeDeferred(call, *args)
    d.addErrback(badQuery)
    return d.addCallback(lambda value: jsonResponse(request, value))


TIME_PARAMETERS = [
    {
        "name": "startTime",
        "in": "query",
        "required": False,
        "description": "ISO 8601 start of the series (default: 24 hours before endTime); "
        "a time older than the data kept (730 days; latency: as configured) is a 400 "
        "saying how far back data goes. Given empty, it is a 400.",
        "schema": {"type": "string", "format": "date-time"},
    },
    {
        "name": "endTime",
        "in": "query",
        "required": False,
        "description": "ISO 8601 end of the series (default: now); before startTime, "
        "it is a 400. Given empty, it is a 400.",
        "schema": {"type": "string", "format": "date-time"},
    },
]

SERIES_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "columns", "values"],
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "object", "properties": {"server": {"type": "string"}}},
            "columns": {"type": "array", "items": {"type": "string"}},
            "values": {"type": "array", "items": {"type": "array"}},
        },
    },
}


def jsonOperation(summary, description, schema, parameters=(), codes=(400, 401, 403, 404)):
    operation = {
        "summary": summary,
        "description": description,
        "responses": {
            "200": {"description": summary, "content": {"application/json": {"schema": schema}}},
            **errors(*codes),
        },
    }
    if parameters:
        operation["parameters"] = list(parameters)
    return operation


class InsightAPI:
    """
    The C{insight} route group.
    """

    def __init__(self, auth, analytics):
        """
        @param auth: the API's L{memcachier.web.common.CacheAuth}.
        @param analytics: the node's L{Analytics}.
        """
        self.auth = auth
        self.analytics = analytics

    @route("/insight/processed_stats", ["GET"])
    def processedStats(self, request, cacheId):
        caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)
        return answer(request, self.analytics.processedStats, caller.cacheId, queryArgs(request))

    @route("/insight/processed_stats/per_server", ["GET"])
    def processedStatsPerServer(self, request, cacheId):
        caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)
        return answer(
            request, self.analytics.processedStats, caller.cacheId, queryArgs(request), True
        )

    @route("/insight/latency", ["GET"])
    def latency(self, request, cacheId):
        caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)
        return answer(request, self.analytics.latency, caller.cacheId, queryArgs(request))

    def openapiPaths(self):
        names = {
            "name": "names",
            "in": "query",
            "required": True,
            "description": "Stat names separated by commas, without spaces.",
            "schema": {"type": "string", "pattern": NAMES_PATTERN,
                       "example": "get_rate,hit_rate,bytes"},
            "x-enum-items": list(PROCESSED_NAMES),
        }
        granularity = (
            "Granularity from the span: up to 24 h 1 minute, up to a week 10 minutes, "
            "up to 92 days 1 hour, beyond 1 day (coarser if the finer rollup is no "
            "longer kept as far back as startTime)."
        )
        return {
            "/insight/processed_stats": {"get": jsonOperation(
                "Processed stats of all servers", granularity, SERIES_SCHEMA,
                [names] + TIME_PARAMETERS,
            )},
            "/insight/processed_stats/per_server": {"get": jsonOperation(
                "Processed stats per server", granularity, SERIES_SCHEMA,
                [names] + TIME_PARAMETERS,
            )},
            "/insight/latency": {"get": jsonOperation(
                "Latency per server in nanoseconds",
                f"Mean round trip of a memcache version command, probed every "
                f"{LATENCY_PERIOD} s; up to 24 h the granularity is {LATENCY_PERIOD} s.",
                SERIES_SCHEMA, TIME_PARAMETERS,
            )},
        }
