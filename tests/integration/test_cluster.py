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
    NodeGroup,
    _firstCredential,
    freePort,
)

SECRET = "cluster-test-secret"


class Cluster(NodeGroup):
    """
    Three nodes of cluster C{default} in C{MEMCACHIER_SERVERS} order.
    """

    def __init__(self, tmp_path, database, size=3, extra="", pollInterval=30, memcache=""):
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
                f"{memcache}"
                "[web]\n"
                f'listen = "tcp:{webPort}:interface=127.0.0.1"\n'
                "[database]\n"
                f"url = {json.dumps(database)}\n"
                # far beyond the test's deadlines: changes must come by NOTIFY
                f"poll_interval = {pollInterval}\n"
                "[node]\n"
                f'name = "{names[i]}"\n'
                "[cluster]\n"
                f'secret = "{SECRET}"\n'
                'heartbeat_timeout = "3s"\n'
                'request_timeout = "3s"\n'
                "[clusters.default]\n"
                f"servers = {json.dumps(names)}\n"
                "[caches]\n"
                'default_plan = "100"\n'
                "[analytics]\n"
                "sample_period = 1\n"
                "latency_period = 1\n"
                "[plans.few]\n"
                'memory = "5MiB"\n'
                "connections = 3\n" + extra
            )
            self.nodes.append(MemcachierServer(directory, config, port, None, webPort, None))

    @property
    def servers(self):
        return ",".join(self.names)

    def start(self, count=None):
        """
        Create one cache, known to every node, and start the first
        C{count} nodes (all by default); return once each of them sees
        all of them live.
        """
        first = self.nodes[0]
        created = first.admin("cache", "create")
        cacheId, username, password = _firstCredential(created)
        for node in self.nodes:
            node.cache = created
            node.cache_id, node.username, node.password = cacheId, username, password
        started = self.nodes[:count]
        for node in started:
            node.start()
        waitFor(lambda: all(len(liveServers(n)) == len(started) for n in started))


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
        c.stopAndShowLogs(request)


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


# -- clients that hash differently all see one cache --------------------------

#: MemCachier's documented pylibmc settings (ketama, failover)
PYLIBMC_BEHAVIORS = {
    "tcp_nodelay": True,
    "ketama": True,
    "remove_failed": 1,
    "retry_timeout": 2,
    "dead_timeout": 30,
}


def pylibmcCluster(cluster):
    import pylibmc

    node = cluster.nodes[0]
    for attempt in range(5):
        client = pylibmc.Client(
            cluster.names, binary=True, username=node.username, password=node.password,
            behaviors=PYLIBMC_BEHAVIORS,
        )
        try:
            client.get_multi(["warm-up-%d" % i for i in range(30)])
        except pylibmc.Error as e:
            if "error 40 " in str(e):
                continue
            raise
        return client
    pytest.fail("pylibmc could not start SASL five times in a row")


class AsciiAuthClient:
    """
    A pymemcache client class whose every new connection first sends
    MemCachier's ASCII auth (C{set <username> 0 0 <len>} + password).
    """

    @staticmethod
    def make(username, password):
        from pymemcache.client.base import Client

        class Authenticated(Client):
            def _connect(self):
                super()._connect()
                secret = password.encode()
                self.sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (username.encode(), len(secret), secret))
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = self.sock.recv(100)
                    if not chunk:
                        raise ConnectionError("closed during ASCII auth")
                    reply += chunk
                if reply != b"STORED\r\n":
                    raise ConnectionError(f"ASCII auth refused: {reply!r}")

        return Authenticated


def pymemcacheHashClient(cluster):
    from pymemcache.client.hash import HashClient

    node = cluster.nodes[0]

    class AuthenticatedHashClient(HashClient):
        client_class = AsciiAuthClient.make(node.username, node.password)

    return AuthenticatedHashClient(
        [("127.0.0.1", n.port) for n in cluster.nodes], timeout=10, connect_timeout=5,
        default_noreply=False,
    )


