# -*- test-case-name: tests.unit.test_api -*-
"""
The node's HTTP site: the router of every path (L{memcachier.web.router})
in a L{Site} that never shows a traceback, caps request bodies, and
answers every failure in JSON.

It also defends its descriptors and its memory against slow or greedy
clients (C{docs/operations.md}, "Limits"): a request's headers must arrive
within a header timeout and its body within a body timeout (else 408 and a
close), a declared body over the cap is refused with 413 before a byte of
it is read, an idle keep-alive connection closes after the idle timeout,
and connections past the web's connection ceiling
(L{memcachier.tx.ceiling.ConnectionCeiling}) get a 503 and a close.  None
of these writes a log line per client: they are counted (L{WebCounters})
and a refused connection is logged once per burst.

All of it stands on Twisted's public interfaces: the deadlines are armed
and disarmed by the request's documented steps (L{APIRequest}: created
when its request line arrives, L{APIRequest.gotLength} when its headers
are in, L{APIRequest.requestReceived} when its body is), and the
connection is watched by a L{policies.TimeoutProtocol} around the stock
L{http.HTTPChannel} (L{WebConnection}), which also owns the idle timeout.
Why not the idle timeout of L{http.HTTPFactory} (its C{timeout}
argument): its channel logs C{Timing out client} for each idle client,
and cannot tell a client idle between requests from one cut short in the
middle of a request line, which must get its 408.
"""

from __future__ import annotations

import io
import json
from typing import Any, Dict, Optional, Set
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.web import http, resource, server

from memcachier.tx.ceiling import ConnectionCeiling
from memcachier.web.common import MAX_BODY
from memcachier.web.dashboard.app import Dashboard
from memcachier.web.dashboard.resource import SessionResolver
from memcachier.web.router import makeRouter

_log = Logger()

#: What the site counts, by kind: requests it refused or timed out.
COUNTERS = (
    "bodies_too_large", "header_timeouts", "body_timeouts", "idle_timeouts", "bad_urls",
    "refused_connections",
)


class WebCounters(Dict[str, int]):
    """
    What the web site refused or timed out, by kind (L{COUNTERS}), for
    C{/metrics}: built before the site and the metrics, handed to both.
    """

    def __init__(self) -> None:
        super().__init__(dict.fromkeys(COUNTERS, 0))


