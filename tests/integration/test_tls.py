"""
TLS: the C{ssl:} listener wraps the same memcache factory (both protocols,
both kinds of auth), verifies with the fixture's self-signed certificate,
and refuses clients older than TLS 1.2.
"""

import socket
import ssl
import threading
import warnings

import bmemcached
import pytest
from pymemcache.client.base import Client as PymemcacheClient

from tests.integration.conftest import AsciiConnection, BinaryConnection

TLS_SERVER = pytest.mark.memcachier(web=False, tls=True)


def clientContext(server):
    """
    A client context that trusts only the fixture's certificate and checks
    the host name (127.0.0.1 is in its subjectAltName).
    """
    context = ssl.create_default_context(cafile=server.cert_path)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


def tlsSocket(server, context=None):
    context = context or clientContext(server)
    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def tls11OnlyContext():
    """
    A client context that offers TLS 1.1 and nothing else (and allows the
    old ciphers it needs).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


@TLS_SERVER
def test_pymemcacheOverTLS(memcachier_server):
    """
    pymemcache with a C{tls_context} that verifies the server: ASCII auth
    and commands over TLS, the same cache as the plain port.
    """
    s = memcachier_server
    client = PymemcacheClient(
        ("127.0.0.1", s.tls_port), tls_context=clientContext(s), timeout=10
    )
    assert client.set(s.username, s.password, noreply=False)
    assert client.set("secure", b"value", noreply=False)
    assert client.get("secure") == b"value"
    assert client.get_many(["secure", "nope"]) == {"secure": b"value"}
    assert client.incr("nope", 1) is None
    big = b"b" * 500_000
    assert client.set("big", big, noreply=False)
    assert client.get("big") == big

    plain = s.ascii()
    assert plain.get("secure") == b"value"
    assert client.delete("secure", noreply=False)
    assert plain.get("secure") is None


@TLS_SERVER
def test_binaryOverTLS(memcachier_server):
    """
    The TLS listener sniffs the binary protocol too: SASL PLAIN and
    commands with python-binary-memcached and with raw frames.
    """
    s = memcachier_server
    mc = bmemcached.Client(
        (f"127.0.0.1:{s.tls_port}",), s.username, s.password, tls_context=clientContext(s)
    )
    assert mc.set("k", "v")
    assert mc.get("k") == "v"

    conn = BinaryConnection(None, sock=tlsSocket(s))
    assert conn.auth(s.username, s.password).status == 0
    response = conn.request(0x00, "k")
    assert response.status == 0 and response.value == b"v"


@TLS_SERVER
def test_tlsUnauthenticatedStillClosed(memcachier_server):
    """
    Over TLS as over TCP: a wrong password is refused.
    """
    s = memcachier_server
    conn = AsciiConnection(None, sock=tlsSocket(s))
    assert conn.auth(s.username, "wrong") == b"CLIENT_ERROR authentication failure"
    assert conn.call("get k") == b"CLIENT_ERROR unauthenticated"


@TLS_SERVER
def test_untrustedClientRefusesServer(memcachier_server):
    """
    Sanity check of the test setup: a client trusting only the system
    CAs rejects the self-signed certificate.
    """
    s = memcachier_server
    with pytest.raises(ssl.SSLCertVerificationError):
        tlsSocket(s, ssl.create_default_context())


def _tls11Server(certPath, keyPath):
    """
    A throwaway Python TLS server that accepts TLS 1.1, to show that the
    client of L{tls11OnlyContext} really can speak TLS 1.1 on this machine.

    @return: the port and the thread.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(certPath, keyPath)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)

    def serve():
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@TLS_SERVER
def test_tls11ClientRefused(memcachier_server):
    """
    The listener's floor is TLS 1.2: a client offering only TLS 1.1 fails
    the handshake with a protocol-version alert from the server, although
    the same client completes a TLS 1.1 handshake with a server that
    allows it; a TLS 1.2 client is accepted.
    """
    s = memcachier_server
    keyPath = str(s.directory / "key.pem")

    port, thread = _tls11Server(s.cert_path, keyPath)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with tls11OnlyContext().wrap_socket(raw) as tls:
        assert tls.version() == "TLSv1.1"
    thread.join(10)

    raw = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
    with pytest.raises(ssl.SSLError) as error:
        tls11OnlyContext().wrap_socket(raw)
    raw.close()
    assert "PROTOCOL_VERSION" in str(error.value).upper() or "UNSUPPORTED_PROTOCOL" in str(
        error.value
    ).upper()

    context = clientContext(s)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with tlsSocket(s, context) as tls:
        assert tls.version() == "TLSv1.2"
        conn = AsciiConnection(None, sock=tls)
        assert conn.auth(s.username, s.password) == b"STORED"
