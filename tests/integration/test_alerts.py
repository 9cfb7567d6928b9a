"""
Alerts end to end, with real peers on loopback: the server started as a
user starts it, a real SMTP server (aiosmtpd) that requires STARTTLS with a
certificate from a test CA, a real HTTP server standing in for Slack, and
real memcache clients (pylibmc over SASL) moving the figures the rules
watch.  Intervals and windows are short (1 s, 5 s) through the config
file; every wait has a generous deadline, nothing asserts a duration.
"""

import datetime
import email
import email.policy
import ipaddress
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import AsciiConnection, freePort, pylibmcClient

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 90.0


def waitFor(predicate, what, deadline=DEADLINE, during=None):
    """
    Poll C{predicate} until it returns something true; call C{during()}
    between polls (traffic that must keep flowing).
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if during is not None:
            during()
        else:
            time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


# -- a test CA and a certificate for localhost


def makeCA(directory):
    """
    A CA and a certificate it signed for C{localhost} (and 127.0.0.1).

    @return: paths of the CA certificate, the leaf certificate, its key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memcachier test CA")])
    caCert = (
        x509.CertificateBuilder()
        .subject_name(caName).issuer_name(caName).public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(caKey, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(caName).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(caKey, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "localhost.pem", directory / "localhost.key"
    paths[0].write_bytes(caCert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


# -- the peers


class SMTPServer:
    """
    aiosmtpd on 127.0.0.1, requiring STARTTLS, keeping every message.
    """

    def __init__(self, certPath, keyPath):
        from aiosmtpd.controller import Controller

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(certPath), str(keyPath))
        self.messages = []
        self.port = freePort()
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, tls_context=context,
            require_starttls=True, ready_timeout=30,
        )

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "tls": session.ssl is not None,
            "mail": email.message_from_bytes(envelope.original_content,
                                             policy=email.policy.default),
        })
        return "250 OK"

    def start(self):
        self.controller.start()

    def stop(self):
        self.controller.stop()

    def kinds(self):
        return [m["mail"]["X-Memcachier-Alert"].split()[1] for m in self.messages]


class SlackStandIn:
    """
    An HTTP server standing in for Slack's incoming webhooks: answers the
    codes of C{codes} in order, then C{default}; keeps every request.
    """

    def __init__(self, codes=(), default=200):
        self.codes = list(codes)
        self.default = default
        self.requests = []
        self.lock = threading.Lock()
        standIn = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with standIn.lock:
                    code = standIn.codes.pop(0) if standIn.codes else standIn.default
                    standIn.requests.append({
                        "path": self.path, "headers": dict(self.headers),
                        "json": json.loads(body), "code": code, "raw": body,
                    })
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                reply = b"ok" if code == 200 else b"server_error"
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self, kind=None):
        with self.lock:
            return [r for r in self.requests if r["code"] == 200
                    and (kind is None or _slackKind(r) == kind)]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _slackKind(request):
    text = request["json"]["text"]
    return "fired" if "ALERT cache" in text else "resolved"


@pytest.fixture
def ca(tmp_path, monkeypatch):
    """
    A test CA that the server (and nothing else) trusts: its C{SSL_CERT_FILE}.
    """
    paths = makeCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(paths[0]))
    return paths


@pytest.fixture
def smtp(ca):
    server = SMTPServer(ca[1], ca[2])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def slack():
    standIn = SlackStandIn()
    yield standIn
    standIn.stop()


def alertsConfig(smtpPort, extra=""):
    return (
        "[alerts]\n"
        'interval = "1s"\n'
        'window = "5s"\n'
        "allow_http_loopback = true\n"
        "[alerts.smtp]\n"
        'host = "localhost"\n'
        f"port = {smtpPort}\n"
        'sender = "alerts@memcachier.test"\n' + extra
    )


class Api:
    def __init__(self, server):
        self.base = f"http://127.0.0.1:{server.web_port}/api/v2/caches/{server.cache_id}"
        self.session = requests.Session()
        self.session.auth = (server.username, server.password)

    def __call__(self, method, path, expect=None, **kwargs):
        response = self.session.request(method, self.base + path, timeout=30, **kwargs)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response

    def config(self, **body):
        return self("POST", "/alerts/configs", expect=201, json=body).json()

    def alert(self, trigger, threshold, configId):
        return self("POST", "/alerts", expect=201, json={
            "trigger_type": trigger, "trigger_threshold": threshold,
            "delivery_config_id": configId, "description": f"{trigger} test", "enabled": True,
        }).json()

    def events(self, alertId):
        return self("GET", f"/alerts/{alertId}/events", expect=200).json()


