"""
Tests for L{memcachier.web}: every route of the analytics API v2 through
L{treq.testing.StubTreq}, over a real control plane (in-memory SQLite run
synchronously), the real in-memory index and a real cache registry on the
memory store.  No socket, no reactor.
"""

import base64
import json

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest
from treq.testing import StubTreq

from memcachier.commands import StoreMode
from memcachier.node.settings import ConfigError, Settings, parseSettings
from memcachier.control import schema
from memcachier.control.index import ControlIndex
from memcachier.control.migrations import upgrade
from memcachier.control.model import DEFAULT_PLANS
from memcachier.control.repository import AsyncControlPlane, ControlPlane
from memcachier.analytics.service import makeIntrospection
from memcachier.runtime import CacheRegistry
from memcachier.stores.memory import MemoryStore
from memcachier.web import sso
from memcachier.web.api import CacheAPI, wholeCacheStats
from memcachier.web.common import (
    MAX_BODY,
    NOT_FOUND,
    ApiError,
    jsonResponse,
    route,
)
from memcachier.web.serialize import STATS_FIELDS
from memcachier.web.site import APISite, CappedContent, makeSite

PLANS = {p.slug: p for p in DEFAULT_PLANS}
START = 1_700_000_000.0
BASE = "http://api.test/api/v2/caches"


