"""
Deliverers without sockets: Slack and webhook against treq's
L{RequestSequence}, email through Twisted's SMTP client talking to a fake
relay over a L{StringTransport}; the message format; destination checks.
"""

import email
import email.policy
import hashlib
import hmac
import json

import pytest
from treq.testing import HasHeaders, RequestSequence, StringStubbingResource, StubTreq
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from memcachier.alerts import delivery
from memcachier.alerts.delivery import (
    DeliveryError,
    DestinationError,
    EmailDeliverer,
    SlackDeliverer,
    SMTPSettings,
    WebhookDeliverer,
    checkEmail,
    checkHookURL,
)
from memcachier.alerts.message import AlertMessage
from memcachier.interfaces import IAlertDeliverer

MESSAGE = AlertMessage(
    kind="fired", alertId=4, cacheId=7, cacheName="orange-cat", triggerType="hit_rate",
    description="checkout cache", value=12.5, threshold=50.0, time=1_700_000_000.0,
    dashboardUrl="http://127.0.0.1:8080/caches/7/",
)
SLACK_URL = "https://hooks.slack.test/services/T/B/X"


def outcome(d):
    results = []
    d.addBoth(results.append)
    assert results, "not fired"
    return results[0]


def test_messageNamesEverything():
    """
    The subject and text name the cache, the trigger, the measured value,
    the threshold, the time and the dashboard link.
    """
    assert MESSAGE.subject() == (
        "[memcachier] ALERT cache orange-cat: hit_rate below 50% (measured 12.5%)"
    )
    text = MESSAGE.text()
    for fragment in ("orange-cat", "hit_rate below 50%", "Measured:  12.5%", "Threshold: 50%",
                     "2023-11-14T22:13:20Z", "http://127.0.0.1:8080/caches/7/",
                     "checkout cache"):
        assert fragment in text
    assert AlertMessage.fromJSON(MESSAGE.toJSON()) == MESSAGE


def test_resolvedSubject():
    import attr

    resolved = attr.evolve(MESSAGE, kind="resolved", value=80.0)
    assert resolved.subject() == (
        "[memcachier] RESOLVED cache orange-cat: hit_rate back at 80% (threshold 50%)"
    )


def sequence(expected, failures):
    seq = RequestSequence(expected, failures.append)
    return seq, StubTreq(StringStubbingResource(seq))


def test_slackPostsIncomingWebhookJSON():
    failures = []
    body = json.dumps(MESSAGE.slackJSON("#alerts")).encode()
    seq, stub = sequence(
        [((b"post", SLACK_URL, {}, HasHeaders({b"Content-Type": [b"application/json"]}), body),
          (200, {}, b"ok"))],
        failures,
    )
    deliverer = SlackDeliverer(stub, Clock(), SLACK_URL, "#alerts")
    verifyObject(IAlertDeliverer, deliverer)
    with seq.consume(pytest.fail):
        result = outcome(deliverer.deliver(MESSAGE))
    assert result == 200
    assert failures == []
    payload = json.loads(body)
    assert payload["channel"] == "#alerts"
    assert "orange-cat" in payload["text"] and "12.5%" in payload["text"]


@pytest.mark.parametrize("code", [500, 404, 403])
def test_slackNon2xxIsAFailure(code):
    failures = []
    seq, stub = sequence(
        [((b"post", SLACK_URL, {}, HasHeaders({}), json.dumps(MESSAGE.slackJSON()).encode()),
          (code, {}, b"no_service"))],
        failures,
    )
    with seq.consume(pytest.fail):
        result = outcome(SlackDeliverer(stub, Clock(), SLACK_URL).deliver(MESSAGE))
    assert isinstance(result, Failure) and result.check(DeliveryError)
    assert f"HTTP {code}" in str(result.value) and "no_service" in str(result.value)
    assert failures == []