def delivered(api, alertId, kinds):
    """
    Whether the alert's events are C{kinds} (newest last) and all
    delivered.
    """
    events = list(reversed(api.events(alertId)))
    return [e["kind"] for e in events] == kinds and all(
        d["status"] == "delivered" for e in events for d in e["deliveries"])


# -- the tests


def test_hitRateFiresOnceThroughBothChannelsThenResolvesOnce(memcachier_server_factory, smtp,
                                                             slack):
    """
    A real client drives the hit rate under 50%: the alert fires once by
    email (over STARTTLS, verified against the test CA) and once on Slack;
    then hits bring it back and each channel gets one "resolved".
    """
    server = memcachier_server_factory(config=alertsConfig(smtp.port))
    api = Api(server)
    mailConfig = api.config(delivery_type="email", email="ops@example.com")
    slackConfig = api.config(delivery_type="slack", slack_url=slack.url,
                             slack_channel="#alerts")
    byMail = api.alert("hit_rate", 50, mailConfig["id"])
    bySlack = api.alert("hit_rate", 50, slackConfig["id"])
    client = pylibmcClient(server)
    n = [0]

    def misses():
        for _ in range(20):
            n[0] += 1
            assert client.get(f"missing-{n[0]}") is None
        time.sleep(0.05)

    waitFor(lambda: smtp.kinds() == ["fired"] and slack.accepted("fired"),
            "the firing on both channels", during=misses)
    client.set("hot", b"x" * 100)

    def hits():
        for _ in range(20):
            assert client.get("hot") == b"x" * 100
        time.sleep(0.05)

    waitFor(lambda: smtp.kinds() == ["fired", "resolved"] and slack.accepted("resolved"),
            "the resolution on both channels", during=hits)
    # More good traffic changes nothing: no flapping, no repeats.
    end = time.monotonic() + 4
    while time.monotonic() < end:
        hits()
    assert smtp.kinds() == ["fired", "resolved"]
    assert [_slackKind(r) for r in slack.requests] == ["fired", "resolved"]

    fired = smtp.messages[0]
    assert fired["tls"] and fired["from"] == "alerts@memcachier.test"
    assert fired["to"] == ["ops@example.com"]
    mail = fired["mail"]
    assert mail["From"] == "alerts@memcachier.test" and mail["To"] == "ops@example.com"
    assert mail["Date"] and mail["Message-ID"]
    cacheName = server.cache["name"]
    assert mail["Subject"].startswith(f"[memcachier] ALERT cache {cacheName}: hit_rate below 50%")
    body = mail.get_content()
    dashboard = f"http://127.0.0.1:{server.web_port}/caches/{server.cache_id}/"
    for fragment in ("Measured:", "Threshold: 50%", "Time:", dashboard, "hit_rate test"):
        assert fragment in body, body
    assert re.search(r"Measured:\s+(\d+(\.\d+)?)%", body)
    assert "RESOLVED" in smtp.messages[1]["mail"]["Subject"]

    slackFired = slack.requests[0]
    assert slackFired["path"] == "/services/T0/B0/x"
    assert slackFired["headers"]["Content-Type"] == "application/json"
    assert slackFired["json"]["channel"] == "#alerts"
    assert f"ALERT cache {cacheName}" in slackFired["json"]["text"]
    assert dashboard in slackFired["json"]["text"]

    assert delivered(api, byMail["id"], ["fired", "resolved"])
    assert delivered(api, bySlack["id"], ["fired", "resolved"])
    events = server.admin("alert", "events", str(server.cache_id))
    assert sorted(e["kind"] for e in events) == ["fired", "fired", "resolved", "resolved"]


def test_memoryUsageFires(memcachier_server_factory, slack):
    """
    Filling the cache past the memory_usage threshold (20% of the 25 MiB
    development plan) fires the alert.
    """
    server = memcachier_server_factory(config=alertsConfig(freePort()))
    api = Api(server)
    config = api.config(delivery_type="slack", slack_url=slack.url)
    alert = api.alert("memory_usage", 20, config["id"])
    client = pylibmcClient(server)
    value = b"v" * 100_000
    for i in range(70):
        client.set(f"fill-{i}", value)
    waitFor(lambda: slack.accepted("fired"), "the memory_usage alert")
    text = slack.accepted("fired")[0]["json"]["text"]
    measured = float(re.search(r"Measured:\s+([\d.]+)%", text).group(1))
    assert measured > 20
    assert "memory_usage above 20%" in text
    assert delivered(api, alert["id"], ["fired"])


