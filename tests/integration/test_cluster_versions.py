"""
Nodes on PostgreSQL that do not all agree: a node cut off from its peers
(another cluster secret: every fan-out to it fails) still applies the
flushes recorded in the control plane; a node advertising fewer peer
capabilities works beside a full one; a rolling restart under load never
answers a client with an error.
"""

import threading
import time

import pytest

from memcachier.cluster.ring import Ring
from tests.integration.test_cluster import SECRET, Cluster, api, waitFor


def _configure(node, old, new):
    with open(node.config_path) as f:
        text = f.read()
    assert old in text
    with open(node.config_path, "w") as f:
        f.write(text.replace(old, new))


def _run(cluster, request):
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stopAndShowLogs(request)


@pytest.fixture
def cutOff(tmp_path, postgresql_url, request):
    """
    Three nodes; the third has another cluster secret: no peer reaches it
    and it reaches none, but it sees the control plane.
    """
    cluster = Cluster(tmp_path, postgresql_url)
    _configure(cluster.nodes[2], f'secret = "{SECRET}"', 'secret = "another-secret"')
    yield from _run(cluster, request)


@pytest.fixture
def mixed(tmp_path, postgresql_url, request):
    """
    Two nodes; the second advertises only the stats tunnel, not the
    peer-only item opcodes (as a node of another version could).
    """
    cluster = Cluster(tmp_path, postgresql_url, size=2)
    _configure(
        cluster.nodes[1], 'request_timeout = "3s"\n',
        'request_timeout = "3s"\npeer_capabilities = ["stats_tunnel"]\n',
    )
    yield from _run(cluster, request)


def _owned(cluster, index, count=20):
    ring = Ring(cluster.names)
    keys = [f"key{i}" for i in range(2000)]
    return [k for k in keys if ring.owner(k.encode()) == cluster.names[index]][:count]


def test_nodeCutOffFromItsPeersAppliesRecordedFlushes(cutOff):
    """
    Items of the cut-off node survive the fan-out of a flush through
    another node (it cannot reach them), and are gone once the node sees
    the flush generation in the control plane; an item stored after that
    stays.  A delayed flush is applied when it is due, not before.
    """
    a, b, c = cutOff.nodes
    keys = _owned(cutOff, 2)
    onC = c.ascii()
    for key in keys:
        assert onC.call(f"set {key} 0 0 5", b"value") == b"STORED"
    assert all(onC.get(key) == b"value" for key in keys)
    assert a.ascii().call("flush_all") == b"OK"
    waitFor(lambda: all(onC.get(key) is None for key in keys), timeout=10)
    assert "applying a flush recorded in the control plane" in c.log()
    assert "not recorded" not in a.log()
    assert onC.call(f"set {keys[0]} 0 0 5", b"after") == b"STORED"
    time.sleep(1.5)
    assert onC.get(keys[0]) == b"after"

    # a delayed flush: not before it is due, gone after
    for key in keys:
        assert onC.call(f"set {key} 0 0 5", b"again") == b"STORED"
    flushedAt = time.monotonic()
    assert a.ascii().call("flush_all 5") == b"OK"
    time.sleep(1.0)
    assert all(onC.get(key) == b"again" for key in keys)
    waitFor(lambda: all(onC.get(key) is None for key in keys), timeout=15)
    assert time.monotonic() - flushedAt >= 4


def test_flushThroughTheApiIsAGenerationToo(cutOff):
    a, b, c = cutOff.nodes
    keys = _owned(cutOff, 2)
    onC = c.ascii()
    for key in keys:
        assert onC.call(f"set {key} 0 0 1", b"v") == b"STORED"
    api(b, "/flush", "POST")
    waitFor(lambda: all(onC.get(key) is None for key in keys), timeout=10)


def test_fewerCapabilitiesBesideAFullNode(mixed):
    """
    Forwarded requests between a full node and one without the item
    capability answer right both ways (plain gets: a forwarded item's TTL
    is then unknown to meta, -1); the stats tunnel still merges both
    nodes' recent logs.
    """
    a, b = mixed.nodes
    ofB = _owned(mixed, 1)
    ofA = _owned(mixed, 0)
    onA, onB = a.ascii(), b.ascii()
    for key in ofA + ofB:
        assert onA.call(f"set {key} 3 300 {len(key)}", key.encode()) == b"STORED"
    for conn in (onA, onB):
        for key in ofA + ofB:
            assert conn.get(key) == key.encode()
    # through A, B's items come by plain GET: no TTL; B itself knows it
    assert onA.call(f"mg {ofB[0]} t v") == b"VA %d t-1" % len(ofB[0])
    assert onA.line() == ofB[0].encode()
    line = onB.call(f"mg {ofB[0]} t")
    assert line.startswith(b"HD t") and int(line[4:]) > 200, line
    # a peek of B's item through A (no item capability) is a miss, never an error
    assert onA.call(f"me {ofB[0]}") == b"EN"
    response = a.binary().request(0x00, ofB[1].encode())
    assert (response.status, response.value) == (0, ofB[1].encode())
    # the stats tunnel, which both have, still merges both nodes' logs
    assert sorted(api(a, "/introspection/recent_logs")) == sorted(mixed.names)


def test_rollingRestartNeverAnswersAnError(tmp_path, postgresql_url, request):
    """
    A client on the first node gets and sets keys of every node while the
    two others restart one after the other, the second one killed
    (C{kill -9}: requests in flight to it, and those sent before its peers
    notice, lose their connection): every reply is a value, a miss,
    C{STORED} or C{NOT_STORED}; none is an error.
    """
    cluster = Cluster(tmp_path, postgresql_url)
    runs = _run(cluster, request)
    next(runs)
    try:
        a, b, c = cluster.nodes
        keys = [f"roll{i}" for i in range(300)]
        stop = threading.Event()
        replies = []
        errors = []

        def load():
            conn = a.ascii()
            i = 0
            while not stop.is_set():
                key = keys[i % len(keys)]
                line = conn.call(f"set {key} 0 0 3", b"abc")
                if line not in (b"STORED", b"NOT_STORED"):
                    errors.append((key, "set", line))
                conn.send(f"get {key}\r\n".encode())
                line = conn.line()
                if line.startswith(b"VALUE"):
                    conn.line()
                    line = conn.line()
                if line != b"END":
                    errors.append((key, "get", line))
                replies.append(time.monotonic())
                i += 1

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(1.0)
            for node in (b, c):
                if node is b:
                    node.stop()
                else:
                    node.process.kill()
                    node.process.wait()
                time.sleep(1.0)
                node.start()
                waitFor(lambda: len(replies) > 0 and replies[-1] > time.monotonic() - 1, timeout=10)
                time.sleep(1.5)
        finally:
            stop.set()
            worker.join(30)
        assert errors == []
        assert len(replies) > 100
    finally:
        next(runs, None)
