"""
C{[node] workers = 2} on PostgreSQL, started as an operator does
(C{twistd -n memcachier}): worker 0 on the configured port, worker 1 on
the port + 1, one local cluster; a ketama client given both reaches each
key's owner without forwarding, the single port answers every key, a
crashed worker comes back, and C{SIGTERM} stops both cleanly.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import ROOT, waitForPort

SECRET = "workers-test-secret"
KEYS = [f"worker-key-{i}" for i in range(200)]


def startWorkers(factory, postgresql_url):
    server = factory(
        database=postgresql_url,
        config=f'[node]\nworkers = 2\n[cluster]\nsecret = "{SECRET}"\n',
    )
    waitForPort(server.port + 1, server.process)
    return server


def children(pid):
    """
    The process ids of C{pid}'s children.
    """
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def alive(pid):
    """
    Whether C{pid} runs (a zombie does not).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def peerConnections(pids, ports):
    """
    The established TCP connections that one of C{pids} opened to one of
    C{ports}: a worker's peer connections, which carry forwarded requests.
    """
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    with open(f"/proc/{pids[0]}/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            remotePort = int(fields[2].split(":")[1], 16)
            if fields[3] == "01" and fields[9] in inodes and remotePort in ports:
                found.append((int(fields[1].split(":")[1], 16), remotePort))
    return found


def ketamaClient(servers, server):
    """
    pylibmc as MemCachier documents it (ketama, binary, SASL) over
    C{servers}; retries libmemcached's sporadic SASL start failure as
    L{tests.integration.conftest.pylibmcClient} does.
    """
    import pylibmc

    for attempt in range(5):
        client = pylibmc.Client(
            servers, binary=True, username=server.username, password=server.password,
            behaviors={"ketama": True, "remove_failed": 1, "retry_timeout": 2, "dead_timeout": 30},
        )
        try:
            for s in servers:
                client.get("warm-up")
        except pylibmc.Error as e:
            if "error 40 " in str(e):
                continue
        return client
    pytest.fail("pylibmc could not start SASL five times in a row")


def test_twoWorkersOneCluster(memcachier_server_factory, postgresql_url):
    """
    Both ports answer; the cache's servers list both workers; a ketama
    client over both sets and gets 200 keys and no worker opens a peer
    connection (nothing forwarded); a client of the single port then gets
    every key (forwarded: a peer connection appears, so the check above
    could fail); SIGTERM stops every worker, exit 0.
    """
    server = startWorkers(memcachier_server_factory, postgresql_url)
    ports = {server.port, server.port + 1}
    names = [f"127.0.0.1:{server.port}", f"127.0.0.1:{server.port + 1}"]
    supervisor = server.pid
    [worker] = children(supervisor)
    pids = [supervisor, worker]

    for port in sorted(ports):
        conn = server.ascii(port=port)  # logs in
        assert conn.stats()["pid"] == str(pids[port - server.port])
        conn.close()
    shown = server.admin("cache", "show", str(server.cache_id))
    assert shown["servers"] == names, shown

    client = ketamaClient(names, server)
    for key in KEYS:
        client.set(key, key.encode())
    assert all(client.get(key) == key.encode() for key in KEYS)
    assert peerConnections(pids, ports) == [], "a request was forwarded"

    # every worker holds its share (the ring splits 200 keys both ways)
    perWorker = []
    for port in sorted(ports):
        conn = server.ascii(port=port)
        perWorker.append(int(conn.stats()["cmd_set"]))
        conn.close()
    assert sum(perWorker) >= len(KEYS) and min(perWorker) > 20, perWorker

    single = ketamaClient([names[0]], server)
    assert all(single.get(key) == key.encode() for key in KEYS)
    assert peerConnections(pids, ports) != [], "the single port forwarded nothing"

    client.disconnect_all()
    single.disconnect_all()
    assert server.stop() == 0, server.log()
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker), "worker 1 outlived its supervisor"
    log = server.log()
    assert "worker 1 (127.0.0.1:%d) stopped: A process has ended without apparent errors: " \
        "process finished with exit code 0." % (server.port + 1) in log, log
    assert "Traceback" not in log, log


def test_crashedWorkerComesBack(memcachier_server_factory, postgresql_url):
    """
    A worker killed with SIGKILL is started again by its supervisor and
    answers on its port.
    """
    server = startWorkers(memcachier_server_factory, postgresql_url)
    [worker] = children(server.pid)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        again = children(server.pid)
        if again and again[0] != worker:
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker 1 was not started again")
    waitForPort(server.port + 1, server.process)
    conn = server.ascii(port=server.port + 1)
    assert conn.call("set back 0 0 3", b"yes") == b"STORED"
    conn.close()
    assert "worker 1 (127.0.0.1:%d) exited" % (server.port + 1) in server.log()
    assert server.stop() == 0


def test_workerStopsWithoutItsSupervisor(memcachier_server_factory, postgresql_url):
    """
    A supervisor killed with SIGKILL leaves no worker behind: the worker
    sees its standard input close and stops.
    """
    server = startWorkers(memcachier_server_factory, postgresql_url)
    [worker] = children(server.pid)
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), "worker 1 outlived its supervisor"
    assert "[worker-1 memcachier.node.workers._SupervisorPipe#warn] the supervisor is gone: stopping" in server.log()


@pytest.mark.slow
def test_workersBenchShortRun(postgresql_url):
    """
    C{python -m memcachier.bench.workers}, 2 seconds a scenario: the table
    has its three rows, requests served without errors, and the cores each
    side used.
    """
    mcload = os.environ.get("MCLOAD") or str(ROOT.parent / "shared" / "bench" / "mcload")
    if not (os.path.exists(mcload) or os.path.exists(mcload + ".c")):
        pytest.fail(f"mcload not found at {mcload} (nor {mcload}.c): set MCLOAD")
    result = subprocess.run(
        [sys.executable, "-m", "memcachier.bench.workers", "--database", postgresql_url,
         "--mcload", mcload, "--duration", "2", "--warmup", "0.5", "--keys", "5",
         "--connections", "2"],
        capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for label in ("1 worker", "2 workers, owners", "2 workers, one port"):
        found = re.search(rf"^{re.escape(label)} +(\d+) +(\d+) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+)$",
                          out, re.M)
        assert found, out
        ops, _, errors, server, load, _ = (float(v) for v in found.groups())
        assert ops > 0 and errors == 0 and server > 0 and load > 0, out
