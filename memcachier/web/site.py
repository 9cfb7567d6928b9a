# -*- test-case-name: tests.unit.test_api -*-
"""
The node's HTTP site: the API's resource in a L{Site} that never shows a
traceback, caps request bodies, and answers every failure in JSON.

It also defends its descriptors and its memory against slow or greedy
clients (C{docs/operations.md}, "Limits"): a request's headers must arrive
within a header timeout and its body within a body timeout (else 408 and a
close), a declared body over the cap is refused with 413 before a byte of
it is read, an idle keep-alive connection closes after the idle timeout,
and connections past the site's own ceiling get a 503 and a close.  None
of these writes a log line per client: they are counted (L{APISite.counters})
and a refused connection is logged once per burst.
"""

import io
import json
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web import http, resource, server

from memcachier.tx.ceiling import Bursts

from memcachier.web.common import MAX_BODY


class CappedContent(io.BytesIO):
    """
    A request body buffer that keeps at most C{limit} bytes and discards
    the rest, remembering that it did (C{overflowed}), so a huge upload
    costs no memory.
    """

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.overflowed = False

    def write(self, data):
        room = self.limit + 1 - self.tell()
        if len(data) > room:
            self.overflowed = True
            data = data[: max(room, 0)]
        return super().write(data)


def _utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _jsonError(request, code, message):
    body = json.dumps({"error": message}).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.write(body)
    request.finish()


class APIRequest(server.Request):
    """
    A request whose too-large body is refused (413) before any resource
    sees it, and whose unexpected failures are answered with an opaque
    JSON 500 (logged with the traceback).
    """

    _log = Logger()

    def process(self):
        if getattr(self.content, "overflowed", False):
            self.site = self.channel.site
            _jsonError(self, 413, f"request body larger than {MAX_BODY} bytes")
            return
        if not _utf8(unquote_to_bytes(self.path)) or not _utf8(self.getRequestHostname()):
            # Klein would log a traceback per request: count it instead
            self.site = self.channel.site
            self.site.counters["bad_urls"] += 1
            self.unlogged = True
            _jsonError(self, 400, "the URL or Host is not UTF-8")
            return
        super().process()

    def processingFailed(self, reason):
        self._log.failure(
            "HTTP request {method} {path} failed",
            reason,
            method=self.method.decode("ascii", "replace"),
            path=self.path.decode("utf-8", "replace"),
        )
        if not self.finished and not self.startedWriting:
            _jsonError(self, 500, "internal error")
        elif not self.finished:
            self.finish()
        return reason


def _rawJSONResponse(code, reason, message):
    """
    A complete HTTP/1.1 response that closes the connection, for answers
    given before (or instead of) a L{Request}.
    """
    body = json.dumps({"error": message}).encode("utf-8")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (code, reason, len(body), body)
    )


