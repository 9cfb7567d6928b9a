"""
Tests for L{memcachier.heroku.api} (the partner API v3 routes) and
L{memcachier.heroku.sync} (grant exchange, token refresh, config
var pushes with backoff on the clock), through L{StubTreq} both ways.
"""

import json

import pytest
from twisted.application.service import IService
from zope.interface.verify import verifyObject

from memcachier.commands import StoreMode, itemValue
from memcachier.heroku.sync import parseExpiry
from memcachier.heroku.manifest import manifest
from tests.unit.provisioningworld import HEROKU_AUTH, ProvisioningWorld
from tests.unit.test_api import result

CONFIG_VARS = {"MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD"}


@pytest.fixture
def world():
    return ProvisioningWorld()


def tokens(access, refresh, expiresIn=28800):
    return (200, {"access_token": access, "refresh_token": refresh, "expires_in": expiresIn,
                  "token_type": "Bearer"})


# -- routes


@pytest.mark.parametrize(
    "auth", [None, ("memcachier", "wrong"), ("someone", HEROKU_AUTH[1]), ("memcachier", "")]
)
def test_badAuthIs401(world, auth):
    """
    Every route wants Basic auth with the manifest id and api.password.
    """
    for method, path in (("POST", ""), ("PUT", "/u"), ("DELETE", "/u")):
        response = world.heroku_(method, path, body={"plan": "100"}, auth=auth)
        assert response.code == 401, (method, response)
        assert set(response.json()) == {"message"}
    assert world.index.caches() == []


def test_offWithoutPassword():
    """
    With no C{[heroku] password}, the routes answer 404 and nothing syncs.
    """
    world = ProvisioningWorld(heroku={"password": ""})
    assert world.provision().code == 404
    assert world.sync is None


def test_provisionIsIdempotent(world):
    """
    Provisioning answers the three config vars at once; the same uuid
    again is the same cache and the same answer.
    """
    first = world.provision()
    assert first.code == 200, first
    body = first.json()
    assert set(body) == {"id", "config", "message"}
    assert body["id"] == "uuid-1"
    assert set(body["config"]) == CONFIG_VARS
    assert body["config"]["MEMCACHIER_SERVERS"] == "10.0.0.2:11211"  # development cluster
    again = world.provision()
    assert (again.code, again.json()) == (200, body)
    [cache] = world.index.caches()
    assert (cache.plan, cache.cluster, cache.label) == ("dev", "devs", "my-app")
    assert world.index.credentials(cache.id)[0].username == body["config"]["MEMCACHIER_USERNAME"]


def test_provisionPlanWithAddonPrefix(world):
    """
    C{memcachier:100} is plan C{100}, on a production cluster.
    """
    assert world.provision(plan="memcachier:100").code == 200
    [cache] = world.index.caches()
    assert (cache.plan, cache.cluster) == ("100", "prod")


@pytest.mark.parametrize(
    "body,code",
    [
        ({"uuid": "u", "plan": "gold"}, 422),
        ({"plan": "100"}, 400),
        ({"uuid": "", "plan": "100"}, 400),
        ({"uuid": "u"}, 400),
        ({"uuid": 5, "plan": "100"}, 400),
        ({"uuid": "x" * 65, "plan": "100"}, 400),
        ([1], 400),
    ],
)
def test_provisionRefusals(world, body, code):
    response = world.heroku_("POST", body=body)
    assert response.code == code, response
    assert set(response.json()) == {"message"}
    assert world.index.caches() == []


def test_malformedJSON(world):
    assert world.heroku_("POST", raw=b"{nope").code == 400


def test_planChangeKeepsOrEmpties(world):
    """
    Within a kind the data stays; between development and production the
    cache moves to the other kind's cluster and is emptied.
    """
    world.provision()
    [cache] = world.index.caches()
    runtime = world.registry.runtime(cache.id)
    runtime.keyspace.store(StoreMode.SET, b"k", b"v", 0, 0, 0)
    kept = world.heroku_("PUT", "/uuid-1", body={"plan": "dev2", "heroku_id": "app@heroku.com"})
    assert kept.code == 200, kept
    assert set(kept.json()) == {"config", "message"}
    assert "kept" in kept.json()["message"]
    assert itemValue(runtime.keyspace.get(b"k")) == b"v"
    moved = world.heroku_("PUT", "/uuid-1", body={"plan": "100"})
    assert moved.code == 200
    assert moved.json()["config"]["MEMCACHIER_SERVERS"] == "10.0.0.1:11211"
    assert world.index.cache(cache.id).cluster == "prod"
    assert world.index.cache(cache.id).plan == "100"
    assert runtime.keyspace.get(b"k") is None
    assert world.heroku_("PUT", "/uuid-1", body={"plan": "nope"}).code == 422
    assert world.heroku_("PUT", "/unknown", body={"plan": "100"}).code == 404


