"""
C{memcachier-admin alert list|events CACHE_ID}: what the API's alert
routes and C{alerts/<id>/events} show, from a shell.
"""

from memcachier.alerts.repository import AlertRepository
from memcachier.control.schema import makeEngine
from tests.unit.test_admin import Run


def test_alertListAndEvents(tmp_path):
    run = Run(f"sqlite:///{tmp_path}/control.sqlite")
    cache = run.json("cache", "create", "--plan", "100")
    cacheId = cache["id"]
    assert run.json("alert", "list", str(cacheId)) == []
    repo = AlertRepository(makeEngine(run.url), None)
    config = repo.createConfig(cacheId, delivery_type="slack",
                               slack_url="https://hooks.slack.com/services/T/B/SECRET")
    alert = repo.createAlert(cacheId, trigger_type="hit_rate", trigger_threshold=50.0,
                             delivery_config_id=config["id"])
    listed = run.json("alert", "list", str(cacheId))
    assert listed[0]["id"] == alert["id"] and listed[0]["trigger_threshold"] == 50
    assert listed[0]["firing"] is False
    assert run("alert", "list", str(cacheId)) == 0
    assert "hit_rate below 50%" in run.out
    assert "SECRET" not in run.out and "https://hooks.slack.com/..." in run.out

    delivery = repo.recordTransition(alert["id"], "fired", 1_700_000_000.0, 12.5, 50.0,
                                     "hit_rate", "{}", config)
    repo.deliveryFailed(delivery, 2, "Slack answered HTTP 500", 1_700_000_100.0)
    events = run.json("alert", "events", str(cacheId))
    assert [(e["kind"], e["value"]) for e in events] == [("fired", 12.5)]
    assert events[0]["deliveries"][0]["status"] == "pending"
    assert run("alert", "events", str(cacheId)) == 0
    assert "2023-11-14T22:13:20Z" in run.out
    assert "slack pending (2 attempts: Slack answered HTTP 500)" in run.out
    assert run.json("alert", "list", str(cacheId))[0]["firing"] is True


def test_alertCommandsOfUnknownCache(tmp_path):
    run = Run(f"sqlite:///{tmp_path}/control.sqlite")
    assert run("alert", "list", "42") == 1
    assert "42" in run.err
    assert run("alert", "events", "x") == 2
