"""
The alerts routes through L{treq.testing.StubTreq}: the contract's paths,
codes and JSON, validation with clear messages, partial PUT, events.
"""

import re

import pytest

from memcachier.alerts.repository import AlertRepository, AsyncAlerts
from memcachier.node.settings import Settings
from memcachier.web.alerts import AlertsAPI
from memcachier.web.common import CacheAuth
from memcachier.web.api import CacheAPI
from tests.unit.test_api import SynchronousThreadPool, World, assertError

from treq.testing import StubTreq


class AlertsWorld(World):
    def __init__(self, allowHttpLoopback=False):
        super().__init__()
        self.repo = AlertRepository(self.cp.engine, self.reactor)
        store = AsyncAlerts(self.repo, SynchronousThreadPool(), self.reactor)
        settings = Settings().evolve(alerts={"allow_http_loopback": allowHttpLoopback})
        self.api = CacheAPI(
            self.acp, self.index, self.registry, self.settings, self.reactor,
            [AlertsAPI(CacheAuth(self.index), store, settings.alerts.allow_http_loopback)],
        )
        self.treq = StubTreq(self.api.resource())

    def slack(self, **extra):
        body = {"delivery_type": "slack", "slack_url": "https://hooks.slack.com/services/T/B/X",
                "slack_channel": "#alerts", **extra}
        r = self.call("POST", "/alerts/configs", body=body)
        assert r.code == 201, r
        return r.json()

    def alert(self, **extra):
        config = self.slack()
        body = {"trigger_type": "hit_rate", "trigger_threshold": 50,
                "delivery_config_id": config["id"], "description": "This is a description.",
                "enabled": True, **extra}
        r = self.call("POST", "/alerts", body=body)
        assert r.code == 201, r
        return r.json()


@pytest.fixture
def world():
    return AlertsWorld()


def test_configLifecycle(world):
    config = world.slack()
    assert config == {
        "id": config["id"], "delivery_type": "slack", "email": "",
        "slack_url": "https://hooks.slack.com/services/T/B/X", "slack_channel": "#alerts",
        "webhook_url": "", "webhook_secret": "",
    }
    email = world.call("POST", "/alerts/configs",
                       body={"delivery_type": "email", "email": "ops@example.com"})
    assert email.code == 201 and email.json()["email"] == "ops@example.com"
    listed = world.call("GET", "/alerts/configs").json()
    assert [c["id"] for c in listed] == [config["id"], email.json()["id"]]
    r = world.call("DELETE", f"/alerts/configs/{config['id']}")
    assert r.code == 204 and r.body == b""
    assert [c["id"] for c in world.call("GET", "/alerts/configs").json()] == [email.json()["id"]]
    assertError(world.call("DELETE", f"/alerts/configs/{config['id']}"), 404, "no alert delivery config")
    assertError(world.call("DELETE", "/alerts/configs/abc"), 400, "must be a number")


def test_webhookConfigGetsASecret(world):
    r = world.call("POST", "/alerts/configs",
                   body={"delivery_type": "webhook", "webhook_url": "https://example.com/hook"})
    assert r.code == 201
    assert len(r.json()["webhook_secret"]) == 64
    r = world.call("POST", "/alerts/configs", body={
        "delivery_type": "webhook", "webhook_url": "https://example.com/hook",
        "webhook_secret": "mine"})
    assert r.json()["webhook_secret"] == "mine"


@pytest.mark.parametrize("body, fragment", [
    ({}, "delivery_type is required"),
    ({"delivery_type": "pager"}, "delivery_type: expected one of email, slack, webhook"),
    ({"delivery_type": "email"}, "not an email address"),
    ({"delivery_type": "email", "email": "ops at example.com"}, "not an email address"),
    ({"delivery_type": "email", "email": 5}, "email: expected a string"),
    ({"delivery_type": "slack", "slack_url": "http://hooks.slack.com/x"}, "must be an https:// URL"),
    ({"delivery_type": "slack", "slack_url": "http://127.0.0.1:9/x"}, "allow_http_loopback"),
    ({"delivery_type": "slack"}, "slack_url: expected an https:// URL"),
    ({"delivery_type": "slack", "slack_url": "https://x.test/", "slack_channel": "# a"}, "slack_channel"),
    ({"delivery_type": "email", "email": "a@b.c", "slack_url": "https://x.test"}, "does not apply"),
    ({"delivery_type": "webhook", "webhook_url": "ftp://x"}, "webhook_url: must be an https"),
    ({"delivery_type": "slack", "slack_url": "https://x.test", "colour": "red"}, "unknown field(s) colour"),
])
def test_badConfigs(world, body, fragment):
    assertError(world.call("POST", "/alerts/configs", body=body), 400, fragment)
    assert world.call("GET", "/alerts/configs").json() == []


