"""
Bounds on what an API user or a client can grow (C{[limits]}): watched
prefixes, credentials, alerts and delivery configs per cache, keys per
ASCII retrieval; and the watched-prefix index whose cost per key does not
grow with the number of prefixes.
"""

import pytest

from memcachier.alerts.repository import AlertRepository
from memcachier.analytics.introspection import PrefixIndex
from memcachier.analytics.repository import AnalyticsRepository
from memcachier.node.settings import ConfigError, Settings, parseSettings
from memcachier.control.repository import LimitReached

from tests.unit.helpers import World as CodecWorld
from tests.unit.test_alerts_web import AlertsWorld
from tests.unit.test_analytics_web import world  # noqa: F401 (fixture)
from tests.unit.test_api import World, assertError


class CountingNode(dict):
    """
    A trie node counting every lookup made through it.
    """

    lookups = 0

    def get(self, key, default=None):
        CountingNode.lookups += 1
        return super().get(key, default)


def _lookups(prefixes, key):
    index = PrefixIndex(((p, p) for p in prefixes), node=CountingNode)
    CountingNode.lookups = 0
    matched = index.match(key)
    return matched, CountingNode.lookups


def test_prefixIndexCostIndependentOfCount():
    """
    Matching a key costs the same number of lookups whether 1, 50 or
    5,000 prefixes are watched: the trie is walked along the key's bytes.
    """
    key = b"user:42:name"
    wanted = [b"user:", b"user:42:"]
    many = [b"p%04d:" % i for i in range(5000)]
    counts = set()
    for prefixes in (wanted, wanted + many[:48], wanted + many):
        matched, lookups = _lookups(prefixes, key)
        assert matched == wanted
        counts.add(lookups)
    assert len(counts) == 1
    # a key no prefix starts with costs one lookup
    assert _lookups(many, b"zzz")[1] == 1


def test_prefixIndexMatches():
    index = PrefixIndex([(b"a", 1), (b"ab", 2), (b"ab", 3), (b"b", 4)])
    assert index.match(b"abc") == [1, 2, 3]
    assert index.match(b"a") == [1]
    assert index.match(b"c") == []
    assert index.match(b"") == []
    assert PrefixIndex().match(b"abc") == []


def test_limitsConfig():
    """
    C{[limits]} keys have defaults, take positive integers (the multi-get
    count also 0, for none) and report every mistake.
    """
    settings = parseSettings("")
    assert (
        settings.limits.watched_prefixes, settings.limits.credentials, settings.limits.alerts,
        settings.limits.alert_configs, settings.limits.multiget_keys,
    ) == (50, 20, 50, 20, 0)
    settings = parseSettings("[limits]\nwatched_prefixes = 3\nmultiget_keys = 100\n")
    assert (settings.limits.watched_prefixes, settings.limits.multiget_keys) == (3, 100)
    with pytest.raises(ConfigError) as e:
        parseSettings("[limits]\ncredentials = 0\nalerts = -1\nmultiget_keys = \"x\"\nfoo = 1\n")
    text = str(e.value)
    for fragment in ("limits.credentials", "limits.alerts", "limits.multiget_keys",
                     "limits.foo: unknown key"):
        assert fragment in text


def test_watchedPrefixesPerCache(world):  # noqa: F811
    """
    The 51st watched prefix of a cache is a 409 naming the limit; another
    cache is not affected, and deleting one makes room.
    """
    ids = []
    for i in range(50):
        r = world.call("POST", "/introspection/prefixes", body={"name": f"p{i}:"})
        assert r.code == 200, r
        ids.append(r.json()["id"])
    assertError(
        world.call("POST", "/introspection/prefixes", body={"name": "one-more:"}),
        409, "at most 50 watched prefixes (limits.watched_prefixes)",
    )
    other = world.call(
        "POST", "/introspection/prefixes", body={"name": "x:"}, cacheId=world.other.id,
        auth=(world.otherPrimary.username, world.otherPrimary.password),
    )
    assert other.code == 200, other
    assert world.call("DELETE", f"/introspection/prefixes/{ids[0]}").code == 204
    assert world.call("POST", "/introspection/prefixes", body={"name": "one-more:"}).code == 200


