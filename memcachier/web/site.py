# -*- test-case-name: tests.unit.test_api -*-
"""
The node's HTTP site: the API's resource in a L{Site} that never shows a
traceback, caps request bodies, and answers every failure in JSON.
"""

import io
import json

from twisted.logger import Logger
from twisted.web import server

from memcachier.web.common import MAX_BODY


class CappedContent(io.BytesIO):
    """
    A request body buffer that keeps at most C{limit} bytes and discards
    the rest, remembering that it did (C{overflowed}), so a huge upload
    costs no memory.
    """

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.overflowed = False

    def write(self, data):
        room = self.limit + 1 - self.tell()
        if len(data) > room:
            self.overflowed = True
            data = data[: max(room, 0)]
        return super().write(data)


def _jsonError(request, code, message):
    body = json.dumps({"error": message}).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.write(body)
    request.finish()


class APIRequest(server.Request):
    """
    A request whose too-large body is refused (413) before any resource
    sees it, and whose unexpected failures are answered with an opaque
    JSON 500 (logged with the traceback).
    """

    _log = Logger()

    def process(self):
        if getattr(self.content, "overflowed", False):
            self.site = self.channel.site
            _jsonError(self, 413, f"request body larger than {MAX_BODY} bytes")
            return
        super().process()

    def processingFailed(self, reason):
        self._log.failure(
            "HTTP request {method} {path} failed",
            reason,
            method=self.method.decode("ascii", "replace"),
            path=self.path.decode("utf-8", "replace"),
        )
        if not self.finished and not self.startedWriting:
            _jsonError(self, 500, "internal error")
        elif not self.finished:
            self.finish()
        return reason


class APISite(server.Site):
    """
    A L{Site} of L{APIRequest}s with capped bodies and no tracebacks.
    """

    requestFactory = APIRequest
    displayTracebacks = False
    maxBody = MAX_BODY

    def getContentFile(self, length):
        return CappedContent(self.maxBody)


def makeSite(controlPlane, index, registry, settings, reactor, groups=(), sessions=None):
    """
    The node's web site: the analytics API v2 (and the route groups
    given) and, given C{sessions}, the dashboard around it.

    @param controlPlane: the L{memcachier.control.repository.AsyncControlPlane}.
    @param index: the L{memcachier.control.index.ControlIndex}.
    @param registry: the L{memcachier.runtime.CacheRegistry}.
    @param settings: the L{memcachier.config.Settings}.
    @param reactor: the reactor (clock and the site's time source).
    @param groups: more route groups for L{AnalyticsAPI}.
    @param sessions: an L{memcachier.web.sso.AsyncSessionStore}: serve the
        dashboard, and let the API take its sessions.
    @rtype: L{APISite}
    """
    from memcachier.web.api import AnalyticsAPI

    api = AnalyticsAPI(controlPlane, index, registry, settings, reactor, groups)
    root = api.resource()
    if sessions is not None:
        from memcachier.web.dashboard.app import Dashboard
        from memcachier.web.dashboard.resource import DashboardRoot, SessionResolver

        resolver = SessionResolver(sessions, index, settings)
        dashboard = Dashboard(sessions, resolver, index, settings, reactor)
        root = DashboardRoot(resolver, root, dashboard.resource())
    site = APISite(root, reactor=reactor)
    site.api = api
    return site