def test_clientsThatHashDifferentlySeeOneCache(cluster):
    """
    pylibmc (binary, SASL, ketama, failover), python-binary-memcached
    (binary, SASL, on one node) and pymemcache's HashClient (rendezvous
    hashing, ASCII auth) read each other's values; pylibmc's ketama sends
    each key to the node the servers agree owns it.
    """
    import bmemcached

    from memcachier.cluster.ring import Ring

    libmc = pylibmcCluster(cluster)
    node = cluster.nodes[2]
    bmc = bmemcached.Client((node.servers,), node.username, node.password, raw_data=True)
    hashed = pymemcacheHashClient(cluster)

    before = [int(n.ascii().stats()["cmd_set"]) for n in cluster.nodes]
    keys = [f"user:{i}" for i in range(90)]
    for key in keys:
        libmc.set(key, f"libmc {key}".encode())
    after = [int(n.ascii().stats()["cmd_set"]) for n in cluster.nodes]
    ring = Ring(cluster.names)
    expected = [sum(1 for k in keys if ring.owner(k.encode()) == name) for name in cluster.names]
    assert [a - b for a, b in zip(after, before)] == expected
    assert all(expected)

    for key in keys:
        assert hashed.get(key) == f"libmc {key}".encode()
        assert bmc.get(key) == f"libmc {key}".encode()
    for key in keys[:30]:
        hashed.set(key, f"pymemcache {key}".encode())
    for key in keys[30:60]:
        assert bmc.set(key, f"bmemcached {key}".encode())
    values = libmc.get_multi(keys)
    for key in keys[:30]:
        assert values[key] == f"pymemcache {key}".encode()
        assert bmc.get(key) == f"pymemcache {key}".encode()
    for key in keys[30:60]:
        assert values[key] == f"bmemcached {key}".encode()
        assert hashed.get(key) == f"bmemcached {key}".encode()
    # counters and CAS through a forwarding node
    assert hashed.set("counter", b"10")
    assert bmc.incr("counter", 5) == 15
    assert libmc.incr("counter", 1) == 16
    assert hashed.decr("counter", 6) == 10
    value, token = hashed.gets("counter")
    assert value == b"10"
    assert hashed.cas("counter", b"11", token)
    assert not hashed.cas("counter", b"12", token)
    assert libmc.get("counter") == b"11"
    assert libmc.add("fresh", b"1") and not libmc.add("fresh", b"2")
    assert bmc.delete("fresh")
    assert hashed.get("fresh") is None


def test_configGetClusterFollowsMembership(cluster):
    """
    When a node stops, C{config get cluster} on the others drops it with a
    higher version; when it is back, it is listed again.
    """
    a, b, c = cluster.nodes
    version, servers = configCluster(a)
    assert servers == cluster.names
    nodes = a.admin("node", "list")
    assert sorted(n["name"] for n in nodes) == sorted(cluster.names)
    assert all(n["live"] and n["cluster"] == "default" for n in nodes)
    assert a.admin("cache", "show", str(a.cache_id))["servers"] == cluster.names
    c.stop()
    waitFor(lambda: configCluster(a)[1] == cluster.names[:2], timeout=10)
    # a clean stop leaves at once
    assert sorted(n["name"] for n in a.admin("node", "list")) == sorted(cluster.names[:2])
    assert a.admin("cache", "show", str(a.cache_id))["servers"] == cluster.names[:2]
    later, _ = configCluster(a)
    assert later > version
    assert configCluster(b)[1] == cluster.names[:2]
    c.start()
    waitFor(lambda: configCluster(a)[1] == cluster.names, timeout=10)
    assert configCluster(a)[0] > later
    assert configCluster(c)[1] == cluster.names