def test_watchedPrefixesConfigured():
    w = World()
    repository = AnalyticsRepository(w.cp.engine, w.reactor, maxPrefixes=2)
    repository.createPrefix(w.cache.id, "a")
    repository.createPrefix(w.cache.id, "b")
    with pytest.raises(LimitReached):
        repository.createPrefix(w.cache.id, "c")


def test_credentialsPerCache():
    """
    A cache has at most 20 credentials, its primary included: the 21st is
    a 409.
    """
    w = World()
    for _ in range(19):
        r = w.call("POST", "/credentials")
        assert r.code == 201, r
    assertError(w.call("POST", "/credentials"), 409, "at most 20 credentials (limits.credentials)")
    assert len(w.call("GET", "/credentials").json()) == 20


def test_credentialsConfigured():
    w = World()
    w.cp.maxCredentials = 2
    w.cp.createCredential(w.cache.id)
    with pytest.raises(LimitReached):
        w.cp.createCredential(w.cache.id)


def test_alertsAndConfigsPerCache():
    """
    20 delivery configs and 50 alerts per cache; past them a 409.
    """
    w = AlertsWorld()
    configs = [w.slack() for _ in range(20)]
    r = w.call("POST", "/alerts/configs", body={
        "delivery_type": "slack", "slack_url": "https://hooks.slack.com/services/T/B/X",
        "slack_channel": "#alerts"})
    assertError(r, 409, "at most 20 alert delivery configs (limits.alert_configs)")
    body = {"trigger_type": "hit_rate", "trigger_threshold": 50,
            "delivery_config_id": configs[0]["id"], "description": "d", "enabled": True}
    for _ in range(50):
        assert w.call("POST", "/alerts", body=body).code == 201
    assertError(w.call("POST", "/alerts", body=body), 409, "at most 50 alerts (limits.alerts)")


def test_alertsConfigured():
    w = World()
    repository = AlertRepository(w.cp.engine, w.reactor, maxAlerts=1, maxConfigs=1)
    config = repository.createConfig(w.cache.id, delivery_type="email", email="a@b.c")
    with pytest.raises(LimitReached):
        repository.createConfig(w.cache.id, delivery_type="email", email="a@b.c")
    fields = dict(trigger_type="hit_rate", trigger_threshold=50, delivery_config_id=config["id"],
                  description="d", enabled=True)
    repository.createAlert(w.cache.id, **fields)
    with pytest.raises(LimitReached):
        repository.createAlert(w.cache.id, **fields)


def test_multigetKeys():
    """
    With C{limits.multiget_keys} set, an ASCII retrieval naming more keys
    is a C{CLIENT_ERROR} and the connection goes on; unset (the default),
    only the 256 KiB line bounds the count.
    """
    for maxKeys, expected in ((3, b"CLIENT_ERROR too many keys\r\n"), (0, b"END\r\n")):
        world = CodecWorld()
        world.factory.maxKeys = maxKeys
        proto, transport = world.connect()
        proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
        transport.clear()
        proto.dataReceived(b"get a b c d\r\ngets a b c\r\n")
        assert transport.value() == expected + b"END\r\n"
        assert transport.connected


def test_settingsCarryTheLimits():
    assert Settings().limits.watched_prefixes == 50


def test_adminHonoursCredentialLimit(tmp_path):
    """
    C{memcachier-admin credential create} past C{limits.credentials} fails
    with the limit's message and a non-zero status.
    """
    import io
    import json

    from memcachier.admin import main

    config = tmp_path / "memcachier.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/db.sqlite"\n[limits]\ncredentials = 2\n'
    )

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        code = main(["--config", str(config), *argv], stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    code, out, _ = run("cache", "create", "--json")
    assert code == 0
    cacheId = str(json.loads(out)["id"])
    assert run("credential", "create", cacheId)[0] == 0
    code, _, err = run("credential", "create", cacheId)
    assert code != 0
    assert "at most 2 credentials (limits.credentials)" in err
