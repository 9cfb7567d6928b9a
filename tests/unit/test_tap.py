"""
Tests for L{memcachier.node.tap}: twistd options, listeners and first start.
"""

import pytest
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.ssl import TLSVersion
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import usage

from memcachier.node.settings import Settings
from memcachier.node.build import bootstrap, buildNode, firstStartMessage
from memcachier.node.listeners import ListenerService, listenerService
from memcachier.node.tap import Options
from memcachier.node.tls import tlsOptions


def test_optionsDefaults():
    """
    Without arguments the embedded defaults are loaded.
    """
    options = Options()
    options.parseOptions([])
    assert options.settings == Settings()


def test_optionsOverrides():
    """
    C{--listen} is repeatable; C{--database}, C{--web-listen} and
    C{--allocator} (what C{MEMCACHIER_MALLOC=system scripts/run} passes)
    override the config.
    """
    options = Options()
    options.parseOptions(
        [
            "--listen", "tcp:8001:interface=127.0.0.1",
            "--listen", "tcp:8002",
            "--database", "sqlite:///x.db",
            "--web-listen", "tcp:9000",
            "--allocator=system",
        ]
    )
    assert options.settings.memcache.listen == ("tcp:8001:interface=127.0.0.1", "tcp:8002")
    assert options.settings.database.url == "sqlite:///x.db"
    assert options.settings.web.listen == "tcp:9000"
    assert options.settings.node.allocator == "system"


def test_optionsConfigErrors(tmp_path):
    """
    Every configuration error is reported in one L{usage.UsageError}, so
    twistd exits before starting anything.
    """
    path = tmp_path / "bad.toml"
    path.write_text('[memcache]\nauth_timeout = "x"\n[web]\nlisten = 3\n')
    options = Options()
    with pytest.raises(usage.UsageError) as info:
        options.parseOptions(["--config", str(path)])
    message = str(info.value)
    assert 'memcache.auth_timeout: expected a positive number, got "x"' in message
    assert "web.listen" in message


def test_listenHelp():
    """
    C{--listen}'s help text gives examples.
    """
    assert "ssl:11219:privateKey=key.pem:certKey=cert.pem" in Options().__str__()


def test_tcpListener():
    """
    A C{tcp:} listener listens when the service starts and stops
    listening when it stops.
    """
    reactor = MemoryReactorClock()
    factory = Factory()
    service = listenerService("tcp:11211:interface=127.0.0.1", factory, reactor, TLSVersion.TLSv1_2)
    service.startService()
    port, listened, backlog, interface = reactor.tcpServers[0]
    assert (port, listened, interface, backlog) == (11211, factory, "127.0.0.1", 1024)
    service.stopService()
    assert service.port is None


def test_sslListener(selfSignedCert):
    """
    An C{ssl:} listener uses TLS settings with the configured minimum.
    """
    key, cert = selfSignedCert
    reactor = MemoryReactorClock()
    service = listenerService(
        f"ssl:11219:privateKey={key}:certKey={cert}:interface=127.0.0.1",
        Factory(),
        reactor,
        TLSVersion.TLSv1_2,
    )
    service.startService()
    port, factory, contextFactory, backlog, interface = reactor.sslServers[0]
    assert (port, interface, backlog) == (11219, "127.0.0.1", 1024)
    assert contextFactory.options._options & SSL.OP_NO_TLSv1_1
    assert contextFactory.options._options & SSL.OP_NO_TLSv1
    assert not contextFactory.options._options & SSL.OP_NO_TLSv1_2


def _handshake(serverContext, clientMethodVersion):
    """
    Run a TLS handshake in memory between C{serverContext} and a client
    pinned to one TLS version.

    @return: the negotiated version string, or the L{SSL.Error}.
    """
    client = SSL.Context(SSL.TLS_METHOD)
    client.set_min_proto_version(clientMethodVersion)
    client.set_max_proto_version(clientMethodVersion)
    client.set_cipher_list(b"ALL:@SECLEVEL=0")
    clientConn = SSL.Connection(client, None)
    clientConn.set_connect_state()
    serverConn = SSL.Connection(serverContext, None)
    serverConn.set_accept_state()
    try:
        for _ in range(20):
            for conn in (clientConn, serverConn):
                try:
                    conn.do_handshake()
                except SSL.WantReadError:
                    pass
            for a, b in ((clientConn, serverConn), (serverConn, clientConn)):
                try:
                    b.bio_write(a.bio_read(65536))
                except SSL.WantReadError:
                    pass
            if clientConn.get_protocol_version_name() != "Unknown" and serverConn.get_protocol_version_name() != "Unknown":
                try:
                    clientConn.do_handshake()
                    serverConn.do_handshake()
                    return serverConn.get_protocol_version_name()
                except SSL.WantReadError:
                    pass
    except SSL.Error as e:
        return e
    return None


