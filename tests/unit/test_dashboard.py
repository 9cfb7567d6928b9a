"""
Tests for L{memcachier.web.dashboard}: the whole site (pages, sign-in, the
API taking sessions) through L{StubTreq}, over a real control plane
(in-memory SQLite, run synchronously) on a L{task.Clock}.  No socket, no
reactor.  The browser tests are in C{tests/integration/test_dashboard.py}.
"""

import hashlib
import json
import re
from importlib import resources
from urllib.parse import urlencode, urlsplit

import pytest
from treq.testing import StubTreq

from memcachier.node.settings import Settings
from memcachier.protocols.throttle import AuthThrottle
from memcachier.web.site import makeSite
from memcachier.web.sso import (
    AsyncSessionStore,
    SessionStore,
    hashPassword,
    makeLink,
)
from tests.unit.test_api import Response, SynchronousThreadPool, World, result

SALT = "unit-salt"
PASSWORD = "operator secret"
HOST = "http://dash.test"


class Site:
    """
    The web site of a L{World} with the dashboard on.
    """

    def __init__(self, throttle=None):
        self.settings = Settings().evolve(
            heroku={"sso_salt": SALT},
            web={"operator_password_hash": hashPassword(PASSWORD), "public_url": HOST},
        )
        self.world = w = World(settings=self.settings)
        self.sessions = AsyncSessionStore(
            SessionStore(w.cp.engine, w.reactor), SynchronousThreadPool(), w.reactor
        )
        site = makeSite(w.api, self.settings, w.reactor, sessions=self.sessions,
                        throttle=throttle)
        self.resource = site.resource

    def request(self, method, path, cookie=None, headers=None, data=None, form=None,
                cookies=None):
        headers = dict(headers or {})
        cookies = dict(cookies or {})
        if cookie:
            cookies["memcachier_session"] = cookie
        if form is not None:
            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        # A new client each time: no cookie jar carries cookies over.
        # (Static files are served by a pull producer, which StubTreq's
        # transport does not drive: the browser tests fetch those.)
        treq = StubTreq(self.resource)
        response = result(treq.request(
            method, HOST + path, headers=headers, data=data, cookies=cookies,
            allow_redirects=False,
        ))
        return Response(response.code, response.headers, result(treq.content(response)))

    def link(self, cacheId=None, ttl=600):
        cache = self.world.index.cache(cacheId or self.world.cache.id)
        return makeLink(HOST, cache, self.world.reactor.seconds(), ttl)

    def signIn(self, cacheId=None):
        """
        Follow a dashboard link; return the session cookie's value.
        """
        url = urlsplit(self.link(cacheId))
        response = self.request("GET", f"{url.path}?{url.query}")
        assert response.code == 303, response
        return cookieOf(response)

    def cacheSignIn(self, username, password):
        """
        Sign in at C{/} with a cache's username and password: fetch the
        form (its token and cookie), post it.
        """
        form = self.request("GET", "/")
        token = re.search(rb'name="login_token" value="([^"]+)"', form.body).group(1).decode()
        return self.request("POST", "/login", cookies={"memcachier_signin": token},
                            form={"login_token": token, "username": username,
                                  "password": password})

    def csrf(self, cookie, cacheId=None):
        page = self.request("GET", f"/caches/{cacheId or self.world.cache.id}/", cookie)
        return re.search(rb'data-csrf="([^"]+)"', page.body).group(1).decode()


def cookieOf(response):
    for header in response.headers.getRawHeaders(b"Set-Cookie", []):
        match = re.match(rb"memcachier_session=([^;]*)", header)
        if match:
            return match.group(1).decode()
    return None


@pytest.fixture
def site():
    return Site()


# -- the API takes a session for its own cache only


