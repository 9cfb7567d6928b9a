"""
Integration fixtures: a real memcachier server, started the way a user
starts it (C{twistd -n memcachier --config=...}), on free loopback ports.

Use C{memcachier_server} directly, configured with a marker::

    @pytest.mark.memcachier(tls=True, config='[caches]\\ndefault_plan = "100"\\n')
    def test_x(memcachier_server):
        memcachier_server.port, memcachier_server.tls_port, ...

or C{memcachier_server_factory} to start several (a cluster sharing a
PostgreSQL database from C{MEMCACHIER_TEST_PG}, say).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import makeSelfSignedCertificate

ROOT = Path(__file__).resolve().parents[2]


def _bin(name):
    """
    A console script of the environment running the tests (C{.venv/bin}).
    """
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def freePort():
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port, process, timeout=30.0):
    """
    Wait until C{port} on 127.0.0.1 accepts connections.

    @raise RuntimeError: the process exited, or C{timeout} passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not accepting after {timeout}s")


class MemcachierServer:
    """
    A running server and what a test needs to talk to it.

    @ivar port: the plain memcache port on 127.0.0.1.
    @ivar tls_port: the TLS memcache port, or L{None}.
    @ivar web_port: the HTTP API port.
    @ivar config_path: the TOML file the server runs with.
    @ivar username: the first cache's primary username.
    @ivar password: its password.
    @ivar cache_id: its cache id.
    @ivar cache: the full JSON C{cache create --json} printed.
    @ivar cert_path: the self-signed certificate (TLS only), for clients
        that verify.
    """

    def __init__(self, directory, config_path, port, tls_port, web_port, cert_path):
        self.directory = directory
        self.config_path = str(config_path)
        self.port = port
        self.tls_port = tls_port
        self.web_port = web_port
        self.cert_path = cert_path
        self.log_path = directory / "twistd.log"
        self.process = None
        self.cache = None
        self.username = self.password = self.cache_id = None

    @property
    def servers(self):
        """
        C{MEMCACHIER_SERVERS} for the plain port.
        """
        return f"127.0.0.1:{self.port}"

    def admin(self, *args):
        """
        Run C{memcachier-admin --config=... ARGS --json} and parse its
        output.

        @raise subprocess.CalledProcessError: it failed; stderr is in the
            exception (and printed).
        @return: the parsed JSON.
        """
        command = [_bin("memcachier-admin"), f"--config={self.config_path}", *args]
        if "--json" not in args:
            command.append("--json")
        result = subprocess.run(
            command, cwd=self.directory, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            print(result.stdout, result.stderr, file=sys.stderr)
            result.check_returncode()
        return json.loads(result.stdout)

    def start(self, web=True):
        """
        Start twistd and wait until every port accepts connections.

        @param web: whether to wait for the web port too.
        """
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                _bin("twistd"),
                "-n",
                "--pidfile=",
                "--logfile=-",
                "memcachier",
                f"--config={self.config_path}",
            ],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            for port in (self.port, self.tls_port, self.web_port if web else None):
                if port is not None:
                    waitForPort(port, self.process)
        except Exception:
            self.stop()
            print(self.log(), file=sys.stderr)
            raise

    def stop(self, timeout=15):
        """
        SIGTERM, then wait (SIGKILL after C{timeout} seconds).

        @return: the exit code.
        """
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self):
        """
        The server's log so far.
        """
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _firstCredential(created):
    """
    Pull (cache id, username, password) out of C{cache create --json}
    output, accepting either a flat object or one with a C{credentials}
    list / C{credential} object.
    """
    cache = created.get("cache", created)
    cacheId = cache.get("id", created.get("cache_id"))
    credential = created.get("credential")
    if credential is None and created.get("credentials"):
        credential = created["credentials"][0]
    if credential is None:
        credential = created
    return cacheId, credential.get("username"), credential.get("password")


@pytest.fixture
def memcachier_server_factory(tmp_path, request):
    """
    A function starting servers: C{start(tls=False, config="", database=None,
    create_cache=True, web=True)} returns a started L{MemcachierServer}.  Every server
    is stopped at teardown; if the test failed, their logs are printed.

    @param config: extra TOML appended to the generated file (it must not
        repeat C{[memcache]}, C{[web]} or C{[database]}).
    @param database: an SQLAlchemy URL; by default a SQLite file in the
        server's directory.
    @param web: wait for the web port to accept connections too.
    """
    started = []

    def start(tls=False, config="", database=None, create_cache=True, web=True):
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        port, webPort = freePort(), freePort()
        listen = [f"tcp:{port}:interface=127.0.0.1"]
        tlsPort = certPath = None
        if tls:
            tlsPort = freePort()
            keyPath, certPath = makeSelfSignedCertificate(directory)
            listen.append(f"ssl:{tlsPort}:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1")
        if database is None:
            database = f"sqlite:///{directory / 'memcachier.sqlite'}"
        configPath = directory / "memcachier.toml"
        configPath.write_text(
            "[memcache]\n"
            f"listen = {json.dumps(listen)}\n"
            "[web]\n"
            f'listen = "tcp:{webPort}:interface=127.0.0.1"\n'
            "[database]\n"
            f"url = {json.dumps(database)}\n"
            "poll_interval = 0.2\n" + config
        )
        server = MemcachierServer(directory, configPath, port, tlsPort, webPort, certPath)
        started.append(server)
        if create_cache:
            created = server.admin("cache", "create")
            server.cache = created
            server.cache_id, server.username, server.password = _firstCredential(created)
        server.start(web=web)
        return server

    yield start

    failed = getattr(request.node, "rep_call", None)
    for server in started:
        server.stop()
        if failed is None or failed.failed:
            print(f"--- memcachier log ({server.directory}) ---\n{server.log()}", file=sys.stderr)


@pytest.fixture
def memcachier_server(memcachier_server_factory, request):
    """
    One started server; options come from the C{memcachier} marker
    (C{tls}, C{config}, C{database}, C{web}).
    """
    marker = request.node.get_closest_marker("memcachier")
    kwargs = dict(marker.kwargs) if marker else {}
    return memcachier_server_factory(**kwargs)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """
    Remember each phase's report on the item, so fixtures can tell whether
    the test failed.
    """
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def postgresql_url():
    """
    The PostgreSQL URL C{scripts/test} exports (C{MEMCACHIER_TEST_PG}), or
    skip.
    """
    url = os.environ.get("MEMCACHIER_TEST_PG")
    if not url:
        pytest.skip("MEMCACHIER_TEST_PG is not set (scripts/test sets it)")
    return url
