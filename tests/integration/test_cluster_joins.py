"""
Joins and drains under load: three C{twistd memcachier} nodes on
PostgreSQL, a ketama client (pylibmc, binary SASL) doing 90 % gets and
10 % sets over a working set that fits; a fourth node joins, then drains
(C{memcachier-admin node drain}).  No request gets an error, no get answers anything but the
last value written, and the hit rate stays up (warm paths on).
"""

import time

import pytest

from memcachier.bench.rebalance import Load
from tests.integration.test_cluster import Cluster, liveServers, waitFor

KEYS = 2000


@pytest.fixture
def four(tmp_path, postgresql_url, request):
    """
    Four configured nodes; the first three started.
    """
    c = Cluster(tmp_path, postgresql_url, size=4)
    try:
        c.start(3)
        yield c
    finally:
        c.stopAndShowLogs(request)


def _states(node):
    return {n["name"]: n["state"] for n in node.admin("node", "list")}


def test_joinAndDrainUnderLoadNeverFailNorServeStale(four):
    c = four
    a = c.nodes[0]
    load = Load(c.names[:3], a.username, a.password, KEYS)
    load.fill()
    load.start()
    try:
        time.sleep(3)
        steady = time.monotonic()

        # a fourth node joins: it takes its share warm (asks the previous owners)
        joined = time.monotonic()
        c.nodes[3].start()
        waitFor(lambda: all(len(liveServers(n)) == 4 for n in c.nodes))
        assert _states(a)[c.names[3]] in ("warming", "serving")
        time.sleep(3)

        # it drains: hands its items back and stops
        drained = time.monotonic()
        result = a.admin("node", "drain", c.names[3], "--wait", "--timeout", "60")
        assert result["stopped"] is True
        assert c.nodes[3].process.wait(30) == 0
        assert "drain" in c.nodes[3].log()
        waitFor(lambda: all(len(liveServers(n)) == 3 for n in c.nodes[:3]))
        time.sleep(3)
        end = time.monotonic()
    finally:
        load.stopping.set()
        load.join(10)
    phases = {
        "steady": load.hitRate(steady - 3, steady),
        "join": load.hitRate(joined, drained),
        "drain": load.hitRate(drained, end),
    }
    print("hit rate (rate, gets) by phase:", phases)
    for name, at in (("join", joined), ("drain", drained), ("end", end)):
        print(name, "stale after it:", sum(1 for s in load.stale if s[0] >= at))
    print("first stale:", [(round(s[0] - joined, 2),) + s[1:] for s in load.stale[:5]])
    assert load.errors == []
    assert load.stale == []
    for phase, (rate, gets) in phases.items():
        assert gets > 50, (phase, gets)
        assert rate >= 0.9, (phase, rate)


@pytest.mark.slow
def test_rebalanceBenchShortRun(postgresql_url):
    """
    C{python -m memcachier.bench.rebalance}, warm paths on, at small
    scale: a sample per interval through the restarts, the join and the
    drain, no stale value (its exit status says so).
    """
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "memcachier.bench.rebalance", "--database", postgresql_url,
         "--only", "on", "--keys", "300", "--steady", "3", "--settle", "3", "--interval", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for event in ("restart node 0", "restart node 2", "node 3 joins", "node 3 drains", "end"):
        assert event in out, out
    samples = [line for line in out.splitlines() if line.startswith("on ") and " gets)" in line]
    assert len(samples) >= 5, out
    assert "stale 0" in out, out
