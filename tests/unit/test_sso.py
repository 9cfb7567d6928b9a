"""
Tests for L{memcachier.web.sso}: Heroku's tokens, signed links, the
operator's password hash, sessions on L{task.Clock} (in-memory SQLite) and
CSRF checks.
"""

import hashlib
from urllib.parse import parse_qsl, urlsplit

import pytest
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from memcachier.control import schema
from memcachier.control.migrations import upgrade
from memcachier.testing import MemoryControlIndex
from memcachier.web import sso
from memcachier.web.sso import (
    ABSOLUTE_TIMEOUT,
    IDLE_TIMEOUT,
    TOUCH_INTERVAL,
    SessionStore,
    SSORefused,
)

NOW = 1_700_000_000
SALT = "salt"
UUID = "8d6c1f0e-7d4a-4a44-9e61-3b7c1f2b5a10"


def herokuForm(timestamp, scoped=True, **changes):
    form = {"resource_id": UUID, "timestamp": str(timestamp), "user_id": "u1",
            "email": "a@example.com"}
    if scoped:
        form["user_scoped_resource_token"] = hashlib.sha256(
            f"{UUID}:{SALT}:{timestamp}:u1:a@example.com".encode()).hexdigest()
    else:
        form["resource_token"] = hashlib.sha1(f"{UUID}:{SALT}:{timestamp}".encode()).hexdigest()
    form.update(changes)
    return form


# -- Heroku


def test_herokuTokensMatchHerokusRecipe():
    """
    The tokens are sha1(id:salt:timestamp) and
    sha256(id:salt:timestamp:user_id:email), hex, as Heroku computes them.
    """
    assert sso.herokuResourceToken("123", "abc", "1000") == hashlib.sha1(b"123:abc:1000").hexdigest()
    assert sso.herokuUserToken("123", "abc", "1000", "u", "e@x") == hashlib.sha256(
        b"123:abc:1000:u:e@x").hexdigest()


@pytest.mark.parametrize("scoped", [True, False])
def test_herokuLoginAccepted(scoped):
    """
    A right token within 5 minutes names the resource and the user.
    """
    for age in (0, 299, 300):
        resourceId, user = sso.checkHerokuLogin(herokuForm(NOW - age, scoped), SALT, NOW)
        assert resourceId == UUID
        assert user == "a@example.com"


@pytest.mark.parametrize(
    "form,why",
    [
        (herokuForm(NOW - 301), "expired"),
        (herokuForm(NOW + 1), "future"),
        (herokuForm(NOW, user_scoped_resource_token="0" * 64), "wrong token"),
        (herokuForm(NOW, scoped=False, resource_token="0" * 40), "wrong token"),
        # the token signs the email: another email is refused
        (herokuForm(NOW, email="b@example.com"), "wrong token"),
        ({**herokuForm(NOW), "timestamp": "soon"}, "Unix seconds"),
        ({"timestamp": str(NOW)}, "required"),
    ],
)
def test_herokuLoginRefused(form, why):
    """
    Old, future and wrong tokens are refused with a reason.
    """
    with pytest.raises(SSORefused, match=why):
        sso.checkHerokuLogin(form, SALT, NOW)


def test_herokuLoginOffWithoutSalt():
    with pytest.raises(SSORefused, match="not configured"):
        sso.checkHerokuLogin(herokuForm(NOW), "", NOW)


# -- links


@pytest.fixture
def index():
    index = MemoryControlIndex()
    index.addCache(7, "100")
    return index


def linkArgs(url):
    return dict(parse_qsl(urlsplit(url).query))


def test_linkRoundTrip(index):
    """
    A link works until its expiry, for its cache, and is signed with the
    cache's SSO secret.
    """
    cache = index.cache(7)
    url = sso.makeLink("http://mc.example", cache, NOW, ttl=600, nonce="n1")
    assert url.startswith("http://mc.example/sso/link?")
    got, nonce, expires = sso.checkLink(linkArgs(url), index, NOW + 599)
    assert (got.id, nonce, expires) == (7, "n1", NOW + 600)
    with pytest.raises(SSORefused, match="expired"):
        sso.checkLink(linkArgs(url), index, NOW + 600)