class SynchronousReactor(Clock):
    """
    A L{Clock} that also delivers thread results at once.
    """

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class SynchronousThreadPool:
    """
    A thread pool that runs work in the calling thread, immediately.
    """

    def callInThreadWithCallback(self, onResult, func, *args, **kwargs):
        try:
            result = func(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


def result(d):
    """
    The result of a L{Deferred} that has already fired.
    """
    results = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Response:
    def __init__(self, code, headers, body):
        self.code = code
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def __repr__(self):
        return f"<Response {self.code} {self.body[:200]!r}>"


class World:
    """
    One node: a control plane with a production cache (C{self.cache},
    primary credential C{self.primary}), a registry, and the API.
    """

    def __init__(self, settings=None, plan="100", groups=()):
        self.reactor = SynchronousReactor()
        self.reactor.advance(START)
        self.settings = settings or Settings()
        engine = schema.makeEngine("sqlite://")
        upgrade(engine)
        self.cp = ControlPlane(
            engine, self.reactor, PLANS, clusters=self.settings.clusters,
            defaultCluster=self.settings.caches.default_cluster,
        )
        self.acp = AsyncControlPlane(self.cp, SynchronousThreadPool(), self.reactor)
        self.index = ControlIndex(self.acp, PLANS, self.reactor, defaultPlan="dev")
        self.store = MemoryStore(self.reactor)
        self.registry = CacheRegistry(
            self.store, self.index, self.settings, self.reactor,
            introspection=makeIntrospection(self.settings, self.reactor),
        )
        self.cache, self.primary = self.cp.createCache(name="main", plan=plan)
        self.other, self.otherPrimary = self.cp.createCache(name="other", plan="100")
        self.refresh()
        self.api = CacheAPI(
            self.acp, self.index, self.registry, self.settings, self.reactor, groups
        )
        self.treq = StubTreq(self.api.resource())

    def refresh(self):
        result(self.index.refresh())

    def auth(self, credential=None):
        credential = credential or self.primary
        return (credential.username, credential.password)

    def call(self, method, path, auth="primary", body=None, raw=None, headers=None, cacheId=None):
        """
        Request C{path} (relative to the cache, e.g. C{"/info"}) or an
        absolute C{http://} URL.
        """
        if not path.startswith("http"):
            cacheId = self.cache.id if cacheId is None else cacheId
            path = f"{BASE}/{cacheId}{path}"
        kwargs = {"headers": headers or {}}
        if auth == "primary":
            kwargs["auth"] = self.auth()
        elif auth is not None:
            kwargs["auth"] = auth
        if body is not None:
            kwargs["data"] = json.dumps(body).encode("utf-8")
            kwargs["headers"]["Content-Type"] = "application/json"
        elif raw is not None:
            kwargs["data"] = raw
        response = result(self.treq.request(method, path, **kwargs))
        content = result(self.treq.content(response))
        return Response(response.code, response.headers, content)

    def runtime(self, cacheId=None):
        return self.registry.runtime(self.cache.id if cacheId is None else cacheId)

    def set(self, key, value, cacheId=None):
        runtime = self.runtime(cacheId)
        runtime.keyspace.store(StoreMode.SET, key, value, 0, 0, 0)


@pytest.fixture
def world():
    return World()


def assertError(response, code, fragment=""):
    assert response.code == code, response
    assert response.header(b"Content-Type") == b"application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert fragment in body["error"]
    assert "Traceback" not in body["error"]


# -- authentication


@pytest.mark.parametrize(
    "path,method",
    [("/info", "GET"), ("/credentials", "GET"), ("/stats", "GET"), ("/flush", "POST")],
)
def test_missingCredentials(world, path, method):
    """
    Without an Authorization header the answer is 401 with a Basic
    challenge.
    """
    response = world.call(method, path, auth=None)
    assertError(response, 401)
    assert response.header(b"WWW-Authenticate") == b'Basic realm="memcachier"'


@pytest.mark.parametrize(
    "header",
    [b"Bearer abc", b"Basic !!!", b"Basic " + base64.b64encode(b"nocolon"), b"Basic"],
)
def test_malformedAuthorization(world, header):
    """
    An Authorization header that is not usable HTTP Basic is a 401.
    """
    assertError(world.call("GET", "/info", auth=None, headers={b"Authorization": header}), 401)


def test_wrongPassword(world):
    """
    A wrong password or an unknown username is a 401.
    """
    assertError(world.call("GET", "/info", auth=(world.primary.username, "nope")), 401, "wrong")
    assertError(world.call("GET", "/info", auth=("NOBODY", "x")), 401, "wrong")
    assertError(world.call("GET", "/info", auth=(b"\xff\xfe", "x")), 401)


def test_otherCachesCredential(world):
    """
    A valid credential of another cache is a 403.
    """
    assertError(world.call("GET", "/info", auth=world.auth(world.otherPrimary)), 403)


def test_withoutApiCapability(world):
    """
    A credential without the API capability is a 403.
    """
    credential = world.cp.createCredential(world.cache.id, api=False)
    world.refresh()
    assertError(world.call("GET", "/info", auth=world.auth(credential)), 403, "API capability")


@pytest.mark.parametrize("cacheId", ["abc", "-1", "1.5", "0x10", "99999999999999999999999", "١"])
def test_nonNumericCacheId(world, cacheId):
    """
    A cache id that is not a decimal number is a 400, before credentials
    are looked at.
    """
    assertError(world.call("GET", "/info", cacheId=cacheId, auth=None), 400, "number")


def test_unknownCache(world):
    """
    An unknown cache is a 403 for info and management (no credential can
    belong to it), a 404 for the commands, as the contract says.
    """
    assertError(world.call("GET", "/info", cacheId=999), 403)
    assertError(world.call("POST", "/rotate_sso", cacheId=999), 403)
    for method, path in (("POST", "/flush"), ("POST", "/reset_stats"), ("GET", "/stats")):
        assertError(world.call(method, path, cacheId=999), 404, "no cache")
    # Still 401 first for missing credentials.
    assertError(world.call("GET", "/stats", cacheId=999, auth=None), 401)


def test_disabledCacheCanUseTheApi(world):
    """
    A disabled cache's credentials still work on the API (the memcache
    port refuses them), or it could never be enabled again.
    """
    world.cp.setEnabled(world.cache.id, False)
    world.refresh()
    assert world.index.authenticate(
        world.primary.username.encode(), world.primary.password.encode()
    ) is None
    response = world.call("GET", "/info")
    assert response.code == 200
    assert response.json()["enabled"] is False


# -- info


def test_info(world):
    """
    info has every field of the contract, the plan in bytes and the
    cache's credentials with their passwords.
    """
    extra = world.cp.createCredential(world.cache.id, write=False)
    world.refresh()
    response = world.call("GET", "/info")
    assert response.code == 200
    assert response.header(b"Content-Type") == b"application/json"
    assert response.header(b"Cache-Control") == b"no-store"
    info = response.json()
    assert info == {
        "id": world.cache.id,
        "name": "main",
        "label": "main",
        "cache_type": "memcachier",
        "plan": 100 * 1024 * 1024,
        "provider": "self-hosted",
        "enabled": True,
        "cluster_name": "default",
        "servers": ["127.0.0.1:11211"],
        "credentials": [
            {
                "id": world.primary.id,
                "cache_id": world.cache.id,
                "sasl_username": world.primary.username,
                "sasl_password": world.primary.password,
                "write_capability": True,
                "flush_capability": True,
                "api_capability": True,
                "primary": True,
            },
            {
                "id": extra.id,
                "cache_id": world.cache.id,
                "sasl_username": extra.username,
                "sasl_password": extra.password,
                "write_capability": False,
                "flush_capability": True,
                "api_capability": True,
                "primary": False,
            },
        ],
        "can_switch": False,
        "can_manage_credentials": True,
        "can_update_capabilities": True,
        "uuid": world.cache.uuid,
        "plan_name": "100",
        "connection_limit": 250,
    }


def test_infoDevelopmentPlan():
    """
    A development cache cannot manage credentials or update capabilities;
    its plan is 26214400 bytes as in MemCachier's example.
    """
    world = World(plan="dev")
    info = world.call("GET", "/info").json()
    assert info["plan"] == 26214400
    assert info["can_manage_credentials"] is False
    assert info["can_update_capabilities"] is False


def twoClusters(extra=""):
    return parseSettings(
        "[clusters.alpha]\nservers = [\"10.0.0.1:11211\", \"10.0.0.2:11211\"]\n"
        "[clusters.beta]\nservers = [\"10.0.1.1:11211\"]\n"
        "[clusters.devs]\nservers = [\"10.0.2.1:11211\"]\nkind = \"development\"\n"
        "[caches]\ndefault_cluster = \"alpha\"\n" + extra
    )


def test_infoServersOfItsCluster():
    """
    servers are the cache's cluster's, in configured order; can_switch is
    true when another cluster of the same kind exists.
    """
    world = World(twoClusters())
    info = world.call("GET", "/info").json()
    assert info["cluster_name"] == "alpha"
    assert info["servers"] == ["10.0.0.1:11211", "10.0.0.2:11211"]
    assert info["can_switch"] is True


# -- credentials


def test_listCredentials(world):
    """
    GET credentials lists the cache's credentials only, the primary first.
    """
    extra = world.cp.createCredential(world.cache.id)
    world.refresh()
    response = world.call("GET", "/credentials")
    assert response.code == 200
    names = [c["sasl_username"] for c in response.json()]
    assert names == [world.primary.username, extra.username]


def test_createCredential(world):
    """
    POST credentials creates a non-primary credential with every
    capability, usable on the memcache side at once.
    """
    response = world.call("POST", "/credentials")
    assert response.code == 201
    created = response.json()
    assert created["cache_id"] == world.cache.id
    assert created["primary"] is False
    assert (created["write_capability"], created["flush_capability"], created["api_capability"]) == (True, True, True)
    found = world.registry.authenticate(
        created["sasl_username"].encode(), created["sasl_password"].encode()
    )
    assert found is not None and found[0].cache_id == world.cache.id


def test_createCredentialWithCapabilities(world):
    """
    The optional body sets capabilities; those left out are true.
    """
    created = world.call("POST", "/credentials", body={"write_capability": False}).json()
    assert (created["write_capability"], created["flush_capability"], created["api_capability"]) == (False, True, True)


def test_developmentCannotManageCredentials():
    """
    A development cache gets 403 for creating, updating and deleting
    credentials, and nothing changes.
    """
    world = World(plan="dev")
    username = world.primary.username
    assertError(world.call("POST", "/credentials"), 403, "development")
    assertError(world.call("PATCH", f"/credentials/{username}", body={}), 403, "development")
    assertError(world.call("DELETE", f"/credentials/{username}"), 403, "development")
    assert world.index.credentials(world.cache.id) == [world.primary]


def test_patchCredential(world):
    """
    PATCH sets the capabilities in the body and turns the omitted ones
    off; it answers the three capabilities.
    """
    extra = world.cp.createCredential(world.cache.id)
    world.refresh()
    response = world.call("PATCH", f"/credentials/{extra.username}", body={"api_capability": True})
    assert response.code == 200
    assert response.json() == {"write_capability": False, "flush_capability": False, "api_capability": True}
    changed = world.index.credential(extra.username)
    assert (changed.write, changed.flush, changed.api) == (False, False, True)


def test_patchTakesEffectOnNewConnections(world):
    """
    A read-only credential made through PATCH cannot store on a new
    connection.
    """
    from memcachier.protocols.sniff import MemcacheFactory

    extra = world.cp.createCredential(world.cache.id)
    world.refresh()
    world.call("PATCH", f"/credentials/{extra.username}", body={"api_capability": True})
    factory = MemcacheFactory(world.registry, world.reactor, authTimeout=5.0)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(
        b"set %s 0 0 %d\r\n%s\r\n" % (extra.username.encode(), len(extra.password), extra.password.encode())
    )
    proto.dataReceived(b"set k 0 0 1\r\nv\r\n")
    assert transport.value().split(b"\r\n")[:2] == [b"STORED", b"NOT_STORED"]


@pytest.mark.parametrize(
    "raw,fragment",
    [
        (b"{", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b"null", "JSON object"),
        (b'"x"', "JSON object"),
        (b'{"write_capability": "yes"}', "true or false"),
        (b'{"write_capability": 1}', "true or false"),
        (b'{"write_capability": null}', "true or false"),
        (b'{"admin": true}', "unknown field"),
        (b"", "JSON object"),
        (b"[" * 30000 + b"]" * 30000, "malformed JSON"),
    ],
)
def test_patchBadBodies(world, raw, fragment):
    """
    Malformed JSON, wrong types, unknown fields and a missing body are a
    400 with a clear message, and the credential does not change.
    """
    extra = world.cp.createCredential(world.cache.id)
    world.refresh()
    response = world.call("PATCH", f"/credentials/{extra.username}", raw=raw)
    assertError(response, 400 if len(raw) <= MAX_BODY else 413, fragment)
    assert world.index.credential(extra.username) == extra


def test_hugeBody(world):
    """
    A body over the cap is a 413 and changes nothing.
    """
    raw = json.dumps({"write_capability": False, "pad": "x" * (MAX_BODY + 10)}).encode()
    response = world.call("PATCH", f"/credentials/{world.primary.username}", raw=raw)
    assertError(response, 413, "larger than")
    assert world.index.credential(world.primary.username) == world.primary
    assertError(world.call("POST", "/flush", raw=b" " * (MAX_BODY + 1)), 413)


def test_patchUnknownCredential(world):
    """
    PATCH of an unknown username, or of another cache's, is a 404 that
    changes nothing.
    """
    assertError(world.call("PATCH", "/credentials/NOBODY", body={}), 404, "no credential")
    other = world.otherPrimary.username
    assertError(world.call("PATCH", f"/credentials/{other}", body={}), 404)
    assert world.index.credential(other) == world.otherPrimary


def test_deleteCredential(world):
    """
    DELETE removes a credential (200, empty body): it can no longer
    authenticate.
    """
    extra = world.cp.createCredential(world.cache.id)
    world.refresh()
    response = world.call("DELETE", f"/credentials/{extra.username}")
    assert response.code == 200
    assert response.body == b""
    assert world.registry.authenticate(extra.username.encode(), extra.password.encode()) is None
    assertError(world.call("DELETE", f"/credentials/{extra.username}"), 404)


def test_deletePrimaryRefused(world):
    """
    The primary credential cannot be deleted: 409, promote another first.
    """
    assertError(world.call("DELETE", f"/credentials/{world.primary.username}"), 409, "promote")
    assert world.index.credential(world.primary.username) == world.primary


def test_deleteOtherCachesCredential(world):
    """
    Another cache's credential is not found through this cache.
    """
    extra = world.cp.createCredential(world.other.id)
    world.refresh()
    assertError(world.call("DELETE", f"/credentials/{extra.username}"), 404)
    assert world.index.credential(extra.username) == extra


def test_promoteCredential(world):
    """
    POST credentials/primary/<username> makes it the primary one and
    answers the credential.
    """
    extra = world.cp.createCredential(world.cache.id, flush=False)
    world.refresh()
    response = world.call("POST", f"/credentials/primary/{extra.username}")
    assert response.code == 200
    body = response.json()
    assert body["sasl_username"] == extra.username
    assert body["primary"] is True
    assert body["flush_capability"] is False
    assert world.index.credentials(world.cache.id)[0].username == extra.username
    assert world.index.credential(world.primary.username).primary is False
    assertError(world.call("POST", "/credentials/primary/NOBODY"), 404)


# -- management


def test_rotateSso(world):
    """
    rotate_sso answers the new secret (a JSON string), which the index
    holds at once.
    """
    old = world.index.cache(world.cache.id).sso_secret
    response = world.call("POST", "/rotate_sso")
    assert response.code == 200
    secret = response.json()
    assert isinstance(secret, str) and secret != old
    assert world.index.cache(world.cache.id).sso_secret == secret


def test_enableCache(world):
    """
    enable_cache enables a disabled cache: its credentials authenticate
    on the memcache side again.
    """
    world.cp.setEnabled(world.cache.id, False)
    world.refresh()
    response = world.call("POST", "/enable_cache")
    assert response.code == 200
    assert response.body == b""
    assert world.index.cache(world.cache.id).enabled is True
    assert world.registry.authenticate(
        world.primary.username.encode(), world.primary.password.encode()
    ) is not None


def test_switchClusterWithOneCluster(world):
    """
    With one cluster, switch_cluster is a 409 saying it cannot switch.
    """
    assertError(world.call("POST", "/switch_cluster"), 409, "cannot switch")
    assert world.index.cache(world.cache.id).cluster == "default"


def test_switchCluster():
    """
    switch_cluster moves the cache to the other cluster of its kind (not
    the development one), answers its name, changes the servers, and the
    data held here does not follow.
    """
    world = World(twoClusters())
    world.set(b"k", b"v")
    response = world.call("POST", "/switch_cluster")
    assert response.code == 200
    assert response.json() == "beta"
    info = world.call("GET", "/info").json()
    assert (info["cluster_name"], info["servers"]) == ("beta", ["10.0.1.1:11211"])
    assert world.runtime().keyspace.get(b"k") is None
    # And back: beta's only peer of its kind is alpha.
    assert world.call("POST", "/switch_cluster").json() == "alpha"


def test_switchTargetOrder():
    """
    The target is the next cluster of the same kind in name order,
    wrapping around.
    """
    settings = parseSettings(
        "".join(f"[clusters.{n}]\nservers = [\"h:1\"]\n" for n in ("a", "b", "c"))
        + "[clusters.d]\nservers = [\"h:1\"]\nkind = \"development\"\n"
        + "[caches]\ndefault_cluster = \"a\"\n"
    )
    api = World(settings).api
    assert [api.switchTarget(n) for n in ("a", "b", "c", "d")] == ["b", "c", "a", None]


# -- commands


def test_flush(world):
    """
    flush empties the cache (204) and only that cache.
    """
    world.set(b"k", b"v")
    world.set(b"k", b"v", cacheId=world.other.id)
    response = world.call("POST", "/flush")
    assert response.code == 204
    assert response.body == b""
    assert world.runtime().keyspace.get(b"k") is None
    assert world.runtime(world.other.id).keyspace.get(b"k") is not None


def test_flushNeedsTheFlushCapability(world):
    """
    A credential without the flush capability gets 403 with the API's
    error body, as C{flush_all} refuses it on the memcache port; nothing
    is flushed nor counted.  One with it flushes.
    """
    world.set(b"k", b"v")
    noFlush = world.cp.createCredential(world.cache.id, flush=False)
    world.refresh()
    assertError(world.call("POST", "/flush", auth=world.auth(noFlush)), 403, "flush capability")
    assert world.runtime().keyspace.get(b"k") is not None
    assert world.runtime().statsDict()["cmd_flush"] == 0
    withFlush = world.cp.createCredential(world.cache.id, flush=True)
    world.refresh()
    assert world.call("POST", "/flush", auth=world.auth(withFlush)).code == 204
    assert world.runtime().keyspace.get(b"k") is None


def sessionFlush(world, fingerprint):
    """
    C{POST flush} as the dashboard sends it: a live session (resolved
    before routing) and its CSRF token, no Basic auth.
    """
    session = sso.Session("k", world.cache.id, fingerprint, "tok", "someone", START, START)
    request = DummyRequest([b""])
    request.method = b"POST"
    request.requestHeaders.setRawHeaders(b"X-CSRF-Token", [b"tok"])
    request.dashboardSession = session
    return world.api.auth.authorize(
        request, str(world.cache.id), unknownCache=NOT_FOUND, capability="flush")


def test_sessionFlushKeepsTheCredentialsCapability(world):
    """
    A dashboard session started with a credential flushes only if that
    credential may; the owner's session (SSO) may.
    """
    noFlush = world.cp.createCredential(world.cache.id, flush=False)
    world.refresh()
    with pytest.raises(ApiError) as refused:
        sessionFlush(world, sso.credentialFingerprint("secret", noFlush))
    assert refused.value.code == 403
    assert "flush capability" in refused.value.message
    assert sessionFlush(world, sso.credentialFingerprint("secret", world.primary)).cacheId == (
        world.cache.id)
    assert sessionFlush(world, sso.fingerprint("secret")).cacheId == world.cache.id


def test_flushNeedsTheAPICapabilityFirst(world):
    """
    Without the API capability the refusal names that one, whatever the
    flush capability.
    """
    neither = world.cp.createCredential(world.cache.id, flush=False, api=False)
    world.refresh()
    assertError(world.call("POST", "/flush", auth=world.auth(neither)), 403, "API capability")


def test_flushCountsInCmdFlushAndTheRecentLogs(world):
    """
    An API flush counts in C{cmd_flush} (the API's C{stats} shows it) and
    is a C{FLUSH_ALL} line of the recent logs, as a memcache C{flush_all}.
    """
    assert world.call("POST", "/flush").code == 204
    assert world.call("POST", "/flush").code == 204
    assert world.call("GET", "/stats").json()["cmd_flush"] == 2
    introspector = world.registry.introspection.introspector(world.runtime())
    introspector.drain()
    assert [(e["command"], e["status"]) for e in introspector.recentLogs()] == [
        ("FLUSH_ALL", "OK"), ("FLUSH_ALL", "OK")]


def test_resetStats(world):
    """
    reset_stats zeroes the cache's counters (204).
    """
    runtime = world.runtime()
    runtime.stats.cmd_get = 5
    world.set(b"k", b"v")
    response = world.call("POST", "/reset_stats")
    assert response.code == 204
    stats = runtime.statsDict()
    assert (stats["cmd_get"], stats["total_items"], stats["curr_items"]) == (0, 0, 1)


def test_stats(world):
    """
    stats has exactly the contract's fields, from the cache's runtime,
    and the time the cache was held back.
    """
    runtime = world.runtime()
    runtime.stats.held_back_seconds = 0.25
    runtime.stats.get_hits = 3
    runtime.stats.delete_hits = 2
    runtime.stats.delete_misses = 1
    world.set(b"k", b"value")
    world.reactor.advance(5)
    response = world.call("GET", "/stats")
    assert response.code == 200
    stats = response.json()
    assert list(stats) == [*STATS_FIELDS, "held_back_seconds"]
    assert stats["held_back_seconds"] == 0.25
    assert stats["get_hits"] == 3
    assert stats["cmd_delete"] == 3
    assert stats["curr_items"] == 1
    assert stats["limit_maxbytes"] == 100 * 1024 * 1024
    assert stats["time"] == int(START) + 5


def test_statsOfAnUnservedCache(world):
    """
    A cache this node has not served yet has zero counters and its plan as
    limit_maxbytes; asking does not create its keyspace.
    """
    stats = world.call("GET", "/stats").json()
    assert stats["curr_items"] == 0
    assert stats["limit_maxbytes"] == 100 * 1024 * 1024
    assert world.registry.existing(world.cache.id) is None


class FakeCluster:
    """
    What L{wholeCacheStats} asks of a cluster: this node's name and the
    live nodes of a cache.
    """

    name = "a:1"

    def liveOf(self, cacheId):
        return ["a:1", "b:1", "c:1"]


class PeerKeyspace:
    """
    A cluster keyspace's C{peerStats}: the peers that answered (c:1 did
    not, as a peer past the request timeout is left out).
    """

    synchronous = True

    def __init__(self, local):
        self.local = local

    def peerStats(self):
        return succeed([("b:1", {"get_hits": 4, "bytes": 10})])

    def __getattr__(self, name):
        return getattr(self.local, name)


class PeerStore:
    def __init__(self, store):
        self.store = store

    def keyspace(self, *args):
        return PeerKeyspace(self.store.keyspace(*args))


def test_wholeCacheStatsOnOneNode(world):
    """
    On a single node: this node's runtime, none if it has not served the
    cache (and asking does not create it).
    """
    assert result(wholeCacheStats(world.registry, world.cache.id)) == ([], [])
    assert world.registry.existing(world.cache.id) is None
    world.runtime().stats.get_hits = 2
    readings, missing = result(wholeCacheStats(world.registry, world.cache.id))
    assert [(node, counters["get_hits"]) for node, counters in readings] == [
        (world.settings.node.name, 2)]
    assert missing == []


def test_wholeCacheStatsOnSeveralNodes(world):
    """
    With several nodes: this node's counters first, then each peer that
    answered; the live peers that did not are named.
    """
    registry = CacheRegistry(
        PeerStore(world.store), world.index, world.settings, world.reactor,
        cluster=FakeCluster(),
    )
    registry.runtime(world.cache.id).stats.get_hits = 3
    readings, missing = result(wholeCacheStats(registry, world.cache.id))
    assert [(node, counters["get_hits"]) for node, counters in readings] == [
        ("a:1", 3), ("b:1", 4)]
    assert readings[1][1]["bytes"] == 10
    assert missing == ["c:1"]
    with pytest.raises(KeyError):
        result(wholeCacheStats(registry, 10**6))


@pytest.mark.parametrize("path", ["/flush", "/reset_stats", "/rotate_sso", "/enable_cache", "/switch_cluster", "/credentials/primary/X"])
def test_noBodyEndpointsRefuseBodies(world, path):
    """
    Endpoints that take no body refuse one (an empty body or C{{}} is
    fine), and change nothing.
    """
    world.set(b"k", b"v")
    assertError(world.call("POST", path, body={"force": True}), 400, "unknown field")
    assertError(world.call("POST", path, raw=b"nonsense"), 400, "malformed")
    assert world.runtime().keyspace.get(b"k") is not None
    assert world.call("POST", "/flush", body={}).code == 204


# -- routing


def test_unknownPath(world):
    """
    Unknown paths are a JSON 404.
    """
    assertError(world.call("GET", "/nothing"), 404, "no such API endpoint")
    assertError(world.call("GET", "http://api.test/"), 404)
    assertError(world.call("GET", "/credentials/a/b"), 404)


def test_wrongMethod(world):
    """
    A known path with the wrong method is a JSON 405 with Allow, and runs
    nothing.
    """
    world.set(b"k", b"v")
    response = world.call("GET", "/flush")
    assertError(response, 405, "GET")
    assert b"POST" in response.header(b"Allow")
    assertError(world.call("DELETE", "/info"), 405)
    assert world.runtime().keyspace.get(b"k") is not None


def test_optionsRunsNothing(world):
    """
    OPTIONS is a 405 like any other unserved method and does not run the
    handler (an OPTIONS on flush does not flush).
    """
    world.set(b"k", b"v")
    response = world.call("OPTIONS", "/flush")
    assertError(response, 405)
    assert response.header(b"Allow") == b"POST"
    assert world.runtime().keyspace.get(b"k") is not None


def test_headOfGet(world):
    """
    HEAD works where GET does.
    """
    assert world.call("HEAD", "/info").code == 200


def test_trailingSlash(world):
    """
    A trailing slash is not an error page: a JSON 404 or redirect.
    """
    response = world.call("GET", "/info/")
    assert response.code in (308, 404), response
    assert response.header(b"Content-Type") == b"application/json"


def test_unexpectedErrorIsOpaque(world):
    """
    An unexpected exception is logged and answered with an opaque JSON
    500, no traceback.
    """
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        world.index.planOf = lambda cacheId: 1 / 0
        response = world.call("GET", "/info")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert response.code == 500
    assert response.json() == {"error": "internal error"}
    assert any(e.get("log_failure") and e["log_failure"].check(ZeroDivisionError) for e in events)


# -- route groups


class HelloGroup:
    """
    A route group as another engineer would write one.
    """

    def __init__(self, auth):
        self.auth = auth

    @route("/hello/<name>", ["GET"])
    def hello(self, request, cacheId, name):
        caller = self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)
        if name == "teapot":
            raise ApiError(418, "short and stout")
        if name == "crash":
            raise RuntimeError("boom")
        return jsonResponse(request, {"cache": caller.cacheId, "name": name})

    def openapiPaths(self):
        return {"/hello/{name}": {"get": {"responses": {"200": {"description": "hi"}}}}}


