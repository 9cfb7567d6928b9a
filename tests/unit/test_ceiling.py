"""
Tests for the connection ceilings (L{memcachier.tx.ceiling}, its
L{ConnectionCeiling}, the memcache
factory, the web site), the web site's deadlines and refusals, and the
graceful stop and certificate reload of L{memcachier.node.shutdown}.
"""

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import capturedLogs
from twisted.web.resource import Resource

from memcachier.tx.ceiling import Bursts, ConnectionCeiling, connectionCeilings
from memcachier.protocols.sniff import MemcacheFactory, memcacheConnectionCeiling
from memcachier.node.shutdown import CertificateReloader, NodeService
from memcachier.node.tls import ReloadingContextFactory
from memcachier.web.site import APISite
from tests.unit.helpers import World


def test_ceilingsFitUnderTheDescriptorLimit():
    """
    By default the web gets min(1024, limit/4) and memcache what is left
    after the reserve; explicit values that do not fit are an error
    saying so.
    """
    assert connectionCeilings(0, 0, 1024) == (1024 - 64 - 256, 256)
    assert connectionCeilings(0, 0, 256) == (128, 64)
    assert connectionCeilings(0, 0, 20000) == (20000 - 64 - 1024, 1024)
    assert connectionCeilings(100, 50, 1024) == (100, 50)
    with pytest.raises(ValueError, match="exceed the descriptor limit 1024"):
        connectionCeilings(2000, 0, 1024)
    with pytest.raises(ValueError):
        connectionCeilings(0, 1000, 1024)


def test_bursts():
    """
    The first event after a quiet period starts a burst and reports the
    previous burst's size; the rest report nothing.
    """
    bursts = Bursts(quietPeriod=10)
    assert bursts.occurred(0) == 0
    assert [bursts.occurred(t) for t in (1, 2, 11)] == [None, None, None]
    assert bursts.occurred(30) == 4
    assert bursts.total == 5


class OpenProtocol:
    """
    A protocol as the ceiling sees it: C{drain()} and a C{transport}.
    """

    def __init__(self, ceiling):
        self.ceiling = ceiling
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = self
        self.drained = False

    def drain(self):
        self.drained = True

    def connectionLost(self, reason):
        self.ceiling.closed(self)


def test_connectionCeiling():
    """
    L{ConnectionCeiling} admits up to its limit, then hands out a
    protocol that writes the surface's refusal and closes, logging the
    first refusal of a burst in the surface's words; L{None} is no limit.
    """
    clock = Clock()
    ceiling = ConnectionCeiling(1, clock, refusal=b"no\r\n", surface="web", refusedHow="answering 503")
    assert ceiling.admit() is None
    first = OpenProtocol(ceiling)
    ceiling.opened(first)
    with capturedLogs() as events:
        refusals = [ceiling.admit() for _ in range(3)]
    assert [e["log_format"].split(":")[0] for e in events] == ["web connection ceiling reached"]
    assert events[0]["event"] == "web_connections_refused"
    assert "answering 503 (logged once per burst" in events[0]["log_format"]
    transport = StringTransportWithDisconnection()
    transport.protocol = refusals[0]
    refusals[0].makeConnection(transport)
    assert transport.value() == b"no\r\n" and not transport.connected
    assert ceiling.refused.total == 3 and ceiling.connections == 1
    ceiling.closed(first)
    assert ceiling.admit() is None
    unlimited = ConnectionCeiling(None, clock)
    for _ in range(1000):
        unlimited.opened(object())
    assert unlimited.admit() is None


def test_connectionCeilingDrainAndAbort():
    """
    L{ConnectionCeiling.drain} asks every open protocol to drain and fires
    once the last one closed; L{ConnectionCeiling.abort} aborts those
    left.
    """
    ceiling = ConnectionCeiling(10, Clock())
    assert ceiling.drain().called
    protocols = [OpenProtocol(ceiling) for _ in range(3)]
    for protocol in protocols:
        ceiling.opened(protocol)
    drained = ceiling.drain()
    assert all(p.drained for p in protocols) and not drained.called
    protocols[0].transport.loseConnection()
    assert not drained.called
    assert ceiling.abort() == 2
    assert not any(p.transport.connected for p in protocols)
    assert drained.called and ceiling.connections == 0


def connect(factory, clock=None):
    proto = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
    transport = StringTransportWithDisconnection()
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto, transport


def test_memcacheCeiling():
    """
    Past the ceiling a connection gets memcached's C{ERROR Too many open
    connections} and is closed; one log line per burst; a closed
    connection frees its slot.
    """
    world = World()
    factory = MemcacheFactory(
        world.registry, world.clock, ceiling=memcacheConnectionCeiling(2, world.clock)
    )
    with capturedLogs() as events:
        first, firstTransport = connect(factory)
        connect(factory)
        refused = [connect(factory)[1] for _ in range(5)]
    assert all(t.value() == b"ERROR Too many open connections\r\n" for t in refused)
    assert not any(t.connected for t in refused)
    assert [e["event"] for e in events if "event" in e] == ["memcache_connections_refused"]
    firstTransport.loseConnection()
    assert factory.connections == 1
    proto, transport = connect(factory)
    proto.dataReceived(b"version\r\n")
    assert transport.value().startswith(b"VERSION ")


