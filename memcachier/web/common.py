# -*- test-case-name: tests.unit.test_api -*-
"""
What every route group of the HTTP API shares: the JSON error model, the
request-body readers, HTTP Basic authentication against a cache's
credentials, route groups (L{route}), and L{JSONErrors}, how the API's
failures look (see L{memcachier.web.router}).

A route handler stays thin: it calls L{CacheAuth.authorize}, reads its
body with L{readJSONObject} or L{requireNoBody}, calls the control plane
or the runtime, and returns L{jsonResponse}.  Anything that should become
a 4xx is raised as an L{ApiError}; anything else becomes an opaque 500
(logged with its traceback, never shown).
"""

import base64
import binascii
import hmac
import json
from typing import Any, Dict, Optional, Sequence

from twisted.logger import Logger

from memcachier.web.sso import credentialOf, csrfOK

_log = Logger()

#: The largest request body the API reads; larger ones get 413.
MAX_BODY = 64 * 1024

#: The largest cache id (a signed 64-bit database key).
MAX_ID = 2**63 - 1

#: Compared against when the username is unknown, so an unknown username
#: costs about as much as a wrong password.
_DUMMY_PASSWORD = b"0" * 32

JSON_TYPE = b"application/json"


class ApiError(Exception):
    """
    A request the API refuses: rendered as C{{"error": message}} with
    C{code}.

    @ivar code: the HTTP status code.
    @ivar message: a message for the API's user (never a traceback).
    @ivar headers: extra response headers, C{{bytes: bytes}}.
    """

    def __init__(self, code, message, headers=None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def jsonResponse(request, value, code=200):
    """
    Set the status and JSON headers of C{request} and return C{value}
    encoded, for a route handler to return.

    @param value: anything L{json.dumps} takes.
    @rtype: L{bytes}
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", JSON_TYPE)
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(value).encode("utf-8")


def emptyResponse(request, code=204):
    """
    Set the status of C{request} for a response without a body.

    @rtype: L{bytes}
    """
    request.setResponseCode(code)
    request.defaultContentType = None
    request.setHeader(b"Cache-Control", b"no-store")
    return b""


def errorBody(request, code, message):
    """
    The JSON error answer: C{{"error": message}}.
    """
    return jsonResponse(request, {"error": message}, code)


# -- request bodies


def readBody(request: Any) -> bytes:
    """
    The request body, at most L{MAX_BODY} bytes.

    @raise ApiError: 413 if the body is larger (the site's content buffer
        marks a body it cut short as C{overflowed}).
    """
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data = content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY or getattr(content, "overflowed", False):
        raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
    return data


#: What L{readJSONObject} says when the body is empty and required.
NO_OBJECT = "expected a JSON object as the request body"


def readJSONObject(
    request: Any,
    fields: Optional[Sequence[str]] = None,
    required: bool = True,
    *,
    booleans: bool = False,
    empty: Optional[str] = NO_OBJECT,
    malformed: str = "malformed JSON body: {error}",
    notObject: Optional[str] = None,
) -> Dict[str, Any]:
    """
    The one reader of JSON request bodies: the body (at most L{MAX_BODY}
    bytes) parsed as a JSON object, its members checked.  Each surface
    keeps its own wording through the message arguments; its error
    renderer turns the L{ApiError} into its own body (C{{"error": ...}}
    for the API, C{{"message": ...}} for Heroku).

    @param fields: the allowed member names, or L{None} for any (Heroku
        adds fields over time).
    @param required: whether an empty body is an error (C{empty}); if
        not, it is read as C{{}}.
    @param booleans: whether every member must be C{true} or C{false}.
    @param empty: the message for a missing body; L{None} parses it as it
        is (so an empty body is C{malformed}).
    @param malformed: the message for a body that is not JSON
        (C{{error}} is the parser's complaint).
    @param notObject: the message for JSON that is not an object, or
        L{None} for C{"expected a JSON object, got <type>"}.
    @raise ApiError: 400 naming what is wrong, or 413.
    """
    data = readBody(request)
    if empty is not None and not data.strip():
        if required:
            raise ApiError(400, empty)
        return {}
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(400, malformed.format(error=e))
    if not isinstance(value, dict):
        raise ApiError(400, notObject or f"expected a JSON object, got {jsonType(value)}")
    if fields is not None:
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ApiError(
                400,
                f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(fields)}",
            )
    if booleans:
        for name, member in value.items():
            if not isinstance(member, bool):
                raise ApiError(400, f"{name}: expected true or false, got {jsonType(member)}")
    return value


def requireNoBody(request: Any) -> None:
    """
    Refuse a body on an endpoint that takes none (an empty body or C{{}}
    is accepted, as some clients always send one).

    @raise ApiError: 400 or 413.
    """
    readJSONObject(request, (), required=False)


def jsonType(value):
    """
    How an error message names the JSON type of C{value}.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- authentication


def parseCacheId(text):
    """
    @param text: the C{<cache_id>} path segment.
    @return: the cache id.
    @rtype: L{int}
    @raise ApiError: 400 if it is not a decimal number.
    """
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        raise ApiError(400, f"the cache id must be a number, not {text!r}")
    return int(text)


def basicCredentials(request):
    """
    The username and password of an HTTP Basic C{Authorization} header.

    @return: a 2-tuple of L{bytes}, or L{None} if there is no usable
        header.
    """
    header = request.getHeader(b"Authorization")
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return username, password


_CHALLENGE = {b"WWW-Authenticate": b'Basic realm="memcachier"'}

#: What L{CacheAuth.authorize} answers for an unknown cache.
FORBIDDEN, NOT_FOUND = 403, 404


class Authorized:
    """
    The caller of a request: a credential with the API capability, of the
    cache the path names.

    @ivar cacheId: the cache's id.
    @ivar cache: its L{memcachier.control.model.Cache}.
    @ivar credential: the caller's L{memcachier.control.model.Credential},
        or L{None} for a dashboard session (see L{CacheAuth.authorize}).
    """

    __slots__ = ("cacheId", "cache", "credential")

    def __init__(self, cacheId, cache, credential):
        self.cacheId = cacheId
        self.cache = cache
        self.credential = credential


class CacheAuth:
    """
    HTTP Basic authentication with a cache's credentials, read from the
    in-memory control index (no SQL).

    The password check is done here rather than with
    C{index.authenticate}, which refuses credentials of a disabled cache:
    the API must accept them, or C{enable_cache} could never be called.
    """

    def __init__(self, index):
        """
        @param index: the L{memcachier.control.index.ControlIndex}
            (C{credential}, C{cache}).
        """
        self.index = index

    def _check(self, username, password):
        try:
            name = username.decode("utf-8")
        except UnicodeDecodeError:
            name = None
        credential = self.index.credential(name) if name is not None else None
        if credential is None:
            hmac.compare_digest(password, _DUMMY_PASSWORD)
            return None
        if not hmac.compare_digest(password, credential.password.encode("utf-8")):
            return None
        return credential

    def authorize(self, request, cacheIdText, unknownCache=FORBIDDEN, capability=None):
        """
        Check the request's caller against the cache C{cacheIdText} names,
        in the contract's order: 400 for a non-numeric id, 401 for missing
        or wrong credentials, then 404 (if C{unknownCache} says so) for a
        cache that does not exist, then 403 for a credential of another
        cache, without the API capability, or without C{capability}.

        @param cacheIdText: the C{<cache_id>} path segment.
        @param unknownCache: L{FORBIDDEN} or L{NOT_FOUND}.
        @param capability: a capability the credential needs besides the
            API's (C{"flush"}, C{"write"}), as the memcache port asks it
            for the same command.  A dashboard session started with a
            credential needs it on that credential; one of the cache's
            owner (SSO, a link) or of an operator has them all.
        @rtype: L{Authorized}
        @raise ApiError: the refusal.
        """
        cacheId = parseCacheId(cacheIdText)
        session = getattr(request, "dashboardSession", None)
        if session is not None and not request.getHeader(b"Authorization"):
            return self._authorizeSession(request, session, cacheId, unknownCache, capability)
        pair = basicCredentials(request)
        if pair is None:
            # The dashboard's scripts say who they are: a challenge would
            # make the browser prompt for a password on an ended session.
            dashboard = request.getHeader(b"X-Requested-With") == b"memcachier-dashboard"
            raise ApiError(
                401,
                "HTTP Basic authentication with a credential of the cache is required",
                None if dashboard else _CHALLENGE,
            )
        credential = self._check(*pair)
        if credential is None:
            raise ApiError(401, "wrong username or password", _CHALLENGE)
        cache = self.index.cache(cacheId)
        if cache is None and unknownCache == NOT_FOUND:
            raise ApiError(404, f"no cache with id {cacheId}")
        if cache is None or credential.cache_id != cacheId:
            raise ApiError(403, f"this credential cannot access cache {cacheId}")
        if not credential.api:
            raise ApiError(403, "this credential does not have the API capability")
        if capability is not None and not getattr(credential, capability):
            raise ApiError(403, f"this credential does not have the {capability} capability")
        return Authorized(cacheId, cache, credential)

    def _authorizeSession(self, request, session, cacheId, unknownCache, capability=None):
        """
        The dashboard's way in: a live session (resolved before routing,
        see L{memcachier.web.dashboard.resource}) stands for Basic auth, for
        its own cache only (an operator's for every cache), and a
        state-changing request must carry the session's CSRF token.  A
        session started with a credential has that credential's
        capabilities, no more.
        """
        if not session.allows(cacheId):
            raise ApiError(403, f"this dashboard session cannot access cache {cacheId}")
        if not csrfOK(request, session):
            raise ApiError(403, "missing or wrong CSRF token (X-CSRF-Token)")
        cache = self.index.cache(cacheId)
        if cache is None:
            if unknownCache == NOT_FOUND:
                raise ApiError(404, f"no cache with id {cacheId}")
            raise ApiError(403, f"this dashboard session cannot access cache {cacheId}")
        credentialId = credentialOf(session.fingerprint)
        if capability is not None and credentialId is not None:
            credential = None
            for candidate in self.index.credentials(cacheId):
                if candidate.id == credentialId:
                    credential = candidate
            if credential is None or not getattr(credential, capability):
                raise ApiError(
                    403, f"this session's credential does not have the {capability} capability"
                )
        return Authorized(cacheId, cache, None)


# -- route groups


#: Every v2 route lives under this prefix; C{<cacheId>} is the cache id
#: segment, checked by L{CacheAuth.authorize}.
CACHE_PREFIX = "/api/v2/caches/<cacheId>"


def route(path, methods):
    """
    Declare a method of a route group as the handler of C{path} (relative
    to L{CACHE_PREFIX}, e.g. C{"/insight/latency"}) for C{methods}.

    The handler is called as C{handler(request, cacheId, **pathArgs)}
    (C{cacheId} is the raw path segment, for L{CacheAuth.authorize}).

    @param methods: HTTP method names, e.g. C{["GET"]}.
    """

    def decorate(f):
        f.__memcachierRoutes__ = getattr(f, "__memcachierRoutes__", ()) + (
            (path, tuple(methods)),
        )
        return f

    return decorate


def routesOf(group):
    """
    The routes a route group declares with L{route}.

    @return: a L{list} of (path, methods, bound handler), in name order.
    """
    found = []
    for name in sorted(dir(type(group))):
        declared = getattr(getattr(type(group), name, None), "__memcachierRoutes__", None)
        for path, methods in declared or ():
            found.append((path, methods, getattr(group, name)))
    return found


class JSONErrors:
    """
    The API's errors, in JSON (an L{memcachier.web.router.ErrorStyle}):
    L{ApiError} with its code, routing errors (404 unknown path, 405 wrong
    method) with theirs, anything else a logged, opaque 500.

    @ivar key: the member of the error object that holds the message
        (C{error} for the API; Heroku shows C{message}).
    """

    def __init__(self, key: str = "error") -> None:
        self.key = key

    def body(self, request: Any, code: int, message: str) -> bytes:
        """
        The error answer: C{{key: message}} with C{code}.
        """
        return jsonResponse(request, {self.key: message}, code)

    def apiError(self, request: Any, error: ApiError) -> bytes:
        for name, value in error.headers.items():
            request.setHeader(name, value)
        return self.body(request, error.code, error.message)

    def routingError(self, request: Any, error: Any) -> bytes:
        code = error.code
        if code == 404:
            return self.body(
                request, 404, "no such API endpoint: " + request.path.decode("utf-8", "replace")
            )
        if code == 405:
            if error.valid_methods:
                request.setHeader(b"Allow", ", ".join(error.valid_methods).encode("ascii"))
            method = request.method.decode("ascii", "replace")
            return self.body(request, 405, f"method {method} not allowed here")
        if 300 <= code < 400:
            # A werkzeug redirect (a trailing slash on a path without one).
            location = getattr(error, "new_url", "")
            request.setHeader(b"Location", location.encode("utf-8"))
            return self.body(request, code, f"moved to {location}")
        return self.body(request, code, error.description or error.name)

    def unexpected(self, request: Any, failure: Any) -> bytes:
        _log.failure(
            "HTTP API request {method} {path} failed",
            failure,
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
        )
        return self.body(request, 500, "internal error")