def test_routeGroup():
    """
    A route group handed to the API shares its auth, JSON errors and
    document.
    """
    base = World()
    world = World(groups=[HelloGroup(base.api.auth)])
    group = HelloGroup(world.api.auth)
    world.api = CacheAPI(world.acp, world.index, world.registry, world.settings, world.reactor, [group])
    world.treq = StubTreq(world.api.resource())
    assert world.call("GET", "/hello/you").json() == {"cache": world.cache.id, "name": "you"}
    assertError(world.call("GET", "/hello/you", auth=None), 401)
    assertError(world.call("GET", "/hello/you", cacheId=999), 404)
    assertError(world.call("GET", "/hello/teapot"), 418, "stout")
    assertError(world.call("POST", "/hello/you"), 405)
    assertError(world.call("GET", "/hello/crash"), 500, "internal error")
    assert "/api/v2/caches/{cacheId}/hello/{name}" in world.api.openapi()["paths"]
    assert world.call("GET", "/info").code == 200


# -- the OpenAPI document


def test_openapiDocument(world):
    """
    The document is served without credentials, is OpenAPI 3, and
    describes exactly the routes the app serves.
    """
    response = world.call("GET", "http://api.test/api/v2/openapi.json", auth=None)
    assert response.code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    served = set()
    for path, methods in world.api.routes():
        path = path.replace("<cacheId>", "{cacheId}").replace("<username>", "{username}")
        for method in methods:
            served.add((path, method.lower()))
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert served == documented