def test_sessionReadsItsOwnCacheOnly(site):
    """
    A session stands for Basic auth on its own cache; another cache's id is
    403, whatever route.
    """
    cookie = site.signIn()
    own, other = site.world.cache.id, site.world.other.id
    assert site.request("GET", f"/api/v2/caches/{own}/stats", cookie).code == 200
    assert site.request("GET", f"/api/v2/caches/{own}/info", cookie).json()["id"] == own
    for path in ["/stats", "/info", "/credentials", "/flush"]:
        method = "POST" if path == "/flush" else "GET"
        response = site.request(method, f"/api/v2/caches/{other}{path}", cookie)
        assert response.code == 403, (path, response)
        assert "cannot access cache" in response.json()["error"]


def test_sessionChangesNeedCSRF(site):
    """
    A state-changing request under a session needs the session's CSRF
    token; with it, it goes through.
    """
    cookie = site.signIn()
    path = f"/api/v2/caches/{site.world.cache.id}/flush"
    assert site.request("POST", path, cookie).code == 403
    assert site.request("POST", path, cookie, headers={"X-CSRF-Token": "wrong"}).code == 403
    token = site.csrf(cookie)
    assert site.request("POST", path, cookie, headers={"X-CSRF-Token": token}).code == 204
    # another session's token does not do
    second = site.signIn()
    assert site.request("POST", path, second, headers={"X-CSRF-Token": token}).code == 403


def test_basicAuthStillWorksBesideACookie(site):
    """
    With an Authorization header the credential decides, not the session.
    """
    cookie = site.signIn()
    w = site.world
    response = site.request(
        "GET", f"/api/v2/caches/{w.other.id}/stats", cookie,
        headers={"Authorization": "Basic " + _basic(w.otherPrimary)},
    )
    assert response.code == 200


def _basic(credential):
    import base64

    return base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()


def test_rotateSSOEndsSessionsAndLinks(site):
    """
    After rotate_sso (here through the API with Basic auth) the cache's
    sessions and unused links are refused; other caches' sessions live on.
    """
    w = site.world
    cookie = site.signIn()
    otherCookie = site.signIn(w.other.id)
    unused = urlsplit(site.link())
    rotated = site.request("POST", f"/api/v2/caches/{w.cache.id}/rotate_sso",
                           headers={"Authorization": "Basic " + _basic(w.primary)})
    assert rotated.code == 200
    response = site.request("GET", f"/api/v2/caches/{w.cache.id}/stats", cookie)
    assert response.code == 401
    assert site.request("GET", f"/caches/{w.cache.id}/", cookie).code == 401
    assert site.request("GET", f"{unused.path}?{unused.query}").code == 403
    assert site.request("GET", f"/api/v2/caches/{w.other.id}/stats", otherCookie).code == 200


def test_dashboardClientsGetNoChallenge(site):
    """
    The dashboard's scripts (X-Requested-With) get a 401 without a Basic
    challenge, so the browser shows no password prompt; others get one.
    """
    path = f"/api/v2/caches/{site.world.cache.id}/stats"
    plain = site.request("GET", path)
    assert plain.header(b"WWW-Authenticate") == b'Basic realm="memcachier"'
    scripted = site.request("GET", path, headers={"X-Requested-With": "memcachier-dashboard"})
    assert scripted.code == 401 and scripted.header(b"WWW-Authenticate") is None


def test_sessionsExpireOnTheClock(site):
    """
    A session left idle for more than 30 minutes is over.
    """
    cookie = site.signIn()
    path = f"/api/v2/caches/{site.world.cache.id}/stats"
    site.world.reactor.advance(29 * 60)
    assert site.request("GET", path, cookie).code == 200
    site.world.reactor.advance(31 * 60)
    assert site.request("GET", path, cookie).code == 401


# -- signing in


def herokuForm(uuid, timestamp, salt=SALT):
    token = hashlib.sha256(f"{uuid}:{salt}:{timestamp}:u:e@x.com".encode()).hexdigest()
    return {"resource_id": uuid, "timestamp": str(timestamp), "user_id": "u",
            "email": "e@x.com", "user_scoped_resource_token": token}