def test_memcacheDrain():
    """
    Draining closes every connection; its Deferred fires when the last is
    gone.
    """
    world = World()
    factory = MemcacheFactory(world.registry, world.clock)
    transports = [connect(factory)[1] for _ in range(3)]
    d = factory.drain()
    assert not any(t.connected for t in transports)
    assert d.called and factory.connections == 0


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"

    def render_POST(self, request):
        return b"got %d" % len(request.content.read())


def site(**kwargs):
    clock = Clock()
    return APISite(Hello(), reactor=clock, **kwargs), clock


def web(site):
    channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
    transport = StringTransportWithDisconnection()
    transport.protocol = channel
    channel.makeConnection(transport)
    return channel, transport


def test_headerTimeout():
    """
    Headers trickling in past the header timeout get 408 and a close,
    however recent the last byte; nothing is logged.
    """
    s, clock = site(headerTimeout=10)
    channel, transport = web(s)
    with capturedLogs() as events:
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20:
            channel.dataReceived(bytes([byte]))
            clock.advance(0.5)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout")
    assert not transport.connected
    assert s.counters["header_timeouts"] == 1
    assert list(events) == []


def test_bodyTimeout():
    """
    A body that stops arriving gets 408 after the body timeout; one that
    arrives in time is answered.
    """
    s, clock = site(bodyTimeout=5)
    channel, transport = web(s)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    clock.advance(4)
    channel.dataReceived(b"cd")
    assert b"got 4" in transport.value()
    transport.clear()
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    clock.advance(5)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert s.counters["body_timeouts"] == 1


@pytest.mark.parametrize("idleTimeout", [5, 2])
def test_idleTimeoutWaitsForTheBody(idleTimeout):
    """
    With an idle timeout as short as the body timeout, or shorter, a
    client that sent its headers and part of its body gets the body
    timeout's 408, not a silent close; the idle timeout starts again once
    the request is answered.
    """
    s, clock = site(bodyTimeout=5, idleTimeout=idleTimeout)
    channel, transport = web(s)
    with capturedLogs() as events:
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        clock.advance(min(idleTimeout, 4.9))
        assert transport.connected and transport.value() == b""
        clock.advance(5 - min(idleTimeout, 4.9))
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout")
    assert b"request body not received in time" in transport.value()
    assert (s.counters["body_timeouts"], s.counters["idle_timeouts"]) == (1, 0)
    assert list(events) == []


def test_idleTimeoutWaitsForTheHeaders():
    """
    Headers cut short get the header timeout's 408 even when the idle
    timeout is shorter.
    """
    s, clock = site(headerTimeout=5, idleTimeout=1)
    channel, transport = web(s)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    clock.advance(5)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout")
    assert s.counters["header_timeouts"] == 1


def test_idleConnectionClosedSilently():
    """
    A keep-alive connection with no request under way is closed after the
    idle timeout without a byte and without a log line, counted; requests
    answered before it (pipelined ones included) reset nothing early.
    """
    s, clock = site(bodyTimeout=5, idleTimeout=5)
    channel, transport = web(s)
    with capturedLogs() as events:
        channel.dataReceived(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab"
        )
        clock.advance(4)
        channel.dataReceived(b"cd")
        answered = transport.value()
        assert answered.count(b"HTTP/1.1 200 ") == 2 and b"got 4" in answered
        clock.advance(4.9)
        assert transport.connected
        clock.advance(0.1)
    assert not transport.connected
    assert transport.value() == answered
    assert s.counters["idle_timeouts"] == 1
    assert s.counters["body_timeouts"] == 0
    assert list(events) == []


def test_partialRequestBehindAnAnsweredOne():
    """
    Part of a request line arriving in the same read as a request that is
    answered at once is a request cut short, not an idle connection: the
    header 408 when the idle timeout passes.
    """
    s, clock = site(headerTimeout=10, idleTimeout=2)
    channel, transport = web(s)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOS")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    transport.clear()
    clock.advance(2)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout")
    assert s.counters["header_timeouts"] == 1


def test_declaredBodyTooLarge():
    """
    A declared length over the cap is refused with 413 before any body is
    read, and never dispatched.
    """
    s, clock = site()
    channel, transport = web(s)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert not transport.connected
    channel.dataReceived(b"x" * 1000)
    assert b"got" not in transport.value()
    assert s.counters["bodies_too_large"] == 1