def test_slackRetriesAfterTwoFailures(memcachier_server_factory):
    """
    A stand-in answering 500 twice, then 200: the third attempt delivers,
    and the events show the attempts.
    """
    standIn = SlackStandIn(codes=[500, 500])
    try:
        server = memcachier_server_factory(config=alertsConfig(freePort()))
        api = Api(server)
        config = api.config(delivery_type="slack", slack_url=standIn.url)
        alert = api.alert("memory_usage", 0, config["id"])
        pylibmcClient(server).set("one", b"1")
        waitFor(lambda: standIn.accepted(), "the delivery after two failures")
        assert [r["code"] for r in standIn.requests] == [500, 500, 200]
        assert len({r["raw"] for r in standIn.requests}) == 1
        waitFor(lambda: delivered(api, alert["id"], ["fired"]), "the delivery recorded")
        delivery = api.events(alert["id"])[0]["deliveries"][0]
        assert delivery["attempts"] == 3
        assert "HTTP 500" in delivery["last_error"]
        assert "retrying in" in server.log()
    finally:
        standIn.stop()


def test_smtpDownIsRecordedAndMemcacheAnswers(memcachier_server_factory, ca):
    """
    With nothing listening on the SMTP port the failure is recorded (and
    retried), while the memcache port answers all along.
    """
    server = memcachier_server_factory(config=alertsConfig(freePort()))
    api = Api(server)
    config = api.config(delivery_type="email", email="ops@example.com")
    alert = api.alert("memory_usage", 0, config["id"])
    conn = server.ascii()
    assert conn.call("set k 0 0 1", b"1") == b"STORED"
    answered = [0]

    def traffic():
        assert conn.call("set k 0 0 1", b"1") == b"STORED"
        assert conn.get("k") == b"1"
        answered[0] += 1
        time.sleep(0.02)

    def failedTwice():
        events = api.events(alert["id"])
        if not events:
            return None
        d = events[0]["deliveries"][0]
        return d if d["attempts"] >= 2 and d["last_error"] else None

    delivery = waitFor(failedTwice, "two failed attempts recorded", during=traffic)
    assert delivery["status"] in ("pending", "failed")
    assert "SMTP relay" in delivery["last_error"]
    assert answered[0] > 10
    conn.close()


def test_restartDuringRetryDeliversOnce(memcachier_server_factory):
    """
    The server stops while a delivery waits for its retry; started again,
    it delivers it, once, and fires nothing new.
    """
    standIn = SlackStandIn(default=500)
    try:
        server = memcachier_server_factory(config=alertsConfig(freePort()))
        api = Api(server)
        config = api.config(delivery_type="slack", slack_url=standIn.url)
        alert = api.alert("memory_usage", 0, config["id"])
        pylibmcClient(server).set("one", b"1")
        waitFor(lambda: api.events(alert["id"]) and
                api.events(alert["id"])[0]["deliveries"][0]["attempts"] >= 1,
                "a failed attempt")
        server.stop()
        assert "Server Shut Down." in server.log()
        standIn.default = 200
        failedBefore = len(standIn.requests)
        server.start()
        waitFor(lambda: delivered(api, alert["id"], ["fired"]), "delivery after the restart")
        time.sleep(3)
        assert len(standIn.accepted()) == 1
        assert len(standIn.requests) == failedBefore + 1
        assert [e["kind"] for e in api.events(alert["id"])] == ["fired"]
    finally:
        standIn.stop()


# -- docs/alerts.md


