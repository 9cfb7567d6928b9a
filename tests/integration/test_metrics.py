"""
C{/metrics} over real HTTP: parsed with C{prometheus_client.parser}, its
per-cache counts equal what a scripted memcache workload did; access
off/open/token; the curl examples of docs/metrics.md.
"""

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