def test_webhookIsSigned():
    failures = []
    body = json.dumps(MESSAGE.webhookJSON()).encode()
    expected = b"sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest().encode()
    url = "https://example.test/hook"
    seq, stub = sequence(
        [((b"post", url, {}, HasHeaders({b"X-Memcachier-Signature": [expected]}), body),
          (204, {}, b""))],
        failures,
    )
    deliverer = WebhookDeliverer(stub, Clock(), url, "s3cret")
    verifyObject(IAlertDeliverer, deliverer)
    with seq.consume(pytest.fail):
        assert outcome(deliverer.deliver(MESSAGE)) == 204
    assert failures == []
    sent = json.loads(body)
    assert sent["event"] == "fired" and sent["cache_name"] == "orange-cat"
    assert sent["value"] == 12.5 and sent["threshold"] == 50.0
    assert sent["time"] == "2023-11-14T22:13:20Z"


def test_httpTimeout():
    """
    A destination that does not answer fails the delivery after the
    timeout, on the injected clock.
    """
    from twisted.internet.defer import Deferred

    class Silent:
        def post(self, url, **kwargs):
            return Deferred()

    clock = Clock()
    d = SlackDeliverer(Silent(), clock, SLACK_URL, timeout=10).deliver(MESSAGE)
    assert not d.called
    clock.advance(10)
    result = outcome(d)
    assert result.check(DeliveryError) and "no answer within 10s" in str(result.value)


# -- email


class FakeConnector:
    disconnected = False

    def disconnect(self):
        self.disconnected = True


class FakeRelay:
    """
    Connects the SMTP client to a L{StringTransport} and plays the relay's
    side by hand.
    """

    def __init__(self):
        self.connections = []

    def connect(self, host, port, factory):
        self.host, self.port = host, port
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.protocol, self.transport = protocol, transport
        self.connector = FakeConnector()
        return self.connector

    def say(self, line):
        self.protocol.dataReceived(line + b"\r\n")

    def heard(self):
        data = self.transport.value()
        self.transport.clear()
        return data

    def pump(self):
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()


