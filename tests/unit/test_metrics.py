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
    world = ProvisioningWorld(metrics={"access": "off"})
    response = world.call("GET", "/metrics")
    assert response.code == 404
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("header,code", [
    (None, 401), ("Bearer wrong", 401), ("Basic eDp5", 401), ("Bearer scrape", 200),
])
def test_token(header, code):
    world = ProvisioningWorld(metrics={"access": "token", "token": "scrape"})
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

    handed = []

    def inThread(f, *args):
        handed.append((f, args))
        d = Deferred()
        handed.append(d)
        return d

    world = ProvisioningWorld(inThread=inThread)
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


def test_nodeCounters(tmp_path):
    """
    The node's own counters, read from the site, the memcache factory,
    the login throttle and the certificate reloader, are in C{/metrics}
    under C{memcachier_*} names with HELP text: every count its source
    made, and the ceilings.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.ssl import TLSVersion
    from twisted.internet.testing import StringTransportWithDisconnection

    from memcachier.protocols.sniff import MemcacheFactory
    from memcachier.protocols.throttle import AuthThrottle
    from memcachier.node.shutdown import CertificateReloader
    from memcachier.node.tls import ReloadingContextFactory
    from memcachier.web.metrics import NodeCounters
    from tests.conftest import makeSelfSignedCertificate

    from twisted.internet.task import Clock

    from memcachier.protocols.sniff import memcacheConnectionCeiling
    from memcachier.web.site import WebCounters, webCeiling

    # Built in order: the ceilings and counters first, the node's counters
    # over them, the site and the memcache factory that feed them last.
    clock = Clock()
    web = webCeiling(64, clock)
    for _ in range(64):
        web.opened(object())
    for _ in range(6):
        web.admit()
    counters = WebCounters()
    counters.update(
        bodies_too_large=1, header_timeouts=2, body_timeouts=3, idle_timeouts=4, bad_urls=5,
    )
    memcache = memcacheConnectionCeiling(2, clock)
    throttle = AuthThrottle(rate=0.01, burst=1)
    throttle.failed("10.0.0.1", b"user", 0)
    assert not throttle.admit("10.0.0.1", b"user", 0)
    assert not throttle.admit("10.0.0.1", b"other", 0)
    key, cert = makeSelfSignedCertificate(tmp_path)
    contextFactory = ReloadingContextFactory(
        f"ssl:0:privateKey={key}:certKey={cert}", TLSVersion.TLSv1_2
    )
    reloader = CertificateReloader(clock, [contextFactory], installSignal=False)
    reloader.reload()
    (tmp_path / "cert.pem").write_text("garbage")
    reloader.reload()
    reloader.reload()

    world = ProvisioningWorld(node=NodeCounters(web, counters, memcache, throttle, reloader.counters))
    factory = MemcacheFactory(world.registry, world.reactor, ceiling=memcache)
    for _ in range(5):
        proto = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
    response = world.call("GET", "/metrics")
    text = response.body.decode()
    values = parse(text)
    assert values[("memcachier_auth_throttled_total", ())] == 2
    assert values[("memcachier_connections_refused_total", (("surface", "memcache"),))] == 3
    assert values[("memcachier_connections_refused_total", (("surface", "web"),))] == 6
    assert values[("memcachier_current_connections", (("surface", "memcache"),))] == 2
    assert values[("memcachier_max_connections", (("surface", "memcache"),))] == 2
    assert values[("memcachier_max_connections", (("surface", "web"),))] == 64
    assert values[("memcachier_http_request_timeouts_total", (("phase", "header"),))] == 2
    assert values[("memcachier_http_request_timeouts_total", (("phase", "body"),))] == 3
    assert values[("memcachier_http_idle_timeouts_total", ())] == 4
    assert values[("memcachier_http_bodies_too_large_total", ())] == 1
    assert values[("memcachier_http_bad_urls_total", ())] == 5
    assert values[("memcachier_tls_reloads_total", (("result", "ok"),))] == 1
    assert values[("memcachier_tls_reloads_total", (("result", "failed"),))] == 2
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert all(helps[name] for name in helps if name.startswith("memcachier_"))


def test_nodeCountersOptional():
    """
    Without TLS listeners (no reloader) there is no TLS family; without
    node counters at all only the caches and the process are there.
    """
    from twisted.internet.task import Clock

    from memcachier.web.metrics import NodeCounters
    from memcachier.web.site import WebCounters, webCeiling

    def names(world):
        text = world.call("GET", "/metrics").body.decode()
        return {family.name for family in text_string_to_metric_families(text)}

    assert not any(name.startswith("memcachier_") for name in names(ProvisioningWorld()))
    clock = Clock()
    world = ProvisioningWorld(node=NodeCounters(webCeiling(None, clock), WebCounters()))
    found = names(world)
    assert "memcachier_http_bad_urls" in found
    assert "memcachier_tls_reloads" not in found and "memcachier_auth_throttled" not in found
