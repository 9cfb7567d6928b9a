# -*- test-case-name: tests.unit.test_alerts_delivery -*-
"""
Deliverers (L{IAlertDeliverer}): email through an SMTP relay with
Twisted's own client, Slack incoming webhooks and signed webhooks with
treq.  Each sends one message once; retrying is the service's job.  All of
them run on the reactor and take it (or a treq client) as a parameter.

Also here: the checks of destinations the API applies (L{checkEmail},
L{checkHookURL}).
"""

import email.message
import email.policy
import email.utils
import hashlib
import hmac
import io
import ipaddress
import json
import re
from urllib.parse import urlsplit

import attr
import treq
from twisted.internet import defer
from twisted.internet.ssl import optionsForClientTLS
from twisted.mail.smtp import ESMTPSenderFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from memcachier.interfaces import IAlertDeliverer

#: The webhook signature header: C{sha256=} + hex HMAC-SHA256 of the body
#: with the config's secret.
SIGNATURE_HEADER = b"X-Memcachier-Signature"

#: Seconds a delivery attempt may take before it counts as failed.
DEFAULT_TIMEOUT = 30.0


class DeliveryError(Exception):
    """
    The destination refused the message or did not answer; C{str()} says
    how, for the delivery's C{last_error}.
    """


class DestinationError(ValueError):
    """
    A delivery config's destination is unusable (API: 400 with C{str()}).
    """


# -- destination checks

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^{_LOCAL}@{_LABEL}(?:\.{_LABEL})*$")


def checkEmail(address):
    """
    @raise DestinationError: C{address} is not a plain C{local@domain}
        address (no display name, no comments, at most 254 characters).
    """
    if not isinstance(address, str) or len(address) > 254 or not _EMAIL.match(address):
        raise DestinationError(f"not an email address such as ops@example.com: {address!r}")