def test_badURLCounted():
    """
    A URL that is not UTF-8 once unquoted is a 400, counted, with no
    access-log line.
    """
    s, clock = site()
    channel, transport = web(s)
    with capturedLogs() as events:
        channel.dataReceived(b"GET /api/v2/caches/%ff/stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert s.counters["bad_urls"] == 1
    assert list(events) == []


def test_webCeiling():
    """
    Past its ceiling the site answers 503 and closes, logging once per
    burst.
    """
    s, clock = site(maxConnections=1)
    web(s)
    with capturedLogs() as events:
        refused = [web(s)[1] for _ in range(3)]
    assert all(t.value().startswith(b"HTTP/1.1 503 ") for t in refused)
    assert s.counters["refused_connections"] == 3
    assert len([e for e in events if e.get("event") == "web_connections_refused"]) == 1


def test_webDrainFinishesRequestsUnderWay():
    """
    Draining closes idle connections at once and busy ones after their
    response, marked C{Connection: close}.
    """
    s, clock = site()
    idle, idleTransport = web(s)
    busy, busyTransport = web(s)
    busy.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    d = s.drain()
    assert not idleTransport.connected
    assert busyTransport.connected and not d.called
    busy.dataReceived(b"cd")
    assert b"got 4" in busyTransport.value()
    assert b"Connection: close" in busyTransport.value()
    assert not busyTransport.connected
    idle.connectionLost(None)
    busy.connectionLost(None)
    assert d.called


class Drainable:
    def __init__(self):
        from twisted.internet.defer import Deferred

        self.drained = Deferred()
        self.aborted = False

    def drain(self):
        return self.drained

    def abort(self):
        self.aborted = True
        return 1


def test_nodeStopsInOrder():
    """
    Listeners stop first, then connections drain, then everything else
    stops (the thread pool last of all, by MultiService's order).
    """
    from twisted.application.service import Service

    clock = Clock()
    node = NodeService(clock, shutdownTimeout=10)
    order = []

    class Named(Service):
        def __init__(self, name):
            self.setName(name)

        def stopService(self):
            order.append(self.name)
            return super().stopService()

    Named("pool").setServiceParent(node)
    listener = Named("listener")
    listener.setServiceParent(node)
    node.listeners.append(listener)
    drainable = Drainable()
    node.drainables.append(drainable)
    node.startService()
    stopped = []
    node.stopService().addBoth(stopped.append)
    assert order == ["listener"] and stopped == []
    drainable.drained.callback(None)
    assert len(stopped) == 1
    assert order[-1] == "pool" and not drainable.aborted


def test_nodeDeadlineAborts():
    """
    Connections still open at the deadline are aborted, and the rest
    stops anyway.
    """
    clock = Clock()
    node = NodeService(clock, shutdownTimeout=10)
    drainable = Drainable()
    node.drainables.append(drainable)
    node.startService()
    stopped = []
    with capturedLogs() as events:
        node.stopService().addBoth(stopped.append)
        assert stopped == []
        clock.advance(10)
    assert len(stopped) == 1
    assert drainable.aborted
    assert [e["event"] for e in events if "event" in e] == ["shutdown_deadline"]


def test_certificateReload(tmp_path):
    """
    A reload swaps the context new connections get; files that do not load
    keep the previous one and are reported.
    """
    from OpenSSL import SSL
    from twisted.internet.ssl import TLSVersion

    from tests.conftest import makeSelfSignedCertificate

    key, cert = makeSelfSignedCertificate(tmp_path)
    factory = ReloadingContextFactory(f"ssl:0:privateKey={key}:certKey={cert}", TLSVersion.TLSv1_2)
    before = factory.getContext()
    assert isinstance(before, SSL.Context)
    other = tmp_path / "other"
    other.mkdir()
    newKey, newCert = makeSelfSignedCertificate(other)
    (tmp_path / "key.pem").write_bytes(open(newKey, "rb").read())
    (tmp_path / "cert.pem").write_bytes(open(newCert, "rb").read())
    reloader = CertificateReloader(Clock(), [factory], installSignal=False)
    with capturedLogs() as events:
        assert reloader.reload() == 0
        assert factory.getContext() is not before
        kept = factory.getContext()
        (tmp_path / "cert.pem").write_text("garbage")
        assert reloader.reload() == 1
    assert factory.getContext() is kept
    # the reloader's own events (anything else in the process may log meanwhile)
    assert [e["event"] for e in events if "event" in e] == ["tls_reloaded", "tls_reload_failed"]


def test_latencyProbeFailuresLoggedOncePerRun():
    """
    A server that stops answering is logged at its first failed probe,
    not at every one; after a spell without failures, a new failure is
    logged again.  The probe's factory is not noisy.
    """
    from twisted.internet import defer
    from twisted.internet.error import ConnectionRefusedError

    from memcachier.analytics.service import LatencyProbe, _QuietFactory

    assert _QuietFactory(None).noisy is False
    clock = Clock()
    down = [True]

    def connect(server, protocol):
        if down[0]:
            return defer.fail(ConnectionRefusedError())
        return defer.Deferred()  # answers nothing, but no error

    probe = LatencyProbe(lambda: ["127.0.0.1:1"], None, clock, connect=connect, period=20)
    with capturedLogs() as events:
        for _ in range(10):
            probe.tick()
            clock.advance(20)
        down[0] = False
        for _ in range(5):
            clock.advance(20)
        down[0] = True
        probe.tick()
    failures = [e for e in events if e.get("event") == "latency_probe_failed"]
    assert len(failures) == 2
