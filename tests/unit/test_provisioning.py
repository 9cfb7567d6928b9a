"""
Tests for L{memcachier.control.provisioning} (records and rules) and
L{memcachier.web.provisioning} (our own provisioning API), through
L{StubTreq} over a real control plane on in-memory SQLite.
"""

import pytest
import sqlalchemy as sa

from memcachier.commands import StoreMode, itemValue
from memcachier.control import schema
from memcachier.control.model import Plan
from memcachier.heroku.records import ResourceGone, UnknownResource
from memcachier.web.openapi import SCHEMAS
from tests.unit.provisioningworld import ProvisioningWorld


@pytest.fixture
def world():
    return ProvisioningWorld()


@pytest.fixture
def records(world):
    return world.sync.records.records


# -- records


def test_provisionOnceAnUuid(records, world):
    """
    The same uuid twice is one cache; the second call says it made none.
    """
    first, created = records.herokuProvision("u1", "100", "prod", "app", "eu", "code", 5.0)
    again, createdAgain = records.herokuProvision("u1", "100", "prod", "app", "eu", "code", 5.0)
    assert (created, createdAgain) == (True, False)
    assert first == again
    assert (first.grant_code, first.grant_expires_at, first.region) == ("code", 5.0, "eu")
    assert len(world.cp.listCaches()) == 1
    primary = world.cp.listCredentials(first.cache_id)[0]
    assert first.config_username == primary.username
    # the cache carries Heroku's uuid: SSO logins name the cache by it
    assert world.cp.getCache(first.cache_id).uuid == "u1"


def test_uuidIsUnique(world):
    """
    The database refuses a second row for one uuid (two deliveries at
    once settle on it).
    """
    records = world.sync.records.records
    records.herokuProvision("u1", "100", "prod")
    with pytest.raises(sa.exc.IntegrityError):
        with world.cp.engine.begin() as conn:
            conn.execute(
                schema.heroku_resources.insert().values(uuid="u1", created_at=0.0)
            )


def test_concurrentDuplicateDeletesItsCache(world, records, monkeypatch):
    """
    When another delivery of the same uuid wins between the check and the
    insert, the cache made for the losing one is deleted.
    """
    original = records.herokuResource
    calls = []

    def racing(uuid):
        calls.append(uuid)
        if len(calls) == 1:
            # The other delivery inserts now.
            monkeypatch.setattr(records, "herokuResource", original)
            cache, _ = world.cp.createCache(plan="100")
            with world.cp.engine.begin() as conn:
                conn.execute(
                    schema.heroku_resources.insert().values(
                        uuid=uuid, cache_id=cache.id, created_at=0.0
                    )
                )
            monkeypatch.setattr(records, "herokuResource", racing)
            return None
        return original(uuid)

    monkeypatch.setattr(records, "herokuResource", racing)
    resource, created = records.herokuProvision("u1", "100", "prod")
    assert created is False
    assert [c.id for c in world.cp.listCaches()] == [resource.cache_id]


def test_deprovisionKeepsATombstone(records, world):
    resource, _ = records.herokuProvision("u1", "100", "prod")
    records.herokuDeprovision("u1")
    assert world.cp.listCaches() == []
    gone = records.herokuResource("u1")
    assert gone.deleted_at is not None and gone.cache_id is None
    with pytest.raises(ResourceGone):
        records.herokuDeprovision("u1")
    with pytest.raises(ResourceGone):
        records.liveResource("u1")
    with pytest.raises(ResourceGone):
        records.herokuProvision("u1", "100", "prod")
    with pytest.raises(UnknownResource):
        records.herokuDeprovision("u2")
    assert records.herokuResources() == []


def test_cacheDeletedElsewhere(records, world):
    """
    A cache deleted by the CLI leaves its resource gone, not broken.
    """
    resource, _ = records.herokuProvision("u1", "100", "prod")
    world.cp.deleteCache(resource.cache_id)
    with pytest.raises(ResourceGone):
        records.liveResource("u1")
    records.herokuDeprovision("u1")
    assert records.herokuResource("u1").deleted_at is not None


