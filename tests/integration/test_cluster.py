"""
Three C{twistd memcachier} nodes sharing one PostgreSQL control plane: any
node answers any key the same, whatever client hashes the keys; a killed
node's keys fall to the survivors; flush, stats and credentials are
cluster-wide; C{config get cluster} follows membership.
"""

import json
import os
import signal
import time
import urllib.request

import pytest

from tests.integration.conftest import (
    MemcachierServer,
    _firstCredential,
    freePort,
    pylibmcClient,
    waitForMemcache,
)

SECRET = "cluster-test-secret"


class Cluster:
    """
    Three nodes of cluster C{default} in C{MEMCACHIER_SERVERS} order.
    """

    def __init__(self, tmp_path, database, size=3, extra=""):
        self.nodes = []
        ports = [(freePort(), freePort()) for _ in range(size)]
        names = [f"127.0.0.1:{port}" for port, _ in ports]
        self.names = names
        for i, (port, webPort) in enumerate(ports):
            directory = tmp_path / f"node{i}"
            directory.mkdir()
            config = directory / "memcachier.toml"
            config.write_text(
                "[memcache]\n"
                f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
                "[web]\n"
                f'listen = "tcp:{webPort}:interface=127.0.0.1"\n'
                "[database]\n"
                f"url = {json.dumps(database)}\n"
                # far beyond the test's deadlines: changes must come by NOTIFY
                "poll_interval = 30\n"
                "[node]\n"
                f'name = "{names[i]}"\n'
                "[cluster]\n"
                f'secret = "{SECRET}"\n'
                'heartbeat_timeout = "2s"\n'
                'request_timeout = "1s"\n'
                "[clusters.default]\n"
                f"servers = {json.dumps(names)}\n"
                "[caches]\n"
                'default_plan = "100"\n' + extra
            )
            self.nodes.append(MemcachierServer(directory, config, port, None, webPort, None))

    @property
    def servers(self):
        return ",".join(self.names)

    def start(self):
        first = self.nodes[0]
        created = first.admin("cache", "create")
        cacheId, username, password = _firstCredential(created)
        for node in self.nodes:
            node.cache = created
            node.cache_id, node.username, node.password = cacheId, username, password
        for node in self.nodes:
            node.start()
        waitFor(lambda: all(len(liveServers(n)) == len(self.nodes) for n in self.nodes))

    def stop(self):
        for node in self.nodes:
            node.stop()


def waitFor(condition, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"not true after {timeout}s: {condition}")


def configCluster(node):
    """
    C{config get cluster} on a node: (version, [host:port]).
    """
    conn = node.ascii(auth=False)
    try:
        conn.send(b"config get cluster\r\n")
        header = conn.line()
        assert header.startswith(b"CONFIG cluster 0 "), header
        body = conn.exactly(int(header.split()[3]))
        assert conn.line() == b""
        assert conn.line() == b"END"
    finally:
        conn.close()
    version, nodes, _ = body.split(b"\n")
    return int(version), [f"{n.split(b'|')[0].decode()}:{n.split(b'|')[2].decode()}" for n in nodes.split()]


def liveServers(node):
    try:
        return configCluster(node)[1]
    except OSError:
        return []


def api(node, path, method="GET"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.web_port}/api/v2/caches/{node.cache_id}{path}", method=method
    )
    import base64

    token = base64.b64encode(f"{node.username}:{node.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture
def cluster(tmp_path, postgresql_url, request):
    c = Cluster(tmp_path, postgresql_url)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            for node in c.nodes:
                print(f"--- {node.directory} ---\n{node.log()}")


def test_everyNodeAnswersEveryKey(cluster):
    """
    A value set through one node, whichever owns its key, is read the same
    through every other; ASCII and binary connections alike.
    """
    a, b, c = cluster.nodes
    writer = a.ascii()
    for i in range(60):
        assert writer.call(f"set key{i} {i} 0 {len(str(i))}", str(i).encode()) == b"STORED"
    for node in cluster.nodes:
        conn = node.ascii()
        for i in range(60):
            assert conn.get(f"key{i}") == str(i).encode()
        conn.send(b"get " + b" ".join(f"key{i}".encode() for i in range(60)) + b"\r\n")
        for i in range(60):
            line = conn.line()
            assert line.startswith(f"VALUE key{i} {i} ".encode()), line
            conn.line()
        assert conn.line() == b"END"
        binary = node.binary()
        response = binary.request(0x00, b"key7")
        assert (response.status, response.value) == (0, b"7")
    # the keys are spread: every node holds some (owner's local keyspace)
    held = [int(n.ascii().stats()["curr_items"]) for n in cluster.nodes]
    assert sum(held) == 60 and all(held), held


def test_configGetCluster(cluster):
    version, servers = configCluster(cluster.nodes[1])
    assert servers == cluster.names
    assert version >= 1