def test_emailThroughTwistedSMTPClient():
    relay = FakeRelay()
    settings = SMTPSettings(host="relay.test", port=2525, starttls="off",
                            sender="alerts@memcachier.test")
    deliverer = EmailDeliverer(settings, "ops@example.com", Clock(), relay.connect)
    verifyObject(IAlertDeliverer, deliverer)
    d = deliverer.deliver(MESSAGE)
    assert (relay.host, relay.port) == ("relay.test", 2525)
    relay.say(b"220 relay.test ESMTP")
    assert relay.heard().startswith(b"EHLO ")
    relay.say(b"250-relay.test\r\n250 8BITMIME")
    assert relay.heard() == b"MAIL FROM:<alerts@memcachier.test>\r\n"
    relay.say(b"250 ok")
    assert relay.heard() == b"RCPT TO:<ops@example.com>\r\n"
    relay.say(b"250 ok")
    assert relay.heard() == b"DATA\r\n"
    relay.say(b"354 go on")
    relay.pump()
    data = relay.heard()
    assert data.endswith(b"\r\n.\r\n")
    mail = email.message_from_bytes(data[:-5].replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert mail["From"] == "alerts@memcachier.test" and mail["To"] == "ops@example.com"
    assert " ".join(mail["Subject"].split()) == MESSAGE.subject()
    assert "http://127.0.0.1:8080/caches/7/" in mail.get_payload()
    relay.say(b"250 queued")
    assert not d.called or not isinstance(outcome(d), Failure)
    relay.say(b"221 bye")
    relay.protocol.connectionLost(Failure(Exception("closed")))
    assert not isinstance(outcome(d), Failure)


def test_emailRequiresSTARTTLS():
    """
    With C{starttls = "required"} (the default) a relay that does not offer
    STARTTLS gets no mail: the delivery fails.
    """
    relay = FakeRelay()
    deliverer = EmailDeliverer(SMTPSettings(host="relay.test"), "ops@example.com", Clock(),
                               relay.connect)
    d = deliverer.deliver(MESSAGE)
    relay.say(b"220 relay.test ESMTP")
    relay.heard()
    relay.say(b"250-relay.test\r\n250 AUTH PLAIN")
    assert b"MAIL FROM" not in relay.heard()
    relay.protocol.connectionLost(Failure(Exception("closed")))
    result = outcome(d)
    assert result.check(DeliveryError)
    assert "TLS" in str(result.value)


def test_emailRelayRefusal():
    relay = FakeRelay()
    settings = SMTPSettings(host="relay.test", starttls="off")
    d = EmailDeliverer(settings, "ops@example.com", Clock(), relay.connect).deliver(MESSAGE)
    relay.say(b"220 relay.test ESMTP")
    relay.say(b"250 relay.test")
    relay.say(b"550 sender rejected")
    relay.protocol.connectionLost(Failure(Exception("closed")))
    result = outcome(d)
    assert result.check(DeliveryError) and "550" in str(result.value)


def test_emailTimeout():
    relay = FakeRelay()
    clock = Clock()
    d = EmailDeliverer(SMTPSettings(starttls="off"), "ops@example.com", clock, relay.connect,
                       timeout=30).deliver(MESSAGE)
    clock.advance(30)
    result = outcome(d)
    assert result.check(DeliveryError) and "no answer within 30s" in str(result.value)
    assert relay.connector.disconnected


def test_emailUsesVerifiedTLSForTheRelayName():
    """
    STARTTLS options check the certificate against the relay's host name.
    """
    deliverer = EmailDeliverer(SMTPSettings(host="relay.test"), "x@y", Clock(), None)
    options = deliverer._contextFactory()
    assert options._hostnameASCII == "relay.test"


# -- destination checks


@pytest.mark.parametrize("address", ["ops@example.com", "a.b+c@mail.example.co.uk", "root@localhost"])
def test_goodEmails(address):
    checkEmail(address)


@pytest.mark.parametrize("address", ["", "ops", "ops@", "@example.com", "a b@example.com",
                                     "Ops <ops@example.com>", "ops@exa mple.com", "a@b@c",
                                     "x" * 250 + "@example.com", "ops@-bad.com"])
def test_badEmails(address):
    with pytest.raises(DestinationError):
        checkEmail(address)


def test_hookURLs():
    checkHookURL("https://hooks.slack.com/services/x")
    checkHookURL("http://127.0.0.1:9000/hook", allowHttpLoopback=True)
    checkHookURL("http://[::1]:9000/hook", allowHttpLoopback=True)
    for url, allow, fragment in [
        ("http://hooks.slack.com/services/x", True, "https://"),
        ("http://127.0.0.1:9000/hook", False, "allow_http_loopback"),
        ("http://localhost:9000/hook", True, "https://"),
        ("ftp://example.com/", False, "https://"),
        ("https://", False, "not a URL"),
        ("https://exa mple.com/", False, "not a URL"),
        ("https://example.com:99999/", False, "not a URL"),
        ("", False, "https://"),
    ]:
        with pytest.raises(DestinationError, match=fragment.replace("/", "/")):
            checkHookURL(url, allowHttpLoopback=allow)


def test_optionalSTARTTLSGoesOnWithoutIt():
    """
    C{starttls = "optional"}: a relay without STARTTLS still gets the mail.
    """
    relay = FakeRelay()
    settings = SMTPSettings(host="relay.test", starttls="optional")
    d = EmailDeliverer(settings, "ops@example.com", Clock(), relay.connect).deliver(MESSAGE)
    relay.say(b"220 relay.test ESMTP")
    relay.heard()
    relay.say(b"250-relay.test\r\n250 8BITMIME")
    assert relay.heard().startswith(b"MAIL FROM:")
    assert not d.called


def test_loginWhenAUsernameIsConfigured():
    relay = FakeRelay()
    settings = SMTPSettings(host="relay.test", starttls="off", username="bot", password="pw")
    EmailDeliverer(settings, "ops@example.com", Clock(), relay.connect).deliver(MESSAGE)
    relay.say(b"220 relay.test ESMTP")
    relay.heard()
    relay.say(b"250-relay.test\r\n250 AUTH PLAIN")
    import base64

    line = relay.heard()
    assert line.startswith(b"AUTH PLAIN ")
    assert base64.b64decode(line[len(b"AUTH PLAIN "):].strip()).endswith(b"\0bot\0pw")