_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def checkHookURL(url, allowHttpLoopback=False, what="URL"):
    """
    A Slack or webhook URL must be C{https://}; C{http://} only on
    127.0.0.1 or ::1, and only when C{[alerts] allow_http_loopback} says
    so (tests).

    @raise DestinationError: it is not.
    """
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise DestinationError(f"{what}: expected an https:// URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port
    except ValueError:
        raise DestinationError(f"{what}: not a URL: {url!r}") from None
    if not host or any(c.isspace() for c in url):
        raise DestinationError(f"{what}: not a URL: {url!r}")
    if parts.scheme == "https":
        return
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(host) in _LOOPBACK
        except ValueError:
            loopback = False
        if loopback and allowHttpLoopback:
            return
        if loopback:
            raise DestinationError(
                f"{what}: http:// on loopback is accepted only with "
                "[alerts] allow_http_loopback = true; use https://"
            )
    raise DestinationError(f"{what}: must be an https:// URL, not {url!r}")


# -- deliverers


def _withTimeout(d, clock, timeout, what):
    """
    Cancel C{d} after C{timeout} seconds of C{clock}, failing it with a
    L{DeliveryError} saying so.
    """
    timedOut = []

    def expire():
        timedOut.append(True)
        d.cancel()

    call = clock.callLater(timeout, expire)

    def done(result):
        if call.active():
            call.cancel()
        if timedOut and isinstance(result, Failure):
            raise DeliveryError(f"{what}: no answer within {timeout:g}s")
        return result

    return d.addBoth(done)


def _checkResponse(response, what):
    """
    A 2xx answer is a delivery; anything else is a L{DeliveryError} with
    the code and the start of the body.
    """
    def judge(body):
        if 200 <= response.code < 300:
            return response.code
        snippet = body[:200].decode("utf-8", "replace")
        raise DeliveryError(f"{what} answered HTTP {response.code}: {snippet}")

    return treq.content(response).addCallback(judge)


@implementer(IAlertDeliverer)
class SlackDeliverer:
    """
    Posts to a Slack incoming webhook: C{{"text": ..., "channel": ...}}.
    """

    def __init__(self, http, clock, url, channel="", timeout=DEFAULT_TIMEOUT):
        """
        @param http: a treq L{HTTPClient} (or C{StubTreq} in tests).
        @param clock: for the timeout.
        """
        self.http = http
        self.clock = clock
        self.url = url
        self.channel = channel
        self.timeout = timeout

    def deliver(self, message):
        body = json.dumps(message.slackJSON(self.channel)).encode("utf-8")
        d = self.http.post(
            self.url, data=body, headers={b"Content-Type": [b"application/json"]}
        )
        d.addCallback(_checkResponse, "Slack")
        return _withTimeout(d, self.clock, self.timeout, "Slack")


def signature(secret, body):
    """
    The value of L{SIGNATURE_HEADER} for C{body}: C{sha256=<hex>}.

    @type secret: L{str}
    @type body: L{bytes}
    @rtype: L{bytes}
    """
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return b"sha256=" + digest.encode("ascii")


@implementer(IAlertDeliverer)
class WebhookDeliverer:
    """
    POSTs the message's JSON (L{AlertMessage.webhookJSON}) signed with
    HMAC-SHA256 of the body in L{SIGNATURE_HEADER}.
    """

    def __init__(self, http, clock, url, secret, timeout=DEFAULT_TIMEOUT):
        self.http = http
        self.clock = clock
        self.url = url
        self.secret = secret
        self.timeout = timeout

    def deliver(self, message):
        body = json.dumps(message.webhookJSON()).encode("utf-8")
        d = self.http.post(
            self.url,
            data=body,
            headers={
                b"Content-Type": [b"application/json"],
                SIGNATURE_HEADER: [signature(self.secret, body)],
            },
        )
        d.addCallback(_checkResponse, "webhook")
        return _withTimeout(d, self.clock, self.timeout, "webhook")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class SMTPSettings:
    """
    C{[alerts.smtp]}.

    @ivar starttls: C{"required"} (refuse a relay without STARTTLS or with
        a certificate not valid for C{host}), C{"optional"} (use it when
        offered, verified), or C{"off"}.
    """

    host: str = "localhost"
    port: int = 25
    starttls: str = "required"
    username: str = ""
    password: str = ""
    sender: str = "alerts@localhost"


def renderEmail(message, sender, recipient, clock):
    """
    The RFC 5322 message of an alert.

    @rtype: L{bytes}
    """
    mail = email.message.EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = message.subject()
    mail["Date"] = email.utils.formatdate(clock.seconds(), usegmt=True)
    domain = sender.rpartition("@")[2] or "localhost"
    mail["Message-ID"] = email.utils.make_msgid("alert", domain=domain)
    mail["X-Memcachier-Alert"] = f"{message.alertId} {message.kind}"
    mail.set_content(message.text())
    # Lines up to RFC 5322's 998: a subject folded right after "Subject:"
    # reads with a leading space in some clients.  Line ends stay "\n":
    # the SMTP client turns them into CRLF.
    return mail.as_bytes(policy=email.policy.default.clone(max_line_length=998))


def tcpConnector(reactor):
    """
    C{connect(host, port, factory)} over TCP, for L{EmailDeliverer}.

    @return: the connector (its C{disconnect} aborts the attempt).
    """

    def connect(host, port, factory):
        return reactor.connectTCP(host, port, factory)

    return connect


@implementer(IAlertDeliverer)
class EmailDeliverer:
    """
    Sends an alert through the configured SMTP relay with Twisted's
    L{ESMTPSenderFactory}: STARTTLS with the certificate checked against
    the relay's host name (C{optionsForClientTLS}), required by default;
    login only when a username is configured.
    """

    def __init__(self, settings, recipient, clock, connect, timeout=DEFAULT_TIMEOUT):
        """
        @type settings: L{SMTPSettings}
        @param recipient: the address to send to.
        @param clock: for the timeout and the C{Date} header.
        @param connect: C{connect(host, port, factory)} (L{tcpConnector}).
        """
        self.settings = settings
        self.recipient = recipient
        self.clock = clock
        self.connect = connect
        self.timeout = timeout

    def _contextFactory(self):
        return optionsForClientTLS(self.settings.host)

    def deliver(self, message):
        s = self.settings
        body = renderEmail(message, s.sender, self.recipient, self.clock)
        result = defer.Deferred()
        useTLS = s.starttls != "off"
        factory = ESMTPSenderFactory(
            s.username.encode("utf-8") if s.username else None,
            s.password.encode("utf-8") if s.username else None,
            s.sender,
            [self.recipient],
            io.BytesIO(body),
            result,
            retries=0,
            contextFactory=self._contextFactory() if useTLS else None,
            requireAuthentication=bool(s.username),
            requireTransportSecurity=s.starttls == "required",
        )
        connector = self.connect(s.host, s.port, factory)

        def cancel(d):
            factory.sendFinished = True
            if connector is not None:
                connector.disconnect()

        outer = defer.Deferred(cancel)
        result.addCallbacks(outer.callback, lambda f: _smtpFailure(f, outer))
        return _withTimeout(outer, self.clock, self.timeout, "SMTP relay")


def _smtpFailure(failure, outer):
    if outer.called:
        return None
    outer.errback(DeliveryError(f"SMTP relay: {failure.getErrorMessage()}"))
    return None
