# -*- test-case-name: tests.unit.test_sso -*-
"""
Single sign-on to the dashboard and the sessions it starts.

Three ways in, each ending in a server-side session:

  - Heroku's add-on SSO (C{POST /sso/login}): a form whose
    C{resource_token} is C{sha1(uuid:salt:timestamp)} or whose
    C{user_scoped_resource_token} is
    C{sha256(uuid:salt:timestamp:user_id:email)}, the salt being the
    manifest's C{sso_salt}; a timestamp more than 5 minutes old or in the
    future is refused.
  - A signed, expiring, single-use link printed by C{memcachier-admin cache
    dashboard-url ID}: an HMAC-SHA256 of the cache id, expiry and a nonce,
    keyed with the cache's SSO secret, so C{rotate_sso} voids every link.
  - The operator's password, for C{/admin/} (scrypt hash in the config).

  - A cache's own username and password, on the sign-in page at C{/}
    (L{memcachier.web.dashboard.app}): only credentials with the API
    capability, throttled like memcache logins.

A session is a random cookie value; the control plane keeps only its
sha256 (L{schema.dashboard_sessions}), the cache it may see, a CSRF token
and a fingerprint of the cache's SSO secret at login: rotating the secret
ends every session of the cache, on every node, at once.  A session
started with a credential also names that credential in its fingerprint
(L{credentialFingerprint}): rotating or deleting the credential, or taking
its API capability away, ends it too.  Sessions end
after L{IDLE_TIMEOUT} without a request and L{ABSOLUTE_TIMEOUT} after
login, whatever happens.

Every time comes from the injected clock.
"""

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlencode

import attr
import sqlalchemy as sa

from memcachier.control import schema
from memcachier.tx.threads import ThreadPoolRunner

#: Heroku refuses tokens older than this (seconds); so do we.
HEROKU_WINDOW = 5 * 60

#: A session unused this long ends (seconds).
IDLE_TIMEOUT = 30 * 60

#: A session ends this long after login, used or not (seconds).
ABSOLUTE_TIMEOUT = 12 * 60 * 60

#: A session's C{last_seen} is written at most this often (seconds), so
#: that polling the API does not write to the database on every request.
TOUCH_INTERVAL = 60

#: The default and the longest life of a dashboard link (seconds).
DEFAULT_LINK_TTL = 10 * 60
MAX_LINK_TTL = 24 * 60 * 60

#: The session cookie's name.
COOKIE = b"memcachier_session"

#: The header (or form field) carrying the CSRF token.
CSRF_HEADER = b"X-CSRF-Token"
CSRF_FIELD = b"csrf_token"

#: Methods that change nothing, so need no CSRF token.
SAFE_METHODS = frozenset([b"GET", b"HEAD", b"OPTIONS"])


class SSORefused(Exception):
    """
    A login attempt that must be answered with 403; the message says why
    (to the user: nothing secret is in it).
    """


# -- Heroku


def herokuResourceToken(resourceId, salt, timestamp):
    """
    Heroku's original token: C{sha1(resource_id:sso_salt:timestamp)}, hex.
    """
    return hashlib.sha1(f"{resourceId}:{salt}:{timestamp}".encode("utf-8")).hexdigest()