def test_herokuLogin(site):
    """
    POST /sso/login with a good form: a session cookie (HttpOnly,
    SameSite=Lax, not Secure over plain HTTP) and a redirect to the page.
    """
    w = site.world
    now = int(w.reactor.seconds())
    response = site.request("POST", "/sso/login", form=herokuForm(w.cache.uuid, now))
    assert response.code == 303
    assert response.header(b"Location") == f"/caches/{w.cache.id}/".encode()
    (header,) = response.headers.getRawHeaders(b"Set-Cookie")
    assert b"HttpOnly" in header and b"SameSite=lax" in header and b"Secure" not in header
    page = site.request("GET", f"/caches/{w.cache.id}/", cookieOf(response))
    assert page.code == 200 and b"e@x.com" in page.body


@pytest.mark.parametrize("change", ["old", "future", "salt", "resource"])
def test_herokuLoginRefused(site, change):
    w = site.world
    now = int(w.reactor.seconds())
    form = {
        "old": herokuForm(w.cache.uuid, now - 301),
        "future": herokuForm(w.cache.uuid, now + 5),
        "salt": herokuForm(w.cache.uuid, now, salt="other"),
        "resource": herokuForm("no-such-uuid", now),
    }[change]
    response = site.request("POST", "/sso/login", form=form)
    assert response.code == 403
    assert cookieOf(response) is None


def test_linkIsSingleUse(site):
    url = urlsplit(site.link())
    assert site.request("GET", f"{url.path}?{url.query}").code == 303
    again = site.request("GET", f"{url.path}?{url.query}")
    assert again.code == 403 and b"used already" in again.body


def test_pagesWithoutOrWithAnotherSession(site):
    """
    Without a session C{/} is the sign-in form and a cache's page says how
    to sign in (401); a session sees its cache's page only (403 for
    another); C{/} leads to its cache.
    """
    w = site.world
    home = site.request("GET", "/")
    assert home.code == 200 and b'action="/login"' in home.body
    assert site.request("GET", f"/caches/{w.cache.id}/").code == 401
    cookie = site.signIn()
    home = site.request("GET", "/", cookie)
    assert (home.code, home.header(b"Location")) == (302, f"/caches/{w.cache.id}/".encode())
    page = site.request("GET", f"/caches/{w.cache.id}/", cookie)
    assert page.code == 200
    assert b"script-src 'self'" in page.header(b"Content-Security-Policy")
    assert site.request("GET", f"/caches/{w.other.id}/", cookie).code == 403


def test_logout(site):
    cookie = site.signIn()
    assert site.request("POST", "/logout", cookie).code == 403
    token = site.csrf(cookie)
    out = site.request("POST", "/logout", cookie, form={"csrf_token": token})
    assert (out.code, out.header(b"Location")) == (303, b"/signed-out")
    assert site.request("GET", f"/api/v2/caches/{site.world.cache.id}/stats", cookie).code == 401


def test_operator(site):
    """
    The operator signs in with the password (and the login form's token),
    lists every cache and reads any cache's API.
    """
    form = site.request("GET", "/admin/")
    token = re.search(rb'name="login_token" value="([^"]+)"', form.body).group(1).decode()
    refused = site.request("POST", "/admin/login", form={"login_token": token, "password": PASSWORD})
    assert refused.code == 403  # no login cookie: a cross-site post
    wrong = site.request("POST", "/admin/login", cookies={"memcachier_login": token},
                         form={"login_token": token, "password": "nope"})
    assert wrong.code == 403 and cookieOf(wrong) is None
    good = site.request("POST", "/admin/login", cookies={"memcachier_login": token},
                        form={"login_token": token, "password": PASSWORD})
    assert (good.code, good.header(b"Location")) == (303, b"/admin/")
    cookie = cookieOf(good)
    caches = site.request("GET", "/admin/caches.json", cookie).json()
    assert [c["id"] for c in caches] == [site.world.cache.id, site.world.other.id]
    assert site.request("GET", f"/api/v2/caches/{site.world.other.id}/stats", cookie).code == 200
    # a cache's session is not the operator's
    assert site.request("GET", "/admin/caches.json", site.signIn()).code == 403


# -- what is shipped