def test_flushStatsAndCredentialsAreClusterWide(cluster):
    """
    The API's and memcache's flush empty every node; the API's stats sum
    the nodes; a credential created through one node's API authenticates
    on the others within a second.
    """
    a, b, c = cluster.nodes
    conn = b.ascii()
    for i in range(30):
        assert conn.call(f"set k{i} 0 0 1", b"x") == b"STORED"
    stats = api(a, "/stats")
    assert stats["curr_items"] == 30
    assert stats["cmd_set"] == 30
    api(c, "/flush", "POST")
    for node in cluster.nodes:
        assert int(node.ascii().stats()["curr_items"]) == 0
    for i in range(30):
        assert conn.get(f"k{i}") is None

    for i in range(30):
        assert conn.call(f"set k{i} 0 0 1", b"y") == b"STORED"
    assert conn.call("flush_all") == b"OK"
    for node in cluster.nodes:
        assert int(node.ascii().stats()["curr_items"]) == 0
        assert node.ascii().get("k3") is None

    # The nodes poll the control plane every 30 s here: a credential that
    # works on the others within seconds came by NOTIFY (milliseconds on
    # a quiet machine; no strict timing asserted on a shared one).
    created = api(a, "/credentials", "POST")
    username, password = created["sasl_username"], created["sasl_password"]
    for node in (b, c):
        waitFor(lambda: _authenticates(node, username, password), timeout=10, interval=0.02)


def _authenticates(node, username, password):
    conn = node.ascii(auth=False)
    try:
        return conn.auth(username, password) == b"STORED"
    finally:
        conn.close()


@pytest.mark.slow
def test_killedNodeKeysFallToSurvivorsAndComeBack(cluster):
    """
    C{kill -9} of a node while clients work: requests through the
    survivors answer (its keys are misses, never errors, once it is out),
    the survivors take its keys; restarted, it rejoins and owns them again.
    Another cache with the same key names never sees this one's values.
    """
    import threading

    import pylibmc

    from memcachier.cluster.ring import Ring

    a, b, c = cluster.nodes
    other = a.admin("cache", "create")
    otherId, otherUser, otherPassword = _firstCredential(other)

    ring = Ring(cluster.names)
    keys = [f"item{i}" for i in range(150)]
    ofC = [k for k in keys if ring.owner(k.encode()) == cluster.names[2]]
    assert ofC
    writer = a.ascii()
    otherConn = b.ascii(otherUser, otherPassword)
    for key in keys:
        assert writer.call(f"set {key} 0 0 {len(key)}", key.encode()) == b"STORED"
        assert otherConn.call(f"set {key} 0 0 5", b"other") == b"STORED"

    # load through a pylibmc client with MemCachier's failover settings
    libmc = pylibmcCluster(cluster)
    stop = threading.Event()
    errors = []
    done = []

    def load():
        i = 0
        while not stop.is_set():
            key = keys[i % len(keys)]
            try:
                libmc.get(key)
                libmc.set(f"load{i % 50}", b"x")
            except pylibmc.Error as e:
                errors.append((time.monotonic(), str(e)))
            else:
                done.append(time.monotonic())
            i += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.5)
        c.process.kill()
        c.process.wait()
        killed = time.monotonic()
        # out on the survivors (suspected at once, out after the timeout)
        waitFor(lambda: configCluster(a)[1] == cluster.names[:2], timeout=10)
        waitFor(lambda: configCluster(b)[1] == cluster.names[:2], timeout=10)
        outAt = time.monotonic()
        states = {n["name"]: n["live"] for n in a.admin("node", "list")}
        assert states == {cluster.names[0]: True, cluster.names[1]: True, cluster.names[2]: False}
        for node in (a, b):
            conn = node.ascii()
            for key in keys:
                conn.send(f"get {key}\r\n".encode())
                line = conn.line()
                assert not line.startswith(b"SERVER_ERROR"), (node.servers, key, line)
                if key in ofC:
                    assert line == b"END", (key, line)
                else:
                    assert line.startswith(b"VALUE"), (key, line)
                    conn.line()
                    assert conn.line() == b"END"
        # the survivors take its keys
        for key in ofC:
            assert a.ascii().call(f"set {key} 0 0 3", b"new") == b"STORED"
            assert b.ascii().get(key) == b"new"
        # pylibmc fails over on its own schedule (retry_timeout, its
        # failure limit, dead_timeout 30 s): wait for a quiet stretch, then
        # it keeps working without errors
        def quiet():
            now = time.monotonic()
            last = errors[-1][0] if errors else killed
            return now - last > 3.0 and sum(1 for t in done if t > now - 3.0) > 10

        waitFor(quiet, timeout=60, interval=0.2)
    finally:
        stop.set()
        worker.join()
    assert killed < outAt

    c.start()
    waitFor(lambda: all(configCluster(n)[1] == cluster.names for n in cluster.nodes), timeout=10)
    conn = a.ascii()
    for key in ofC:
        # back on its owner, which restarted empty: within its warm-up
        # window it asks the node that held its keys meanwhile, so the
        # value written while it was away, never an error nor an older one
        assert conn.get(key) == b"new"
    for key in ofC:
        assert conn.call(f"set {key} 0 0 4", b"back") == b"STORED"
    assert int(c.ascii().stats()["curr_items"]) == len(ofC)
    for node in cluster.nodes:
        check = node.ascii(otherUser, otherPassword)
        for key in keys:
            value = check.get(key)
            assert value in (None, b"other"), (key, value)
        assert node.ascii().get(ofC[0]) == b"back"