def test_recordPromotionOncePerUsername(records):
    resource, _ = records.herokuProvision("u1", "100", "prod")
    assert records.recordPromotion(resource.id, resource.config_username) is False
    assert records.recordPromotion(resource.id, "NEW") is True
    assert records.recordPromotion(resource.id, "NEW") is False
    assert [(p.username, p.state) for p in records.pushes("u1")] == [("NEW", "pending")]
    assert [p.username for p, _ in records.duePushes()] == ["NEW"]


# -- rules


def test_clusterFor(world):
    provisioner = world.sync.provisioner
    assert provisioner.clusterFor(world.settings.plans["dev"]) == "devs"
    assert provisioner.clusterFor(world.settings.plans["100"]) == "prod"


def test_clusterForOneNode():
    """
    With only the default (production) cluster, development caches go
    there too.
    """
    world = ProvisioningWorld(
        clusters={"default": ("127.0.0.1:11211",)},
        cluster_kinds={"default": "production"},
        caches={"default_cluster": "default"},
    )
    assert world.sync.provisioner.clusterFor(Plan("dev", 1, 1, development=True)) == "default"


# -- our own API


def test_ownAPIAuth(world):
    for token in (None, "wrong"):
        response = world.own("POST", token=token)
        assert response.code == 401
        assert response.header(b"WWW-Authenticate").startswith(b"Bearer")
        assert set(response.json()) == {"error"}
    assert world.own("DELETE", "/1", token=None).code == 401
    assert world.own("PUT", "/1/plan", body={"plan": "100"}, token=None).code == 401
    off = ProvisioningWorld(provisioning={"token": ""})
    assert off.own("POST", token="").code == 401
    assert off.own("POST", token="anything").code == 401
    assert world.index.caches() == []


def test_ownAPICreate(world):
    """
    POST makes a cache on the default plan (or the one asked), with its
    first credential in config.
    """
    response = world.own("POST")
    assert response.code == 201, response
    body = response.json()
    assert set(body) == set(SCHEMAS["ProvisionedCache"]["required"])
    assert (body["plan"], body["cluster_name"]) == ("dev", "devs")
    cache = world.index.cache(body["id"])
    primary = world.index.credentials(cache.id)[0]
    assert body["config"] == {
        "MEMCACHIER_SERVERS": "10.0.0.2:11211",
        "MEMCACHIER_USERNAME": primary.username,
        "MEMCACHIER_PASSWORD": primary.password,
    }
    named = world.own("POST", body={"plan": "250", "label": "shop", "name": "shop-1"}).json()
    assert (named["plan"], named["label"], named["name"], named["cluster_name"]) == (
        "250", "shop", "shop-1", "prod",
    )
    assert world.own("POST", body={"name": "shop-1"}).code == 409


@pytest.mark.parametrize(
    "body,raw,code",
    [
        ({"plan": "gold"}, None, 422),
        ({"plan": 100}, None, 400),
        ({"colour": "red"}, None, 400),
        ({"plan": ""}, None, 400),
        (None, b"{nope", 400),
        (None, b"[]", 400),
    ],
)
def test_ownAPICreateRefusals(world, body, raw, code):
    response = world.own("POST", body=body, raw=raw)
    assert response.code == code, response
    assert world.index.caches() == []


