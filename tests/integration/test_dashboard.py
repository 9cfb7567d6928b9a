"""
The dashboard in a real browser: Debian's Chromium driven by Playwright,
against a real server (twistd), with real memcache clients (pylibmc,
pymemcache) making the figures move.

Chromium is not optional here: without C{/usr/bin/chromium} (the
C{chromium} package, which C{scripts/test} installs) every test fails
saying so.  Screenshots go to C{test-artifacts/dashboard/} (not in git).
"""

import hashlib
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pymemcache.client.base import Client as PymemcacheClient
from pymemcache.exceptions import MemcacheClientError

from tests.integration.conftest import ROOT, AsciiConnection, _bin
from tests.integration.conftest import pylibmcClient as libmc

CHROMIUM = "/usr/bin/chromium"

#: The flags Chromium needs on this kind of machine (root, no GPU, no
#: network beyond loopback).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

ARTIFACTS = ROOT / "test-artifacts" / "dashboard"

SALT = "test-sso-salt"
OPERATOR_PASSWORD = "correct horse battery staple"

#: Patient waits: the machine is shared and the page polls every 5 to 15 s.
WAIT_MS = 60_000


def _operatorHash():
    from memcachier.web.sso import hashPassword

    return hashPassword(OPERATOR_PASSWORD)


CONFIG = (
    '[caches]\ndefault_plan = "100"\n'
    "[analytics]\nsample_period = 1.0\n"
    f'[heroku]\nid = "memcachier"\npassword = "test-password"\nsso_salt = "{SALT}"\n'
)


