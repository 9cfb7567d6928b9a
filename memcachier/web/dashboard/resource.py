# -*- test-case-name: tests.unit.test_dashboard -*-
"""
The web site's root: the session first, then the API or the pages.
"""

from twisted.internet.defer import succeed
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from memcachier.web.sso import fingerprint, sessionCookie


class SessionResolver:
    """
    Turns a request's session cookie into a live L{memcachier.web.sso.Session}
    or L{None}: unknown, expired, or granted under an SSO secret (or an
    operator password) that has changed since, in which case its row goes.
    """

    _log = Logger()

    def __init__(self, sessions, index, settings):
        """
        @param sessions: an L{memcachier.web.sso.AsyncSessionStore}.
        @param index: the control index (C{cache(id)}).
        @param settings: L{memcachier.node.settings.Settings} (the operator hash).
        """
        self.sessions = sessions
        self.index = index
        self.settings = settings

    def expectedFingerprint(self, cacheId):
        """
        The fingerprint a live session of C{cacheId} (L{None}: the
        operator) must carry, or L{None} if no session can be live.
        """
        if cacheId is None:
            secret = self.settings.web.operator_password_hash
            return fingerprint(secret) if secret else None
        cache = self.index.cache(cacheId)
        return None if cache is None else fingerprint(cache.sso_secret)

    def resolve(self, request):
        """
        @return: a L{Deferred} firing with the session or L{None}.
        """
        cookie = sessionCookie(request)
        if cookie is None:
            return succeed(None)
        return self.sessions.lookup(cookie).addCallback(self._check)

    def _check(self, session):
        if session is None:
            return None
        if session.fingerprint != self.expectedFingerprint(session.cacheId):
            self.sessions.end(session.key).addErrback(
                lambda f: self._log.failure("ending a stale session failed", f)
            )
            return None
        return session


class DashboardRoot(Resource):
    """
    Resolve the session (so that L{memcachier.web.common.CacheAuth} can
    read C{request.dashboardSession} synchronously), then render the API
    for C{/api/...} and the dashboard's pages for everything else.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, resolver, api, pages):
        """
        @param resolver: a L{SessionResolver}.
        @param api: the API's resource.
        @param pages: the dashboard's resource.
        """
        super().__init__()
        self.resolver = resolver
        self.api = api
        self.pages = pages

    def render(self, request):
        d = self.resolver.resolve(request)
        d.addCallback(self._dispatch, request)
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _dispatch(self, session, request):
        request.dashboardSession = session
        inner = self.api if request.path.startswith(b"/api/") else self.pages
        result = inner.render(request)
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()

    def _failed(self, failure, request):
        self._log.failure("resolving the dashboard session failed", failure)
        if not request.finished and not request.startedWriting:
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.write(b"internal error")
        if not request.finished:
            request.finish()
