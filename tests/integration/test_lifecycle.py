"""
A node's life as an operator sees it, with a real twistd: a graceful
C{SIGTERM} (stop accepting, finish what is under way, flush, exit 0),
TLS certificates reloaded on C{SIGHUP} without dropping a connection,
client certificates (mTLS), and the C{openssl s_client} check that
C{docs/security.md} shows.
"""

import base64
import datetime
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from tests.conftest import makeSelfSignedCertificate, writeKeyAndCertificate
from tests.integration.test_hardening import HTTP


def _prefixRequest(server, body):
    token = base64.b64encode(f"{server.username}:{server.password}".encode())
    return (
        b"POST /api/v2/caches/%d/introspection/prefixes HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Basic %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (server.cache_id, token, len(body))
    )


def _refused(port, timeout=10):
    """
    Wait until nothing accepts on C{port}.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def test_gracefulStop(memcachier_server):
    """
    On SIGTERM the node stops accepting, closes idle connections, lets a
    request whose body is still arriving finish (its control-plane write
    lands), closes that connection after the answer, and exits 0.
    """
    s = memcachier_server
    idle = s.ascii()
    body = json.dumps({"name": "user:"}).encode()
    inflight = HTTP(s)
    inflight.send(_prefixRequest(s, body) + body[:5])
    time.sleep(0.3)

    s.process.send_signal(signal.SIGTERM)
    assert _refused(s.port)
    assert idle.closed()
    inflight.send(body[5:])
    reply = inflight.response()
    assert reply.startswith(b"HTTP/1.1 20"), reply
    assert b"connection: close" in reply.lower()
    assert s.process.wait(30) == 0
    assert "shutdown deadline" not in s.log()

    s.start()
    token = base64.b64encode(f"{s.username}:{s.password}".encode())
    client = HTTP(s)
    client.send(
        b"GET /api/v2/caches/%d/introspection/prefixes HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Basic %s\r\nConnection: close\r\n\r\n" % (s.cache_id, token)
    )
    assert b'"user:"' in client.response()


@pytest.mark.memcachier(web=False)
def test_gracefulStopFinishesPartialMemcacheRequests(memcachier_server):
    """
    A memcache request partly received when SIGTERM arrives is answered
    once its client sends the rest (ASCII and binary); then its connection
    closes and the node exits 0.  Idle connections close at once.
    """
    from tests.integration.conftest import binaryRequest

    s = memcachier_server
    idle = s.ascii()
    text = s.ascii()
    binary = s.binary()
    text.send(b"set half 0 0 10\r\n01234")
    frame = binaryRequest(0x01, b"bin", b"binary-value", extras=b"\0" * 8, opaque=7)
    binary.send(frame[:30])
    time.sleep(0.3)  # the partial requests are read before the signal
    s.process.send_signal(signal.SIGTERM)
    assert _refused(s.port)
    assert idle.closed()
    text.send(b"56789\r\n")
    assert text.line() == b"STORED"
    assert text.closed()
    binary.send(frame[30:])
    response = binary.response()
    assert (response.status, response.opaque) == (0, 7)
    assert binary.closed()
    assert s.process.wait(30) == 0
    assert "shutdown deadline" not in s.log()


@pytest.mark.memcachier(config='[node]\nshutdown_timeout = "1s"\n')
def test_gracefulStopDeadline(memcachier_server):
    """
    A request that never finishes does not hold the node: it is dropped
    at the deadline and the node still exits 0.
    """
    s = memcachier_server
    stuck = HTTP(s)
    stuck.send(_prefixRequest(s, b"x" * 100) + b"x")
    time.sleep(0.3)
    s.process.send_signal(signal.SIGTERM)
    assert s.process.wait(30) == 0
    assert "shutdown deadline of 1.0s passed: aborted 1 connections" in s.log()


def _peerCertificate(server, context=None):
    if context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        return sock.getpeercert(binary_form=True)


def _tlsConnection(server, context):
    from tests.integration.conftest import AsciiConnection

    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
    return AsciiConnection(server.tls_port, sock=context.wrap_socket(raw, server_hostname="127.0.0.1"))


@pytest.mark.memcachier(web=False, tls=True)
def test_certificateReloadOnSighup(memcachier_server, tmp_path):
    """
    SIGHUP loads the certificate files again: new connections get the new
    certificate, a connection open across the reload keeps working; files
    that do not load leave the previous certificate in use.
    """
    s = memcachier_server
    keyPath = s.cert_path.replace("cert.pem", "key.pem")
    old = _peerCertificate(s)
    context = ssl.create_default_context(cafile=s.cert_path)
    kept = _tlsConnection(s, context)
    assert kept.auth(s.username, s.password) == b"STORED"

    newKey, newCert = makeSelfSignedCertificate(tmp_path)
    shutil.copy(newKey, keyPath)
    shutil.copy(newCert, s.cert_path)
    s.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _peerCertificate(s) == old and time.monotonic() < deadline:
        time.sleep(0.1)
    new = _peerCertificate(s)
    assert new != old
    assert new == ssl.PEM_cert_to_DER_cert(open(newCert).read())
    assert kept.call("set k 0 0 1", b"v") == b"STORED"
    assert kept.get("k") == b"v"

    with open(s.cert_path, "w") as f:
        f.write("not a certificate")
    s.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in s.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "TLS certificate reload failed" in s.log()
    assert _peerCertificate(s) == new
    assert s.process.poll() is None


def _clientCertificate(directory, caKeyPath, caCertPath):
    """
    A client key and certificate signed by the CA at C{caKeyPath},
    C{caCertPath}: a 2-tuple of PEM paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    caKey = serialization.load_pem_private_key(open(caKeyPath, "rb").read(), None)
    caCert = x509.load_pem_x509_certificate(open(caCertPath, "rb").read())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app")]))
        .issuer_name(caCert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(caKey, hashes.SHA256())
    )
    return writeKeyAndCertificate(
        directory / "client-key.pem", directory / "client-cert.pem", key, certificate
    )