@pytest.mark.slow
def test_stalledPeerFailsOnlyItsRequests(cluster):
    """
    A peer that stops answering (SIGSTOP) costs the requests forwarded to
    it the request timeout (3 s here), then a miss (the retry goes to the
    key's next owner), never an error; a client asking the same node for
    a key it owns is answered meanwhile.
    """
    from memcachier.cluster.ring import Ring

    a, b, c = cluster.nodes
    ring = Ring(cluster.names)
    ofA = next(f"k{i}" for i in range(1000) if ring.owner(f"k{i}".encode()) == cluster.names[0])
    ofC = next(f"k{i}" for i in range(1000) if ring.owner(f"k{i}".encode()) == cluster.names[2])
    waiting = a.ascii()
    other = a.ascii()
    assert waiting.call(f"set {ofC} 0 0 1", b"c") == b"STORED"
    assert other.call(f"set {ofA} 0 0 1", b"a") == b"STORED"
    os.kill(c.pid, signal.SIGSTOP)
    try:
        waiting.send(f"get {ofC}\r\n".encode())
        # the other client is answered while the first still waits
        assert other.get(ofA) == b"a"
        waiting.sock.setblocking(False)
        try:
            pending = waiting.sock.recv(100)
        except BlockingIOError:
            pending = None
        waiting.sock.setblocking(True)
        waiting.sock.settimeout(10)
        assert pending is None, pending
        started = time.monotonic()
        line = waiting.line()
        # timed out, or out of the cluster first (its heartbeats stopped
        # too): a miss on the key's next owner
        assert line == b"END", line
        assert time.monotonic() - started > 0.5
        # the connection goes on
        assert waiting.get(ofA) == b"a"
    finally:
        os.kill(c.pid, signal.SIGCONT)
    waitFor(lambda: a.ascii().get(ofC) in (b"c", None), timeout=10)


def test_connectionLimitCountsEveryNode(cluster):
    """
    A plan's connection limit counts the cache's connections on every
    node (as of the nodes' last heartbeats).
    """
    a, b, c = cluster.nodes
    created = a.admin("cache", "create", "--plan", "few")
    _, username, password = _firstCredential(created)
    held = [a.ascii(username, password), b.ascii(username, password)]
    # c learns of them with the next heartbeats
    waitFor(lambda: _usage(a, username) == 2, timeout=10)
    held.append(c.ascii(username, password))
    time.sleep(1.5)
    for node in cluster.nodes:
        conn = node.ascii(auth=False)
        assert conn.auth(username, password) == b"SERVER_ERROR too many connections for this cache", node.servers
        conn.close()
    held.pop().close()
    waitFor(lambda: _authenticates(a, username, password), timeout=10)