def test_vendoredChartsMatchTheirHashes():
    """
    The vendored chart library is in the package with its licence, and is
    what C{scripts/vendor-charts} checked (C{SHA256SUMS}).
    """
    vendor = resources.files("memcachier.web.dashboard") / "static" / "vendor" / "chart.js"
    sums = (vendor / "SHA256SUMS").read_text().split("\n")
    names = set()
    for line in filter(None, sums):
        digest, name = line.split()
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
        names.add(name)
    assert names == {"chart.umd.min.js", "LICENSE.md"}
    assert "MIT" in (vendor / "LICENSE.md").read_text()


def test_infoNamesThePlan(site):
    info = site.request(
        "GET", f"/api/v2/caches/{site.world.cache.id}/info",
        headers={"Authorization": "Basic " + _basic(site.world.primary)},
    ).json()
    assert (info["plan_name"], info["connection_limit"]) == ("100", 250)
    assert info["uuid"] == site.world.cache.uuid and len(info["uuid"]) == 36
    json.dumps(info)


def test_newOperatorPasswordEndsOperatorSessions(site):
    """
    A node configured with another operator hash refuses the sessions
    signed in under the old one.
    """
    import attr

    from memcachier.web.dashboard.resource import SessionResolver

    form = site.request("GET", "/admin/")
    token = re.search(rb'name="login_token" value="([^"]+)"', form.body).group(1).decode()
    good = site.request("POST", "/admin/login", cookies={"memcachier_login": token},
                        form={"login_token": token, "password": PASSWORD})
    cookie = cookieOf(good)

    class Request:
        def getCookie(self, name):
            return cookie.encode()

    w = site.world
    same = SessionResolver(site.sessions, w.index, site.settings)
    assert result(same.resolve(Request())).operator
    changed = SessionResolver(
        site.sessions, w.index,
        site.settings.evolve(web={"operator_password_hash": hashPassword("new")}),
    )
    assert result(changed.resolve(Request())) is None
    assert result(same.resolve(Request())) is None  # and its row is gone


# -- signing in with a cache's credential


def test_cacheCredentialSignIn(site):
    """
    A credential with the API capability signs in at C{/}: the session
    cookie SSO starts, a redirect to its cache's page, the username shown.
    """
    w = site.world
    response = site.cacheSignIn(w.primary.username, w.primary.password)
    assert (response.code, response.header(b"Location")) == (303, f"/caches/{w.cache.id}/".encode())
    headers = b"; ".join(response.headers.getRawHeaders(b"Set-Cookie"))
    assert b"memcachier_session=" in headers and b"HttpOnly" in headers
    cookie = cookieOf(response)
    page = site.request("GET", f"/caches/{w.cache.id}/", cookie)
    assert page.code == 200 and w.primary.username.encode() in page.body
    assert site.request("GET", f"/api/v2/caches/{w.cache.id}/stats", cookie).code == 200
    assert site.request("GET", f"/api/v2/caches/{w.other.id}/stats", cookie).code == 403


def test_cacheSignInNeedsTheFormsToken(site):
    """
    A post without the sign-in cookie matching the form's token (a
    cross-site form) is refused before anything is checked.
    """
    w = site.world
    response = site.request("POST", "/login", form={
        "login_token": "x", "username": w.primary.username, "password": w.primary.password})
    assert response.code == 403 and cookieOf(response) is None


def test_cacheSignInWrongOrUnknownSameAnswer(site):
    """
    A wrong password and an unknown username get the same page and code,
    and no session.
    """
    w = site.world
    wrong = site.cacheSignIn(w.primary.username, "wrong")
    unknown = site.cacheSignIn("nosuchuser", "wrong")
    assert wrong.code == unknown.code == 403
    assert cookieOf(wrong) is None and cookieOf(unknown) is None
    assert b"Wrong username or password" in wrong.body

    def page(response, username):
        # the form echoes the username and carries its own token
        body = re.sub(rb'name="login_token" value="[^"]+"', b"", response.body)
        return body.replace(username.encode(), b"")

    assert page(wrong, w.primary.username) == page(unknown, "nosuchuser")