def herokuUserToken(resourceId, salt, timestamp, userId, email):
    """
    Heroku's user-scoped token:
    C{sha256(resource_id:sso_salt:timestamp:user_id:email)}, hex.
    """
    text = f"{resourceId}:{salt}:{timestamp}:{userId}:{email}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkHerokuLogin(form, salt, now):
    """
    Check a Heroku SSO form.  The user-scoped token is checked when it is
    sent (Heroku's preferred one), the original token otherwise.

    @param form: field name to value, L{str}s (C{resource_id},
        C{timestamp}, C{resource_token} and/or
        C{user_scoped_resource_token}, C{user_id}, C{email}).
    @param salt: the manifest's C{sso_salt}.
    @param now: clock seconds.
    @return: the resource id (the cache's uuid) and who logged in.
    @rtype: 2-tuple of L{str}
    @raise SSORefused: a missing field, a wrong token, a timestamp out of
        the window.
    """
    if not salt:
        raise SSORefused("Heroku single sign-on is not configured on this server")
    resourceId = form.get("resource_id") or form.get("id") or ""
    timestamp = form.get("timestamp", "")
    if not resourceId or not timestamp:
        raise SSORefused("resource_id and timestamp are required")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise SSORefused("timestamp must be Unix seconds")
    age = now - int(timestamp)
    if age < 0:
        raise SSORefused("the token's timestamp is in the future")
    if age > HEROKU_WINDOW:
        raise SSORefused("the token has expired (older than 5 minutes)")
    userToken = form.get("user_scoped_resource_token")
    email = form.get("email", "")
    if userToken:
        expected = herokuUserToken(resourceId, salt, timestamp, form.get("user_id", ""), email)
        given = userToken
    else:
        expected = herokuResourceToken(resourceId, salt, timestamp)
        given = form.get("resource_token") or form.get("token") or ""
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("utf-8")):
        raise SSORefused("wrong token")
    return resourceId, (email or "heroku")


# -- links


def _linkSignature(secret, cacheId, expires, nonce):
    message = f"dashboard-link:{cacheId}:{expires}:{nonce}".encode("ascii")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def makeLink(publicURL, cache, now, ttl=DEFAULT_LINK_TTL, nonce=None):
    """
    A signed, expiring, single-use login link to the dashboard of C{cache}.

    @param publicURL: the server's public base URL (C{[web] public_url}).
    @type cache: L{memcachier.control.model.Cache}
    @param now: clock seconds.
    @param ttl: seconds the link works, at most L{MAX_LINK_TTL}.
    @param nonce: for tests; random otherwise.
    @rtype: L{str}
    """
    if not 0 < ttl <= MAX_LINK_TTL:
        raise ValueError(f"a link lives between 1 second and {MAX_LINK_TTL} seconds")
    expires = int(now + ttl)
    nonce = nonce or secrets.token_hex(16)
    query = urlencode(
        {
            "cache": cache.id,
            "expires": expires,
            "nonce": nonce,
            "signature": _linkSignature(cache.sso_secret, cache.id, expires, nonce),
        }
    )
    return f"{publicURL}/sso/link?{query}"


def checkLink(args, index, now):
    """
    Check a link's query (not whether it was used already: see
    L{SessionStore.useNonce}).

    @param args: query name to value, L{str}s.
    @param index: the control index (C{cache(id)}).
    @param now: clock seconds.
    @return: (cache, nonce, expires).
    @raise SSORefused: malformed, wrongly signed (a rotated secret), or
        expired.
    """
    try:
        cacheId = int(args.get("cache", ""))
        expires = int(args.get("expires", ""))
    except ValueError:
        raise SSORefused("a malformed dashboard link")
    nonce = args.get("nonce", "")
    signature = args.get("signature", "")
    cache = index.cache(cacheId)
    if cache is None or not nonce or len(nonce) > 64:
        raise SSORefused("a malformed dashboard link")
    expected = _linkSignature(cache.sso_secret, cacheId, expires, nonce)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
        raise SSORefused("this dashboard link is not valid (its cache's SSO secret was rotated?)")
    if now >= expires:
        raise SSORefused("this dashboard link has expired")
    return cache, nonce, expires