class APIChannel(http.HTTPChannel):
    """
    An L{http.HTTPChannel} with deadlines: headers within
    C{site.headerTimeout} seconds of a request's first byte (or of the
    connection), a body within C{site.bodyTimeout} of its headers; a
    declared body over C{site.maxBody} refused at once.  The idle timeout
    (L{Site.timeout}) runs only between requests: from a request's first
    byte to its answer the header and body deadlines apply instead, so a
    client cut short mid-request gets its 408 and an idle one is closed
    without a word.
    """

    _deadline = None
    _refused = False
    #: between a request's first byte and its response's last
    _inRequest = False
    #: the node is stopping: close after the current request
    _draining = False

    def connectionMade(self):
        super().connectionMade()
        self.site.connectionOpened(self)
        self._arm(self.site.headerTimeout, "header")

    def connectionLost(self, reason):
        self._disarm()
        self.site.connectionClosed(self)
        super().connectionLost(reason)

    def dataReceived(self, data):
        if self._refused:
            return
        if not self._inRequest:
            self._requestBegins()
        super().dataReceived(data)

    def lineReceived(self, line):
        if line and not self._inRequest:
            # a request pipelined behind one answered within the same read
            self._requestBegins()
        super().lineReceived(line)

    def _requestBegins(self):
        """
        The first bytes of a request: its headers are due, and the idle
        timeout waits until it is answered (Twisted's C{requestDone}
        restores it), so a request cut short gets the 408 of its header or
        body deadline however short the idle timeout.
        """
        self._inRequest = True
        self._savedTimeOut = self.setTimeout(None)
        self._arm(self.site.headerTimeout, "header")

    def requestDone(self, request):
        self._inRequest = False
        if self._draining:
            self.persistent = False
        super().requestDone(request)

    def drain(self):
        """
        The node is stopping: close now if idle, else after the request
        under way is answered.
        """
        self._draining = True
        if not self._inRequest:
            self.loseConnection()
        elif self.requests:
            self.requests[-1].responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def allHeadersReceived(self):
        self._disarm()
        length = self.length
        if length is not None and length > self.site.maxBody:
            self._refuse(
                413, b"Request Entity Too Large",
                f"request body larger than {self.site.maxBody} bytes", "bodies_too_large",
            )
            return
        super().allHeadersReceived()
        if self._draining:
            self.persistent = False
            self.requests[-1].responseHeaders.setRawHeaders(b"Connection", [b"close"])
        if length != 0:
            self._arm(self.site.bodyTimeout, "body")

    def allContentReceived(self):
        if self._refused:
            return
        self._disarm()
        super().allContentReceived()

    def timeoutConnection(self):
        """
        The idle timeout (it only runs while no request is under way):
        close without the per-client log line Twisted writes.  Part of a
        request line left over from a read that also held an answered
        request is a request cut short: it gets the header 408.
        """
        if self._buffer.strip():
            self._late("header")
            return
        self.site.counters["idle_timeouts"] += 1
        self._abortingCall = self.callLater(self.abortTimeout, self.transport.abortConnection)
        self.loseConnection()

    def _arm(self, seconds, what):
        self._disarm()
        if seconds:
            self._deadline = self.site.clock.callLater(seconds, self._late, what)

    def _disarm(self):
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _late(self, what):
        self._deadline = None
        self._refuse(408, b"Request Timeout", f"request {what} not received in time",
                     what + "_timeouts")

    def _refuse(self, code, reason, message, counter):
        self._refused = True
        self.site.counters[counter] += 1
        self.transport.write(_rawJSONResponse(code, reason, message))
        self.loseConnection()
        self._abortingCall = self.site.clock.callLater(
            self.abortTimeout, self.transport.abortConnection
        )


class _Busy(Protocol):
    """
    Answers 503 and hangs up: the site is at its connection ceiling.
    """

    def connectionMade(self):
        self.transport.write(
            _rawJSONResponse(503, b"Service Unavailable", "too many open connections")
        )
        self.transport.loseConnection()


