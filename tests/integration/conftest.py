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
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memcachier.bench.process import freePort, waitForMemcache
from tests.conftest import makeSelfSignedCertificate

ROOT = Path(__file__).resolve().parents[2]

# pylibmc's manylinux wheel bundles its own libsasl2, which looks for SASL
# mechanism plugins in /usr/lib64/sasl2 (a Red Hat path): on Debian it finds
# none, and every SASL client start fails with "FAILED TO SEND AUTHENTICATION
# TO SERVER" before a byte of SASL_AUTH is sent.  Point it at Debian's
# plugins (libsasl2-modules).  Harmless for a pylibmc built from source.
# Must happen before pylibmc is imported (sasl_client_init reads it).
_DEBIAN_SASL = "/usr/lib/x86_64-linux-gnu/sasl2"
if "SASL_PATH" not in os.environ and os.path.isdir(_DEBIAN_SASL):
    os.environ["SASL_PATH"] = _DEBIAN_SASL


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes seconds (sleeps past expiry or timeouts, or moves megabytes)"
    )


def _bin(name):
    """
    A console script of the environment running the tests (C{.venv/bin}).
    """
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


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

    def start(self, web=True, preexec_fn=None):
        """
        Start twistd and wait until every port accepts connections.

        @param web: whether to wait for the web port too.
        @param preexec_fn: run in the child before twistd (to lower its
            C{RLIMIT_NOFILE}, say).
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
            preexec_fn=preexec_fn,
        )
        log.close()
        try:
            waitForMemcache(self.port, self.process)
            for port in (self.tls_port, self.web_port if web else None):
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

    @property
    def pid(self):
        """
        The twistd process id.
        """
        return self.process.pid

    def rss(self):
        """
        The server's resident set size in bytes (C{VmRSS} from
        C{/proc/PID/status}).
        """
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def ascii(self, username=None, password=None, auth=True, port=None):
        """
        A raw ASCII connection, authenticated with ASCII auth (the primary
        credential unless given) when C{auth}.

        @rtype: L{AsciiConnection}
        """
        conn = AsciiConnection(port or self.port)
        if auth:
            reply = conn.auth(username or self.username, password or self.password)
            assert reply == b"STORED", reply
        return conn

    def binary(self, username=None, password=None, auth=True, port=None):
        """
        A raw binary connection, authenticated with SASL PLAIN (the primary
        credential unless given) when C{auth}.

        @rtype: L{BinaryConnection}
        """
        conn = BinaryConnection(port or self.port)
        if auth:
            response = conn.auth(username or self.username, password or self.password)
            assert response.status == 0, response
        return conn

    def log(self):
        """
        The server's log so far.
        """
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class NodeGroup:
    """
    Several L{MemcachierServer}s in C{self.nodes}, stopped together; a
    failed test prints every node's log.
    """

    nodes: list

    def stop(self):
        for node in self.nodes:
            node.stop()

    def stopAndShowLogs(self, request):
        """
        Stop every node and, unless the test passed, print their logs.
        """
        self.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            for node in self.nodes:
                print(f"--- {node.directory} ---\n{node.log()}")


class AsciiConnection:
    """
    A raw socket speaking memcached's text protocol, for tests that need
    to control every byte.
    """

    def __init__(self, port, timeout=10.0, host="127.0.0.1", sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self._buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed by the server")
        self._buffer += chunk

    def line(self):
        """
        The next reply line, without its C{\\r\\n}.
        """
        while b"\r\n" not in self._buffer:
            self._fill()
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def exactly(self, n):
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def call(self, line, value=None):
        """
        Send one command (and its value block) and return the first reply
        line.
        """
        data = line.encode() if isinstance(line, str) else line
        data += b"\r\n"
        if value is not None:
            data += value + b"\r\n"
        self.send(data)
        return self.line()

    def auth(self, username, password):
        password = password.encode() if isinstance(password, str) else password
        return self.call(f"set {username} 0 0 {len(password)}", password)

    def get(self, key):
        """
        C{get KEY}: the value, or L{None} on a miss.
        """
        self.send(f"get {key}\r\n".encode())
        return self.readValue()

    def readValue(self):
        """
        Read one C{VALUE ... END} (or a bare C{END}) reply.
        """
        line = self.line()
        if line == b"END":
            return None
        assert line.startswith(b"VALUE "), line
        value = self.exactly(int(line.split()[3]) + 2)[:-2]
        end = self.line()
        assert end == b"END", end
        return value

    def stats(self, group=""):
        """
        C{stats [group]} as a L{dict} of L{str}.
        """
        self.send(f"stats {group}".strip().encode() + b"\r\n")
        result = {}
        while True:
            line = self.line().decode()
            if line == "END":
                return result
            _, name, value = line.split(" ", 2)
            result[name] = value

    def closed(self, timeout=5.0):
        """
        Whether the server closes the connection within C{timeout}
        seconds; any bytes still arriving are discarded.
        """
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(1 << 20):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        self.sock.close()


#: magic, opcode, keylen, extlen, datatype, vbucket/status, bodylen, opaque, cas
BINARY_HEADER = struct.Struct(">BBHBBHIIQ")


class BinaryResponse:
    """
    One binary-protocol response.
    """

    def __init__(self, header, body):
        (self.magic, self.opcode, keylen, extlen, _, self.status, _, self.opaque,
         self.cas) = header
        self.extras = body[:extlen]
        self.key = body[extlen:extlen + keylen]
        self.value = body[extlen + keylen:]

    def __repr__(self):
        return (
            f"<BinaryResponse op={self.opcode:#04x} status={self.status:#04x} "
            f"opaque={self.opaque} key={self.key!r} value={self.value[:60]!r}>"
        )


def binaryRequest(opcode, key=b"", value=b"", extras=b"", opaque=0, cas=0):
    """
    One binary-protocol request frame.
    """
    key = key.encode() if isinstance(key, str) else key
    return (
        BINARY_HEADER.pack(
            0x80, opcode, len(key), len(extras), 0, 0,
            len(extras) + len(key) + len(value), opaque, cas,
        )
        + extras + key + value
    )


class BinaryConnection(AsciiConnection):
    """
    A raw socket speaking the binary protocol.
    """

    def response(self):
        header = BINARY_HEADER.unpack(self.exactly(24))
        return BinaryResponse(header, self.exactly(header[6]))

    def request(self, *args, **kwargs):
        self.send(binaryRequest(*args, **kwargs))
        return self.response()

    def auth(self, username, password):
        return self.request(0x21, b"PLAIN", b"\0" + username.encode() + b"\0" + password.encode())


def pylibmcClient(server, username=None, password=None, **behaviors):
    """
    A pylibmc client over the binary protocol with SASL, connected.

    libmemcached reads the SASL_LIST_MECHS reply ("PLAIN") into an
    uninitialised stack buffer without NUL-terminating it, so now and then
    (about one fresh process in eight here) Cyrus SASL is handed "PLAIN"
    plus garbage, finds no mechanism, and the client fails with error 40
    "FAILED TO SEND AUTHENTICATION TO SERVER" without sending SASL_AUTH.
    memcached's reply is the same bytes, so it is a client bug; we retry
    only that error, with a fresh client (which reconnects).
    """
    import pylibmc  # after SASL_PATH is set, above

    for attempt in range(5):
        client = pylibmc.Client(
            [server.servers],
            binary=True,
            username=username or server.username,
            password=password or server.password,
            behaviors={"cas": True, **behaviors},
        )
        try:
            # a miss (counted in get_misses); get_stats would not raise
            client.get("pylibmc-warm-up")
        except pylibmc.Error as e:
            if "error 40 " in str(e):
                continue
        return client
    pytest.fail("pylibmc could not start SASL five times in a row")


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
        repeat C{[memcache]}, C{[web]} or C{[database]});
        C{{memcache_port}} in it becomes the plain memcache port.
    @param database: an SQLAlchemy URL; by default a SQLite file in the
        server's directory.
    @param web: wait for the web port to accept connections too.
    @param memcache: extra TOML lines for the C{[memcache]} table, such as
        C{"auth_timeout = 1"}.
    @param web_config: extra TOML lines for the C{[web]} table.
    @param preexec_fn: see L{MemcachierServer.start}.
    @param tls_options: appended to the C{ssl:} description (C{":clientCAs=ca.pem"}).
    """
    started = []

    def start(tls=False, config="", database=None, create_cache=True, web=True, memcache="",
              web_config="", preexec_fn=None, tls_options=""):
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        port, webPort = freePort(), freePort()
        listen = [f"tcp:{port}:interface=127.0.0.1"]
        tlsPort = certPath = None
        if tls:
            tlsPort = freePort()
            keyPath, certPath = makeSelfSignedCertificate(directory)
            listen.append(
                f"ssl:{tlsPort}:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1"
                + tls_options
            )
        if database is None:
            database = f"sqlite:///{directory / 'memcachier.sqlite'}"
        configPath = directory / "memcachier.toml"
        configPath.write_text(
            "[memcache]\n"
            f"listen = {json.dumps(listen)}\n"
            f"{memcache}\n"
            "[web]\n"
            f'listen = "tcp:{webPort}:interface=127.0.0.1"\n'
            f"{web_config}\n"
            "[database]\n"
            f"url = {json.dumps(database)}\n"
            "poll_interval = 0.2\n" + config.replace("{memcache_port}", str(port))
        )
        server = MemcachierServer(directory, configPath, port, tlsPort, webPort, certPath)
        started.append(server)
        if create_cache:
            created = server.admin("cache", "create")
            server.cache = created
            server.cache_id, server.username, server.password = _firstCredential(created)
        server.start(web=web, preexec_fn=preexec_fn)
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
    A throwaway database on the PostgreSQL server C{scripts/test} exports
    (C{MEMCACHIER_TEST_PG}), dropped afterwards.  Without it the test fails: no tier skips silently.
    """
    import secrets

    import sqlalchemy as sa

    url = os.environ.get("MEMCACHIER_TEST_PG")
    if not url:
        pytest.fail("MEMCACHIER_TEST_PG is not set: run scripts/test, which starts PostgreSQL")
    server = sa.engine.make_url(url)
    name = "memcachier_it_" + secrets.token_hex(4)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