def test_openapiDocumentIsValid(world):
    """
    The document validates as OpenAPI 3.0 (schemathesis loads it).
    """
    import schemathesis

    schema = schemathesis.openapi.from_dict(world.api.openapi())
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) == 13


# -- the site


def test_cappedContent():
    """
    L{CappedContent} keeps one byte beyond its limit and says it
    overflowed.
    """
    content = CappedContent(4)
    content.write(b"abc")
    assert not content.overflowed
    content.write(b"defgh")
    assert content.overflowed
    assert content.getvalue() == b"abcde"


def _siteExchange(site, data):
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return transport.value()


def test_siteRefusesHugeBodiesBeforeRouting(world):
    """
    The site answers 413 for a body over the cap without dispatching it,
    and keeps no more than the cap in memory.
    """
    site = makeSite(world.api, world.settings, world.reactor)
    assert isinstance(site, APISite)
    world.set(b"k", b"v")
    auth = base64.b64encode(f"{world.primary.username}:{world.primary.password}".encode())
    body = b"x" * (MAX_BODY * 4)
    reply = _siteExchange(
        site,
        b"POST /api/v2/caches/%d/flush HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (world.cache.id, auth, len(body), body),
    )
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b'{"error": "request body larger than' in reply
    assert world.runtime().keyspace.get(b"k") is not None


