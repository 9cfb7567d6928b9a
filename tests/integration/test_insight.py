"""
Insight and introspection end to end: twistd started as a user starts it,
a real client (pymemcache with MemCachier's ASCII auth) runs a scripted
workload, and the HTTP API reports exactly that workload.
"""

import base64
import json
import time
import urllib.error
import urllib.request

import pytest
from pymemcache.client.base import Client

FAST = "[analytics]\nsample_period = 0.5\nlatency_period = 0.5\n"


class API:
    def __init__(self, server):
        self.base = f"http://127.0.0.1:{server.web_port}/api/v2/caches/{server.cache_id}"
        token = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, path):
        status, body = self.call("GET", path)
        assert status == 200, body
        return body


def isoAgo(days):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))


def waitFor(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.mark.memcachier(config=FAST)
def test_scriptedWorkload(memcachier_server):
    server = memcachier_server
    api = API(server)
    status, prefix = api.call("POST", "/introspection/prefixes", {"name": "user:"})
    assert status == 200 and prefix["name"] == "user:"

    client = Client(("127.0.0.1", server.port), timeout=10)
    assert client.set(server.username, server.password, noreply=False)  # ASCII auth
    for key, value in [("user:1", b"a" * 10), ("user:2", b"b" * 20), ("user:3", b"c"), ("page:home", b"p")]:
        assert client.set(key, value, noreply=False)
    for key, times in [("user:1", 20), ("user:2", 10), ("user:3", 5)]:
        for _ in range(times):
            assert client.get(key) is not None
    for key, times in [("missing:a", 7), ("missing:b", 3)]:
        for _ in range(times):
            assert client.get(key) is None
    assert client.delete("page:home", noreply=False)
    client.close()

    # hot keys first, with exact counts (a quiet cache is counted exactly)
    popular = waitFor(lambda: (lambda p: p if p["most_hit_keys"] else None)(
        api.get("/introspection/popular_items")))
    assert popular["most_hit_keys"] == [
        {"name": "user:1", "popularity": 20},
        {"name": "user:2", "popularity": 10},
        {"name": "user:3", "popularity": 5},
    ]
    assert popular["most_missed_keys"] == [
        {"name": "missing:a", "popularity": 7},
        {"name": "missing:b", "popularity": 3},
    ]
    assert popular["popular_prefixes"][0] == {"name": "user", "popularity": 38}

    logs = api.get("/introspection/recent_logs")[f"127.0.0.1:{server.port}"]
    assert [(l["command"], l["key"], l["status"]) for l in logs[-2:]] == [
        ("GET", "missing:b", "MISS"), ("DELETE", "page:home", "DELETED")
    ]
    assert logs[0] == {**logs[0], "command": "SET", "key": "user:1", "status": "STORED", "size": 10}

    stats = api.get("/introspection/key_stats?key=user:1")
    assert sum(r["hit_count"] for r in stats) == 20
    assert sum(r["mutation_count"] for r in stats) == 1
    assert stats[-1]["in_cache"] is True and stats[-1]["size"] == 10

    # the watched prefix: 35 hits, no miss, 3 sets; 3 keys now
    prefixPopular = api.get(f"/introspection/prefixes/{prefix['id']}/popular_items")
    assert prefixPopular["most_hit_keys"][0] == {"name": "user:1", "popularity": 20}

    def prefixTotals():
        rows = api.get(f"/introspection/prefixes/{prefix['id']}/stats?startTime={isoAgo(100)}")[0]["values"]
        return rows if rows and rows[-1][1] == 3 else None

    rows = waitFor(prefixTotals)
    assert rows, "no prefix sample"
    assert rows[-1][2] == len("user:1") + 10 + len("user:2") + 20 + len("user:3") + 1

    # processed stats over a span of > 92 days: one daily bucket holding
    # every sample, so the fractions are exactly those of the workload
    names = "get_hit_rate,hit_rate,get_fraction,set_fraction,delete_fraction,items"
    query = f"/insight/processed_stats?names={names}&startTime={isoAgo(100)}"

    def settled():
        values = api.get(query)[0]["values"]
        return values if values and values[-1][-1] == 3 else None

    values = waitFor(settled)
    assert len(values) == 1, values
    assert values[0][1:] == [35 / 45, 36 / 46, 45 / 50, 4 / 50, 1 / 50, 3]

    perServer = api.get("/insight/processed_stats/per_server?names=items")
    assert [s["tags"]["server"] for s in perServer] == [f"127.0.0.1:{server.port}"]

    latency = waitFor(lambda: api.get("/insight/latency")[0]["values"])
    assert latency and all(0 < duration < 1e9 for _, duration in latency)

    # bad parameters
    for path, fragment in [
        ("/insight/processed_stats?names=bogus", "unknown stat"),
        ("/insight/processed_stats", "names is required"),
        ("/insight/latency?startTime=2024-01-02T00:00:00Z&endTime=2024-01-01T00:00:00Z", "before"),
        ("/introspection/compound_stats?startTime=someday", "ISO 8601"),
        ("/insight/processed_stats?names=get_rate&startTime=1999-01-01T00:00:00Z", "kept for"),
    ]:
        status, body = api.call("GET", path)
        assert status == 400 and fragment in body["error"], (path, body)

    status, _ = api.call("DELETE", f"/introspection/prefixes/{prefix['id']}")
    assert status == 204


@pytest.mark.memcachier(config="[analytics]\nintrospection = false\n")
def test_introspectionOff(memcachier_server):
    """
    With introspection off the server serves as usual and introspection
    reports nothing.
    """
    server = memcachier_server
    client = Client(("127.0.0.1", server.port), timeout=10)
    assert client.set(server.username, server.password, noreply=False)
    assert client.set("k", b"v", noreply=False)
    assert client.get("k") == b"v"
    client.close()
    api = API(server)
    assert api.get("/introspection/popular_items")["most_hit_keys"] == []
    assert api.get("/introspection/recent_logs") == {f"127.0.0.1:{server.port}": []}
