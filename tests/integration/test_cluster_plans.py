"""
Two clusters of real nodes sharing one PostgreSQL: a production cluster
of two nodes and a development cluster of one.  A plan change between a
development and a production plan (through Heroku's partner API, and
through C{memcachier-admin cache set-plan}) moves the cache to the other
cluster, empty on every node, as MemCachier documents; its C{servers} are
then the new cluster's.
"""

import json
import uuid as uuidlib

import pytest

from tests.integration.conftest import MemcachierServer, NodeGroup, freePort
from tests.integration.test_cluster import SECRET, api, waitFor
from tests.integration.test_provisioning import (  # noqa: F401 (standIn is a fixture)
    CLIENT_SECRET,
    HEROKU_PASSWORD,
    heroku,
    provisionBody,
    standIn,
)


class TwoClusters(NodeGroup):
    """
    Nodes 0 and 1 in cluster C{prod} (production), node 2 in C{devs}
    (development); every node has the same configuration but its name.
    """

    def __init__(self, tmp_path, database, standIn):
        ports = [(freePort(), freePort()) for _ in range(3)]
        self.names = [f"127.0.0.1:{port}" for port, _ in ports]
        self.nodes = []
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
                "poll_interval = 30\n"
                "[node]\n"
                f'name = "{self.names[i]}"\n'
                "[cluster]\n"
                f'secret = "{SECRET}"\n'
                'heartbeat_timeout = "2s"\n'
                "[clusters.prod]\n"
                f"servers = {json.dumps(self.names[:2])}\n"
                'kind = "production"\n'
                "[clusters.devs]\n"
                f"servers = {json.dumps(self.names[2:])}\n"
                'kind = "development"\n'
                "[caches]\n"
                'default_cluster = "prod"\n'
                "[heroku]\n"
                f'password = "{HEROKU_PASSWORD}"\nsso_salt = "salty"\n'
                f'api_url = "{standIn.url}"\nid_url = "{standIn.url}"\n'
                f'client_secret = "{CLIENT_SECRET}"\n'
            )
            self.nodes.append(MemcachierServer(directory, config, port, None, webPort, None))

    def start(self):
        for node in self.nodes:
            node.start()



@pytest.fixture
def clusters(tmp_path, postgresql_url, standIn, request):  # noqa: F811
    c = TwoClusters(tmp_path, postgresql_url, standIn)
    try:
        c.start()
        yield c
    finally:
        c.stopAndShowLogs(request)


def _heldOn(node, username, password):
    """
    How many of the cache's items this node holds itself (C{stats} on a
    node reports its own share).
    """
    conn = node.ascii(username, password)
    try:
        return int(conn.stats()["curr_items"])
    finally:
        conn.close()


def test_planChangeMovesTheCacheBetweenClusterKinds(clusters):
    """
    A development cache lives on the development node; Heroku's change to
    a production plan moves it to the production nodes, empty, and every
    node, the development one included, drops what it held; the admin
    CLI's change back moves it back, empty again (nothing stale returns).
    """
    a, b, dev = clusters.nodes
    resource = str(uuidlib.uuid4())
    provisioned = heroku(a, "POST", json=provisionBody(resource, plan="dev"))
    assert provisioned.status_code == 200, provisioned.text
    config = provisioned.json()["config"]
    assert config["MEMCACHIER_SERVERS"] == clusters.names[2]
    username, password = config["MEMCACHIER_USERNAME"], config["MEMCACHIER_PASSWORD"]
    # the first start made a cache of its own (default plan, default cluster)
    [cache] = [
        c for c in a.admin("cache", "list")
        if username in [cr["username"] for cr in a.admin("credential", "list", str(c["id"]))]
    ]
    for node in clusters.nodes:
        node.cache_id, node.username, node.password = cache["id"], username, password
    assert (cache["plan"], cache["cluster"]) == ("dev", "devs")
    waitFor(lambda: api(a, "/info")["servers"] == clusters.names[2:], timeout=10)

    # written through a production node: forwarded to the development node
    viaA = a.ascii(username, password)
    for i in range(20):
        assert viaA.call(f"set k{i} 0 0 3", b"dev") == b"STORED"
    assert _heldOn(dev, username, password) == 20
    assert _heldOn(a, username, password) == 0

    moved = heroku(a, "PUT", f"/{resource}", json={"plan": "100"})
    assert moved.status_code == 200, moved.text
    assert "empty" in moved.json()["message"]
    assert moved.json()["config"]["MEMCACHIER_SERVERS"] == ",".join(clusters.names[:2])
    # every node learns of the move by NOTIFY (they poll every 30 s here)
    for node in clusters.nodes:
        waitFor(lambda: api(node, "/info")["cluster_name"] == "prod", timeout=10)
    assert api(b, "/info")["servers"] == clusters.names[:2]
    # the development node emptied its share when it saw the move
    waitFor(lambda: _heldOn(dev, username, password) == 0, timeout=10)
    for node in clusters.nodes:
        conn = node.ascii(username, password)
        assert all(conn.get(f"k{i}") is None for i in range(20)), node.servers
    # now spread over the two production nodes
    for i in range(20):
        assert b.ascii(username, password).call(f"set p{i} 0 0 4", b"prod") == b"STORED"
    held = [_heldOn(n, username, password) for n in (a, b)]
    assert sum(held) == 20 and all(held), held

    shown = a.admin("cache", "set-plan", str(cache["id"]), "dev")
    assert (shown["plan"], shown["cluster"], shown["servers"]) == ("dev", "devs", clusters.names[2:])
    # every production node empties its share on the NOTIFY of the move
    waitFor(lambda: [_heldOn(n, username, password) for n in (a, b)] == [0, 0], timeout=10)
    for node in clusters.nodes:
        waitFor(lambda: api(node, "/info")["cluster_name"] == "devs", timeout=10)
    assert api(a, "/info")["servers"] == clusters.names[2:]
    conn = dev.ascii(username, password)
    assert all(conn.get(f"p{i}") is None for i in range(20))
    assert all(conn.get(f"k{i}") is None for i in range(20))
    assert conn.call("set back 0 0 1", b"x") == b"STORED"
    assert _heldOn(dev, username, password) == 1
