"""
Issue 12's table, tried as an attacker and as an operator would, against a
real twistd over real sockets: brute force over both protocols, the listen
backlog, slow and idle HTTP clients, a huge declared body, the C{%ff} URL,
descriptor starvation under a lowered C{ulimit -n}, a configuration typo.
"""

import resource
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.integration.conftest import (
    AsciiConnection,
    BinaryConnection,
    _bin,
    _firstCredential,
    binaryRequest,
)

#: one token per 100 s: nothing refills while a test runs, so the counts
#: below are exact however slow the machine is
SLOW_REFILL = "auth_failure_rate = 0.01\nauth_failure_burst = 5\n"
FAILURE = b"CLIENT_ERROR authentication failure"


def fromAddress(port, source, cls=AsciiConnection):
    """
    A connection to 127.0.0.1:C{port} from the loopback address
    C{source} (all of 127/8 is local on Linux): a distinct client address.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return cls(port, sock=sock)


def replies(conn, parse):
    """
    Every reply the server sends until it closes the connection.

    @param parse: reads one reply from C{conn}.
    @return: the replies, or L{None} if the server left it open.
    """
    got = []
    try:
        while True:
            got.append(parse(conn))
    except TimeoutError:
        return None
    except OSError:  # closed or reset
        return got


def newCache(server):
    """
    Another cache on the server, created while it is stopped (so it is
    loaded when it starts again, with no wait for a poll): its (username,
    password).
    """
    assert server.stop() == 0
    _, username, password = _firstCredential(server.admin("cache", "create"))
    server.start(web=False)
    return username, password


def floodLines(server):
    return [line for line in server.log().splitlines() if "auth flood throttled" in line]


@pytest.mark.memcachier(web=False, memcache=SLOW_REFILL)
def test_bruteForceAscii(memcachier_server):
    """
    200 guesses pipelined over 20 connections from one address without
    waiting for replies: the budget (5) is checked, every connection gets
    one more refusal and is closed; then the right password is refused
    too, from this address and (the username's budget) from another; other
    users from another address are untouched.  One log line, no traceback.
    """
    s = memcachier_server
    username, password = newCache(s)
    guesses = b"".join(b"set %s 0 0 6\r\nguess%d\r\n" % (s.username.encode(), i % 10)
                       for i in range(10))
    conns = [fromAddress(s.port, "127.0.0.1") for _ in range(20)]
    for conn in conns:
        conn.send(guesses)
    got = [replies(conn, AsciiConnection.line) for conn in conns]
    assert all(r is not None and set(r) == {FAILURE} for r in got)
    assert sum(map(len, got)) == 5 + 20

    right = fromAddress(s.port, "127.0.0.1")
    assert right.auth(s.username, s.password) == FAILURE
    assert right.closed()
    elsewhere = fromAddress(s.port, "127.0.0.2")
    assert elsewhere.auth(s.username, s.password) == FAILURE
    assert elsewhere.closed()

    other = fromAddress(s.port, "127.0.0.2")
    assert other.auth(username, password) == b"STORED"
    assert other.call("set k 0 0 1", b"v") == b"STORED"

    assert len(floodLines(s)) == 1
    assert "Traceback" not in s.log()


def _binaryReply(conn):
    return conn.response().status


@pytest.mark.memcachier(web=False, memcache=SLOW_REFILL)
def test_bruteForceBinary(memcachier_server):
    """
    The same over SASL PLAIN: the budget's failures answer 0x20 and keep
    the connection; past it 0x20 and a close, the right password included.
    """
    s = memcachier_server
    frames = b"".join(
        binaryRequest(0x21, b"PLAIN", b"\0" + s.username.encode() + b"\0guess%d" % i)
        for i in range(10)
    )
    conns = [fromAddress(s.port, "127.0.0.3", BinaryConnection) for _ in range(20)]
    for conn in conns:
        conn.send(frames)
    got = [replies(conn, _binaryReply) for conn in conns]
    assert all(r is not None and set(r) == {0x20} for r in got)
    assert sum(map(len, got)) == 5 + 20

    right = fromAddress(s.port, "127.0.0.3", BinaryConnection)
    assert right.auth(s.username, s.password).status == 0x20
    assert right.closed()
    assert len(floodLines(s)) == 1
    assert "Traceback" not in s.log()


@pytest.mark.memcachier(web=False, memcache=SLOW_REFILL)
def test_successNeverClearsOthersFailures(memcachier_server):
    """
    A valid login to one's own cache before every guess at another cache
    buys no guesses: exactly the budget's 5 are checked.
    """
    s = memcachier_server
    victim, _ = newCache(s)
    checked = 0
    for i in range(30):
        own = fromAddress(s.port, "127.0.0.4")
        own.auth(s.username, s.password)
        own.close()
        guess = fromAddress(s.port, "127.0.0.4")
        assert guess.auth(victim, f"guess{i}") == FAILURE
        try:
            # an attempt that was checked leaves the connection open
            checked += guess.call("version").startswith(b"VERSION ")
        except ConnectionError:
            pass
        guess.close()
    assert checked == 5


def _acceptedWhileStopped(server, count, port=None):
    """
    Open C{count} connections to C{port} (the memcache port by default)
    while the server is stopped (SIGSTOP): only the kernel's listen queue
    can take them.

    @return: how many completed their TCP handshake.
    """
    socks = []
    server.process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port or server.port))
            socks.append(sock)
        pending = set(socks)
        deadline = time.monotonic() + 5
        connected = 0
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.5)
            for sock in writable:
                pending.discard(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected += 1
        return connected
    finally:
        server.process.send_signal(signal.SIGCONT)
        for sock in socks:
            sock.close()


def test_listenBacklog(memcachier_server):
    """
    The memcache and web listeners' backlog is 1024 (memcached's), not
    Twisted's 50 (with which 51 get through): 600 clients connecting while
    the server is busy are all queued by the kernel, none left believing
    it is connected to nothing.
    """
    s = memcachier_server
    assert _acceptedWhileStopped(s, 600) == 600
    assert _acceptedWhileStopped(s, 600, s.web_port) == 600
    assert s.ascii().call("version").startswith(b"VERSION ")


def listenBacklog(port):
    """
    The backlog of the socket listening on 127.0.0.1:C{port}, as the
    kernel holds it: C{ss -ltn}'s Send-Q column of a listening socket.
    """
    if shutil.which("ss") is None:
        pytest.fail("ss is not installed (Debian's iproute2): scripts/test installs it")
    output = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    [line] = output.splitlines()
    state, recvQ, sendQ, local = line.split()[:4]
    assert (state, local) == ("LISTEN", f"127.0.0.1:{port}"), line
    return int(sendQ)


def somaxconn():
    """
    The kernel's cap on a listen backlog.
    """
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


@pytest.mark.memcachier(tls=True)
def test_listenBacklogDefault(memcachier_server):
    """
    The memcache (plain and TLS) and web listening sockets have memcached's
    backlog, 1024 (or the kernel's cap, if lower).
    """
    s = memcachier_server
    expected = min(1024, somaxconn())
    assert [listenBacklog(p) for p in (s.port, s.tls_port, s.web_port)] == [expected] * 3


@pytest.mark.memcachier(tls=True, memcache="backlog = 200", web_config="backlog = 300")
def test_listenBacklogConfigured(memcachier_server):
    """
    C{memcache.backlog} sets every memcache listener's backlog,
    C{web.backlog} the web listener's.
    """
    s = memcachier_server
    assert [listenBacklog(p) for p in (s.port, s.tls_port, s.web_port)] == [
        min(200, somaxconn()), min(200, somaxconn()), min(300, somaxconn()),
    ]


class HTTP:
    """
    A raw HTTP/1.1 connection to the web port.
    """

    def __init__(self, server, timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", server.web_port), timeout=timeout)

    def send(self, data):
        self.sock.sendall(data)

    def response(self):
        """
        Everything until the server closes the connection.
        """
        data = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
        except ConnectionResetError:
            return data

    def close(self):
        self.sock.close()


LIMITS = pytest.mark.memcachier(
    web_config='header_timeout = "1s"\nbody_timeout = "1s"\nidle_timeout = "1s"\n'
)


@pytest.mark.memcachier(web_config='header_timeout = "1s"\nmax_connections = 600\n')
def test_slowHeaders(memcachier_server):
    """
    500 clients sending their headers a byte at a time are answered 408
    and closed after the header timeout, however long they keep trickling.
    """
    s = memcachier_server
    clients = [HTTP(s) for _ in range(500)]
    request = b"GET /api/v2/caches/1/stats HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    start = time.monotonic()
    closed = 0
    for i in range(len(request)):
        for client in clients:
            try:
                client.send(request[i:i + 1])
            except OSError:
                pass
        readable, _, _ = select.select([c.sock for c in clients], [], [], 0.1)
        if len(readable) == len(clients):
            break
    for client in clients:
        reply = client.response()
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        closed += 1
    assert closed == 500
    assert time.monotonic() - start < 20  # a trickle of 200 bytes takes 20 s


@LIMITS
def test_slowBody(memcachier_server):
    """
    A body that stops arriving gets the body timeout's 408, even with the
    idle timeout as short as the body timeout (both 1 s): the idle timeout
    waits while a request is under way.
    """
    for _ in range(5):
        client = HTTP(memcachier_server)
        client.send(
            b"POST /api/v2/caches/1/flush HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
        )
        reply = client.response()
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert b"request body not received in time" in reply


def test_silentConnectionsLockNoOneOut(memcachier_server):
    """
    300 connections that never send a byte, opened before an app's own
    connection, hold a place among the connections let in only 10 ms each
    (C{memcache.login_batch}, docs/operations.md "Login storms"): the app
    logs in and is served at once, not after the auth timeout; the silent
    ones are left open until their own auth timeout.
    """
    s = memcachier_server
    silent = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(300)]
    try:
        time.sleep(0.2)  # every one accepted, each waiting for its place
        started = time.monotonic()
        app = s.ascii()
        assert app.call("set k 0 0 1", b"v") == b"STORED"
        assert time.monotonic() - started < 2.0
        # nothing came on the silent ones
        assert select.select(silent, [], [], 0)[0] == []
    finally:
        for sock in silent:
            sock.close()
    assert "Traceback" not in s.log()


@LIMITS
def test_idleConnectionClosed(memcachier_server):
    """
    A keep-alive connection idle past the idle timeout is closed without
    a word (no 408 after the answer), and nothing is logged.
    """
    client = HTTP(memcachier_server)
    client.send(b"GET /api/v2/caches/1/stats HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = client.response()
    assert reply.startswith(b"HTTP/1.1 4")
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert "Timing out client" not in memcachier_server.log()


def test_hugeDeclaredBody(memcachier_server):
    """
    A declared 10 GB body is refused with 413 at once, before any of it is
    sent, and the connection closes.
    """
    client = HTTP(memcachier_server)
    client.send(
        b"POST /api/v2/caches/1/flush HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 10737418240\r\n\r\n"
    )
    reply = client.response()
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"request body larger than" in reply


def test_malformedURL(memcachier_server):
    """
    C{GET /api/v2/caches/%ff/stats} is a 400 and logs nothing, not even an
    access-log line.
    """
    s = memcachier_server
    before = s.log()
    for _ in range(20):
        client = HTTP(s)
        client.send(b"GET /api/v2/caches/%ff/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert client.response().startswith(b"HTTP/1.1 400 ")
    time.sleep(0.3)
    assert s.log() == before


def _lowDescriptors():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.memcachier(
    preexec_fn=_lowDescriptors, memcache="auth_timeout = 60",
    web_config='header_timeout = "60s"\nidle_timeout = "60s"\n',
)
def test_descriptorStarvation(memcachier_server):
    """
    With 256 descriptors, 150 idle HTTP connections fill the web ceiling
    (64) and the rest get 503; memcache clients still connect and work, up
    to their own ceiling (256 - 64 - 64 reserved = 128), past which they
    get memcached's C{ERROR Too many open connections}.  One log line per
    surface, no crash.
    """
    s = memcachier_server
    assert "memcache 128, web 64 (descriptor limit 256)" in s.log()
    # The fixture's readiness probe closed its connection, which the server
    # may not have read yet (it then still counts against the ceiling): a
    # round trip on another connection, closed by the server, lets it.
    probe = HTTP(s)
    probe.send(b"GET /api/v2/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert probe.response().startswith(b"HTTP/1.1 200")
    probe.close()
    idle = [HTTP(s) for _ in range(150)]
    busy = 0
    for client in idle:
        client.sock.settimeout(0.2)
        try:
            data = client.sock.recv(1000)
        except socket.timeout:
            continue
        assert data.startswith(b"HTTP/1.1 503 "), data
        busy += 1
    assert busy == 150 - 64

    first = s.ascii()
    assert first.call("set k 0 0 1", b"v") == b"STORED"
    more = [s.ascii(auth=False) for _ in range(127)]
    for conn in more[::10]:
        assert conn.call("version").startswith(b"VERSION ")
    over = AsciiConnection(s.port)
    assert over.line() == b"ERROR Too many open connections"
    assert over.closed()
    for conn in more:
        conn.close()
    deadline = time.monotonic() + 15
    while True:
        # the server sees the closes a moment later
        conn = AsciiConnection(s.port)
        reply = conn.auth(s.username, s.password)
        if reply == b"STORED" or time.monotonic() > deadline:
            break
        conn.close()
        time.sleep(0.1)
    assert reply == b"STORED"
    assert conn.get("k") == b"v"

    log = s.log()
    assert log.count("web connection ceiling reached") == 1
    assert log.count("memcache connection ceiling reached") == 1
    assert "Traceback" not in log and "Too many open files" not in log
    assert s.process.poll() is None


def test_configErrorsBeforeStart(tmp_path):
    """
    A typo'd endpoint type, a missing certificate, a bad duration: every
    error at once, naming its key (and the valid endpoint types), exit
    non-zero, nothing listening.
    """
    from tests.integration.conftest import freePort

    port = freePort()
    config = tmp_path / "bad.toml"
    config.write_text(
        "[memcache]\n"
        f'listen = ["tpc:{port}", "ssl:{port}:privateKey=missing.pem"]\n'
        "[web]\n"
        'listen = "tcp:8080:interface=127.0.0.1"\n'
        'header_timeout = "soon"\n'
        "[database]\n"
        'url = "memcachier.sqlite"\n'
    )
    result = subprocess.run(
        [_bin("twistd"), "-n", "--pidfile=", "memcachier", f"--config={config}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "4 configuration errors" in output, output
    assert 'memcache.listen[0]: unknown endpoint type "tpc"' in output
    assert "valid types: tcp, ssl, unix" in output
    assert 'memcache.listen[1]: privateKey file "missing.pem" cannot be read' in output
    assert "web.header_timeout: expected a duration" in output
    assert "database.url: expected an SQLAlchemy URL" in output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (tmp_path / "memcachier.sqlite").exists()


def test_noLinePerProbe(memcachier_server_factory):
    """
    Latency probes every half second write nothing to the log.
    """
    s = memcachier_server_factory(config="[analytics]\nlatency_period = 0.5\n")
    time.sleep(3)
    log = s.log()
    assert "Starting factory" not in log and "Stopping factory" not in log
    assert "listener up on 127.0.0.1:%d" % s.port in log
