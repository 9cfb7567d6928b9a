"""
The clients MemCachier's users run, in their own languages, against a real
node with SASL: Ruby dalli, PHP memcached, Node memjs, Java spymemcached
(each a script under C{tests/clients/<lang>/} that prints one JSON object
of what it saw) and libmemcached's command-line tools.  Also the TLS port
reached through a stunnel client-side tunnel, and through dalli's own TLS.

Each script gets the node from C{MEMCACHIER_SERVERS},
C{MEMCACHIER_USERNAME} and C{MEMCACHIER_PASSWORD}, as an application on
MemCachier does.  C{scripts/test} installs the interpreters and packages
(Debian's, and memjs with C{npm ci}); a missing one fails its test by name.
"""

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from memcachier import admin
from tests.conftest import makeSelfSignedCertificate
from tests.integration.conftest import (
    MemcachierServer,
    _firstCredential,
    freePort,
    waitForPort,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "clients"
MiB = 1024 * 1024

#: key + value is at most the plan's item size (1 MiB by default): "big"
#: is three bytes, so this is the largest value that fits under it; the
#: same value under "big2" is one byte past the limit, refused by the node
#: (and under dalli's own 1 MiB value limit, so dalli does send it)
BIG = MiB - len("big")
BIG_VALUE = (b"0123456789abcdef" * (BIG // 16 + 1))[:BIG]

SEED = b"from-python"

#: memcachier-admin, run in this process, reads the fixture's TLS listener;
#: pyOpenSSL's deprecations there are not this module's business
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")

#: libmemcached's intermittent SASL start failure (see pylibmcClient in
#: conftest.py): the client never sent SASL_AUTH, so it is retried
LIBMEMCACHED_SASL_BUG = "FAILED TO SEND AUTHENTICATION TO SERVER"


def need(path: str, package: str) -> str:
    """
    The full path of a command or file a client needs, or fail the test
    naming it and the package that provides it.
    """
    found = shutil.which(path) if "/" not in path else (path if os.path.exists(path) else None)
    if found is None:
        pytest.fail(f"{path} is missing: install the Debian package {package} (scripts/test does)")
    return found


def clientEnvironment(server, servers: str | None = None, **extra: str) -> dict:
    """
    The environment a MemCachier app gets, plus the largest value size.
    """
    return dict(
        os.environ,
        MEMCACHIER_SERVERS=servers or server.servers,
        MEMCACHIER_USERNAME=server.username,
        MEMCACHIER_PASSWORD=server.password,
        MEMCACHIER_TEST_BIG=str(BIG),
        **extra,
    )


def runClient(command: list, cwd: Path, environment: dict) -> dict:
    """
    Run one client script and parse the JSON object it prints last.
    """
    result = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0 or not result.stdout.strip():
        pytest.fail(
            f"{' '.join(map(str, command))} exited {result.returncode}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def seed(server) -> None:
    """
    A value written by another client (raw ASCII), for the script to read.
    """
    conn = server.ascii()
    assert conn.call(f"set seed 0 0 {len(SEED)}", SEED) == b"STORED"
    conn.close()


def checkResult(server, result: dict, written: str, cas: bool = True, multi: bool = True) -> None:
    """
    What every client must have seen, then the same facts from the node's
    side over a raw connection: the values it wrote, and the refusals
    counted against this cache.
    """
    print(json.dumps(result))
    assert result["seed"] == SEED.decode()
    assert result["set"] is True
    assert result["get"] == "v1"
    if multi:
        assert result["multi"] == {"k1": "v1", "k2": "v2"}
    assert result["delete"] is True
    assert result["afterDelete"] is None
    assert (result["incr"], result["decr"]) == (15, 12)
    if cas:
        assert result["cas"]["fresh"] is True
        assert result["cas"]["stale"] is False
        assert result["cas"]["value"] == "swapped"
    assert result["big"] == {"size": BIG, "stored": True, "same": True}
    assert result["tooBig"]["refused"] is True, result["tooBig"]
    assert result["afterTooBig"] == "v1"
    assert result["wrongPassword"]["refused"] is True, result["wrongPassword"]
    assert LIBMEMCACHED_SASL_BUG not in str(result["wrongPassword"])
    assert result["wrongPasswordWrote"] is None

    conn = server.ascii()
    try:
        assert conn.get("written") == written.encode()
        assert conn.get("k1") == b"v1"
        assert conn.get("counter") == b"12"
        # stored as sent: no compression, no serialization envelope
        assert conn.get("big") == BIG_VALUE
        assert conn.get("big2") is None
        assert conn.get("k3") is None
        stats = conn.stats()
    finally:
        conn.close()
    assert int(stats["auth_errors"]) >= 1
    assert int(stats["store_too_large"]) >= 1


# -- one node, a cache per test ----------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """
    One node for the module, with a plain and a TLS memcache listener,
    started as a user starts it (twistd); each test gets its own cache on
    it, as tenants do.  One start instead of one per test keeps the module
    quick.
    """
    directory = tmp_path_factory.mktemp("node")
    port, tlsPort, webPort = freePort(), freePort(), freePort()
    keyPath, certPath = makeSelfSignedCertificate(directory)
    listen = [
        f"tcp:{port}:interface=127.0.0.1",
        f"ssl:{tlsPort}:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1",
    ]
    database = f"sqlite:///{directory / 'memcachier.sqlite'}"
    config = directory / "memcachier.toml"
    config.write_text(
        "[memcache]\n"
        f"listen = {json.dumps(listen)}\n"
        "[web]\n"
        f'listen = "tcp:{webPort}:interface=127.0.0.1"\n'
        "[database]\n"
        f"url = {json.dumps(database)}\n"
        "poll_interval = 0.2\n"
    )
    server = MemcachierServer(directory, config, port, tlsPort, webPort, certPath)
    # the control plane's schema, before twistd starts
    adminJSON(server, "cache", "list")
    server.start(web=False)
    yield server
    server.stop()


def adminJSON(server: MemcachierServer, *args: str):
    """
    C{memcachier-admin --config=... ARGS --json}, run in this process
    (L{memcachier.admin.main}, the console script's function): a second
    Python process per cache would cost the module seconds per test.
    """
    out, err = io.StringIO(), io.StringIO()
    status = admin.main([f"--config={server.config_path}", *args, "--json"], out, err)
    assert status == 0, err.getvalue()
    return json.loads(out.getvalue())


class Tenant:
    """
    A cache of its own on the module's node, and what a client needs to
    reach it.
    """

    def __init__(self, node: MemcachierServer, username: str, password: str) -> None:
        self.node = node
        self.username = username
        self.password = password
        self.servers = node.servers
        self.tls_port = node.tls_port
        self.cert_path = node.cert_path

    def ascii(self):
        """
        A raw ASCII connection logged in to this cache.
        """
        return self.node.ascii(self.username, self.password)


@pytest.fixture
def tenant(node, request):
    """
    A new cache on the node, once the node has loaded it from the control
    plane (it polls every 0.2 s).
    """
    _, username, password = _firstCredential(adminJSON(node, "cache", "create"))
    deadline = time.monotonic() + 15
    while True:
        conn = node.binary(auth=False)
        status = conn.auth(username, password).status
        conn.close()
        if status == 0:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the node never loaded the new cache (SASL status {status:#x})")
        time.sleep(0.3)
    yield Tenant(node, username, password)
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        print(f"--- memcachier log ---\n{node.log()[-20000:]}")


# -- one test per language --------------------------------------------------


def rubyCommand() -> list:
    ruby = need("ruby", "ruby")
    if subprocess.run([ruby, "-e", "require 'dalli'"], capture_output=True).returncode != 0:
        pytest.fail("Ruby cannot load dalli: install the Debian package ruby-dalli (scripts/test does)")
    return [ruby, str(CLIENTS / "ruby" / "check.rb")]


def test_rubyDalli(tenant):
    """
    Ruby dalli with MemCachier's documented options (failover, timeouts).
    """
    seed(tenant)
    result = runClient(rubyCommand(), CLIENTS / "ruby", clientEnvironment(tenant))
    assert result["client"].startswith("dalli ")
    checkResult(tenant, result, "ruby")


def test_phpMemcached(tenant):
    """
    PHP memcached (libmemcached underneath) over the binary protocol with
    SASL, with MemCachier's documented options.
    """
    php = need("php", "php-cli")
    loaded = subprocess.run(
        [php, "-r",
         "echo extension_loaded('memcached') && Memcached::HAVE_SASL ? 'yes' : 'no';"],
        capture_output=True, text=True,
    )
    if loaded.stdout.strip() != "yes":
        pytest.fail(f"PHP has no memcached extension with SASL: install php-memcached ({loaded})")
    seed(tenant)
    result = runClient(
        [php, str(CLIENTS / "php" / "check.php")],
        CLIENTS / "php",
        clientEnvironment(tenant),
    )
    assert result["client"].startswith("php-memcached ")
    assert result["cas"]["staleCode"] == "RES_DATA_EXISTS"
    assert result["wrongPassword"]["error"] == "41 AUTHENTICATION FAILURE", result["wrongPassword"]
    checkResult(tenant, result, "php")


def test_nodeMemjs(tenant):
    """
    Node memjs (the exact version pinned in tests/clients/node), reading
    the C{MEMCACHIER_*} variables itself.  memjs 1.3.2 has neither cas nor
    a multi-get: the script issues concurrent gets on its one connection.
    With failover on, a refused login ends in "No servers available"; the
    node's C{auth_errors} says why.
    """
    node = need("node", "nodejs")
    if not (CLIENTS / "node" / "node_modules" / "memjs").is_dir():
        pytest.fail("memjs is missing: run `npm ci` in tests/clients/node (scripts/test does)")
    seed(tenant)
    result = runClient(
        [node, str(CLIENTS / "node" / "check.js")],
        CLIENTS / "node",
        clientEnvironment(tenant),
    )
    assert result["client"] == "memjs " + json.loads(
        (CLIENTS / "node" / "package.json").read_text()
    )["dependencies"]["memjs"]
    checkResult(tenant, result, "node", cas=False)


def test_javaSpymemcached(tenant):
    """
    Java spymemcached over the binary protocol with SASL PLAIN, as
    MemCachier's Java example builds it (run in Java's single-file source
    mode).  spymemcached retries a refused authentication until the
    operation times out; its log line says the server refused it.
    """
    java = need("java", "default-jdk-headless")
    need("javac", "default-jdk-headless")
    jar = need("/usr/share/java/spymemcached.jar", "libspymemcached-java")
    seed(tenant)
    result = runClient(
        [java, "-cp", jar, str(CLIENTS / "java" / "Check.java")],
        CLIENTS / "java",
        clientEnvironment(tenant),
    )
    assert result["client"].startswith("spymemcached ")
    assert result["cas"]["staleCode"] == "EXISTS"
    assert "Authentication failed" in (result["wrongPassword"]["log"] or "")
    checkResult(tenant, result, "java")


@pytest.mark.parametrize("language", ["ruby", "node"])
def test_failoverPastDeadNode(tenant, language):
    """
    C{MEMCACHIER_SERVERS} naming a dead node first (nothing listens on its
    port), as after a node of a cluster died: with MemCachier's failover
    options, dalli and memjs send every key to the live node, and every
    check passes.
    """
    s = tenant
    command = rubyCommand() if language == "ruby" else [
        need("node", "nodejs"), str(CLIENTS / "node" / "check.js")
    ]
    seed(s)
    result = runClient(
        command, CLIENTS / language,
        clientEnvironment(s, servers=f"127.0.0.1:{freePort()},{s.servers}"),
    )
    checkResult(s, result, language, cas=language == "ruby")


# -- libmemcached's command-line tools -----------------------------------------


def tool(name: str, server, *args: str, password: str | None = None, cwd=None):
    """
    Run one of libmemcached's tools (Debian names them memc*) over the
    binary protocol with SASL; retried only on libmemcached's own SASL
    start bug.
    """
    command = [
        need(name, "libmemcached-tools"),
        f"--servers={server.servers}",
        "--binary",
        f"--username={server.username}",
        f"--password={password or server.password}",
        *args,
    ]
    for attempt in range(5):
        result = subprocess.run(command, capture_output=True, timeout=30, cwd=cwd)
        if LIBMEMCACHED_SASL_BUG.encode() not in result.stderr + result.stdout:
            return result
    return result


def test_libmemcachedTools(tenant, tmp_path):
    """
    memccp, memccat (one key and several), memcexist, memctouch, memcrm and
    memcstat against the node with SASL; a 1 MB file round-trips, one
    past the item size is refused, and a wrong password is refused.  The
    tools have no incr and no cas.
    """
    s = tenant
    seed(s)
    files = {"k1": b"v1", "k2": b"v2", "k3": b"v3", "big": BIG_VALUE, "big2": BIG_VALUE}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    # memccat ends each value with a newline
    got = tool("memccat", s, "seed")
    assert (got.returncode, got.stdout) == (0, SEED + b"\n"), got
    copied = tool("memccp", s, "k1", "k2", "big", cwd=tmp_path)
    assert copied.returncode == 0, copied
    assert tool("memccat", s, "k1").stdout == b"v1\n"
    multi = tool("memccat", s, "k1", "k2")
    assert (multi.returncode, multi.stdout) == (0, b"v1\nv2\n"), multi
    missing = tool("memccat", s, "missing")
    assert missing.returncode != 0 and missing.stdout == b"", missing
    assert tool("memcexist", s, "k1").returncode == 0
    assert tool("memctouch", s, "--expire=1000", "k1").returncode == 0

    removed = tool("memcrm", s, "k2")
    assert removed.returncode == 0, removed
    assert tool("memcexist", s, "k2").returncode != 0
    assert tool("memccat", s, "k2").stdout == b""

    big = tool("memccat", s, "big")
    assert big.returncode == 0 and big.stdout == BIG_VALUE + b"\n", (big.returncode, len(big.stdout))
    tooBig = tool("memccp", s, "big2", cwd=tmp_path)
    assert tooBig.returncode != 0, tooBig

    stat = tool("memcstat", s)
    assert stat.returncode == 0, stat
    assert b"curr_items" in stat.stdout, stat

    wrong = tool("memccat", s, "k1", password=s.password + "x")
    assert wrong.returncode != 0 and wrong.stdout == b"", wrong
    assert LIBMEMCACHED_SASL_BUG.encode() not in wrong.stderr
    wrongWrite = tool("memccp", s, "k3", password=s.password + "x", cwd=tmp_path)
    assert wrongWrite.returncode != 0

    conn = s.ascii()
    try:
        assert conn.get("k1") == b"v1"
        assert conn.get("k2") is None
        assert conn.get("big") == BIG_VALUE
        assert conn.get("big2") is None
        assert conn.get("k3") is None
        stats = conn.stats()
    finally:
        conn.close()
    assert int(stats["auth_errors"]) >= 1
    assert int(stats["store_too_large"]) >= 1


# -- the TLS port ---------------------------------------------------------------


def test_stunnelSidecar(tenant, tmp_path):
    """
    Debian's stunnel4 as a client-side tunnel to the node's TLS listener,
    verifying its certificate, with the configuration docs/clients.md
    gives; dalli then talks plain memcache to the tunnel's local port.
    """
    s = tenant
    stunnel = need("stunnel4", "stunnel4")
    local = freePort()
    config = tmp_path / "stunnel.conf"
    config.write_text(
        "foreground = yes\n"
        "pid =\n"
        f"output = {tmp_path / 'stunnel.log'}\n"
        "[memcachier]\n"
        "client = yes\n"
        f"accept = 127.0.0.1:{local}\n"
        f"connect = 127.0.0.1:{s.tls_port}\n"
        f"CAfile = {s.cert_path}\n"
        "verifyChain = yes\n"
        "checkIP = 127.0.0.1\n"
        "sslVersionMin = TLSv1.2\n"
    )
    tunnel = subprocess.Popen([stunnel, str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        waitForPort(local, tunnel)
        seed(s)
        result = runClient(
            rubyCommand(), CLIENTS / "ruby",
            clientEnvironment(s, servers=f"127.0.0.1:{local}"),
        )
        checkResult(s, result, "ruby")
    finally:
        tunnel.terminate()
        tunnel.wait(10)
    log = (tmp_path / "stunnel.log").read_text(errors="replace")
    # the tunnel verified the node's certificate and carried the traffic
    assert "Certificate accepted at depth=0: CN=localhost" in log, log


def test_dalliNativeTLS(tenant):
    """
    dalli's own TLS (C{ssl_context}) straight to the node's TLS listener,
    trusting the node's certificate.  Everything works but get_multi:
    dalli 3.0.6 calls a method its TLS socket lacks (a bug in the
    client: the node never sees the multi-get fail).
    """
    s = tenant
    seed(s)
    result = runClient(
        rubyCommand(), CLIENTS / "ruby",
        clientEnvironment(s, servers=f"127.0.0.1:{s.tls_port}", MEMCACHIER_TLS_CA=str(s.cert_path)),
    )
    assert result["multi"].startswith("NoMethodError"), result["multi"]
    assert "server" in result["multi"]
    checkResult(s, result, "ruby", multi=False)


def test_untrustedCertificateRefused(tenant, tmp_path):
    """
    The check that makes the two TLS tests mean something: dalli trusting
    another certificate does not get through.
    """
    s = tenant
    other = tmp_path / "other"
    other.mkdir()
    _, otherCert = makeSelfSignedCertificate(other)
    started = time.monotonic()
    result = subprocess.run(
        rubyCommand(), cwd=CLIENTS / "ruby", capture_output=True, text=True, timeout=60,
        env=clientEnvironment(
            s, servers=f"127.0.0.1:{s.tls_port}", MEMCACHIER_TLS_CA=str(otherCert)
        ),
    )
    assert result.returncode != 0, result.stdout
    assert "certificate verify failed" in result.stderr or "No server available" in result.stderr, (
        result.stderr[-2000:]
    )
    assert time.monotonic() - started < 30
