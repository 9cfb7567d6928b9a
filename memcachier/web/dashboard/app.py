# -*- test-case-name: tests.unit.test_dashboard -*-
"""
The dashboard's pages and sign-in routes (everything outside C{/api/}).

The pages hold no figures: C{/caches/<id>/} is a skeleton that
C{static/dashboard.js} fills from the API v2, with the session's CSRF token
in a C{<meta>} tag for the requests that change something.

C{/} without a session is the sign-in page: a cache's username and
password (a credential with the API capability), throttled by the same
L{memcachier.protocols.throttle.AuthThrottle} as memcache logins, so that
the web cannot be used to guess what the memcache port would refuse.
"""

import hmac
import html
import json
import secrets
import string
from importlib import resources
from typing import Any, List

from twisted.logger import Logger
from twisted.web.static import File

from memcachier.protocols.throttle import AuthThrottle
from memcachier.web.router import Route
from memcachier.web.sso import (
    SSORefused,
    checkHerokuLogin,
    checkLink,
    checkPassword,
    clearSessionCookie,
    credentialFingerprint,
    csrfOK,
    fingerprint,
    setSessionCookie,
)

_PACKAGE = resources.files("memcachier.web.dashboard")

#: Pages may load only this server's scripts, styles and images; the
#: dashboard may not be framed.
CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

#: The cookie and form field of the operator's login form (a double
#: submit: a cross-site form cannot know the cookie's value).
LOGIN_COOKIE = b"memcachier_login"

#: The same for the cache sign-in form at C{/}.
SIGNIN_COOKIE = b"memcachier_signin"

#: Longest username the sign-in form takes (longer is simply wrong).
_MAX_USERNAME = 256


def _template(name):
    return string.Template((_PACKAGE / "templates" / name).read_text("utf-8"))