def test_httpLoopbackWhenConfigured():
    world = AlertsWorld(allowHttpLoopback=True)
    r = world.call("POST", "/alerts/configs",
                   body={"delivery_type": "slack", "slack_url": "http://127.0.0.1:9999/hook"})
    assert r.code == 201
    assertError(world.call("POST", "/alerts/configs", body={
        "delivery_type": "slack", "slack_url": "http://10.0.0.1/hook"}), 400, "https://")


def test_alertLifecycle(world):
    alert = world.alert()
    assert alert == {"id": alert["id"], "trigger_type": "hit_rate", "trigger_threshold": 50,
                     "delivery_config_id": alert["delivery_config_id"],
                     "description": "This is a description.", "enabled": True}
    assert world.call("GET", "/alerts").json() == [alert]
    assert world.call("GET", f"/alerts/{alert['id']}").json() == alert
    r = world.call("PUT", f"/alerts/{alert['id']}", body={"id": alert["id"], "enabled": False})
    assert r.code == 201
    assert r.json() == {**alert, "enabled": False}
    r = world.call("PUT", f"/alerts/{alert['id']}", body={"trigger_threshold": 12.5})
    assert r.json()["trigger_threshold"] == 12.5 and r.json()["enabled"] is False
    r = world.call("DELETE", f"/alerts/{alert['id']}")
    assert r.code == 201
    assertError(world.call("GET", f"/alerts/{alert['id']}"), 404, f"no alert {alert['id']}")
    assert world.call("GET", "/alerts").json() == []


def test_extraTriggerTypes(world):
    config = world.slack()
    for trigger, threshold in [("evictions", 500), ("connections", 90), ("latency", 2.5),
                               ("auth_errors", 10)]:
        r = world.call("POST", "/alerts", body={
            "trigger_type": trigger, "trigger_threshold": threshold,
            "delivery_config_id": config["id"]})
        assert r.code == 201, r
        assert r.json()["enabled"] is True and r.json()["description"] == ""


@pytest.mark.parametrize("body, fragment", [
    ({}, "trigger_type is required"),
    ({"trigger_type": "cpu", "trigger_threshold": 5}, "trigger_type: expected one of hit_rate"),
    ({"trigger_type": "hit_rate"}, "trigger_threshold is required"),
    ({"trigger_type": "hit_rate", "trigger_threshold": 101}, "percentage from 0 to 100"),
    ({"trigger_type": "memory_usage", "trigger_threshold": -1}, "percentage from 0 to 100"),
    ({"trigger_type": "evictions", "trigger_threshold": -1}, "must be 0 or more"),
    ({"trigger_type": "hit_rate", "trigger_threshold": "50"}, "expected a number, got a string"),
    ({"trigger_type": "hit_rate", "trigger_threshold": True}, "expected a number, got a boolean"),
    ({"trigger_type": "hit_rate", "trigger_threshold": 50}, "delivery_config_id is required"),
    ({"trigger_type": "hit_rate", "trigger_threshold": 50, "delivery_config_id": 999},
     "no alert delivery config 999"),
    ({"trigger_type": "hit_rate", "trigger_threshold": 50, "delivery_config_id": "1"},
     "delivery_config_id: expected an id"),
    ({"trigger_type": "hit_rate", "trigger_threshold": 50, "delivery_config_id": 1,
      "enabled": "yes"}, "enabled: expected true or false"),
    ({"trigger_type": "hit_rate", "trigger_threshold": 50, "delivery_config_id": 1,
      "description": 3}, "description: expected a string"),
    ({"trigger_type": "hit_rate", "trigger_threshold": 50, "delivery_config_id": 1, "x": 1},
     "unknown field(s) x"),
])
def test_badAlerts(world, body, fragment):
    world.slack()
    assertError(world.call("POST", "/alerts", body=body), 400, fragment)
    assert world.call("GET", "/alerts").json() == []


def test_malformedBodies(world):
    assertError(world.call("POST", "/alerts", raw=b"{nope"), 400, "malformed JSON")
    assertError(world.call("POST", "/alerts", raw=b"[1]"), 400, "expected a JSON object")
    assertError(world.call("POST", "/alerts"), 400, "expected a JSON object")