def _usage(node, username):
    """
    The connections every node reports for the cache of C{username}.
    """
    cacheId = next(
        c["id"] for c in node.admin("cache", "list") if any(
            cr["username"] == username for cr in node.admin("credential", "list", str(c["id"]))
        )
    )
    return sum(n["cache_connections"].get(str(cacheId), 0) for n in node.admin("node", "list"))


def test_perServerSeriesNameEveryNode(cluster):
    """
    Every node samples its own counters and latency under its own name
    into the shared database: per-server series and latency have one
    series per node, with values, whichever node the API request reaches.
    """
    for node in cluster.nodes:
        conn = node.ascii()
        conn.get("warm")
        conn.close()

    def perServer():
        series = api(cluster.nodes[1], "/insight/processed_stats/per_server?names=get_rate,connections")
        return {s["tags"]["server"]: len(s["values"]) for s in series}

    waitFor(lambda: all(perServer().get(name) for name in cluster.names), timeout=20, interval=0.5)
    assert sorted(perServer()) == sorted(cluster.names)

    def latency():
        return {s["tags"]["server"]: len(s["values"]) for s in api(cluster.nodes[2], "/insight/latency")}

    waitFor(lambda: all(latency().get(name) for name in cluster.names), timeout=30, interval=0.5)


def test_recentLogsKeyedByNode(cluster):
    """
    C{introspection/recent_logs} has each node's recent commands (those of
    the clients connected to it) under its name, whichever node answers.
    """
    for i, node in enumerate(cluster.nodes):
        conn = node.ascii()
        assert conn.call(f"set via{i} 0 0 1", b"x") == b"STORED"
        conn.close()
    logs = api(cluster.nodes[1], "/introspection/recent_logs")
    assert sorted(logs) == sorted(cluster.names)
    for i, name in enumerate(cluster.names):
        assert [(e["key"], e["command"]) for e in logs[name]] == [(f"via{i}", "SET")], logs


def _ownedBy(cluster, prefix, count=200):
    """
    Keys C{<prefix><n>} by the node that owns them (the servers' ring).
    """
    from memcachier.cluster.ring import Ring

    ring = Ring(cluster.names)
    owned = {name: [] for name in cluster.names}
    for i in range(count):
        key = f"{prefix}{i}"
        owned[ring.owner(key.encode())].append(key)
    return owned


def test_popularItemsAndKeyStatsCoverEveryNode(cluster):
    """
    A ketama client (pylibmc, MemCachier's settings) hits keys owned by
    every node, each on its owner; a client of one node hits a key owned
    by another (forwarded, counted where it connected).  Any node's API
    ranks every hot key together and counts each key on every node.
    """
    owned = _ownedBy(cluster, "hot:")
    hotA, hotB, hotC = (owned[name][0] for name in cluster.names)
    libmc = pylibmcCluster(cluster)
    for key in (hotA, hotB, hotC):
        assert libmc.set(key, b"value of " + key.encode())
    for key, hits in ((hotA, 30), (hotB, 20), (hotC, 10)):
        for _ in range(hits):
            assert libmc.get(key) is not None
    for _ in range(5):
        assert libmc.get("hot:missing") is None
    # hotB's hits through node A: forwarded, counted on A
    viaA = cluster.nodes[0].ascii()
    for _ in range(15):
        assert viaA.get(hotB) == b"value of " + hotB.encode()

    def mostHit():
        popular = api(cluster.nodes[2], "/introspection/popular_items")
        return [(k["name"], k["popularity"]) for k in popular["most_hit_keys"]]

    waitFor(lambda: mostHit() == [(hotB, 35), (hotA, 30), (hotC, 10)], timeout=10, interval=0.2)
    for node in cluster.nodes:
        popular = api(node, "/introspection/popular_items")
        assert [k["name"] for k in popular["most_hit_keys"]] == [hotB, hotA, hotC]
        # (then pylibmc's warm-up misses, once each)
        assert popular["most_missed_keys"][0] == {"name": "hot:missing", "popularity": 5}
        assert popular["popular_prefixes"][0] == {"name": "hot", "popularity": 83}
    # key stats from a node that neither owns the key nor saw all its hits
    rows = api(cluster.nodes[2], f"/introspection/key_stats?key={hotB}")
    assert sum(r["hit_count"] for r in rows) == 35
    assert sum(r["mutation_count"] for r in rows) == 1
    assert all(r["in_cache"] and r["size"] == len(b"value of " + hotB.encode()) for r in rows)
    missing = api(cluster.nodes[0], "/introspection/key_stats?key=hot:missing")
    assert sum(r["miss_count"] for r in missing) == 5
    assert not any(r["in_cache"] for r in missing)