def _page(request, title, body, code=200):
    """
    An HTML page in the common frame.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Content-Security-Policy", CSP)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"same-origin")
    request.setHeader(b"Cache-Control", b"no-store")
    return _template("frame.html").substitute(title=html.escape(title), body=body).encode("utf-8")


def _message(request, code, title, text):
    body = f'<main class="message"><h1>{html.escape(title)}</h1><p>{text}</p></main>'
    return _page(request, title, body, code)


_SIGN_IN_HELP = (
    '<a href="/">Sign in</a> with your cache\'s username and password, open the dashboard '
    "from Heroku (<code>heroku addons:open memcachier</code>) or with a link from "
    "<code>memcachier-admin cache dashboard-url ID</code>."
)


def _redirect(request, location, code=303):
    request.setResponseCode(code)
    request.setHeader(b"Location", location.encode("utf-8"))
    request.setHeader(b"Cache-Control", b"no-store")
    return b""


def _clientHost(request):
    """
    The peer's address, as the memcache port's throttle keys it.
    """
    return getattr(request.getClientAddress(), "host", None) or "unknown"


def _arg(request, name):
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return ""
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        return ""


class PageErrors:
    """
    The pages' errors, as pages (an L{memcachier.web.router.ErrorStyle}).
    """

    _log = Logger()

    def apiError(self, request: Any, error: Any) -> bytes:
        return _message(request, error.code, "Refused", html.escape(error.message))

    def routingError(self, request: Any, error: Any) -> bytes:
        code = error.code
        if 300 <= code < 400:
            return _redirect(request, getattr(error, "new_url", "/"), code)
        if code == 405 and error.valid_methods:
            request.setHeader(b"Allow", ", ".join(error.valid_methods).encode("ascii"))
        return _message(request, code, error.name, html.escape(error.description or ""))

    def unexpected(self, request: Any, failure: Any) -> bytes:
        self._log.failure("dashboard request {path} failed", failure,
                          path=request.path.decode("utf-8", "replace"))
        return _message(request, 500, "Internal error", "Something went wrong on the server.")


class Dashboard:
    """
    The pages: a cache's dashboard, sign-in (a cache's credential, Heroku
    SSO, links, the operator's password), sign-out and the operator's view.
    """

    _log = Logger()

    def __init__(self, sessions, resolver, index, settings, clock, throttle=None):
        """
        @param sessions: an L{memcachier.web.sso.AsyncSessionStore}.
        @param resolver: the L{memcachier.web.dashboard.resource.SessionResolver}.
        @param index: the control index.
        @param settings: L{memcachier.node.settings.Settings}.
        @param clock: provides C{seconds()}.
        @param throttle: the memcache logins' L{AuthThrottle} (the node
            shares one); L{None}: one of its own with the settings' budgets.
        """
        self.sessions = sessions
        self.resolver = resolver
        self.index = index
        self.settings = settings
        self.clock = clock
        if throttle is None:
            throttle = AuthThrottle(
                settings.memcache.auth_failure_rate, settings.memcache.auth_failure_burst,
                rememberFor=settings.memcache.auth_remember_for,
                rememberEntries=settings.memcache.auth_remember_entries,
            )
        self.throttle = throttle
        self.errors = PageErrors()

    def endpoints(self) -> List[Route]:
        """
        The pages' routes, for L{memcachier.web.router.makeRouter}.
        """
        found: List[Route] = [
            (path, (method,), handler, False)
            for path, method, handler in [
                ("/", "GET", self.home),
                ("/login", "POST", self.cacheLogin),
                ("/caches/<int:cacheId>/", "GET", self.cachePage),
                ("/sso/login", "POST", self.herokuLogin),
                ("/sso/link", "GET", self.linkLogin),
                ("/logout", "POST", self.logout),
                ("/signed-out", "GET", self.signedOut),
                ("/admin/", "GET", self.adminPage),
                ("/admin/login", "POST", self.adminLogin),
                ("/admin/caches.json", "GET", self.adminCaches),
            ]
        ]
        found.append(("/static/", None, self.static, True))
        return found

    # -- pages

    def home(self, request):
        session = request.dashboardSession
        if session is None:
            return self._signInPage(request)
        if session.operator:
            return _redirect(request, "/admin/", 302)
        return _redirect(request, f"/caches/{session.cacheId}/", 302)

    def cachePage(self, request, cacheId):
        session = request.dashboardSession
        if session is None:
            return _message(request, 401, "Sign in", _SIGN_IN_HELP)
        if not session.allows(cacheId):
            return _message(request, 403, "Not your cache",
                            f"This session cannot see cache {cacheId}.")
        cache = self.index.cache(cacheId)
        if cache is None:
            return _message(request, 404, "No such cache", f"There is no cache {cacheId}.")
        body = _template("cache.html").substitute(
            cache_id=cacheId,
            csrf=html.escape(session.csrfToken),
            user=html.escape(session.user),
            name=html.escape(cache.name),
            admin_link='<a href="/admin/">All caches</a>' if session.operator else "",
            alerts_card=(_PACKAGE / "templates" / "alerts.html").read_text("utf-8"),
        )
        return _page(request, f"{cache.name} · memcachier", body)

    def signedOut(self, request):
        return _message(request, 200, "Signed out", "You are signed out. " + _SIGN_IN_HELP)

    def static(self, request):
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return File(str(_PACKAGE / "static"), defaultType="application/octet-stream")

    # -- signing in and out

    def _signInPage(self, request, code=200, username="", error=""):
        """
        The sign-in form, with its double-submit token (a cross-site form
        cannot know the cookie's value, so cannot sign a browser in).
        """
        token = request.getCookie(SIGNIN_COOKIE)
        if not token:
            token = secrets.token_urlsafe(24).encode("ascii")
        request.addCookie(SIGNIN_COOKIE, token, path=b"/login", httpOnly=True,
                          sameSite="strict", secure=request.isSecure())
        body = _template("signin.html").substitute(
            token=html.escape(token.decode("ascii")),
            username=html.escape(username),
            error=(f'<p class="status error" id="signin-error" role="alert">{error}</p>'
                   if error else ""),
        )
        return _page(request, "Sign in · memcachier", body, code)

    async def cacheLogin(self, request):
        """
        Sign in with a cache's username and password.  The throttle decides
        before the password is looked at; an unknown username and a wrong
        password get the same answer (the index compares a dummy password
        for an unknown username).
        """
        cookie = request.getCookie(SIGNIN_COOKIE) or b""
        field = _arg(request, "login_token").encode("utf-8")
        if not cookie or not field or not hmac.compare_digest(cookie, field):
            return _message(request, 403, "Refused",
                            'Reload <a href="/">the sign-in page</a> and try again.')
        username = _arg(request, "username")[:_MAX_USERNAME]
        name = username.encode("utf-8")
        host = _clientHost(request)
        now = self.clock.seconds()
        throttle = self.throttle
        if not throttle.admit(host, name, now):
            wait = throttle.retryAfter(host, name, now)
            request.setHeader(b"Retry-After", str(wait).encode("ascii"))
            return self._signInPage(
                request, 429, username,
                f"Too many failed sign-ins. Try again in {wait} seconds.",
            )
        credential = self.index.authenticate(name, _arg(request, "password").encode("utf-8"))
        if credential is None:
            throttle.failed(host, name, now)
            return self._signInPage(request, 403, username, "Wrong username or password.")
        throttle.succeeded(host, name, now)
        cache = self.index.cache(credential.cache_id)
        if not credential.api or cache is None:
            return self._signInPage(
                request, 403, username,
                "This credential cannot open the dashboard: it lacks the API capability. "
                "Sign in with a credential that has it.",
            )
        return await self._startSession(
            request, cache.id, credentialFingerprint(cache.sso_secret, credential),
            credential.username, f"/caches/{cache.id}/",
        )

    async def _startSession(self, request, cacheId, secretFingerprint, user, location):
        cookie, session = await self.sessions.create(cacheId, secretFingerprint, user)
        setSessionCookie(request, cookie)
        self._log.info(
            "dashboard session for {who} started by {user}",
            who="the operator" if cacheId is None else f"cache {cacheId}",
            user=user,
        )
        return _redirect(request, location)

    async def herokuLogin(self, request):
        form = {
            name: _arg(request, name)
            for name in ("resource_id", "id", "timestamp", "resource_token", "token",
                         "user_scoped_resource_token", "user_id", "email")
        }
        try:
            resourceId, user = checkHerokuLogin(
                form, self.settings.heroku.sso_salt, self.clock.seconds()
            )
        except SSORefused as e:
            return _message(request, 403, "Sign-in refused", html.escape(str(e)))
        cache = next((c for c in self.index.caches() if c.uuid == resourceId), None)
        if cache is None:
            return _message(request, 403, "Sign-in refused", "Unknown resource.")
        return await self._startSession(
            request, cache.id, fingerprint(cache.sso_secret), user, f"/caches/{cache.id}/"
        )

    async def linkLogin(self, request):
        args = {n: _arg(request, n) for n in ("cache", "expires", "nonce", "signature")}
        try:
            cache, nonce, expires = checkLink(args, self.index, self.clock.seconds())
        except SSORefused as e:
            return _message(request, 403, "Link refused", html.escape(str(e)))
        if not await self.sessions.useNonce(nonce, expires):
            return _message(request, 403, "Link refused", "This dashboard link was used already.")
        return await self._startSession(
            request, cache.id, fingerprint(cache.sso_secret), "admin-link", f"/caches/{cache.id}/"
        )

    async def logout(self, request):
        session = request.dashboardSession
        if session is not None:
            if not csrfOK(request, session):
                return _message(request, 403, "Refused", "Missing or wrong CSRF token.")
            await self.sessions.end(session.key)
        clearSessionCookie(request)
        return _redirect(request, "/signed-out")

    # -- the operator

    def _operatorOff(self, request):
        return _message(
            request, 404, "Operator view off",
            "Set <code>[web] operator_password_hash</code> to turn it on.",
        )

    def adminPage(self, request):
        if not self.settings.web.operator_password_hash:
            return self._operatorOff(request)
        session = request.dashboardSession
        if session is None or not session.operator:
            token = request.getCookie(LOGIN_COOKIE)
            if not token:
                token = secrets.token_urlsafe(24).encode("ascii")
            request.addCookie(LOGIN_COOKIE, token, path=b"/admin/", httpOnly=True,
                              sameSite="strict", secure=request.isSecure())
            body = _template("login.html").substitute(token=html.escape(token.decode("ascii")))
            return _page(request, "Operator sign-in · memcachier", body)
        body = _template("admin.html").substitute(csrf=html.escape(session.csrfToken))
        return _page(request, "All caches · memcachier", body)

    async def adminLogin(self, request):
        stored = self.settings.web.operator_password_hash
        if not stored:
            return self._operatorOff(request)
        cookie = request.getCookie(LOGIN_COOKIE) or b""
        field = _arg(request, "login_token").encode("utf-8")
        if not cookie or not field or cookie != field:
            return _message(request, 403, "Refused", "Reload the sign-in page and try again.")
        if not checkPassword(stored, _arg(request, "password")):
            self._log.warn("wrong operator password")
            return _message(request, 403, "Sign-in refused",
                            'Wrong password. <a href="/admin/">Try again</a>.')
        return await self._startSession(request, None, fingerprint(stored), "operator", "/admin/")

    def adminCaches(self, request):
        session = request.dashboardSession
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        if session is None or not session.operator:
            request.setResponseCode(403)
            return json.dumps({"error": "the operator's session is required"}).encode()
        caches = []
        for cache in self.index.caches():
            plan = self.index.planOf(cache.id)
            caches.append({
                "id": cache.id, "name": cache.name, "label": cache.label,
                "plan": cache.plan, "memory_limit": plan.memory,
                "connection_limit": plan.connections, "enabled": cache.enabled,
            })
        return json.dumps(caches).encode("utf-8")