def test_cacheSignInNeedsTheAPICapability(site):
    """
    A credential without the API capability is refused, saying why.
    """
    w = site.world
    credential = w.cp.createCredential(w.cache.id, api=False)
    w.refresh()
    response = site.cacheSignIn(credential.username, credential.password)
    assert response.code == 403 and cookieOf(response) is None
    assert b"API capability" in response.body


def test_cacheSignInThrottledBeforeThePassword():
    """
    The sign-in spends the memcache logins' budgets (the same throttle):
    past them, 429 with Retry-After, even with the right password; the
    username's budget is spent for memcache logins from elsewhere too.
    """
    throttle = AuthThrottle(rate=0.5, burst=3)
    site = Site(throttle=throttle)
    w = site.world
    for _ in range(3):
        assert site.cacheSignIn(w.primary.username, "wrong").code == 403
    refused = site.cacheSignIn(w.primary.username, w.primary.password)
    assert refused.code == 429 and cookieOf(refused) is None
    assert refused.header(b"Retry-After") == b"2"
    assert b"Too many failed sign-ins" in refused.body
    now = w.reactor.seconds()
    assert not throttle.admit("10.9.9.9", w.primary.username.encode(), now)
    w.reactor.advance(2)
    assert site.cacheSignIn(w.primary.username, w.primary.password).code == 303


def test_cacheSignInKeepsTheRightfulAppsAccess():
    """
    A successful sign-in remembers its address like a memcache login: it
    is not refused by the username's budget that others spent.
    """
    throttle = AuthThrottle(rate=0.01, burst=2)
    site = Site(throttle=throttle)
    w = site.world
    username = w.primary.username
    first = site.cacheSignIn(username, w.primary.password)
    assert first.code == 303
    now = w.reactor.seconds()
    for i in range(2):
        throttle.failed(f"10.8.0.{i}", username.encode(), now)
    assert site.cacheSignIn(username, w.primary.password).code == 303


def test_cacheSignOut(site):
    """
    Signing out (with the CSRF token) ends a credential's session.
    """
    w = site.world
    cookie = cookieOf(site.cacheSignIn(w.primary.username, w.primary.password))
    out = site.request("POST", "/logout", cookie, form={"csrf_token": site.csrf(cookie)})
    assert (out.code, out.header(b"Location")) == (303, b"/signed-out")
    assert site.request("GET", f"/api/v2/caches/{w.cache.id}/stats", cookie).code == 401


@pytest.mark.parametrize("change", ["delete", "noApi", "promoteAndDelete", "rotateSSO"])
def test_credentialChangesEndItsSessions(site, change):
    """
    A session started with a credential ends once the index has the
    credential deleted (rotation: a new one promoted, the old deleted) or
    without the API capability, or the cache's SSO secret rotated; other
    credentials' sessions live on.
    """
    w = site.world
    credential = w.cp.createCredential(w.cache.id)
    w.refresh()
    cookie = cookieOf(site.cacheSignIn(credential.username, credential.password))
    primary = cookieOf(site.cacheSignIn(w.primary.username, w.primary.password))
    path = f"/api/v2/caches/{w.cache.id}/stats"
    victim, survivor = cookie, primary
    if change == "delete":
        w.cp.deleteCredential(credential.username)
    elif change == "noApi":
        w.cp.updateCredential(credential.username, api=False)
    elif change == "promoteAndDelete":
        w.cp.promoteCredential(credential.username)
        w.cp.deleteCredential(w.primary.username)
        victim, survivor = primary, cookie
    else:
        w.cp.rotateSso(w.cache.id)
        survivor = None
    # the node sees the change when its index polls it
    assert site.request("GET", path, victim).code == 200
    w.refresh()
    assert site.request("GET", path, victim).code == 401
    assert site.request("GET", f"/caches/{w.cache.id}/", victim).code == 401
    if survivor is not None:
        assert site.request("GET", path, survivor).code == 200