@pytest.fixture
def clientCA(tmp_path):
    """
    A CA (key, certificate) and a client certificate it signed.
    """
    caDir = tmp_path / "ca"
    caDir.mkdir()
    caKey, caCert = makeSelfSignedCertificate(caDir, hostname="memcachier test CA")
    clientKey, clientCert = _clientCertificate(caDir, caKey, caCert)
    return caCert, clientKey, clientCert


def _openssl(server, *extra, verifyIP="127.0.0.1"):
    """
    C{openssl s_client} sending C{version} then C{quit}: what it printed.
    """
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.tls_port}",
         "-CAfile", server.cert_path, "-verify_return_error", "-verify_ip", verifyIP,
         "-quiet", *extra],
        input=b"version\r\nquit\r\n", capture_output=True, timeout=30,
    )
    return result.stdout + result.stderr


@pytest.mark.memcachier(web=False, tls=True)
def test_opensslCheck(memcachier_server):
    """
    The check docs/operations.md gives: the certificate verifies and the
    server answers C{version} over TLS; a certificate that does not name
    the address fails it.
    """
    assert b"VERSION " in _openssl(memcachier_server)
    assert b"VERSION " not in _openssl(memcachier_server, verifyIP="127.0.0.2")


def test_clientCertificates(memcachier_server_factory, clientCA):
    """
    With C{clientCAs} a client without a certificate the CA signed cannot
    talk to the listener; with one it can.
    """
    caCert, clientKey, clientCert = clientCA
    s = memcachier_server_factory(tls=True, web=False, tls_options=f":clientCAs={caCert}")
    assert b"VERSION " not in _openssl(s)
    assert b"VERSION " in _openssl(s, "-cert", clientCert, "-key", clientKey)

    context = ssl.create_default_context(cafile=s.cert_path)
    context.load_cert_chain(clientCert, clientKey)
    conn = _tlsConnection(s, context)
    assert conn.auth(s.username, s.password) == b"STORED"
    assert s.process.poll() is None


@pytest.mark.memcachier(web=False, tls=True)
def test_tlsConnectionsClose(memcachier_server):
    """
    Regression: over TLS the server's closes happened only at the client's
    whim (TLS waited for the codec to unregister as a producer), so
    C{quit}, an auth timeout or a graceful stop left the connection open.
    """
    s = memcachier_server
    context = ssl.create_default_context(cafile=s.cert_path)
    conn = _tlsConnection(s, context)
    conn.send(b"version\r\nquit\r\n")
    assert conn.line().startswith(b"VERSION ")
    assert conn.closed()
    conn.close()  # a client closes its end once it sees the close alert
    idle = _tlsConnection(s, context)
    assert idle.auth(s.username, s.password) == b"STORED"
    s.process.send_signal(signal.SIGTERM)
    assert idle.closed()
    idle.close()
    assert s.process.wait(30) == 0
    assert "shutdown deadline" not in s.log()


def test_killNineKeepsTheControlPlane(memcachier_server):
    """
    C{kill -9} right after an answered control-plane write: the node
    starts again and the write is there.
    """
    s = memcachier_server
    body = json.dumps({"name": "kept:"}).encode()
    client = HTTP(s)
    client.send(_prefixRequest(s, body).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body)
    assert client.response().startswith(b"HTTP/1.1 20")
    s.process.kill()
    assert s.process.wait(30) == -signal.SIGKILL
    s.start()
    token = base64.b64encode(f"{s.username}:{s.password}".encode())
    client = HTTP(s)
    client.send(
        b"GET /api/v2/caches/%d/introspection/prefixes HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Basic %s\r\nConnection: close\r\n\r\n" % (s.cache_id, token)
    )
    assert b'"kept:"' in client.response()