class APISite(server.Site):
    """
    A L{Site} of L{APIRequest}s with capped bodies, no tracebacks, request
    deadlines and a connection ceiling.

    @ivar counters: what the site refused or timed out, by kind
        (C{bodies_too_large}, C{header_timeouts}, C{body_timeouts},
        C{idle_timeouts}, C{bad_urls}, C{refused_connections}).
    @ivar open: the channels open now.
    """

    requestFactory = APIRequest
    protocol = APIChannel
    displayTracebacks = False
    maxBody = MAX_BODY
    noisy = False
    _log = Logger()

    def __init__(self, resource, reactor, maxConnections=None, headerTimeout=10.0,
                 bodyTimeout=30.0, idleTimeout=60.0, **kwargs):
        """
        @param reactor: the clock of every deadline.
        @param maxConnections: the ceiling, or L{None} for none.
        @param idleTimeout: seconds a connection may wait between requests.
        """
        super().__init__(resource, reactor=reactor, timeout=idleTimeout, **kwargs)
        self.clock = reactor
        self.maxConnections = maxConnections
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.open = set()
        self._drained = None
        self.refused = Bursts()
        self.counters = dict.fromkeys(
            ("bodies_too_large", "header_timeouts", "body_timeouts", "idle_timeouts",
             "bad_urls", "refused_connections"), 0,
        )

    def getContentFile(self, length):
        return CappedContent(self.maxBody)

    def log(self, request):
        """
        The access log, without the requests refused for being malformed:
        those are counted (L{counters}), so a flood of them writes nothing.
        """
        if not getattr(request, "unlogged", False):
            super().log(request)

    def buildProtocol(self, addr):
        if self.maxConnections is not None and self.connections >= self.maxConnections:
            self.counters["refused_connections"] += 1
            previous = self.refused.occurred(self.clock.seconds())
            if previous is not None:
                self._log.warn(
                    "web connection ceiling reached: {maxConnections} open; answering "
                    "503 (logged once per burst; {previousBurst} refused in the "
                    "previous burst)",
                    event="web_connections_refused",
                    maxConnections=self.maxConnections,
                    previousBurst=previous,
                )
            return _Busy()
        return super().buildProtocol(addr)

    @property
    def connections(self):
        """
        How many connections are open.
        """
        return len(self.open)

    def connectionOpened(self, channel):
        self.open.add(channel)

    def connectionClosed(self, channel):
        self.open.discard(channel)
        if not self.open and self._drained is not None:
            drained, self._drained = self._drained, None
            drained.callback(None)

    def drain(self):
        """
        Let every request under way finish, closing each connection after
        it (see L{memcachier.node.shutdown}).

        @return: a L{Deferred} firing when no connection is open.
        """
        if not self.open:
            return succeed(None)
        drained = self._drained = Deferred()
        for channel in list(self.open):
            channel.drain()
        return drained

    def abort(self):
        """
        Drop every connection still open.

        @return: how many were open.
        """
        left = list(self.open)
        for channel in left:
            channel.transport.abortConnection()
        return len(left)


class MountingRoot(resource.Resource):
    """
    The site's root: a few first path segments (C{heroku}, C{metrics})
    go to their own resources, everything else to C{default} (the API's
    Klein app, which routes on the whole path).
    """

    def __init__(self, default, mounts):
        super().__init__()
        self.default = default
        self.mounts = dict(mounts)

    def getChildWithDefault(self, name, request):
        mounted = self.mounts.get(name)
        if mounted is not None:
            return mounted
        # Hand the whole path to the default resource.
        request.postpath.insert(0, request.prepath.pop())
        return self.default

    def render(self, request):
        return self.default.render(request)


def makeSite(
    controlPlane, index, registry, settings, reactor, groups=(), maxConnections=None, mounts=None,
    sessions=None,
):
    """
    The node's web site: the analytics API v2 (and the route groups
    given) and, given C{sessions}, the dashboard around it.

    @param controlPlane: the L{memcachier.control.repository.AsyncControlPlane}.
    @param index: the L{memcachier.control.index.ControlIndex}.
    @param registry: the L{memcachier.runtime.CacheRegistry}.
    @param settings: the L{memcachier.node.settings.Settings}.
    @param reactor: the reactor (clock and the site's time source).
    @param groups: more route groups for L{AnalyticsAPI}.
    @param maxConnections: the site's connection ceiling, or L{None}.
    @param mounts: L{bytes} first path segment to the L{IResource} that
        serves it (C{b"heroku"}, C{b"metrics"}), outside the API's app.
    @param sessions: an L{memcachier.web.sso.AsyncSessionStore}: serve the
        dashboard, and let the API take its sessions.
    @rtype: L{APISite}
    """
    from memcachier.web.api import AnalyticsAPI

    api = AnalyticsAPI(controlPlane, index, registry, settings, reactor, groups)
    root = api.resource()
    if sessions is not None:
        from memcachier.web.dashboard.app import Dashboard
        from memcachier.web.dashboard.resource import DashboardRoot, SessionResolver

        resolver = SessionResolver(sessions, index, settings)
        dashboard = Dashboard(sessions, resolver, index, settings, reactor)
        root = DashboardRoot(resolver, root, dashboard.resource())
    if mounts:
        root = MountingRoot(root, mounts)
    site = APISite(
        root,
        reactor=reactor,
        maxConnections=maxConnections,
        headerTimeout=getattr(settings, "web_header_timeout", 10.0),
        bodyTimeout=getattr(settings, "web_body_timeout", 30.0),
        idleTimeout=getattr(settings, "web_idle_timeout", 60.0),
    )
    site.api = api
    return site