def test_deprovision(world):
    """
    DELETE is a 204 and the credentials stop working at once; again, 410.
    """
    config = world.provision().json()["config"]
    username = config["MEMCACHIER_USERNAME"].encode()
    password = config["MEMCACHIER_PASSWORD"].encode()
    assert world.index.authenticate(username, password) is not None
    response = world.heroku_("DELETE", "/uuid-1")
    assert (response.code, response.body) == (204, b"")
    assert world.index.authenticate(username, password) is None
    assert world.index.caches() == []
    assert world.heroku_("DELETE", "/uuid-1").code == 410
    assert world.heroku_("PUT", "/uuid-1", body={"plan": "100"}).code == 410
    assert world.provision().code == 410
    assert world.heroku_("DELETE", "/never").code == 404


def test_unknownMethod(world):
    response = world.heroku_("GET", "/uuid-1")
    assert response.code == 405
    assert set(response.json()) == {"message"}


# -- talking back to Heroku


def startSync(world):
    """
    Start the index's polling and the sync service, on the clock.
    """
    verifyObject(IService, world.sync)
    world.index.startService()
    world.sync.startService()


def test_grantExchangeAndRefresh(world):
    """
    The grant is exchanged after provisioning (which does not wait), and
    the access token refreshed before it expires.
    """
    world.heroku.answers["/oauth/token"] = [tokens("a1", "r1", 3600), tokens("a2", "r2")]
    startSync(world)
    assert world.heroku.requests == []
    world.provision()
    assert world.heroku.requests == []  # not during the request
    world.reactor.advance(0)
    assert world.heroku.form(0) == {
        "grant_type": "authorization_code", "code": "grant-code", "client_secret": "client-secret",
    }
    assert world.heroku.requests[0][1] == "/oauth/token"
    resource = world.sync.records.records.herokuResource("uuid-1")
    assert (resource.access_token, resource.refresh_token, resource.grant_code) == ("a1", "r1", None)
    assert resource.token_expires_at == world.reactor.seconds() + 3600
    world.reactor.advance(3600 - 600 - 1)
    assert len(world.heroku.requests) == 1
    world.reactor.advance(1)
    assert world.heroku.form(1) == {
        "grant_type": "refresh_token", "refresh_token": "r1", "client_secret": "client-secret",
    }
    resource = world.sync.records.records.herokuResource("uuid-1")
    assert (resource.access_token, resource.refresh_token) == ("a2", "r2")


def test_failedExchangeRetriesThenRefusedGrantIsDropped(world):
    """
    A 5xx exchange is retried after a backoff; a 4xx drops the grant.
    """
    world.heroku.answers["/oauth/token"] = [(503, {}), (400, {"error": "invalid_grant"})]
    startSync(world)
    world.provision()
    world.reactor.advance(0)
    assert len(world.heroku.requests) == 1
    world.reactor.advance(0.5)
    assert len(world.heroku.requests) == 1  # backing off
    world.reactor.advance(1)
    assert len(world.heroku.requests) == 2
    resource = world.sync.records.records.herokuResource("uuid-1")
    assert resource.grant_code is None and resource.access_token is None
    assert "400" in resource.token_error
    world.reactor.advance(60)
    assert len(world.heroku.requests) == 2


def test_expiredGrantIsNotSent(world):
    startSync(world)
    world.provision(oauth_grant={"code": "c", "expires_at": "2000-01-01T00:00:00Z"})
    world.reactor.advance(0)
    assert world.heroku.requests == []
    assert "expired" in world.sync.records.records.herokuResource("uuid-1").token_error


def promote(world, cacheId):
    credential = world.cp.createCredential(cacheId)
    world.cp.promoteCredential(credential.username)
    return credential


def test_promotionPushedWithBackoffUntilItSucceeds(world):
    """
    A new primary credential is sent to the Platform API with the bearer
    token; 500s are retried after 1, 2, 4 seconds on the clock; each
    attempt is recorded.
    """
    world.heroku.answers["/oauth/token"] = [tokens("access", "refresh")]
    patchPath = "/addons/uuid-1/config"
    world.heroku.answers[patchPath] = [(500, {}), (500, {}), (500, {}), (200, [])]
    startSync(world)
    world.provision()
    world.reactor.advance(0)
    cacheId = world.index.caches()[0].id
    credential = promote(world, cacheId)
    world.reactor.advance(1)  # the index poll sees the CLI-style change
    patches = [r for r in world.heroku.requests if r[1] == patchPath]
    assert len(patches) == 1
    method, _, headers, body = patches[0]
    assert method == "PATCH"
    assert headers[b"Authorization"] == [b"Bearer access"]
    assert headers[b"Accept"] == [b"application/vnd.heroku+json; version=3"]
    config = {e["name"]: e["value"] for e in json.loads(body)["config"]}
    assert config["MEMCACHIER_USERNAME"] == credential.username
    assert config["MEMCACHIER_PASSWORD"] == credential.password
    assert set(config) == CONFIG_VARS
    for wait in (1, 2, 4):
        world.reactor.advance(wait - 0.01)
        before = len([r for r in world.heroku.requests if r[1] == patchPath])
        world.reactor.advance(0.01)
        after = len([r for r in world.heroku.requests if r[1] == patchPath])
        assert after == before + 1, wait
    [push] = world.sync.records.records.pushes("uuid-1")
    assert (push.state, push.attempts, push.last_status) == ("done", 4, 200)
    world.reactor.advance(600)
    assert len([r for r in world.heroku.requests if r[1] == patchPath]) == 4