def test_linkTamperedOrRotated(index):
    """
    Changing the cache, the expiry or the secret (rotate_sso) voids a link.
    """
    import attr

    url = sso.makeLink("http://mc.example", index.cache(7), NOW, nonce="n1")
    args = linkArgs(url)
    for name, value in [("expires", str(NOW + 10**6)), ("nonce", "n2"), ("signature", "0" * 64)]:
        with pytest.raises(SSORefused):
            sso.checkLink({**args, name: value}, index, NOW)
    index._caches[7] = attr.evolve(index.cache(7), sso_secret="rotated")
    with pytest.raises(SSORefused, match="rotated"):
        sso.checkLink(args, index, NOW)
    with pytest.raises(SSORefused, match="malformed"):
        sso.checkLink({**args, "cache": "x"}, index, NOW)


def test_linkTTLBounds(index):
    with pytest.raises(ValueError):
        sso.makeLink("http://x", index.cache(7), NOW, ttl=sso.MAX_LINK_TTL + 1)


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200),
                                          ("1d", 86400)])
def test_parseDuration(text, seconds):
    assert sso.parseDuration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-1m", "1.5h", "10 minutes"])
def test_parseDurationRefused(text):
    with pytest.raises(ValueError):
        sso.parseDuration(text)


# -- the operator's password


def test_passwordHash():
    stored = sso.hashPassword("hunter2")
    assert stored.startswith("scrypt$")
    assert sso.checkPassword(stored, "hunter2")
    assert not sso.checkPassword(stored, "hunter3")
    assert not sso.checkPassword("scrypt$garbage", "hunter2")
    assert not sso.checkPassword("", "hunter2")


# -- sessions


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(NOW)
    return clock


@pytest.fixture
def store(clock):
    engine = schema.makeEngine("sqlite://")
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(schema.caches.insert().values(
            id=7, name="c", label="c", plan="100", enabled=True, cluster="default",
            sso_secret="s", created_at=0, last_active=0, uuid=UUID))
    return SessionStore(engine, clock)


def test_sessionCookieIsNotStored(store):
    """
    The database holds the sha256 of the cookie, never the cookie.
    """
    cookie, session = store.create(7, "fp", "a@example.com")
    assert len(cookie) >= 40
    assert session.key == hashlib.sha256(cookie.encode()).hexdigest()
    with store.engine.connect() as conn:
        keys = [row.key for row in conn.execute(schema.dashboard_sessions.select())]
    assert keys == [session.key] and cookie not in keys
    assert store.lookup(cookie) == session
    assert store.lookup("not-a-cookie") is None


def test_sessionIdleExpiry(store, clock):
    """
    Used at least every 30 minutes a session lives on; idle longer it
    ends (and its row goes).
    """
    cookie, _ = store.create(7, "fp", "u")
    for _ in range(5):
        clock.advance(IDLE_TIMEOUT - 1)
        assert store.lookup(cookie) is not None
    clock.advance(IDLE_TIMEOUT + 1)
    assert store.lookup(cookie) is None
    with store.engine.connect() as conn:
        assert conn.execute(schema.dashboard_sessions.select()).all() == []


def test_sessionAbsoluteExpiry(store, clock):
    """
    However busy, a session ends 12 hours after it began.
    """
    cookie, _ = store.create(7, "fp", "u")
    elapsed = 0
    while elapsed + TOUCH_INTERVAL <= ABSOLUTE_TIMEOUT:
        clock.advance(TOUCH_INTERVAL)
        elapsed += TOUCH_INTERVAL
        assert store.lookup(cookie) is not None
    clock.advance(1)
    assert store.lookup(cookie) is None


def test_sessionTouchIsThrottled(store, clock):
    """
    C{last_seen} is written at most once a minute.
    """
    cookie, session = store.create(7, "fp", "u")
    clock.advance(TOUCH_INTERVAL - 1)
    assert store.lookup(cookie).lastSeen == session.lastSeen
    clock.advance(1)
    assert store.lookup(cookie).lastSeen == NOW + TOUCH_INTERVAL


def test_sessionEndAndEndCache(store):
    a, sa_ = store.create(7, "fp", "u")
    b, _ = store.create(7, "fp", "u")
    operator, _ = store.create(None, "op", "operator")
    store.end(sa_.key)
    assert store.lookup(a) is None and store.lookup(b) is not None
    assert store.endCache(7) == 1
    assert store.lookup(b) is None
    assert store.lookup(operator).operator


def test_nonceSingleUse(store, clock):
    """
    A link's nonce is accepted once; expired nonces are pruned.
    """
    assert store.useNonce("n1", NOW + 600)
    assert not store.useNonce("n1", NOW + 600)
    clock.advance(601)
    store.create(7, "fp", "u")  # prunes
    with store.engine.connect() as conn:
        assert conn.execute(schema.dashboard_links_used.select()).all() == []