def test_siteFlushOverHttp(world):
    """
    Through the real site, a flush works and error pages are JSON.
    """
    site = makeSite(world.api, world.settings, world.reactor)
    world.set(b"k", b"v")
    auth = base64.b64encode(f"{world.primary.username}:{world.primary.password}".encode())
    reply = _siteExchange(
        site,
        b"POST /api/v2/caches/%d/flush HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n"
        b"Content-Length: 0\r\n\r\n" % (world.cache.id, auth),
    )
    assert reply.startswith(b"HTTP/1.1 204 ")
    assert world.runtime().keyspace.get(b"k") is None


def test_siteProcessingFailedIsJson(world):
    """
    A failure outside the app's handlers is an opaque JSON 500.
    """
    from twisted.web.resource import Resource

    class Broken(Resource):
        isLeaf = True

        def render(self, request):
            raise RuntimeError("boom")

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        reply = _siteExchange(APISite(Broken(), reactor=world.reactor), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert reply.endswith(b'{"error": "internal error"}')
    assert b"boom" not in reply
    assert any(e.get("log_failure") for e in events)


# -- cluster kinds in the configuration


def test_clusterKindDefaultsToProduction():
    """
    A cluster without C{kind} is a production cluster, as is the implicit
    default cluster and a cluster no longer configured.
    """
    settings = twoClusters()
    assert settings.cluster_kinds == {"alpha": "production", "beta": "production", "devs": "development"}
    assert parseSettings("").clusterKind("default") == "production"
    assert settings.clusterKind("gone") == "production"


def test_clusterKindMustBeKnown():
    """
    An unknown kind is a configuration error naming the key.
    """
    with pytest.raises(ConfigError) as raised:
        parseSettings("[clusters.a]\nservers = [\"h:1\"]\nkind = \"staging\"\n[caches]\ndefault_cluster = \"a\"\n")
    assert "clusters.a.kind" in str(raised.value)