def test_tlsMinimumRefusesOldClients(selfSignedCert):
    """
    A TLS 1.1 client cannot complete a handshake with an C{ssl:} listener;
    a TLS 1.2 client can.
    """
    key, cert = selfSignedCert
    options, listening = tlsOptions(
        f"ssl:0:privateKey={key}:certKey={cert}", TLSVersion.TLSv1_2
    )
    assert _handshake(options.getContext(), SSL.TLS1_2_VERSION) == "TLSv1.2"
    assert isinstance(_handshake(options.getContext(), SSL.TLS1_1_VERSION), SSL.Error)
    options13, _ = tlsOptions(f"ssl:0:privateKey={key}:certKey={cert}", TLSVersion.TLSv1_3)
    assert isinstance(_handshake(options13.getContext(), SSL.TLS1_2_VERSION), SSL.Error)
    assert _handshake(options13.getContext(), SSL.TLS1_3_VERSION) == "TLSv1.3"


def test_listenerWaitsForReady():
    """
    L{ListenerService} binds at once but accepts only once C{ready} fires.
    """

    from twisted.internet.address import IPv4Address
    from twisted.internet.interfaces import IListeningPort, IReadDescriptor
    from zope.interface import implementer

    @implementer(IListeningPort, IReadDescriptor)
    class Port:
        reading = True

        def getHost(self):
            return IPv4Address("TCP", "127.0.0.1", 11211)

        def stopReading(self):
            self.reading = False

        def startReading(self):
            self.reading = True

        def stopListening(self):
            pass

    class Endpoint:
        def listen(self, factory):
            from twisted.internet.defer import succeed

            return succeed(port)

    port = Port()
    ready = Deferred()
    service = ListenerService(Endpoint(), Factory(), ready)
    service.startService()
    assert service.port is port
    assert not port.reading
    ready.callback(None)
    assert port.reading


def test_listenerBindFailureRaises():
    """
    A bind failure raises from C{startService}.
    """
    from twisted.internet.defer import fail
    from twisted.internet.error import CannotListenError

    class Endpoint:
        def listen(self, factory):
            return fail(CannotListenError("", 1, "in use"))

    with pytest.raises(CannotListenError):
        ListenerService(Endpoint(), Factory()).startService()


def test_firstStartMessage():
    """
    The first-start message is three lines to paste into an environment.
    """
    assert firstStartMessage(("a:1", "b:2"), "U", "P") == (
        "MEMCACHIER_SERVERS=a:1,b:2\nMEMCACHIER_USERNAME=U\nMEMCACHIER_PASSWORD=P"
    )


def test_bootstrap():
    """
    On an empty control plane L{bootstrap} creates one cache on the
    default plan and logs its credentials; later it does nothing.
    """
    from memcachier.control.migrations import upgrade
    from memcachier.control.repository import ControlPlane
    from memcachier.control.schema import makeEngine

    settings = Settings()
    engine = makeEngine("sqlite://")
    upgrade(engine)
    controlPlane = ControlPlane(engine, Clock(), settings.plans)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        credential = bootstrap(controlPlane, settings)
    finally:
        globalLogPublisher.removeObserver(events.append)
    (cache,) = controlPlane.listCaches()
    assert cache.plan == "dev"
    assert credential.cache_id == cache.id
    (event,) = [e for e in events if "env" in e]
    assert event["env"] == firstStartMessage(
        ("127.0.0.1:11211",), credential.username, credential.password
    )
    assert bootstrap(controlPlane, settings) is None
    assert len(controlPlane.listCaches()) == 1


def test_buildNode(tmp_path):
    """
    L{buildNode} migrates the database, creates the first cache and
    returns services ending with the memcache listeners; C{/metrics} gets
    the node's counters.
    """
    settings = Settings().evolve(database={"url": f"sqlite:///{tmp_path}/m.sqlite"})
    reactor = MemoryReactorClock()
    top = buildNode(settings, reactor)
    services = list(top)
    assert isinstance(services[-1], ListenerService)
    # each surface counts its connections in its own ceiling (built
    # before the site and the factory, and read by /metrics)
    site, factory = top.drainables
    assert (site.ceiling.surface, factory.ceiling.surface) == ("web", "memcache")
    assert site.ceiling.limit is not None and factory.ceiling.limit is not None


def test_buildNodeBoundsAccepts(tmp_path):
    """
    The memcache listeners, and not the web one, get the fast paths' bound
    on accepts per read, at C{memcache.login_batch}; with the bound off
    (C{login_batch = 0}) none.
    """
    bounded = []

    def boundAccepts(port, most):
        bounded.append((port, most))

    for batch, expected in ((16, 16), (0, None)):
        settings = Settings().evolve(database={"url": f"sqlite:///{tmp_path}/m{batch}.sqlite"},
                                     memcache={"login_batch": batch})
        top = buildNode(settings, MemoryReactorClock(), boundAccepts=boundAccepts)
        listeners = [s for s in top if isinstance(s, ListenerService)]
        assert [l.surface for l in listeners] == ["web", "memcache"]
        assert listeners[0].bound is None
        if expected is None:
            assert listeners[1].bound is None
        else:
            listeners[1].bound("port")
            assert bounded[-1] == ("port", expected)


def test_listenerBound():
    """
    A listener calls its C{bound} with the port once listening.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.defer import succeed

    seen = []

    class Port:
        def getHost(self):
            return IPv4Address("TCP", "127.0.0.1", 11211)

    port = Port()

    class Endpoint:
        def listen(self, factory):
            return succeed(port)

    ListenerService(Endpoint(), Factory(), bound=seen.append).startService()
    assert seen == [port]