class CappedContent(io.BytesIO):
    """
    A request body buffer that keeps at most C{limit} bytes and discards
    the rest, remembering that it did (C{overflowed}), so a huge upload
    costs no memory.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.overflowed = False

    def write(self, data: Any) -> int:
        room = self.limit + 1 - self.tell()
        if len(data) > room:
            self.overflowed = True
            data = data[: max(room, 0)]
        return super().write(data)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _jsonError(request: server.Request, code: int, message: str) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.write(body)
    request.finish()


def rawJSONResponse(code: int, reason: bytes, message: str) -> bytes:
    """
    A complete HTTP/1.1 response that closes the connection, for answers
    given before (or instead of) a L{server.Request}: a refused
    connection, a request past its deadline.
    """
    body = json.dumps({"error": message}).encode("utf-8")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (code, reason, len(body), body)
    )


class APIRequest(server.Request):
    """
    A request that keeps its connection's deadlines (L{WebConnection}):
    created when its request line arrives, it is under way, with its
    headers due; once they are in (L{gotLength}) its body is due, or it
    is refused (413) if it declares one over the cap; once the body is in
    (L{requestReceived}) no deadline runs while it is answered.

    A body cut short by the content buffer is refused (413) before any
    resource sees it, and unexpected failures are answered with an
    opaque JSON 500 (logged with the traceback).
    """

    def __init__(self, channel: http.HTTPChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        connectionOf = getattr(channel.site, "connectionOf", None)
        self.connection = connectionOf(channel.transport) if connectionOf else None
        self.unlogged = False
        if self.connection is not None:
            self.connection.requestBegins(self)

    def gotLength(self, length: Optional[int]) -> None:
        super().gotLength(length)
        if self.connection is not None:
            self.connection.headersReceived(self, length)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.connection is not None:
            self.connection.bodyReceived()
        super().requestReceived(command, path, version)

    def process(self) -> None:
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

    def processingFailed(self, reason: Any) -> Any:
        _log.failure(
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


class WebConnection(policies.TimeoutProtocol):
    """
    One connection of the site: the stock L{http.HTTPChannel} inside a
    L{policies.TimeoutProtocol}, which sees its bytes come in and owns
    its deadlines.

    From a request's first byte (or the connection's start) its headers
    are due within C{site.headerTimeout}, then its body within
    C{site.bodyTimeout}; past either, a 408 and a close.  Between
    requests the idle timeout (the L{policies.TimeoutProtocol}'s) runs,
    and closes without a word; while a request is under way it waits.

    @ivar requests: the requests under way (created, not yet answered).
    @ivar draining: the node is stopping: close after the current request.
    """

    def __init__(self, site: APISite, channel: http.HTTPChannel) -> None:
        super().__init__(site, channel, site.idleTimeout or None)
        self.site = site
        self.channel = channel
        self.requests: Set[APIRequest] = set()
        self.inRequest = False
        self.draining = False
        self.refused = False
        self.deadline: Optional[IDelayedCall] = None
        self.aborting: Optional[IDelayedCall] = None

    # -- the connection

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self.arm(self.site.headerTimeout, "header")

    def connectionLost(self, reason: Any) -> None:
        if self.wrappedProtocol is None:
            return  # told twice
        self.disarm()
        if self.aborting is not None and self.aborting.active():
            self.aborting.cancel()
        self.aborting = None
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        if not self.inRequest:
            # The first bytes of a request: its headers are due, and the
            # idle timeout waits until it is answered.
            self.inRequest = True
            self.cancelTimeout()
            self.arm(self.site.headerTimeout, "header")
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        if not self.refused:
            super().write(data)

    def writeSequence(self, data: Any) -> None:
        if not self.refused:
            super().writeSequence(data)

    # -- the steps of a request (from L{APIRequest})

    def requestBegins(self, request: APIRequest) -> None:
        """
        C{request}'s line arrived: its headers are due (from its first
        byte, if it had to wait behind an answered request, from now).
        """
        self.requests.add(request)
        request.notifyFinish().addBoth(self.requestDone, request)
        if not self.inRequest:
            self.inRequest = True
            self.cancelTimeout()
        if self.deadline is None:
            self.arm(self.site.headerTimeout, "header")

    def headersReceived(self, request: APIRequest, length: Optional[int]) -> None:
        """
        C{request}'s headers are in: refuse a declared body over the cap,
        else its body is due.
        """
        self.disarm()
        if length is not None and length > self.site.maxBody:
            self.refuse(
                413, b"Request Entity Too Large",
                f"request body larger than {self.site.maxBody} bytes", "bodies_too_large",
            )
            return
        if self.draining:
            self.channel.persistent = False
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        if length != 0:
            self.arm(self.site.bodyTimeout, "body")

    def bodyReceived(self) -> None:
        """
        A request is complete: no deadline while it is answered.
        """
        self.disarm()

    def requestDone(self, result: Any, request: APIRequest) -> None:
        """
        C{request} was answered (or its connection lost): once no request
        is under way, the idle timeout runs again.
        """
        self.requests.discard(request)
        if not self.requests and self.inRequest and not self.refused:
            self.inRequest = False
            if self.draining:
                self.channel.loseConnection()
            elif self.site.idleTimeout:
                self.setTimeout(self.site.idleTimeout)

    # -- stopping

    def drain(self) -> None:
        """
        The node is stopping: close now if idle, else after the request
        under way is answered.
        """
        self.draining = True
        if not self.inRequest:
            self.channel.loseConnection()
            return
        self.channel.persistent = False
        for request in self.requests:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    # -- deadlines

    def timeoutFunc(self) -> None:
        """
        The idle timeout (it only runs while no request is under way):
        close without a log line.  Part of a request line left over from
        a read that also held an answered request is a request cut short:
        it gets the header 408.
        """
        if self.channel.clearLineBuffer().strip():
            self.late("header")
            return
        self.site.counters["idle_timeouts"] += 1
        self.channel.loseConnection()
        self.abortLater()

    def arm(self, seconds: float, what: str) -> None:
        self.disarm()
        if seconds:
            self.deadline = self.site.reactor.callLater(seconds, self.late, what)

    def disarm(self) -> None:
        if self.deadline is not None:
            if self.deadline.active():
                self.deadline.cancel()
            self.deadline = None

    def late(self, what: str) -> None:
        self.deadline = None
        self.refuse(408, b"Request Timeout", f"request {what} not received in time",
                    what + "_timeouts")

    def refuse(self, code: int, reason: bytes, message: str, counter: str) -> None:
        """
        Answer C{code} outside any request and close.
        """
        self.disarm()
        self.cancelTimeout()
        self.site.counters[counter] += 1
        self.transport.write(rawJSONResponse(code, reason, message))
        self.refused = True
        self.channel.loseConnection()
        self.abortLater()

    def abortLater(self) -> None:
        """
        Drop the connection if it has not closed within the channel's
        C{abortTimeout} (a client that does not read).
        """
        if self.aborting is None:
            self.aborting = self.site.reactor.callLater(
                self.channel.abortTimeout, self.transport.abortConnection
            )


class APISite(server.Site):
    """
    A L{server.Site} of L{APIRequest}s with capped bodies, no tracebacks,
    request deadlines (L{WebConnection}) and a connection ceiling.

    @ivar counters: the L{WebCounters}.
    @ivar ceiling: the L{ConnectionCeiling} of the web listener.
    """

    requestFactory = APIRequest
    protocol = http.HTTPChannel
    displayTracebacks = False
    maxBody = MAX_BODY
    noisy = False

    def __init__(
        self,
        resource: resource.IResource,
        reactor: IReactorTime,
        ceiling: Optional[ConnectionCeiling] = None,
        counters: Optional[WebCounters] = None,
        headerTimeout: float = 10.0,
        bodyTimeout: float = 30.0,
        idleTimeout: float = 60.0,
        maxConnections: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        """
        @param reactor: the clock of every deadline.
        @param ceiling: the web's L{ConnectionCeiling} (L{webCeiling}).
        @param maxConnections: the ceiling's limit when C{ceiling} is not
            given (L{None}: no limit).
        @param counters: where refusals and timeouts are counted.
        @param idleTimeout: seconds a connection may wait between requests.
        """
        # The channel's own idle timeout is off: L{WebConnection} has it.
        super().__init__(resource, reactor=reactor, timeout=None, **kwargs)
        self.ceiling = ceiling if ceiling is not None else webCeiling(maxConnections, reactor)
        self.counters = counters if counters is not None else WebCounters()
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.idleTimeout = idleTimeout
        self.channels: Dict[http.HTTPChannel, WebConnection] = {}

    def getContentFile(self, length: Optional[int]) -> CappedContent:
        return CappedContent(self.maxBody)

    def log(self, request: Any) -> None:
        """
        The access log, without the requests refused for being malformed:
        those are counted (L{counters}), so a flood of them writes nothing.
        """
        if not getattr(request, "unlogged", False):
            super().log(request)

    def buildProtocol(self, addr: Any) -> Any:
        refusal = self.ceiling.admit()
        if refusal is not None:
            self.counters["refused_connections"] += 1
            return refusal
        return WebConnection(self, super().buildProtocol(addr))

    # -- what L{WebConnection} needs of its factory

    def callLater(self, period: float, f: Any) -> IDelayedCall:
        """
        The idle timeout's clock.
        """
        return self.reactor.callLater(period, f)

    def registerProtocol(self, connection: WebConnection) -> None:
        self.channels[connection.channel] = connection
        self.ceiling.opened(connection)

    def unregisterProtocol(self, connection: WebConnection) -> None:
        self.channels.pop(connection.channel, None)
        self.ceiling.closed(connection)

    def connectionOf(self, transport: Any) -> Optional[WebConnection]:
        """
        The L{WebConnection} whose channel writes to C{transport}, or
        L{None} for a request made outside one (a test's channel).
        """
        if isinstance(transport, WebConnection) and transport.site is self:
            return transport
        return None

    # -- stopping (see L{memcachier.node.shutdown})

    @property
    def connections(self) -> int:
        """
        How many connections are open.
        """
        return self.ceiling.connections

    def drain(self) -> Deferred:
        """
        Let every request under way finish, closing each connection after
        it.

        @return: a L{Deferred} firing when no connection is open.
        """
        return self.ceiling.drain()

    def abort(self) -> int:
        """
        Drop every connection still open.

        @return: how many were open.
        """
        return self.ceiling.abort()


def webCeiling(limit: Optional[int], clock: IReactorTime) -> ConnectionCeiling:
    """
    The web listener's L{ConnectionCeiling}: past C{limit} a connection is
    answered 503 and closed.
    """
    return ConnectionCeiling(
        limit, clock,
        refusal=rawJSONResponse(503, b"Service Unavailable", "too many open connections"),
        surface="web", refusedHow="answering 503",
    )


def makeSite(
    api: Any,
    settings: Any,
    reactor: IReactorTime,
    *,
    sessions: Any = None,
    heroku: Any = None,
    metrics: Any = None,
    ceiling: Optional[ConnectionCeiling] = None,
    counters: Optional[WebCounters] = None,
    throttle: Any = None,
    health: Any = None,
) -> APISite:
    """
    The node's web site: one router (L{memcachier.web.router.makeRouter})
    of the API v2, the dashboard (given C{sessions}), Heroku's partner
    API and C{/metrics}, in an L{APISite}.

    @param api: the L{memcachier.web.api.CacheAPI}, with its route groups.
    @param settings: the L{memcachier.node.settings.Settings} (C{[web]}).
    @param reactor: the reactor (clock and the site's time source).
    @param sessions: an L{memcachier.web.sso.AsyncSessionStore}: serve the
        dashboard, and let the API take its sessions; L{None} for none.
    @param heroku: the L{memcachier.heroku.api.HerokuAPI}, or L{None}.
    @param metrics: the L{memcachier.web.metrics.MetricsResource}, or
        L{None}.
    @param ceiling: the web's L{ConnectionCeiling} (L{webCeiling}), or
        L{None} for none.
    @param counters: the L{WebCounters} C{/metrics} reads, or L{None}.
    @param health: the L{memcachier.web.health.Health} probes, or L{None}.
    @param throttle: the memcache logins' L{memcachier.protocols.throttle.AuthThrottle},
        which the dashboard's sign-in shares; L{None}: one of its own.
    """
    dashboard = resolver = None
    if sessions is not None:
        resolver = SessionResolver(sessions, api.index, settings)
        dashboard = Dashboard(sessions, resolver, api.index, settings, reactor, throttle)
    router = makeRouter(api, dashboard, resolver, heroku, metrics, health)
    return APISite(
        router.resource(),
        reactor=reactor,
        ceiling=ceiling,
        counters=counters,
        headerTimeout=settings.web.header_timeout,
        bodyTimeout=settings.web.body_timeout,
        idleTimeout=settings.web.idle_timeout,
    )
