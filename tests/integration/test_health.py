"""
C{/healthz} and C{/readyz} of real nodes over real HTTP, with a private
PostgreSQL server the test stops and starts again (the shared one of
C{scripts/test} keeps serving the other tests): readiness names the
control plane while it is down and comes back with it; liveness never
wavers; on a two-node cluster a node whose heartbeats stop landing is
named as not joined; no probe writes an access log line.
"""

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest
import requests
import sqlalchemy as sa

from tests.integration.conftest import freePort
from tests.integration.test_cluster import Cluster


def postgresBin(name):
    """
    The path of PostgreSQL's server program C{name} (Debian keeps them
    out of C{PATH}); fails, naming it, when it is not installed.
    """
    found = shutil.which(name)
    if found:
        return found
    try:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidates = [os.path.join(bindir, name)]
    except (OSError, subprocess.CalledProcessError):
        candidates = []
    candidates += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} (PostgreSQL's server programs) is not installed")


class PrivatePostgres:
    """
    A PostgreSQL server of this test alone, on a free port; as root, run
    as the C{postgres} user (the server refuses to run as root).
    """

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="memcachier-health-pg-")
        self.data = os.path.join(self.directory, "data")
        self.port = freePort()
        self.asUser = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("the postgres user does not exist (the PostgreSQL server package)")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self.asUser = "postgres"
        self.run(postgresBin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/memcachier"

    def run(self, *command):
        if self.asUser is not None:
            command = ("su", self.asUser, "-c", shlex.join(command))
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self):
        self.run(
            postgresBin("pg_ctl"), "-D", self.data, "-w", "-l",
            os.path.join(self.directory, "server.log"), "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self):
        self.run(postgresBin("pg_ctl"), "-D", self.data, "-w", "-m", "fast", "stop")

    def createDatabase(self):
        engine = sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("CREATE DATABASE memcachier"))
        finally:
            engine.dispose()

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def privatePostgres():
    server = PrivatePostgres()
    try:
        server.start()
        server.createDatabase()
        yield server
    finally:
        server.remove()


def probe(port, path):
    response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    return response.status_code, response.json()


def waitForProbe(port, expected, watch=None, timeout=30.0):
    """
    Poll C{/readyz} until it answers C{expected} (status, body), checking
    at each turn that C{/healthz} of every port in C{watch} answers 200.
    """
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        for other in watch or [port]:
            assert probe(other, "/healthz") == (200, {"alive": True})
        seen = probe(port, "/readyz")
        if seen == expected:
            return
        time.sleep(0.1)
    pytest.fail(f"/readyz answered {seen}, not {expected}")


READY = (200, {"ready": True, "missing": []})


def test_probesFollowTheControlPlane(memcachier_server_factory, privatePostgres):
    """
    A node on PostgreSQL: ready; PostgreSQL stopped: not ready, naming
    the control plane alone, and alive; PostgreSQL back: ready again.
    """
    s = memcachier_server_factory(database=privatePostgres.url)
    assert probe(s.web_port, "/readyz") == READY
    assert requests.get(f"http://127.0.0.1:{s.web_port}/nowhere-at-all", timeout=10).status_code == 404
    privatePostgres.stop()
    waitForProbe(s.web_port, (503, {"ready": False, "missing": ["control plane"]}))
    # it keeps answering, every probe bounded by the check's timeout
    started = time.monotonic()
    for _ in range(5):
        assert probe(s.web_port, "/readyz")[0] == 503
    assert time.monotonic() - started < 15
    privatePostgres.start()
    waitForProbe(s.web_port, READY)
    # the memcache port serves throughout (a probe's answer is not a guess)
    conn = s.ascii()
    assert conn.call(b"set k 0 0 1", b"v") == b"STORED"
    log = s.log()
    assert "/nowhere-at-all" in log  # the access log is on...
    assert "/healthz" not in log and "/readyz" not in log  # ...without the probes


def test_clusterNodeNotJoinedWhileItsHeartbeatsStall(tmp_path, privatePostgres):
    """
    Two nodes: each is ready once it has joined; while the nodes table is
    locked (heartbeats wait, the control plane still answers) each says
    it is not joined, and is ready again once heartbeats land; with
    PostgreSQL stopped both the control plane and the membership are
    missing.
    """
    cluster = Cluster(tmp_path, privatePostgres.url, size=2)
    cluster.start()
    try:
        ports = [node.web_port for node in cluster.nodes]
        for port in ports:
            waitForProbe(port, READY, watch=ports)

        engine = sa.create_engine(privatePostgres.url)
        try:
            with engine.connect() as conn:
                with conn.begin():
                    conn.execute(sa.text("LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE"))
                    for port in ports:
                        waitForProbe(
                            port, (503, {"ready": False, "missing": ["cluster membership"]}),
                            watch=ports,
                        )
        finally:
            engine.dispose()
        for port in ports:
            waitForProbe(port, READY, watch=ports)

        privatePostgres.stop()
        for port in ports:
            waitForProbe(
                port, (503, {"ready": False, "missing": ["control plane", "cluster membership"]}),
                watch=ports,
            )
        privatePostgres.start()
        for port in ports:
            waitForProbe(port, READY, watch=ports)
    finally:
        for node in cluster.nodes:
            node.stop()
