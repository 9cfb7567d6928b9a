"""
C{/metrics} over real HTTP: parsed with C{prometheus_client.parser}, its
per-cache counts equal what a scripted memcache workload did; access
off/open/token; the curl examples of docs/metrics.md.
"""

import signal
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_provisioning import docCurls, runCurl

TOKEN = "scrape-token"

WITH_TOKEN = pytest.mark.memcachier(config=f'[metrics]\naccess = "token"\ntoken = "{TOKEN}"\n')


def scrape(server, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(f"http://127.0.0.1:{server.web_port}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return response.text


def samples(text, cache):
    """
    The samples of one cache: {(name, frozenset(other labels)): value}.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("cache") == str(cache):
                labels = {k: v for k, v in sample.labels.items() if k != "cache"}
                found[(sample.name, frozenset(labels.items()))] = sample.value
    return found


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


@WITH_TOKEN
def test_countsEqualTheWorkload(memcachier_server):
    """
    A scripted ASCII workload; every count in /metrics for the cache is
    what it did, and another cache's are untouched.
    """
    s = memcachier_server
    other = s.admin("cache", "create")
    # The CLI's cache reaches the server at its next poll.
    deadline = time.monotonic() + 10
    while not samples(scrape(s), other["id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    before = samples(scrape(s), s.cache_id)
    assert value(before, "memcached_commands_total", command="get", status="hit") == 0

    mc = s.ascii()
    for i in range(5):
        assert mc.call(f"set key{i} 0 0 5", b"value") == b"STORED"
    assert mc.call("set counter 0 0 1", b"7") == b"STORED"
    for key in ("key0", "key1"):
        assert mc.get(key) == b"value"
    for key in ("nope1", "nope2", "nope3"):
        assert mc.get(key) is None
    assert mc.call("delete key0") == b"DELETED"
    assert mc.call("delete nope") == b"NOT_FOUND"
    assert mc.call("incr counter 2") == b"9"
    assert mc.call("incr nope 1") == b"NOT_FOUND"
    assert mc.call("decr counter 1") == b"8"
    assert mc.call("touch key1 100") == b"TOUCHED"
    assert mc.call("touch nope 100") == b"NOT_FOUND"

    found = samples(scrape(s), s.cache_id)
    commands = {
        ("get", "hit"): 2, ("get", "miss"): 3, ("set", "hit"): 6,
        ("delete", "hit"): 1, ("delete", "miss"): 1,
        ("incr", "hit"): 1, ("incr", "miss"): 1, ("decr", "hit"): 1, ("decr", "miss"): 0,
        ("touch", "hit"): 1, ("touch", "miss"): 1, ("cas", "hit"): 0, ("flush", "hit"): 0,
    }
    for (command, status), count in commands.items():
        assert value(found, "memcached_commands_total", command=command, status=status) == count, (
            command, status,
        )
    assert value(found, "memcached_current_items") == 5
    assert value(found, "memcached_items_total") == 6
    assert value(found, "memcached_current_connections") == 1
    assert value(found, "memcached_up") == 1
    assert value(found, "memcached_limit_bytes") == 25 * 1024 * 1024
    stats = mc.stats()
    assert value(found, "memcached_current_bytes") == int(stats["bytes"])
    assert value(found, "memcached_read_bytes_total") > 0
    assert value(found, "memcached_written_bytes_total") > 0
    assert value(found, "memcached_items_evicted_total") == 0
    untouched = samples(scrape(s), other["id"])
    assert value(untouched, "memcached_commands_total", command="set", status="hit") == 0
    assert value(untouched, "memcached_current_items") == 0

    text = scrape(s)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names


@WITH_TOKEN
def test_tokenAccess(memcachier_server):
    """
    With C{access = "token"}, no token or a wrong one is a 401.
    """
    s = memcachier_server
    url = f"http://127.0.0.1:{s.web_port}/metrics"
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")


def test_offByDefault(memcachier_server):
    """
    Without C{[metrics] access}, /metrics does not exist (404).
    """
    url = f"http://127.0.0.1:{memcachier_server.web_port}/metrics"
    assert requests.get(url, timeout=10).status_code == 404


@pytest.mark.memcachier(config='[metrics]\naccess = "open"\n')
def test_open(memcachier_server):
    """
    With C{access = "open"}, no token is needed.
    """
    assert "memcached_up" in scrape(memcachier_server, token=None)


@WITH_TOKEN
def test_docsMetricsCurlExamples(memcachier_server):
    """
    Every curl example of docs/metrics.md works against a running server.
    """
    s = memcachier_server
    commands = docCurls("metrics.md")
    assert commands
    for command in commands:
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{s.web_port}").replace(
            "$METRICS_TOKEN", TOKEN
        )
        code, body = runCurl(command)
        assert code == "200", (command, code, body)
        assert "memcached_commands_total" in body


def nodeValues(server):
    """
    The C{memcachier_*} samples of C{/metrics}: {(name, frozenset(labels)): value}.
    """
    found = {}
    for family in text_string_to_metric_families(scrape(server, token=None)):
        if family.name.startswith("memcachier_"):
            assert family.documentation, family.name
            for sample in family.samples:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def waitFor(server, expected, timeout=20):
    """
    Scrape until every C{expected} sample has its value (the server counts
    a moment after the client sees the effect), then return them all.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = nodeValues(server)
        mismatched = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
        if not mismatched or time.monotonic() > deadline:
            assert not mismatched, mismatched
            return found
        time.sleep(0.2)


def node(name, **labels):
    return (name, frozenset(labels.items()))


@pytest.mark.memcachier(
    tls=True,
    config='[metrics]\naccess = "open"\n',
    memcache="auth_failure_rate = 0.01\nauth_failure_burst = 1\nmax_connections = 3\n",
    web_config='header_timeout = "5s"\nbody_timeout = "1s"\nidle_timeout = "3s"\n'
               "max_connections = 4\n",
)
def test_nodeCounters(memcachier_server):
    """
    Every node counter, provoked over real sockets, is in C{/metrics} with
    its HELP text and the count provoked: logins throttled, connections
    refused at the memcache and web ceilings, HTTP requests timed out
    (header, body), idle connections closed, bodies too large, bad URLs,
    TLS reloads that worked and failed.
    """
    from tests.integration.conftest import AsciiConnection
    from tests.integration.test_hardening import HTTP

    s = memcachier_server
    waitFor(s, {
        node("memcachier_current_connections", surface="memcache"): 0,
        node("memcachier_max_connections", surface="memcache"): 3,
        node("memcachier_max_connections", surface="web"): 4,
    })

    # the memcache ceiling: 3 connections, the 4th refused
    held = [AsciiConnection(s.port) for _ in range(3)]
    for conn in held:
        assert conn.call("version").startswith(b"VERSION ")
    over = AsciiConnection(s.port)
    assert over.line() == b"ERROR Too many open connections"
    for conn in held + [over]:
        conn.close()
    waitFor(s, {node("memcachier_current_connections", surface="memcache"): 0})

    # logins: one failure spends the budget (1), the next two are throttled
    for _ in range(3):
        conn = AsciiConnection(s.port)
        assert conn.auth(s.username, "wrong") == b"CLIENT_ERROR authentication failure"
        conn.close()

    # the web ceiling: of 6 connections at once, 4 are served (and, idle,
    # closed without a word by the idle timeout), the rest get 503 (more
    # than 2 if the server had yet to see the last scrape's close)
    replies = [client.response() for client in [HTTP(s) for _ in range(6)]]
    refused = [reply for reply in replies if reply]
    assert all(reply.startswith(b"HTTP/1.1 503 ") for reply in refused), refused
    assert len(refused) >= 2
    client = HTTP(s)
    client.send(b"GET /api/v2/caches/%ff/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert client.response().startswith(b"HTTP/1.1 400 ")
    client = HTTP(s)
    client.send(
        b"POST /api/v2/caches/1/flush HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n"
    )
    assert client.response().startswith(b"HTTP/1.1 413 ")
    client = HTTP(s)
    client.send(b"GET /api/v2/caches/1/stats HTTP/1.1\r\nHost: x\r\n")
    assert client.response().startswith(b"HTTP/1.1 408 ")
    client = HTTP(s)
    client.send(b"POST /api/v2/caches/1/flush HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc")
    assert client.response().startswith(b"HTTP/1.1 408 ")

    # TLS: a reload that works, then one that fails (the file is garbage)
    s.process.send_signal(signal.SIGHUP)
    waitFor(s, {node("memcachier_tls_reloads_total", result="ok"): 1})
    with open(s.cert_path, "w") as f:
        f.write("garbage")
    s.process.send_signal(signal.SIGHUP)

    waitFor(s, {
        node("memcachier_auth_throttled_total"): 2,
        node("memcachier_connections_refused_total", surface="memcache"): 1,
        node("memcachier_connections_refused_total", surface="web"): len(refused),
        node("memcachier_http_request_timeouts_total", phase="header"): 1,
        node("memcachier_http_request_timeouts_total", phase="body"): 1,
        node("memcachier_http_idle_timeouts_total"): 6 - len(refused),
        node("memcachier_http_bodies_too_large_total"): 1,
        node("memcachier_http_bad_urls_total"): 1,
        node("memcachier_tls_reloads_total", result="ok"): 1,
        node("memcachier_tls_reloads_total", result="failed"): 1,
    })
    assert "Traceback" not in s.log()