def parseDuration(text):
    """
    C{90}, C{90s}, C{10m}, C{2h}, C{1d} as seconds.

    @raise ValueError: anything else.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    unit = units.get(text[-1:], None)
    number = text[:-1] if unit else text
    if not (number.isascii() and number.isdigit()):
        raise ValueError(f"expected a duration such as 600, 10m or 2h, not {text!r}")
    return int(number) * (unit or 1)


# -- the operator's password


def hashPassword(password, salt=None):
    """
    An scrypt hash of the operator's password, for
    C{[web] operator_password_hash}: C{scrypt$n$r$p$salt$hash}, base64.
    """
    salt = salt or secrets.token_bytes(16)
    n, r, p = 2**14, 8, 1
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${n}${r}${p}${b64(salt)}${b64(digest)}"


def checkPassword(stored, password):
    """
    @return: whether C{password} matches the hash L{hashPassword} made.
    """
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        salt, digest = base64.b64decode(salt), base64.b64decode(digest)
        computed = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(digest)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, digest)


# -- sessions


def fingerprint(secret):
    """
    What a session remembers of the secret it was granted under: rotating
    the secret makes this differ, which ends the session.
    """
    return hashlib.sha256(("session:" + secret).encode("utf-8")).hexdigest()[:32]


#: How a credential's session fingerprint starts (SSO fingerprints are hex).
_CREDENTIAL_PREFIX = "cred:"


def credentialFingerprint(secret: str, credential) -> str:
    """
    The fingerprint of a session started with C{credential}: which
    credential it was (its id) and a digest of the cache's SSO secret and
    of the credential's username and password, so that a new secret, a new
    password or another credential under the same id all make it differ.

    @param secret: the cache's SSO secret.
    @type credential: L{memcachier.control.model.Credential}
    """
    text = f"session:{secret}:{credential.id}:{credential.username}:{credential.password}"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    return f"{_CREDENTIAL_PREFIX}{credential.id}:{digest}"


def credentialOf(sessionFingerprint: str):
    """
    The id of the credential a session was started with, or L{None} for a
    session of another kind (SSO, a link, the operator).

    @rtype: L{int} or L{None}
    """
    if not sessionFingerprint.startswith(_CREDENTIAL_PREFIX):
        return None
    number = sessionFingerprint[len(_CREDENTIAL_PREFIX):].partition(":")[0]
    return int(number) if number.isascii() and number.isdigit() else None


def _key(cookieValue):
    return hashlib.sha256(cookieValue.encode("utf-8")).hexdigest()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Session:
    """
    A dashboard session.

    @ivar cacheId: the cache it may see, or L{None} for the operator's
        (every cache).
    @ivar fingerprint: see L{fingerprint}.
    @ivar csrfToken: what state-changing requests must carry.
    @ivar user: who logged in.
    """

    key: str
    cacheId: object
    fingerprint: str
    csrfToken: str
    user: str
    createdAt: float
    lastSeen: float

    @property
    def operator(self):
        return self.cacheId is None

    def allows(self, cacheId):
        """
        Whether this session may see cache C{cacheId}.
        """
        return self.operator or self.cacheId == cacheId


class SessionStore:
    """
    Dashboard sessions and used link nonces in the control plane's
    database; synchronous (see L{AsyncSessionStore}).
    """

    def __init__(self, engine, clock):
        """
        @param engine: the control plane's engine (migrated).
        @param clock: provides C{seconds()}.
        """
        self.engine = engine
        self._clock = clock

    def create(self, cacheId, fingerprint, user):
        """
        Start a session.

        @param cacheId: the cache, or L{None} for an operator's session.
        @return: the cookie value and the L{Session}.
        """
        cookie = secrets.token_urlsafe(32)
        now = self._clock.seconds()
        session = Session(
            _key(cookie), cacheId, fingerprint, secrets.token_urlsafe(32), user[:256], now, now
        )
        with self.engine.begin() as conn:
            conn.execute(
                schema.dashboard_sessions.insert().values(
                    key=session.key,
                    cache_id=cacheId,
                    sso_fingerprint=fingerprint,
                    csrf_token=session.csrfToken,
                    user=session.user,
                    created_at=now,
                    last_seen=now,
                )
            )
            self._prune(conn, now)
        return cookie, session

    def lookup(self, cookie):
        """
        The live session a cookie names, its idleness reset; an expired one
        is deleted.

        @return: a L{Session} or L{None}.
        """
        now = self._clock.seconds()
        t = schema.dashboard_sessions
        with self.engine.begin() as conn:
            row = conn.execute(t.select().where(t.c.key == _key(cookie))).first()
            if row is None:
                return None
            if now - row.last_seen > IDLE_TIMEOUT or now - row.created_at > ABSOLUTE_TIMEOUT:
                conn.execute(t.delete().where(t.c.key == row.key))
                return None
            lastSeen = row.last_seen
            if now - lastSeen >= TOUCH_INTERVAL:
                conn.execute(t.update().where(t.c.key == row.key).values(last_seen=now))
                lastSeen = now
        return Session(
            row.key, row.cache_id, row.sso_fingerprint, row.csrf_token, row.user,
            row.created_at, lastSeen,
        )

    def end(self, key):
        """
        End the session whose key (not cookie) is C{key}.
        """
        t = schema.dashboard_sessions
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.key == key))

    def endCache(self, cacheId):
        """
        End every session of a cache.

        @return: how many there were.
        """
        t = schema.dashboard_sessions
        with self.engine.begin() as conn:
            return conn.execute(t.delete().where(t.c.cache_id == cacheId)).rowcount

    def useNonce(self, nonce, expiresAt):
        """
        Mark a link's nonce used.

        @return: L{True} the first time, L{False} if it was used before.
        """
        t = schema.dashboard_links_used
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values(nonce=nonce, expires_at=expiresAt))
        except sa.exc.IntegrityError:
            return False
        return True

    def _prune(self, conn, now):
        s = schema.dashboard_sessions.c
        conn.execute(
            schema.dashboard_sessions.delete().where(
                sa.or_(s.last_seen < now - IDLE_TIMEOUT, s.created_at < now - ABSOLUTE_TIMEOUT)
            )
        )
        conn.execute(
            schema.dashboard_links_used.delete().where(
                schema.dashboard_links_used.c.expires_at < now
            )
        )


class AsyncSessionStore:
    """
    L{SessionStore} for code on the reactor: each method runs in the
    control plane's thread pool and returns a L{Deferred}.
    """

    def __init__(self, store, threadpool, reactor):
        self.store = store
        self._threads = ThreadPoolRunner(reactor, threadpool)

    def _run(self, method, *args):
        return self._threads.run(getattr(self.store, method), *args)

    def create(self, cacheId, fingerprint, user):
        return self._run("create", cacheId, fingerprint, user)

    def lookup(self, cookie):
        return self._run("lookup", cookie)

    def end(self, key):
        return self._run("end", key)

    def endCache(self, cacheId):
        return self._run("endCache", cacheId)

    def useNonce(self, nonce, expiresAt):
        return self._run("useNonce", nonce, expiresAt)


# -- CSRF and cookies


def csrfOK(request, session):
    """
    Whether C{request} may go on under C{session}: a safe method, or the
    session's CSRF token in the C{X-CSRF-Token} header or a C{csrf_token}
    form field.
    """
    if request.method in SAFE_METHODS:
        return True
    given = request.getHeader(CSRF_HEADER)
    if given is None:
        values = (getattr(request, "args", None) or {}).get(CSRF_FIELD)
        given = values[0] if values else None
    if isinstance(given, str):
        given = given.encode("utf-8")
    if not given:
        return False
    return hmac.compare_digest(given, session.csrfToken.encode("ascii"))


def setSessionCookie(request, cookie):
    """
    Hand the browser its session: C{HttpOnly}, C{SameSite=Lax}, C{Secure}
    when the request came over TLS, for the session's whole possible life.
    """
    request.addCookie(
        COOKIE,
        cookie.encode("ascii"),
        path=b"/",
        max_age=str(ABSOLUTE_TIMEOUT).encode("ascii"),
        httpOnly=True,
        sameSite="lax",
        secure=request.isSecure(),
    )


def clearSessionCookie(request):
    request.addCookie(
        COOKIE, b"", path=b"/", max_age=b"0", httpOnly=True, sameSite="lax",
        secure=request.isSecure(),
    )


def sessionCookie(request):
    """
    The session cookie's value, or L{None}.
    """
    value = request.getCookie(COOKIE)
    if not value:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if len(text) <= 128 else None