def test_configOfAnotherCacheIsRefused(world):
    theirs = world.repo.createConfig(world.other.id, delivery_type="email", email="x@y.z")
    assertError(world.call("POST", "/alerts", body={
        "trigger_type": "hit_rate", "trigger_threshold": 50,
        "delivery_config_id": theirs["id"]}), 400, f"no alert delivery config {theirs['id']}")
    alert = world.alert()
    assertError(world.call("PUT", f"/alerts/{alert['id']}",
                           body={"delivery_config_id": theirs["id"]}), 400, "delivery_config_id")
    assertError(world.call("DELETE", f"/alerts/configs/{theirs['id']}"), 404)


def test_putChecksTheMergedAlert(world):
    alert = world.alert()
    path = f"/alerts/{alert['id']}"
    assertError(world.call("PUT", path, body={"trigger_threshold": 150}), 400, "percentage")
    r = world.call("PUT", path, body={"trigger_type": "evictions", "trigger_threshold": 150})
    assert r.code == 201 and r.json()["trigger_threshold"] == 150
    assertError(world.call("PUT", path, body={"trigger_type": "hit_rate"}), 400, "percentage")
    assertError(world.call("PUT", path, body={"id": alert["id"] + 1}), 400, "the body's id")
    assertError(world.call("PUT", "/alerts/999", body={"enabled": False}), 404, "no alert 999")


def test_configInUseCannotBeDeleted(world):
    alert = world.alert()
    assertError(world.call("DELETE", f"/alerts/configs/{alert['delivery_config_id']}"), 400,
                f"used by alert(s) {alert['id']}")


@pytest.mark.parametrize("method, path", [
    ("GET", "/alerts/x"), ("PUT", "/alerts/1x"), ("DELETE", "/alerts/-1"),
    ("GET", "/alerts/x/events"), ("DELETE", "/alerts/configs/x"),
])
def test_nonNumericIds(world, method, path):
    assertError(world.call(method, path, body={} if method == "PUT" else None), 400, "must be a number")


def test_authAndTenancy(world):
    alert = world.alert()
    assertError(world.call("GET", "/alerts", auth=None), 401)
    assertError(world.call("GET", "/alerts", cacheId=world.other.id), 403)
    assertError(world.call("GET", "/alerts", cacheId=99999), 404)
    other = (world.otherPrimary.username, world.otherPrimary.password)
    assertError(world.call("GET", f"/alerts/{alert['id']}", auth=other,
                           cacheId=world.other.id), 404)


def test_events(world):
    alert = world.alert()
    config = world.repo.listConfigs(world.cache.id)[0]
    world.repo.recordTransition(alert["id"], "fired", 1_700_000_000.0, 12.5, 50.0, "hit_rate",
                                "{}", config)
    delivery = world.repo.recordTransition(alert["id"], "resolved", 1_700_000_600.0, 80.0, 50.0,
                                           "hit_rate", "{}", config)
    world.repo.deliveryFailed(delivery, 1, "HTTP 500", 1_700_000_660.0)
    events = world.call("GET", f"/alerts/{alert['id']}/events").json()
    assert [(e["kind"], e["time"], e["value"]) for e in events] == [
        ("resolved", "2023-11-14T22:23:20Z", 80.0), ("fired", "2023-11-14T22:13:20Z", 12.5)]
    assert events[0]["deliveries"] == [{
        "id": delivery, "delivery_config_id": config["id"], "delivery_type": "slack",
        "status": "pending", "attempts": 1, "last_error": "HTTP 500", "delivered_at": None}]
    assertError(world.call("GET", "/alerts/999/events"), 404)


def test_documentDescribesEveryAlertRoute(world):
    import schemathesis

    paths = world.api.openapi()["paths"]
    routes = [(p, m) for p, m in world.api.routes() if "/alerts" in p and "OPTIONS" not in m]
    assert len(routes) == 9
    for path, methods in routes:
        documented = re.sub(r"<(\w+)>", r"{\1}", path)
        assert documented in paths, path
        for method in methods:
            assert method.lower() in paths[documented], (path, method)
    schemathesis.openapi.from_dict(world.api.openapi())


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_otherMethodsOnConfigsAre405(world, method):
    """
    C{alerts/configs} takes GET and POST; PUT or DELETE there is a 405, not
    an alert id that is not a number.
    """
    response = world.call(method, "/alerts/configs")
    assertError(response, 405, f"method {method} not allowed")
    assert response.header(b"Allow") == b"GET, POST"