def test_newerPromotionSupersedes(world):
    """
    A promotion while an older push is still failing replaces it.
    """
    world.heroku.answers["/oauth/token"] = [tokens("access", "refresh")]
    world.heroku.answers["/addons/uuid-1/config"] = [(500, {}), (200, [])]
    startSync(world)
    world.provision()
    world.reactor.advance(0)
    cacheId = world.index.caches()[0].id
    promote(world, cacheId)
    world.reactor.advance(1)
    second = promote(world, cacheId)
    world.reactor.advance(1)
    pushes = world.sync.records.records.pushes("uuid-1")
    assert [p.state for p in pushes] == ["superseded", "done"]
    assert pushes[-1].username == second.username


def test_pushWaitsForTheToken(world):
    """
    Before the grant is exchanged, a push is recorded as failed and
    retried; no PATCH goes out without a token.
    """
    world.heroku.answers["/oauth/token"] = [(503, {})]
    world.heroku.answers["/addons/uuid-1/config"] = [(200, [])]
    startSync(world)
    world.provision()
    world.reactor.advance(0)
    promote(world, world.index.caches()[0].id)
    world.reactor.advance(1)
    [push] = world.sync.records.records.pushes("uuid-1")
    assert push.state == "pending" and "no access token" in push.last_error
    assert not [r for r in world.heroku.requests if r[1].startswith("/addons/")]
    world.heroku.answers["/oauth/token"] = [tokens("access", "refresh")]
    world.reactor.advance(10)
    assert world.sync.records.records.pushes("uuid-1")[0].state == "done"


def test_unauthorizedPushRefreshesTheToken(world):
    """
    A 401 from the Platform API makes the next pass refresh the token,
    and the push goes out again with the new one.
    """
    world.heroku.answers["/oauth/token"] = [tokens("old", "r1"), tokens("new", "r2")]
    world.heroku.answers["/addons/uuid-1/config"] = [(401, {"id": "unauthorized"}), (200, [])]
    startSync(world)
    world.provision()
    world.reactor.advance(0)
    promote(world, world.index.caches()[0].id)
    world.reactor.advance(1)
    world.reactor.advance(2)
    patches = [r for r in world.heroku.requests if r[1].startswith("/addons/")]
    assert [p[2][b"Authorization"] for p in patches] == [[b"Bearer old"], [b"Bearer new"]]
    assert world.sync.records.records.pushes("uuid-1")[0].state == "done"


def test_stopService(world):
    startSync(world)
    world.sync.stopService()
    world.provision()
    world.reactor.advance(10)
    assert world.heroku.requests == []


# -- pieces


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2016-03-03T18:01:31-0800", 1457056891.0),
        ("2016-03-04T02:01:31Z", 1457056891.0),
        ("2016-03-04T02:01:31", 1457056891.0),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parseExpiry(text, expected):
    assert parseExpiry(text) == expected


def test_manifest():
    world = ProvisioningWorld(
        web={"public_url": "https://cache.example.com", "listen": "tcp:9090:interface=127.0.0.1"},
        heroku={"sso_salt": "salt"},
    )
    value = manifest(world.settings)
    assert value["id"] == "memcachier"
    assert value["api"]["config_vars"] == sorted(CONFIG_VARS, key=["MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD"].index)
    assert value["api"]["production"]["base_url"] == "https://cache.example.com/heroku/resources"
    assert value["api"]["test"]["sso_url"] == "http://localhost:9090/sso/login"
    assert (value["api"]["password"], value["api"]["sso_salt"]) == (HEROKU_AUTH[1], "salt")


# -- Heroku follows the cache to another cluster


def sentConfigs(world, uuid="uuid-1"):
    """
    The config vars of every PATCH Heroku got for C{uuid}.
    """
    return [
        {e["name"]: e["value"] for e in json.loads(r[3])["config"]}
        for r in world.heroku.requests if r[1] == f"/addons/{uuid}/config"
    ]


