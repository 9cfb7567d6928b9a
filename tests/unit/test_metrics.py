"""
Tests for L{memcachier.web.metrics}: the collector's families and values
(parsed back with C{prometheus_client.parser}) and the access setting,
through L{StubTreq}.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from memcachier.commands import StoreMode
from memcachier.web.metrics import COMMANDS
from tests.unit.provisioningworld import ProvisioningWorld


def parse(text):
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_everyCacheWithZerosUntilServed():
    """
    Every cache of the index is there, a cache never served with zeros
    and its plan's limits; a disabled one is down.
    """
    world = ProvisioningWorld()
    first, _ = world.cp.createCache(plan="100")
    second, _ = world.cp.createCache(plan="dev")
    world.cp.setEnabled(second.id, False)
    world.index.refresh()
    response = world.call("GET", "/metrics")
    assert response.code == 200
    values = parse(response.body.decode())
    label = (("cache", str(first.id)),)
    assert values[("memcached_up", label)] == 1
    assert values[("memcached_up", (("cache", str(second.id)),))] == 0
    assert values[("memcached_limit_bytes", label)] == 100 * 1024 * 1024
    assert values[("memcached_max_connections", label)] == 250
    assert values[("memcached_current_items", label)] == 0
    for command, status, _ in COMMANDS:
        key = ("memcached_commands_total", tuple(sorted(
            {"cache": str(first.id), "command": command, "status": status}.items()
        )))
        assert values[key] == 0


def test_countsFromTheRuntime():
    world = ProvisioningWorld()
    cache, _ = world.cp.createCache(plan="100")
    world.index.refresh()
    runtime = world.registry.runtime(cache.id)
    runtime.keyspace.store(StoreMode.SET, b"k", b"value", 0, 0, 0)
    runtime.stats.cmd_set = 1
    runtime.stats.get_hits = 4
    runtime.stats.get_misses = 2
    runtime.stats.cas_badval = 3
    runtime.stats.bytes_read = 100
    runtime.stats.curr_connections = 2
    world.reactor.advance(30)
    values = parse(world.call("GET", "/metrics").body.decode())
    c = str(cache.id)

    def command(name, status):
        return values[("memcached_commands_total", (("cache", c), ("command", name), ("status", status)))]

    assert (command("get", "hit"), command("get", "miss"), command("set", "hit")) == (4, 2, 1)
    assert command("cas", "badval") == 3
    assert values[("memcached_current_items", (("cache", c),))] == 1
    assert values[("memcached_items_total", (("cache", c),))] == 1
    assert values[("memcached_current_bytes", (("cache", c),))] == runtime.statsDict()["bytes"]
    assert values[("memcached_read_bytes_total", (("cache", c),))] == 100
    assert values[("memcached_current_connections", (("cache", c),))] == 2
    assert values[("memcached_uptime_seconds", (("cache", c),))] == 30
    assert any(name == "process_cpu_seconds_total" for name, _ in values)


def test_off():
    world = ProvisioningWorld(metrics_access="off")
    response = world.call("GET", "/metrics")
    assert response.code == 404
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("header,code", [
    (None, 401), ("Bearer wrong", 401), ("Basic eDp5", 401), ("Bearer scrape", 200),
])
def test_token(header, code):
    world = ProvisioningWorld(metrics_access="token", metrics_token="scrape")
    headers = {"Authorization": header} if header else {}
    response = world.call("GET", "/metrics", headers=headers)
    assert response.code == code
    if code == 401:
        assert response.header(b"WWW-Authenticate").startswith(b"Bearer")


def test_subpathsAreNotMetrics():
    world = ProvisioningWorld()
    assert world.call("GET", "/metrics/x").code == 404
    refused = world.call("POST", "/metrics")
    assert (refused.code, set(refused.json())) == (405, {"error"})


def test_formattedOffTheReactor():
    """
    Only the reading happens in the request; the formatting is handed to
    C{inThread}, and the answer waits for it.  A failure there is an
    opaque JSON 500.
    """
    from twisted.internet.defer import Deferred

    from memcachier.web.metrics import exposition

    world = ProvisioningWorld()
    handed = []

    def inThread(f, *args):
        handed.append((f, args))
        d = Deferred()
        handed.append(d)
        return d

    world.site.resource.mounts[b"metrics"].inThread = inThread
    answers = []
    world.treq.get("http://node.test/metrics").addBoth(answers.append)
    assert handed[0][0] is exposition
    assert answers == []
    handed[1].callback(b"memcached_up 1\n")
    world.treq.flush()
    [response] = answers
    assert response.code == 200
    assert world.treq.content(response).result == b"memcached_up 1\n"
    handed.clear()
    answers.clear()
    world.treq.get("http://node.test/metrics").addBoth(answers.append)
    handed[1].errback(RuntimeError("boom"))
    world.treq.flush()
    [failed] = answers
    assert failed.code == 500
    assert world.treq.json_content(failed).result == {"error": "internal error"}
