"""
Every way a memcache connection can stall before it authenticates ends
with the server closing it within its timeout, on TCP and TLS alike
(L{memcachier.protocols.sniff.SniffingProtocol.close}): one byte and no
authentication, nothing at all, a TLS handshake never finished.  And
200 stalled connections at once give back every descriptor they held.
"""

import os
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from memcachier.protocols.sniff import CLOSE_GRACE

#: the auth timeout of these servers (seconds); also the TLS handshake's
AUTH_TIMEOUT = 1.0
#: what a busy machine may add to a timeout
SLACK = 3.0

CLOSE_SERVER = pytest.mark.memcachier(web=False, tls=True, memcache="auth_timeout = 1")


def closedAfter(sock, timeout):
    """
    Wait for the server to close C{sock}, reading and discarding.

    @return: the seconds it took, or L{None} if still open after
        C{timeout}.
    """
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while time.monotonic() - start < timeout:
            if not sock.recv(1 << 16):
                break
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        pass
    except (socket.timeout, TimeoutError):
        return None
    else:
        if time.monotonic() - start >= timeout:
            return None
    return time.monotonic() - start


def tlsSocket(server):
    context = ssl.create_default_context(cafile=server.cert_path)
    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def partialClientHello():
    """
    The first bytes of a real TLS ClientHello: a handshake begun and never
    finished.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # a handshake record
    return hello[: len(hello) // 2]


def plainSocket(server):
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def rawToTLSPort(server):
    return socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)


#: (name, connect, what to send once connected)
CASES = [
    ("tcp-one-byte", plainSocket, b"g"),
    ("tcp-nothing", plainSocket, b""),
    ("tls-one-byte", tlsSocket, b"g"),
    ("tls-handshake-then-nothing", tlsSocket, b""),
    ("tls-no-handshake", rawToTLSPort, b""),
    ("tls-partial-hello", rawToTLSPort, None),
]


@CLOSE_SERVER
@pytest.mark.parametrize("name,connect,first", CASES, ids=[c[0] for c in CASES])
def test_stalledConnectionIsClosed(memcachier_server, name, connect, first):
    """
    The server closes the connection once the auth timeout (or, for a TLS
    handshake never finished, the handshake timeout, the same value) has
    passed, not before and not much after.
    """
    sock = connect(memcachier_server)
    try:
        if first is None:
            first = partialClientHello()
        if first:
            sock.sendall(first)
        took = closedAfter(sock, AUTH_TIMEOUT + SLACK)
        assert took is not None, f"{name}: still open after {AUTH_TIMEOUT + SLACK} s"
        assert took >= AUTH_TIMEOUT * 0.8, f"{name}: closed after {took:.2f} s, before its timeout"
    finally:
        sock.close()


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def waitForDescriptors(pid, atMost, timeout):
    """
    @return: the server's descriptor count once it is at most C{atMost},
        or the last count seen after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        count = descriptors(pid)
        if count <= atMost or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


@CLOSE_SERVER
@pytest.mark.parametrize("connect", [tlsSocket, plainSocket], ids=["tls", "tcp"])
def test_manyStalledConnectionsGiveBackTheirDescriptors(memcachier_server, connect):
    """
    200 connections that each send one byte and never authenticate, and
    never read either (so a TLS one never answers the server's close
    alert), leave the node's descriptor count where it started once the
    auth timeout and the close grace have passed.
    """
    server = memcachier_server
    # let the startup settle (the first connections open the database)
    assert server.ascii().call("version").startswith(b"VERSION ")
    before = waitForDescriptors(server.pid, 0, 1.0)
    with ThreadPoolExecutor(20) as pool:
        socks = list(pool.map(lambda _: connect(server), range(200)))
    try:
        for sock in socks:
            sock.sendall(b"g")
        assert descriptors(server.pid) > before
        after = waitForDescriptors(server.pid, before, AUTH_TIMEOUT + CLOSE_GRACE + 2 * SLACK)
        assert after <= before, f"{after} descriptors open, {before} before"
    finally:
        for sock in socks:
            sock.close()