@pytest.fixture(scope="module")
def browser():
    """
    Debian's Chromium under Playwright; fails (never skips) without it.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    """
    Everything a page said on its console, and its uncaught errors.
    """

    def __init__(self, page):
        self.messages = []
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))


@pytest.fixture
def server(memcachier_server_factory):
    return memcachier_server_factory(
        config=CONFIG, web_config=f'operator_password_hash = "{_operatorHash()}"'
    )


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def page(context):
    """
    A page whose console must stay empty: checked after the test.
    """
    page = context.new_page()
    console = Console(page)
    yield page
    assert console.messages == [], console.messages


def base(server):
    return f"http://127.0.0.1:{server.web_port}"


def dashboardURL(server, cacheId=None, ttl=None):
    command = [_bin("memcachier-admin"), f"--config={server.config_path}", "cache",
               "dashboard-url", str(cacheId or server.cache_id)]
    if ttl:
        command += ["--ttl", ttl]
    return subprocess.run(command, capture_output=True, text=True, check=True,
                          cwd=server.directory).stdout.strip()


def shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def herokuForm(server, uuid, timestamp, userScoped=True):
    """
    The fields Heroku posts to C{/sso/login}.
    """
    fields = {"resource_id": uuid, "timestamp": str(timestamp), "email": "dev@example.com",
              "user_id": "0c0ffee0-1234", "app": "myapp"}
    if userScoped:
        text = f"{uuid}:{SALT}:{timestamp}:{fields['user_id']}:{fields['email']}"
        fields["user_scoped_resource_token"] = hashlib.sha256(text.encode()).hexdigest()
    else:
        text = f"{uuid}:{SALT}:{timestamp}"
        fields["resource_token"] = hashlib.sha1(text.encode()).hexdigest()
    return fields


def postHerokuForm(page, server, fields):
    """
    Submit C{fields} from a page of another origin, as Heroku's form does.
    """
    inputs = "".join(
        f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items()
    )
    page.set_content(
        f'<form method="post" action="{base(server)}/sso/login">{inputs}'
        '<button id="go">go</button></form>'
    )
    with page.expect_navigation():
        page.click("#go")


def signIn(page, server):
    page.goto(dashboardURL(server))
    page.wait_for_selector("#dashboard")
    waitFor(page, "document.querySelector('#set-id').textContent !== '–'")


def waitFor(page, expression, what=None):
    """
    Wait until a JavaScript expression is true on the page.  (Playwright's
    C{wait_for_function} compiles its predicate with C{eval}, which the
    dashboard's Content-Security-Policy forbids, as it should.)
    """
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        if page.evaluate(expression):
            return
        time.sleep(0.25)
    raise AssertionError(f"{what or expression}: still false")


def text(page, selector):
    return page.locator(selector).inner_text().strip()


def waitText(page, selector, predicate, what):
    """
    Wait until C{predicate(text of selector)} holds.
    """
    deadline = time.monotonic() + WAIT_MS / 1000
    last = None
    while time.monotonic() < deadline:
        last = text(page, selector)
        if predicate(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: {selector} still says {last!r}")


def sessionRequest(server, cookie, path, method="GET", headers=None):
    """
    An API request with a session cookie (no browser), as (status, body).
    """
    request = urllib.request.Request(base(server) + path, method=method, headers={
        "Cookie": f"memcachier_session={cookie}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sessionCookie(context):
    return next(c for c in context.cookies() if c["name"] == "memcachier_session")


# -- signing in


def test_herokuSSOFormPost(server, context, page):
    """
    A Heroku SSO form post (user-scoped sha256 token) from another origin
    signs in: a session cookie (HttpOnly, SameSite=Lax) and the cache's
    page, whose settings show the cache's uuid.
    """
    uuid = server.admin("cache", "show", str(server.cache_id))["uuid"]
    postHerokuForm(page, server, herokuForm(server, uuid, int(time.time())))
    assert page.url == f"{base(server)}/caches/{server.cache_id}/"
    waitFor(page, f"document.querySelector('#set-id').textContent.includes('{uuid}')")
    assert "dev@example.com" in text(page, ".who")
    cookie = sessionCookie(context)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # plain HTTP here; Secure over TLS
    shoot(page, "heroku-sso")


def test_herokuSSOLegacyTokenAndRefusals(server, browser):
    """
    The sha1 C{resource_token} works too; a token older than 5 minutes,
    one from the future and a wrong one are refused with 403.
    """
    uuid = server.admin("cache", "show", str(server.cache_id))["uuid"]
    context = browser.new_context()
    page = context.new_page()
    try:
        postHerokuForm(page, server, herokuForm(server, uuid, int(time.time()), userScoped=False))
        assert page.url.endswith(f"/caches/{server.cache_id}/")
        for timestamp, why in [
            (int(time.time()) - 301, "expired"),
            (int(time.time()) + 120, "future"),
        ]:
            fresh = browser.new_context()
            other = fresh.new_page()
            postHerokuForm(other, server, herokuForm(server, uuid, timestamp))
            assert "/sso/login" in other.url
            assert why in text(other, "main").lower(), text(other, "main")
            assert not [c for c in fresh.cookies() if c["name"] == "memcachier_session"]
            fresh.close()
        fields = herokuForm(server, uuid, int(time.time()))
        fields["user_scoped_resource_token"] = "0" * 64
        data = urllib.parse.urlencode(fields).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base(server) + "/sso/login", data=data, timeout=10)
        assert refused.value.code == 403
    finally:
        context.close()


def test_adminLinkIsSingleUseAndExpires(server, browser, page):
    """
    C{memcachier-admin cache dashboard-url} prints a link that signs in
    once; used again, or after its ttl, it is refused with 403.
    """
    url = dashboardURL(server)
    assert re.fullmatch(rf"{re.escape(base(server))}/sso/link\?\S+", url)
    page.goto(url)
    page.wait_for_selector("#dashboard")
    assert page.url == f"{base(server)}/caches/{server.cache_id}/"

    again = browser.new_context()
    try:
        with pytest.raises(urllib.error.HTTPError) as used:
            urllib.request.urlopen(url, timeout=10)
        assert used.value.code == 403
        assert b"used already" in used.value.read()
        short = dashboardURL(server, ttl="1s")
        time.sleep(2.1)
        with pytest.raises(urllib.error.HTTPError) as expired:
            urllib.request.urlopen(short, timeout=10)
        assert expired.value.code == 403
        assert b"expired" in expired.value.read()
    finally:
        again.close()


# -- signing in with a cache's credential


#: one token per 100 s and 5 at once: nothing refills while a test runs
SLOW_REFILL = "auth_failure_rate = 0.01\nauth_failure_burst = 5\n"


def credentialSignIn(page, server, username, password):
    """
    Fill the sign-in form at C{/} and submit it.

    @return: the Playwright response the form's navigation ended on.
    """
    page.goto(base(server) + "/")
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation() as navigation:
        page.click("#signin button[type=submit]")
    return navigation.value


def sessionCookies(context):
    return [c for c in context.cookies() if c["name"] == "memcachier_session"]


def waitStatus(server, cookie, path, status, what):
    deadline = time.monotonic() + WAIT_MS / 1000
    got = None
    while time.monotonic() < deadline:
        got = sessionRequest(server, cookie, path)[0]
        if got == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: still {got}")


def test_credentialSignInAndSignOut(server, context, page):
    """
    The cache's username and password on the page at C{/} sign in: the
    cache's page, the same session cookie as SSO (HttpOnly, SameSite=Lax),
    the username shown.  Sign out ends the session: its cookie is refused
    by the API.
    """
    response = credentialSignIn(page, server, server.username, server.password)
    assert response.status == 200
    assert page.url == f"{base(server)}/caches/{server.cache_id}/"
    waitFor(page, "document.querySelector('#set-id').textContent !== '–'")
    assert server.username in text(page, ".who")
    cookie = sessionCookie(context)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    stats = f"/api/v2/caches/{server.cache_id}/stats"
    assert sessionRequest(server, cookie["value"], stats)[0] == 200
    shoot(page, "credential-sign-in")
    with page.expect_navigation(url=re.compile(r".*/signed-out$")):
        page.get_by_role("button", name="Sign out").click()
    assert sessionRequest(server, cookie["value"], stats)[0] == 401
    page.goto(base(server) + "/")
    assert page.locator("#signin").is_visible()


def test_credentialSignInRefusals(server, browser):
    """
    A wrong password and an unknown username get the same 403 page; a
    credential without the API capability is refused saying so; none
    starts a session.
    """
    noApi = server.admin("credential", "create", str(server.cache_id), "--no-api")
    context = browser.new_context()
    page = context.new_page()
    try:
        wrong = credentialSignIn(page, server, server.username, "wrong password")
        assert wrong.status == 403
        assert "Wrong username or password" in text(page, "#signin-error")
        unknown = credentialSignIn(page, server, "nosuchuser", "wrong password")
        assert unknown.status == 403
        assert text(page, "#signin-error") == "Wrong username or password."
        # the index polls every 0.2 s; the credential was made before
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            refused = credentialSignIn(page, server, noApi["username"], noApi["password"])
            if "API capability" in text(page, "#signin-error") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert refused.status == 403
        assert "API capability" in text(page, "#signin-error")
        shoot(page, "credential-no-api")
        assert sessionCookies(context) == []
    finally:
        context.close()


def test_credentialSignInThrottled(memcachier_server_factory, browser):
    """
    Past the failure budget (5) the sign-in answers 429 with Retry-After,
    the right password included; the budgets are the memcache logins':
    the same address and, from another address, the same username are
    refused on the memcache port too.
    """
    server = memcachier_server_factory(config=CONFIG, memcache=SLOW_REFILL)
    context = browser.new_context()
    page = context.new_page()
    try:
        for i in range(5):
            assert credentialSignIn(page, server, server.username, f"wrong {i}").status == 403
        throttled = credentialSignIn(page, server, server.username, server.password)
        assert throttled.status == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in text(page, "#signin-error")
        assert sessionCookies(context) == []
        shoot(page, "credential-429")
    finally:
        context.close()
    for source in ("127.0.0.1", "127.0.0.3"):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                        source_address=(source, 0))
        conn = AsciiConnection(server.port, sock=sock)
        assert conn.auth(server.username, server.password) == b"CLIENT_ERROR authentication failure"
        assert conn.closed()


def test_credentialRotationEndsItsSession(server, browser):
    """
    Signed in with a second credential, the page signs itself out once the
    credential is rotated (a new one made, the old one deleted): its
    cookie is refused within a poll.
    """
    old = server.admin("credential", "create", str(server.cache_id))
    context = browser.new_context()
    page = context.new_page()
    try:
        deadline = time.monotonic() + WAIT_MS / 1000
        while credentialSignIn(page, server, old["username"], old["password"]).status != 200:
            assert time.monotonic() < deadline, "the new credential never signed in"
            time.sleep(0.5)
        waitFor(page, "document.querySelector('#set-id').textContent !== '–'")
        cookie = sessionCookie(context)["value"]
        stats = f"/api/v2/caches/{server.cache_id}/stats"
        assert sessionRequest(server, cookie, stats)[0] == 200
        server.admin("credential", "create", str(server.cache_id))
        server.admin("credential", "delete", old["username"])
        waitStatus(server, cookie, stats, 401, "the rotated credential's session")
        page.wait_for_url(re.compile(r".*/signed-out$"), timeout=WAIT_MS)
    finally:
        context.close()


# -- live figures


def test_liveFiguresFollowAClient(server, page):
    """
    While pylibmc works, the item count and the hit rate change on the
    page without a reload: green (at least 80 %) while the client hits,
    red (below 50 %) once it mostly misses.
    """
    signIn(page, server)
    client = libmc(server)
    for i in range(20):
        client.set(f"item:{i}", b"x" * 100)
    waitText(page, "#storage-items", lambda t: t == "20", "item count")

    def keepGoing(work, level):
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            work()
            if page.get_attribute("#hit-rate", "data-level") == level:
                return text(page, "#hit-rate")
            time.sleep(1)
        raise AssertionError(f"hit rate never {level}: {text(page, '#hit-rate')}")

    def hits():
        for i in range(20):
            assert client.get(f"item:{i}") == b"x" * 100

    def misses():
        for i in range(200):
            client.get(f"missing:{i}")

    good = keepGoing(hits, "good")
    assert float(good.rstrip(" %")) >= 80
    for i in range(20, 30):
        client.set(f"item:{i}", b"y")
    waitText(page, "#storage-items", lambda t: t == "30", "item count after more sets")
    bad = keepGoing(misses, "bad")
    assert float(bad.rstrip(" %")) < 50
    # the all-time bars and table come from GET stats
    waitText(page, "#alltime-table tbody tr:first-child td:nth-child(3)",
             lambda t: int(t.replace(",", "")) >= 200, "get misses")
    # alone on the node, the cache is never held back by the fair share
    assert text(page, "#alltime-held-back") == "0 s"
    assert int(text(page, "#conn-open")) >= 1
    shoot(page, "live")


# -- actions


def test_credentialCreateUseDelete(server, page):
    """
    A credential created on the page works from pymemcache (ASCII auth);
    deleted on the page (with the confirmation), it is refused.
    """
    signIn(page, server)
    before = page.locator("#credentials tbody tr").count()
    page.click("#cred-create")
    waitFor(page, f"document.querySelectorAll('#credentials tbody tr').length > {before}")
    row = page.locator("#credentials tbody tr").last
    username = row.get_attribute("data-username")
    password = row.locator("code").inner_text()

    client = PymemcacheClient(("127.0.0.1", server.port), timeout=10)
    assert client.set(username, password, noreply=False)
    assert client.set("from-new-credential", b"1", noreply=False)
    client.close()

    # capabilities: untick write, and the credential can no longer write
    row.locator("input[type=checkbox]").first.uncheck()
    waitFor(page, "document.querySelector('#status').textContent.includes('saved')")

    row.get_by_role("button", name="Delete").click()
    page.click("#confirm-ok")
    page.wait_for_selector(f'#credentials tr[data-username="{username}"]', state="detached")
    time.sleep(0.5)
    refused = PymemcacheClient(("127.0.0.1", server.port), timeout=10)
    with pytest.raises(MemcacheClientError, match="authentication failure"):
        refused.set(username, password, noreply=False)
    refused.close()


def test_flushNeedsConfirmation(server, page):
    """
    Flush asks first: cancelled, nothing happens; confirmed, the cache is
    empty for clients at once.
    """
    signIn(page, server)
    client = libmc(server)
    for i in range(5):
        client.set(f"flush:{i}", b"v")
    waitText(page, "#storage-items", lambda t: t == "5", "item count")
    page.click("#flush")
    assert page.locator("#confirm").is_visible()
    page.click("#confirm-cancel")
    assert not page.locator("#confirm").is_visible()
    assert client.get("flush:0") == b"v"
    page.click("#flush")
    page.click("#confirm-ok")
    waitText(page, "#status", lambda t: "flushed" in t, "flush done")
    assert client.get("flush:0") is None
    waitText(page, "#storage-items", lambda t: t == "0", "item count after flush")


def test_watchedPrefixShowsItsStats(server, page):
    """
    A prefix watched from the page (typed, Enter) gets a row, and its keys
    show up in its stats once the sampler has run.
    """
    signIn(page, server)
    page.fill("#prefix-input", "user:")
    page.press("#prefix-input", "Enter")
    page.wait_for_selector('#prefixes tr[data-prefix="user:"]')
    client = libmc(server)
    for i in range(7):
        client.set(f"user:{i}", b"abc")
        client.get(f"user:{i}")
    waitText(page, '#prefixes tr[data-prefix="user:"] td:nth-child(2)',
             lambda t: t == "7", "keys under user:")
    page.fill("#key-input", "user:3")
    page.click("#key-form button")
    page.wait_for_selector("#key-stats:not([hidden]) tbody tr")
    assert text(page, "#key-stats tbody tr:last-child td:nth-child(2)") == "yes"


def test_settingsActions(memcachier_server_factory, page):
    """
    Promote a credential (the MEMCACHIER_* lines follow), enable a disabled
    cache, and switch to the other cluster of the same kind, each from the
    page.
    """
    server = memcachier_server_factory(config=CONFIG.replace(
        '[caches]\ndefault_plan = "100"\n',
        '[caches]\ndefault_plan = "100"\ndefault_cluster = "alpha"\n'
        '[clusters.alpha]\nservers = ["10.0.0.1:11211"]\n'
        '[clusters.beta]\nservers = ["10.0.0.2:11211"]\n'))
    signIn(page, server)
    assert text(page, "#set-cluster") == "alpha"
    page.click("#cred-create")
    waitFor(page, "document.querySelectorAll('#credentials tbody tr').length === 2")
    second = page.locator("#credentials tbody tr").nth(1)
    username = second.get_attribute("data-username")
    second.get_by_role("button", name="Make primary").click()
    page.click("#confirm-ok")
    waitText(page, "#env-lines", lambda t: f"MEMCACHIER_USERNAME={username}" in t, "promoted")

    server.admin("cache", "disable", str(server.cache_id))
    page.reload()
    waitText(page, "#set-enabled", lambda t: t.startswith("no"), "disabled")
    page.click("#enable-cache")
    waitText(page, "#set-enabled", lambda t: t == "yes", "enabled again")
    assert page.locator("#enable-cache").is_hidden()

    page.click("#switch-cluster")
    page.click("#confirm-ok")
    waitText(page, "#set-cluster", lambda t: t == "beta", "switched")
    assert text(page, "#set-servers") == "10.0.0.2:11211"
    assert "MEMCACHIER_SERVERS=10.0.0.2:11211" in text(page, "#env-lines")


def test_rotateSSOEndsSessionsAndLinks(server, browser, context, page):
    """
    Rotating the SSO secret on the page signs this session out, refuses
    its cookie on the API, and voids links printed before.
    """
    unused = dashboardURL(server)
    signIn(page, server)
    cookie = sessionCookie(context)["value"]
    status, _ = sessionRequest(server, cookie, f"/api/v2/caches/{server.cache_id}/stats")
    assert status == 200
    page.click("#rotate-sso")
    with page.expect_navigation(url=re.compile(r".*/signed-out$")):
        page.click("#confirm-ok")
    status, body = sessionRequest(server, cookie, f"/api/v2/caches/{server.cache_id}/stats")
    assert status == 401, body
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unused, timeout=10)
    assert refused.value.code == 403


def test_sessionOnlyForItsCache(server):
    """
    Over HTTP, a session reads its own cache; another cache's id is 403,
    and a change without the CSRF token is 403.
    """
    other = server.admin("cache", "create")
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar := http.cookiejar.CookieJar())
    )
    opener.open(dashboardURL(server), timeout=10).read()
    cookie = next(c.value for c in jar if c.name == "memcachier_session")
    own = f"/api/v2/caches/{server.cache_id}/stats"
    assert sessionRequest(server, cookie, own)[0] == 200
    status, body = sessionRequest(server, cookie, f"/api/v2/caches/{other['id']}/stats")
    assert status == 403, body
    status, body = sessionRequest(
        server, cookie, f"/api/v2/caches/{server.cache_id}/flush", method="POST")
    assert (status, json.loads(body)["error"]) == (403, "missing or wrong CSRF token (X-CSRF-Token)")


# -- phone width, keyboard, operator view


def test_phoneWidthAndKeyboard(server, browser):
    """
    At 390 px nothing is wider than the screen; the confirmation opens and
    closes with the keyboard alone.
    """
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    console = Console(page)
    try:
        client = libmc(server)
        client.set("user:1:some-rather-long-key-name-that-could-overflow-a-narrow-column", b"v")
        client.get("user:1:some-rather-long-key-name-that-could-overflow-a-narrow-column")
        signIn(page, server)
        page.click("#cred-create")
        waitFor(page, "document.querySelectorAll('#credentials tbody tr').length > 1")
        waitText(page, "#storage-items", lambda t: t == "1", "item count")
        page.wait_for_selector("#recent-logs tbody tr")
        wide = page.evaluate(
            """() => {
                const width = document.documentElement.clientWidth;
                const out = [];
                for (const e of document.querySelectorAll('body *')) {
                    const r = e.getBoundingClientRect();
                    if (r.width && r.right > width + 0.5) out.push(e.tagName + '#' + e.id + '.' + e.className + ' ' + r.right);
                }
                return {width, scroll: document.documentElement.scrollWidth, out};
            }"""
        )
        assert wide["scroll"] <= 390 and wide["out"] == [], wide
        shoot(page, "phone")

        page.focus("#flush")
        page.keyboard.press("Enter")
        assert page.locator("#confirm").is_visible()
        assert page.evaluate("document.activeElement.id") == "confirm-cancel"
        page.keyboard.press("Escape")
        assert not page.locator("#confirm").is_visible()
        assert client.get("user:1:some-rather-long-key-name-that-could-overflow-a-narrow-column") == b"v"
        assert console.messages == [], console.messages
    finally:
        context.close()


def test_operatorView(server, browser):
    """
    C{/admin/} asks for the operator's password, then lists every cache
    with a link to its page, which the operator's session may open.
    """
    context = browser.new_context()
    page = context.new_page()
    console = Console(page)
    try:
        page.goto(base(server) + "/admin/")
        page.fill("#password", OPERATOR_PASSWORD)
        with page.expect_navigation():
            page.press("#password", "Enter")
        page.wait_for_selector("#caches tbody tr")
        row = page.locator("#caches tbody tr").first
        assert str(server.cache_id) in row.inner_text()
        with page.expect_navigation():
            row.get_by_role("link").click()
        waitFor(page, "document.querySelector('#set-id').textContent !== '–'")
        assert page.url.endswith(f"/caches/{server.cache_id}/")
        assert console.messages == [], console.messages
    finally:
        context.close()
    wrong = browser.new_context()
    page = wrong.new_page()
    try:
        page.goto(base(server) + "/admin/")
        page.fill("#password", "wrong")
        with page.expect_navigation():
            page.press("#password", "Enter")
        assert "Wrong password" in text(page, "main")
    finally:
        wrong.close()


# -- alerts


@pytest.fixture
def slack():
    """
    A local HTTP server standing in for Slack's incoming webhooks: it
    records every JSON body posted to it.
    """
    import http.server
    import threading

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.received = received
    yield httpd
    httpd.shutdown()


def test_alertsCreateEditFireDelete(memcachier_server_factory, slack, page):
    """
    On the page: add a Slack delivery config, create a hit-rate alert,
    edit it; pylibmc misses until it fires, the Slack stand-in gets the
    message and the page lists the event as delivered; then delete both.
    """
    server = memcachier_server_factory(
        config=CONFIG + '[alerts]\ninterval = "1s"\nwindow = "5s"\nallow_http_loopback = true\n'
    )
    signIn(page, server)
    page.select_option("#config-type", "slack")
    page.fill("#config-target", slack.url)
    page.fill("#config-channel", "#ops")
    page.click("#config-form button[type=submit]")
    page.wait_for_selector("#alert-configs tbody tr")
    assert "#ops" in text(page, "#alert-configs tbody tr")

    page.select_option("#alert-trigger", "hit_rate")
    page.fill("#alert-threshold", "90")
    page.fill("#alert-description", "checkout cache")
    page.click("#alert-save")
    page.wait_for_selector("#alerts tbody tr")
    row = page.locator("#alerts tbody tr").first
    assert "hit rate below 90 %" in row.inner_text()
    # edit: the threshold becomes 50
    row.get_by_role("button", name="Edit").click()
    assert page.input_value("#alert-threshold") == "90"
    page.fill("#alert-threshold", "50")
    page.click("#alert-save")
    waitText(page, "#alerts tbody tr:first-child td:first-child",
             lambda t: "below 50 %" in t, "edited alert")

    client = libmc(server)
    deadline = time.monotonic() + WAIT_MS / 1000
    while not slack.received and time.monotonic() < deadline:
        for i in range(100):
            client.get(f"missing:{i}")
        time.sleep(0.5)
    assert slack.received, "the alert never reached the Slack stand-in"
    assert "hit_rate" in slack.received[0]["text"] and slack.received[0]["channel"] == "#ops"
    waitText(page, "#alert-events tbody", lambda t: "fired" in t and "delivered" in t,
             "the event on the page")
    shoot(page, "alerts")

    page.locator("#alerts tbody tr").first.get_by_role("button", name="Delete").click()
    page.click("#confirm-ok")
    page.wait_for_selector("#alerts tbody tr", state="detached")
    page.locator("#alert-configs tbody tr").first.get_by_role("button", name="Delete").click()
    page.click("#confirm-ok")
    page.wait_for_selector("#alert-configs tbody tr", state="detached")