def docCurls():
    text = (ROOT / "docs" / "alerts.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in re.split(r"\n(?=curl )", block.replace("\\\n", " ")):
            command = command.strip()
            if command.startswith("curl "):
                commands.append(command)
    return commands


def test_docsCurlExamples(memcachier_server_factory):
    """
    Every curl example of docs/alerts.md works against a running server,
    one per route at least.
    """
    server = memcachier_server_factory(config=alertsConfig(freePort()))
    commands = docCurls()
    assert len(commands) >= 9
    ids = {}
    for command in commands:
        command = (
            command.replace("127.0.0.1:8080", f"127.0.0.1:{server.web_port}")
            .replace("$CACHE_ID", str(server.cache_id))
            .replace("$MEMCACHIER_USERNAME", server.username)
            .replace("$MEMCACHIER_PASSWORD", server.password)
        )
        for name, value in ids.items():
            command = command.replace(f"${name}", str(value))
        result = subprocess.run(
            ["bash", "-c", command + " -s -w '\\n%{http_code}'"],
            capture_output=True, text=True, timeout=30,
        )
        body, _, code = result.stdout.rpartition("\n")
        assert code.startswith("2"), (command, result.stdout, result.stderr)
        if "-X POST" in command and "/alerts/configs" in command:
            ids.setdefault("CONFIG_ID", json.loads(body)["id"])
        elif "-X POST" in command:
            ids.setdefault("ALERT_ID", json.loads(body)["id"])
    assert set(ids) == {"CONFIG_ID", "ALERT_ID"}


def test_webhookIsSignedOverHTTP(memcachier_server_factory):
    """
    A webhook config gets the documented JSON, signed with its secret.
    """
    import hashlib
    import hmac

    receiver = SlackStandIn()
    try:
        server = memcachier_server_factory(config=alertsConfig(freePort()))
        api = Api(server)
        config = api.config(delivery_type="webhook", webhook_url=receiver.url,
                            webhook_secret="shared secret")
        api.alert("memory_usage", 0, config["id"])
        pylibmcClient(server).set("one", b"1")
        request = waitFor(lambda: receiver.requests and receiver.requests[0], "the webhook")
        expected = "sha256=" + hmac.new(b"shared secret", request["raw"],
                                        hashlib.sha256).hexdigest()
        assert request["headers"]["X-Memcachier-Signature"] == expected
        body = request["json"]
        assert (body["event"], body["trigger_type"], body["threshold"]) == (
            "fired", "memory_usage", 0.0)
        assert body["cache_id"] == server.cache_id and body["value"] > 0
        assert body["dashboard_url"] == (
            f"http://127.0.0.1:{server.web_port}/caches/{server.cache_id}/")
    finally:
        receiver.stop()


def test_relayWithUntrustedCertificateGetsNothing(memcachier_server_factory, tmp_path,
                                                  monkeypatch):
    """
    STARTTLS is verified: a relay whose certificate comes from a CA the
    server does not trust receives no message, and the failure is recorded.
    """
    trusted = makeCA(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    untrusted = makeCA(other)
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted[0]))
    relay = SMTPServer(untrusted[1], untrusted[2])
    relay.start()
    try:
        server = memcachier_server_factory(config=alertsConfig(relay.port))
        api = Api(server)
        config = api.config(delivery_type="email", email="ops@example.com")
        alert = api.alert("memory_usage", 0, config["id"])
        pylibmcClient(server).set("one", b"1")

        def recorded():
            events = api.events(alert["id"])
            return events and events[0]["deliveries"][0]["last_error"]

        error = waitFor(recorded, "the failed STARTTLS recorded")
        assert "SMTP relay" in error
        assert relay.messages == []
    finally:
        relay.stop()


def test_oneNodeDeliversOnASharedControlPlane(memcachier_server_factory, postgresql_url, slack):
    """
    Two nodes on one PostgreSQL control plane, both serving the cache: the
    alert is delivered once, by the lease holder; when that node stops,
    the other takes the lease over and delivers the next alert.
    """
    config = alertsConfig(freePort())
    first = memcachier_server_factory(database=postgresql_url, config=config)
    second = memcachier_server_factory(database=postgresql_url, config=config,
                                       create_cache=False)
    second.cache_id, second.username, second.password = (
        first.cache_id, first.username, first.password)
    api = Api(first)
    slackConfig = api.config(delivery_type="slack", slack_url=slack.url)
    api.alert("memory_usage", 0, slackConfig["id"])
    for node in (first, second):
        pylibmcClient(node).set("one", b"1")
    waitFor(lambda: slack.accepted("fired"), "the firing")
    time.sleep(4)
    assert len(slack.requests) == 1
    holders = [n for n in (first, second) if "evaluates and delivers alerts" in n.log()]
    assert len(holders) == 1
    holder = holders[0]
    survivor = second if holder is first else first
    holder.stop()
    Api(survivor).alert("memory_usage", 0, slackConfig["id"])
    waitFor(lambda: len(slack.accepted("fired")) == 2, "the survivor's firing")
    assert "evaluates and delivers alerts" in survivor.log()
    time.sleep(3)
    assert len(slack.requests) == 2