def provisioned(world, patches):
    """
    A provisioned cache on cluster C{devs}, its grant exchanged, Heroku's
    config PATCHes answered with C{patches}.

    @return: its L{memcachier.control.model.Cache}.
    """
    world.heroku.answers["/oauth/token"] = [tokens("access", "refresh")]
    world.heroku.answers["/addons/uuid-1/config"] = patches
    startSync(world)
    world.provision()
    world.reactor.advance(0)
    [cache] = world.index.caches()
    assert cache.cluster == "devs"
    return cache


def test_moveIsPushed(world):
    """
    A move to another cluster (as C{memcachier-admin} makes it: straight
    to the control plane, seen at the next poll) sends every config var,
    C{MEMCACHIER_SERVERS} now the new cluster's, retried with backoff and
    recorded like a promotion.
    """
    cache = provisioned(world, [(500, {}), (200, [])])
    assert sentConfigs(world) == []
    world.cp.setCluster(cache.id, "prod")
    world.reactor.advance(1)
    primary = world.index.credentials(cache.id)[0]
    expected = {
        "MEMCACHIER_SERVERS": "10.0.0.1:11211",
        "MEMCACHIER_USERNAME": primary.username,
        "MEMCACHIER_PASSWORD": primary.password,
    }
    assert sentConfigs(world) == [expected]
    world.reactor.advance(1)
    assert sentConfigs(world) == [expected, expected]
    [push] = world.sync.records.records.pushes("uuid-1")
    assert (push.state, push.attempts, push.last_status, push.username) == (
        "done", 2, 200, primary.username,
    )


def test_planChangeBetweenKindsIsPushed(world):
    """
    Heroku's own plan change from development to production moves the
    cache: the move is pushed too (Heroku also took the answer's config).
    """
    provisioned(world, [(200, [])])
    assert world.heroku_("PUT", "/uuid-1", body={"plan": "dev2"}).code == 200
    world.reactor.advance(1)
    assert sentConfigs(world) == []  # same cluster: nothing to send
    assert world.heroku_("PUT", "/uuid-1", body={"plan": "100"}).code == 200
    world.reactor.advance(0)
    assert [c["MEMCACHIER_SERVERS"] for c in sentConfigs(world)] == ["10.0.0.1:11211"]


def seen(world):
    """
    This node's index reads the change at once (as on the node that made
    it), and the sync pass it kicks runs.
    """
    result(world.index.refresh())
    world.reactor.advance(0)


def test_moveSupersedesAPromotionAndIsSuperseded(world):
    """
    A move while a promotion's push still fails replaces it (the move's
    push carries the new credential too); a promotion while the move's
    push fails replaces that one.
    """
    cache = provisioned(world, [(500, {}), (500, {}), (200, [])])
    second = promote(world, cache.id)
    seen(world)
    assert len(sentConfigs(world)) == 1
    world.cp.setCluster(cache.id, "prod")
    seen(world)
    pushes = world.sync.records.records.pushes("uuid-1")
    assert [(p.state, p.attempts) for p in pushes] == [("superseded", 1), ("pending", 1)]
    assert pushes[-1].username == second.username
    assert sentConfigs(world)[-1]["MEMCACHIER_SERVERS"] == "10.0.0.1:11211"
    third = promote(world, cache.id)
    seen(world)
    pushes = world.sync.records.records.pushes("uuid-1")
    assert [p.state for p in pushes] == ["superseded", "superseded", "done"]
    last = sentConfigs(world)[-1]
    assert (last["MEMCACHIER_SERVERS"], last["MEMCACHIER_USERNAME"]) == (
        "10.0.0.1:11211", third.username,
    )
    world.reactor.advance(600)
    assert len(sentConfigs(world)) == 3


def test_pushWaitsForTheIndex(world):
    """
    A push of a move made elsewhere is not sent while this node's index
    still shows the old cluster: it would tell Heroku the old servers.
    """
    cache = provisioned(world, [(200, [])])
    world.cp.setCluster(cache.id, "prod")
    world.sync.tick()
    assert sentConfigs(world) == []
    assert world.sync.records.records.pushes("uuid-1")[0].attempts == 0
    world.reactor.advance(1)  # the index catches up, and kicks the sync
    assert [c["MEMCACHIER_SERVERS"] for c in sentConfigs(world)] == ["10.0.0.1:11211"]


def test_onlyMovesOfHerokuCachesArePushed(world):
    """
    Moving a cache Heroku did not provision, or "moving" one to the
    cluster it is on, queues nothing.
    """
    cache = provisioned(world, [(200, [])])
    own, _ = world.cp.createCache(plan="dev", cluster="devs")
    world.cp.setCluster(own.id, "prod")
    world.cp.setCluster(cache.id, "devs")
    world.reactor.advance(5)
    assert sentConfigs(world) == []
    assert world.sync.records.records.pushes("uuid-1") == []