def test_forwardedItemsKeepTheirExpiry(cluster):
    """
    Meta C{mg <key> t}, C{me <key>} and C{gat} through a node that
    forwards report and set the owner's expiry, as the owner itself does.
    """
    a, b, c = cluster.nodes
    key = _ownedBy(cluster, "ttl:")[cluster.names[2]][0]
    viaA, onC = a.ascii(), c.ascii()
    assert viaA.call(f"set {key} 5 1000 3", b"abc") == b"STORED"

    def ttl(conn):
        line = conn.call(f"mg {key} t f v")
        assert line.startswith(b"VA 3 "), line
        assert conn.line() == b"abc"
        flags = dict((f[:1], f[1:]) for f in line.split()[2:])
        assert flags[b"f"] == b"5"
        return int(flags[b"t"])

    assert 995 <= ttl(viaA) <= 1000
    assert abs(ttl(viaA) - ttl(onC)) <= 1
    debug = viaA.call(f"me {key}")
    assert debug.startswith(f"ME {key} exp=".encode()), debug
    assert 995 <= int(debug.split()[2].split(b"=")[1]) <= 1000
    # get-and-touch through the forwarding node sets the owner's expiry
    viaA.send(f"gat 2000 {key}\r\n".encode())
    assert viaA.readValue() == b"abc"
    assert 1995 <= ttl(onC) <= 2000
    touched = viaA.call(f"mg {key} T3000 t")
    assert touched.startswith(b"HD t") and 2995 <= int(touched[4:]) <= 3000, touched
    assert 2995 <= ttl(onC) <= 3000
    # no expiry: -1 everywhere
    assert viaA.call(f"set {key} 5 0 3", b"abc") == b"STORED"
    assert ttl(viaA) == -1 and ttl(onC) == -1


def test_watchedPrefixCountsOnEveryNodeAtOnce(cluster):
    """
    A prefix watched through one node's API is counted by the others at
    once (they reload the prefixes on C{NOTIFY}; their prefix poll is
    150 s away here), and its popular items merge every node's.
    """
    import base64

    a, b, c = cluster.nodes
    request = urllib.request.Request(
        f"http://127.0.0.1:{a.web_port}/api/v2/caches/{a.cache_id}/introspection/prefixes",
        data=json.dumps({"name": "hot:"}).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    token = base64.b64encode(f"{a.username}:{a.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        prefixId = json.loads(response.read())["id"]
    owned = _ownedBy(cluster, "hot:")
    keys = [owned[name][0] for name in cluster.names]
    libmc = pylibmcCluster(cluster)
    for key in keys:
        assert libmc.set(key, b"x")

    def everyNodeCounts():
        for key in keys:
            libmc.get(key)
        popular = api(c, f"/introspection/prefixes/{prefixId}/popular_items")
        return {k["name"] for k in popular["most_hit_keys"]} == set(keys)

    waitFor(everyNodeCounts, timeout=10, interval=0.2)
