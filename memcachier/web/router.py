# -*- test-case-name: tests.unit.test_router -*-
"""
The node's one web router: a single L{Klein} app that serves every path
of the web listener, built in one place (L{makeRouter}) from its parts.

A part (L{Part}) is a set of routes under a path prefix and the way its
errors look: the API v2 (C{/api/...}) answers C{{"error": ...}}, Heroku's
partner API (C{/heroku/...}) C{{"message": ...}}, C{/metrics} the API's
JSON, and the dashboard (every other path, when it is on) HTML pages.  A
route's own failure and a routing failure (404, 405, a redirect to the
path with a slash) are rendered by the part whose prefix the request's
path starts with.

The parts that take dashboard sessions (the API and the pages) have the
session resolved before their handler runs, so that
L{memcachier.web.common.CacheAuth} reads C{request.dashboardSession}
synchronously.
"""

from __future__ import annotations

from inspect import isawaitable
from typing import Any, Callable, Iterable, List, Optional, Protocol, Sequence, Tuple

from klein import Klein
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException

from memcachier.web.common import ApiError, JSONErrors, routesOf

#: A route: (absolute werkzeug path, methods or L{None} for any, handler,
#: whether it is a branch that takes every path below it).
Route = Tuple[str, Optional[Sequence[str]], Callable[..., Any], bool]


class ErrorStyle(Protocol):
    """
    How a part renders its failures.
    """

    def apiError(self, request: Any, error: ApiError) -> bytes:
        """
        A refusal a handler raised.
        """

    def routingError(self, request: Any, error: HTTPException) -> bytes:
        """
        No route (404), a wrong method (405), or a werkzeug redirect.
        """

    def unexpected(self, request: Any, failure: Failure) -> bytes:
        """
        Anything else: logged, answered opaquely.
        """


class Part:
    """
    One surface of the router.

    @ivar prefix: the path prefix whose errors this part renders (C{"/"}:
        every path no other part claims).
    @ivar routes: its L{Route}s.
    @ivar errors: its L{ErrorStyle}.
    @ivar sessions: whether its handlers see the dashboard session.
    """

    def __init__(
        self, prefix: str, routes: Iterable[Route], errors: ErrorStyle, sessions: bool = False
    ) -> None:
        self.prefix = prefix.encode("ascii")
        self.routes = list(routes)
        self.errors = errors
        self.sessions = sessions


class SessionSource(Protocol):
    """
    What resolves a request's dashboard session
    (L{memcachier.web.dashboard.resource.SessionResolver}).
    """

    def resolve(self, request: Any) -> Any:
        """
        @return: a L{Deferred} of the session or L{None}.
        """


def withSession(resolver: SessionSource, handler: Callable[..., Any]) -> Callable[..., Any]:
    """
    C{handler}, called once the request's dashboard session is resolved
    into C{request.dashboardSession}.
    """

    async def resolved(request: Any, *args: Any, **kwargs: Any) -> Any:
        request.dashboardSession = await resolver.resolve(request)
        result = handler(request, *args, **kwargs)
        if isawaitable(result):
            result = await result
        return result

    resolved.__name__ = getattr(handler, "__name__", "handler")
    return resolved


def groupRoutes(group: Any, prefix: str) -> List[Route]:
    """
    The routes a route group declares with L{memcachier.web.common.route},
    under its C{routePrefix} (or C{prefix}).
    """
    base = getattr(group, "routePrefix", prefix)
    return [(base + path, methods, handler, False) for path, methods, handler in routesOf(group)]


class Router:
    """
    The one L{Klein} app of the web listener.

    @ivar app: the L{Klein} app.
    @ivar parts: the L{Part}s, most specific prefix first.
    """

    def __init__(
        self, parts: Sequence[Part], fallback: ErrorStyle,
        resolver: Optional[SessionSource] = None,
    ) -> None:
        """
        @param parts: every part of the site.
        @param fallback: the error style of paths no part claims.
        @param resolver: resolves dashboard sessions for the parts that
            take them, or L{None} (no dashboard).
        """
        self.parts = sorted(parts, key=lambda part: len(part.prefix), reverse=True)
        self.fallback = fallback
        self.app = app = Klein()
        app.handle_errors(ApiError)(self._onApiError)
        app.handle_errors(HTTPException)(self._onRoutingError)
        app.handle_errors(Exception)(self._onUnexpected)
        for part in self.parts:
            for path, methods, handler, branch in part.routes:
                if part.sessions and resolver is not None:
                    handler = withSession(resolver, handler)
                owner = type(getattr(handler, "__self__", handler)).__name__
                endpoint = (
                    f"{owner}.{getattr(handler, '__name__', 'handler')}:{path}:"
                    f"{','.join(methods or ('*',))}"
                )
                kwargs: dict[str, Any] = {"endpoint": endpoint, "branch": branch}
                if methods is not None:
                    kwargs["methods"] = list(methods)
                app.route(path, **kwargs)(handler)

    def resource(self) -> Any:
        """
        @return: the L{IResource} of every path.
        """
        return self.app.resource()

    def styleFor(self, request: Any) -> ErrorStyle:
        """
        The error style of the part that claims the request's path.
        """
        path = request.path or b"/"
        for part in self.parts:
            if path.startswith(part.prefix) or path == part.prefix.rstrip(b"/"):
                return part.errors
        return self.fallback

    def _onApiError(self, request: Any, failure: Failure) -> bytes:
        return self.styleFor(request).apiError(request, failure.value)

    def _onRoutingError(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        if (error.code or 500) >= 500:
            return self.styleFor(request).unexpected(request, failure)
        return self.styleFor(request).routingError(request, error)

    def _onUnexpected(self, request: Any, failure: Failure) -> bytes:
        return self.styleFor(request).unexpected(request, failure)


def makeRouter(
    api: Any,
    dashboard: Any = None,
    resolver: Optional[SessionSource] = None,
    heroku: Any = None,
    metrics: Any = None,
    health: Any = None,
) -> Router:
    """
    The router of every path, from its parts.

    @param api: the L{memcachier.web.api.CacheAPI} (with its route
        groups: insight, introspection, alerts, our provisioning API).
    @param dashboard: the L{memcachier.web.dashboard.app.Dashboard}, or
        L{None} for no dashboard (the API's JSON 404 for other paths).
    @param resolver: the L{memcachier.web.dashboard.resource.SessionResolver}
        of the dashboard's sessions (the API takes them too), or L{None}.
    @param heroku: the L{memcachier.heroku.api.HerokuAPI}, or L{None}.
    @param metrics: the L{memcachier.web.metrics.MetricsResource}, or
        L{None}.
    @param health: the L{memcachier.web.health.Health} probes
        (C{/healthz}, C{/readyz}), or L{None}.
    """
    apiErrors = JSONErrors()
    parts = [Part("/api/", api.endpoints(), apiErrors, sessions=True)]
    if heroku is not None:
        parts.append(Part("/heroku/", heroku.endpoints(), heroku.errors))
    if metrics is not None:
        served = lambda request: metrics  # noqa: E731 (a resource for Klein to render)
        parts.append(Part("/metrics/", [
            ("/metrics", None, served, False), ("/metrics/", None, served, True),
        ], apiErrors))
    if health is not None:
        for path, methods, handler, branch in health.endpoints():
            parts.append(Part(path, [(path, methods, handler, branch)], apiErrors))
    fallback: ErrorStyle = apiErrors
    if dashboard is not None:
        parts.append(Part("/", dashboard.endpoints(), dashboard.errors, sessions=True))
        fallback = dashboard.errors
    return Router(parts, fallback, resolver if dashboard is not None else None)