def test_sessionAllows():
    cache = sso.Session("k", 7, "f", "t", "u", 0, 0)
    operator = sso.Session("k", None, "f", "t", "u", 0, 0)
    assert cache.allows(7) and not cache.allows(8)
    assert operator.allows(7) and operator.allows(8)


# -- CSRF and cookies


def request(method, headers=None, args=None, secure=False):
    r = DummyRequest([b""])
    r.method = method
    for name, value in (headers or {}).items():
        r.requestHeaders.setRawHeaders(name, [value])
    r.args = args or {}
    r.isSecure = lambda: secure
    return r


def test_csrf():
    """
    Safe methods need no token; others need the session's token in
    X-CSRF-Token or the csrf_token form field.
    """
    session = sso.Session("k", 7, "f", "tok", "u", 0, 0)
    assert sso.csrfOK(request(b"GET"), session)
    assert sso.csrfOK(request(b"HEAD"), session)
    assert not sso.csrfOK(request(b"POST"), session)
    assert not sso.csrfOK(request(b"POST", {b"X-CSRF-Token": b"nope"}), session)
    assert sso.csrfOK(request(b"POST", {b"X-CSRF-Token": b"tok"}), session)
    assert sso.csrfOK(request(b"DELETE", args={b"csrf_token": [b"tok"]}), session)
    assert not sso.csrfOK(request(b"PATCH", args={b"csrf_token": [b""]}), session)


@pytest.mark.parametrize("secure", [False, True])
def test_sessionCookieFlags(secure):
    """
    The cookie is HttpOnly, SameSite=Lax, for the whole site, and Secure
    over TLS only.
    """
    from twisted.web.http import Request
    from twisted.web.test.requesthelper import DummyChannel

    r = Request(DummyChannel())
    r.isSecure = lambda: secure
    sso.setSessionCookie(r, "abc")
    (cookie,) = r.cookies
    assert cookie.startswith(b"memcachier_session=abc; Path=/; Max-Age=43200")
    assert b"; HttpOnly" in cookie and b"; SameSite=lax" in cookie
    assert (b"; Secure" in cookie) == secure


def test_migrationGivesExistingCachesAUuid():
    """
    Revision 0004 gives every existing cache its own random uuid.
    """
    import sqlalchemy as sa

    engine = schema.makeEngine("sqlite://")
    upgrade(engine, "0002")
    with engine.begin() as conn:
        for i in (1, 2):
            conn.execute(sa.text(
                "INSERT INTO caches (id, name, label, plan, enabled, cluster, sso_secret, "
                "created_at, last_active) VALUES (:i, :n, '', 'dev', 1, 'default', 's', 0, 0)"
            ), {"i": i, "n": f"c{i}"})
    upgrade(engine)
    with engine.connect() as conn:
        uuids = [row.uuid for row in conn.execute(schema.caches.select())]
    assert len(set(uuids)) == 2 and all(len(u) == 36 for u in uuids)


def test_migrationKeepsWhatReferencesCaches():
    """
    Adding the uuid column copies no table: a cache's credentials survive
    the upgrade (a SQLite table copy would have cascaded their deletion).
    """
    import sqlalchemy as sa

    engine = schema.makeEngine("sqlite://")
    upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO caches (id, name, label, plan, enabled, cluster, sso_secret, "
            "created_at, last_active) VALUES (1, 'c1', '', 'dev', 1, 'default', 's', 0, 0)"))
        conn.execute(sa.text(
            'INSERT INTO credentials (cache_id, username, password, write_capability, '
            'flush_capability, api_capability, "primary") VALUES (1, \'U1\', \'P\', 1, 1, 1, 1)'))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT username FROM credentials")).scalars().all() == ["U1"]


def test_credentialFingerprint():
    """
    A credential's session fingerprint names the credential and changes
    with the cache's SSO secret, the password, or another credential
    under the same id; it fits the column and is never taken for an SSO
    fingerprint (hex).
    """
    from memcachier.control.model import Credential

    credential = Credential(id=42, cache_id=1, username="abc", password="p1")
    fp = sso.credentialFingerprint("secret", credential)
    assert sso.credentialOf(fp) == 42
    assert len(fp) <= 64
    assert fp != sso.credentialFingerprint("rotated", credential)
    assert fp != sso.credentialFingerprint("secret", Credential(42, 1, "abc", "p2"))
    assert fp != sso.credentialFingerprint("secret", Credential(42, 1, "xyz", "p1"))
    assert sso.credentialOf(sso.fingerprint("secret")) is None
    assert sso.credentialOf("cred:x:y") is None