def test_ownAPIPlanChange(world):
    cacheId = world.own("POST", body={"plan": "100"}).json()["id"]
    keyspace = world.registry.runtime(cacheId).keyspace
    keyspace.store(StoreMode.SET, b"k", b"v", 0, 0, 0)
    kept = world.own("PUT", f"/{cacheId}/plan", body={"plan": "500"})
    assert kept.code == 200, kept
    assert (kept.json()["plan"], kept.json()["data_kept"]) == ("500", True)
    assert itemValue(keyspace.get(b"k")) == b"v"
    emptied = world.own("PUT", f"/{cacheId}/plan", body={"plan": "dev"}).json()
    assert (emptied["plan"], emptied["cluster_name"], emptied["data_kept"]) == ("dev", "devs", False)
    assert keyspace.get(b"k") is None
    assert world.own("PUT", f"/{cacheId}/plan", body={"plan": "x"}).code == 422
    assert world.own("PUT", f"/{cacheId}/plan", body={}).code == 400
    assert world.own("PUT", f"/{cacheId}/plan").code == 400
    assert world.own("PUT", "/999/plan", body={"plan": "100"}).code == 404
    assert world.own("PUT", "/abc/plan", body={"plan": "100"}).code == 400


def test_ownAPIDelete(world):
    body = world.own("POST").json()
    username = body["config"]["MEMCACHIER_USERNAME"].encode()
    password = body["config"]["MEMCACHIER_PASSWORD"].encode()
    assert world.index.authenticate(username, password) is not None
    response = world.own("DELETE", f"/{body['id']}")
    assert (response.code, response.body) == (204, b"")
    assert world.index.authenticate(username, password) is None
    assert world.own("DELETE", f"/{body['id']}").code == 404
    assert world.own("DELETE", "/abc").code == 400


def test_ownAPIInTheDocument(world):
    """
    The three routes are in the OpenAPI document, with the bearer scheme
    and no cacheId parameter on the collection.
    """
    document = world.call("GET", "/api/v2/openapi.json").json()
    paths = document["paths"]
    assert paths["/api/v2/caches"]["post"]["security"] == [{"provisioningToken": []}]
    assert "parameters" not in paths["/api/v2/caches"]
    assert "delete" in paths["/api/v2/caches/{cacheId}"]
    assert "put" in paths["/api/v2/caches/{cacheId}/plan"]
    assert document["components"]["securitySchemes"]["provisioningToken"]["scheme"] == "bearer"
    routes = {(path, methods) for path, methods in world.api.routes()}
    assert ("/api/v2/caches", ("POST",)) in routes
    assert ("/api/v2/caches/<cacheId>/plan", ("PUT",)) in routes


def test_analyticsAPIStillServed(world):
    """
    Mounting /heroku and /metrics leaves the API's own paths alone.
    """
    body = world.own("POST", body={"plan": "100"}).json()
    auth = (body["config"]["MEMCACHIER_USERNAME"], body["config"]["MEMCACHIER_PASSWORD"])
    info = world.call("GET", f"/api/v2/caches/{body['id']}/info", auth=auth)
    assert info.code == 200 and info.json()["id"] == body["id"]
    assert world.call("GET", "/nothing").code == 404
    assert world.call("GET", "/").code == 404




def test_oneNodeAtATime(records, world):
    """
    A grant or refresh token, and a due push, are claimed by one caller
    (one node) at a time; a claim lapses after its time.
    """
    resource, _ = records.herokuProvision("u1", "100", "prod", grantCode="c")
    assert records.claimTokens(resource.id) is True
    assert records.claimTokens(resource.id) is False
    world.reactor.advance(61)
    assert records.claimTokens(resource.id) is True
    records.storeTokens(resource.id, "a", "r", 0.0)
    assert records.claimTokens(resource.id) is True
    records.recordPromotion(resource.id, "NEW")
    [(push, _)] = records.duePushes()
    assert records.claimPush(push.id) is True
    assert records.claimPush(push.id) is False
    assert records.duePushes() == []


def test_provisionAgainAfterTheCacheWasDeleted(world):
    """
    Heroku's retry of a provisioning whose cache an operator deleted
    meanwhile is a 410, not a 500.
    """
    assert world.provision().code == 200
    world.cp.deleteCache(world.index.caches()[0].id)
    response = world.provision()
    assert response.code == 410
    assert set(response.json()) == {"message"}
