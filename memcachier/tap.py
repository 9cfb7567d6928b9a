# -*- test-case-name: tests.unit.test_tap -*-
"""
twistd support: C{twistd -n memcachier [--config=memcachier.toml] ...}.

L{Options} parses the command line and loads the configuration (so that a
bad config stops twistd before anything starts); L{makeService} builds the
node's services in dependency order.
"""

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.logger import Logger
from twisted.python import usage

from memcachier.config import ConfigError, _endpointArgs, loadSettings

_log = Logger()


class Options(usage.Options):
    """
    Command line of C{twistd memcachier}.

    @ivar settings: the loaded L{memcachier.config.Settings}, after
        C{parseOptions}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a memcachier node: the memcache port(s) (binary and ASCII "
        "protocols, SASL and ASCII auth), the HTTP API and dashboard. "
        "Without --config, embedded defaults are used (memcache on "
        "127.0.0.1:11211, HTTP on 127.0.0.1:8080, SQLite in "
        "./memcachier.sqlite)."
    )

    optParameters = [
        ["config", "c", None, "TOML configuration file (see memcachier.example.toml)."],
        ["database", "d", None, "Control-plane SQLAlchemy URL; overrides [database] url."],
        ["web-listen", None, None, "Endpoint of the HTTP API and dashboard; overrides [web] listen."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self.settings = None

    def opt_listen(self, description):
        "Add a memcache listener endpoint, e.g. tcp:11211:interface=127.0.0.1 or ssl:11219:privateKey=key.pem:certKey=cert.pem; repeatable (replaces [memcache] listen)."
        self["listen"].append(description)

    def postOptions(self):
        """
        Load the settings; every configuration error becomes one
        L{usage.UsageError} listing them all.
        """
        overrides = {
            "listen": self["listen"],
            "database": self["database"],
            "web_listen": self["web-listen"],
        }
        try:
            self.settings = loadSettings(self["config"], overrides)
        except ConfigError as e:
            raise usage.UsageError(str(e))


class _CloseStore(Service):
    """
    Closes the store at shutdown (after the listeners, which stop first
    because they were added later).
    """

    def __init__(self, store):
        self.store = store

    def stopService(self):
        super().stopService()
        return maybeDeferred(self.store.close)


class ListenerService(Service):
    """
    Listens on an endpoint as soon as the service starts, but accepts no
    connection until C{ready} fires (the control index is loaded, so
    authentication works).

    Binding at once means a port already in use stops twistd with an error
    before the reactor runs; until C{ready}, clients wait in the listen
    backlog rather than being refused.

    @ivar port: the L{IListeningPort}, once listening.
    """

    _log = Logger()

    def __init__(self, endpoint, factory, ready=None):
        """
        @param endpoint: an L{IStreamServerEndpoint}.
        @param factory: the protocol factory.
        @param ready: a L{Deferred} to wait for before accepting, or
            L{None} to accept at once.
        """
        self.endpoint = endpoint
        self.factory = factory
        self.ready = ready
        self.port = None
        self._listening = None

    def startService(self):
        super().startService()
        results = []
        self._listening = self.endpoint.listen(self.factory)
        self._listening.addBoth(results.append)
        if results and isinstance(results[0], Failure):
            results[0].raiseException()
        if results:
            self._listened(results[0])
        else:
            # An asynchronous endpoint (a plugin); errors are logged.
            self._listening.addCallback(self._listened)
            self._listening.addErrback(
                lambda f: self._log.failure("Cannot listen on {endpoint}", f, endpoint=self.endpoint)
            )

    def _listened(self, port):
        self.port = port
        stopReading = getattr(port, "stopReading", None)
        if self.ready is None or stopReading is None:
            return port
        stopReading()

        def accept(result):
            if self.running and self.port is port:
                port.startReading()
            return result

        self.ready.addBoth(accept)
        return port

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


def tlsOptions(description, minimum):
    """
    TLS settings for an C{ssl:} listener, from its description, with a
    floor on the TLS version that the description cannot lower.

    Twisted's C{ssl:} endpoint string has no option for a minimum version
    (only the fixed-version C{sslmethod}, which L{memcachier.config}
    refuses), so we build the L{CertificateOptions} ourselves with
    C{raiseMinimumTo}.

    @param description: C{ssl:PORT:privateKey=...:certKey=...[:extraCertChain=...][:dhParameters=...][:interface=...][:backlog=...]}.
    @param minimum: a L{twisted.internet.ssl.TLSVersion} constant.
    @return: a 2-tuple of L{CertificateOptions} and a L{dict} with C{port},
        C{interface} and C{backlog}.
    """
    from twisted.internet import ssl
    from twisted.python.filepath import FilePath

    args, kw = _endpointArgs(description)
    port = int(kw.pop("port", args[1] if len(args) > 1 else 0))
    privateKey = kw.pop("privateKey", "server.pem")
    certKey = kw.pop("certKey", privateKey)
    extraCertChain = kw.pop("extraCertChain", None)
    dhParameters = kw.pop("dhParameters", None)
    listening = {
        "port": port,
        "interface": kw.pop("interface", ""),
        "backlog": int(kw.pop("backlog", 50)),
    }
    if kw:
        raise ValueError(f"unsupported ssl: options in {description!r}: {', '.join(kw)}")
    certificate = ssl.PrivateCertificate.loadPEM(
        FilePath(certKey).getContent() + b"\n" + FilePath(privateKey).getContent()
    )
    chain = None
    if extraCertChain is not None:
        pem = FilePath(extraCertChain).getContent()
        chain = [
            ssl.Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + part).original
            for part in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
        ]
    dh = None
    if dhParameters is not None:
        dh = ssl.DiffieHellmanParameters.fromFile(FilePath(dhParameters))
    options = ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain,
        dhParameters=dh,
        raiseMinimumTo=minimum,
    )
    return options, listening


def serverEndpoint(description, reactor, tlsMinimum):
    """
    The endpoint of a listener description.

    C{ssl:} descriptions get an L{SSL4ServerEndpoint} whose TLS settings
    come from L{tlsOptions}; every other description goes through
    L{serverFromString}.

    @param tlsMinimum: the lowest TLS version to accept on C{ssl:}.
    @rtype: L{twisted.internet.interfaces.IStreamServerEndpoint}
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString

    if description.split(":", 1)[0] != "ssl":
        return serverFromString(reactor, description)
    options, listening = tlsOptions(description, tlsMinimum)
    return SSL4ServerEndpoint(
        reactor,
        listening["port"],
        options,
        backlog=listening["backlog"],
        interface=listening["interface"],
    )


def listenerService(description, factory, reactor, tlsMinimum, ready=None):
    """
    A L{ListenerService} on C{description} with C{factory}.

    A bind failure raises from C{startService}, so twistd exits instead of
    running deaf.

    @param tlsMinimum: the lowest TLS version to accept on C{ssl:}.
    @param ready: see L{ListenerService}.
    @rtype: L{ListenerService}
    """
    return ListenerService(serverEndpoint(description, reactor, tlsMinimum), factory, ready)


def firstStartMessage(servers, username, password):
    """
    What to paste into an application's environment to use the cache made
    on first start.

    @param servers: the cache's servers, C{host:port} strings.
    """
    return (
        f"MEMCACHIER_SERVERS={','.join(servers)}\n"
        f"MEMCACHIER_USERNAME={username}\n"
        f"MEMCACHIER_PASSWORD={password}"
    )


def bootstrap(controlPlane, settings):
    """
    On the first start against an empty control plane, create one cache on
    the default plan and log its credentials, ready to paste.

    Blocking (SQL): runs from L{makeService}, before the reactor starts.

    @param controlPlane: the synchronous
        L{memcachier.control.repository.ControlPlane}.
    @return: the created cache's primary credential, or L{None} if caches
        existed.
    """
    if controlPlane.listCaches():
        return None
    cache, credential = controlPlane.createCache(
        plan=settings.default_plan, cluster=settings.default_cluster
    )
    servers = settings.clusters.get(settings.default_cluster, (settings.node_name,))
    _log.info(
        "First start: created cache {cacheName} (plan {plan}). Use it with:\n{env}",
        cacheName=cache.name,
        plan=cache.plan,
        env=firstStartMessage(servers, credential.username, credential.password),
    )
    return credential


def analyticsRouteGroups(index, analytics):
    """
    The API route groups of insight and introspection, for
    C{makeSite(..., groups=...)}.
    """
    from memcachier.web.common import CacheAuth
    from memcachier.web.insight import InsightAPI
    from memcachier.web.introspection import IntrospectionAPI

    auth = CacheAuth(index)
    return [InsightAPI(auth, analytics), IntrospectionAPI(auth, analytics)]


def buildService(settings, reactor):
    """
    Build a node's services.  Order matters: children start in the order
    added and stop in reverse, so the thread pool comes first (stops last)
    and listeners come last (stop first).

    Blocking before the reactor runs: migrates the database and, on the
    first start, creates a cache (L{bootstrap}).

    @type settings: L{memcachier.config.Settings}
    @param reactor: the reactor every component gets as its clock.
    @rtype: L{MultiService}
    """
    from memcachier.control.index import ControlIndex
    from memcachier.control.maintenance import InactiveCacheReaper
    from memcachier.control.migrations import upgrade
    from memcachier.control.repository import (
        AsyncControlPlane,
        ControlPlane,
        ThreadPoolService,
        makeThreadPool,
    )
    from memcachier.control.schema import makeEngine
    from memcachier.protocols.sniff import MemcacheFactory
    from memcachier.runtime import CacheRegistry
    from memcachier.stores.discovery import makeStore

    top = MultiService()

    # Store first: a missing or broken plugin must stop us before any I/O.
    store = makeStore(settings.store_plugin, settings.store_settings, reactor)

    engine = makeEngine(settings.database)
    upgrade(engine)
    controlPlane = ControlPlane(
        engine,
        reactor,
        settings.plans,
        defaultPlan=settings.default_plan,
        defaultCluster=settings.default_cluster,
        clusters=settings.clusters,
    )
    bootstrap(controlPlane, settings)

    pool = makeThreadPool(engine)
    ThreadPoolService(pool).setServiceParent(top)
    asyncControlPlane = AsyncControlPlane(controlPlane, pool, reactor)

    _CloseStore(store).setServiceParent(top)

    index = ControlIndex(
        asyncControlPlane,
        settings.plans,
        reactor,
        settings.poll_interval,
        defaultPlan=settings.default_plan,
    )
    index.setServiceParent(top)

    # Several nodes: membership, forwarding, cluster-wide flush (the
    # registry's keyspaces become cluster keyspaces over the local ones).
    ready = index.ready
    clusterNode = None
    if settings.clustered:
        from memcachier.cluster.node import ClusterNode, bothReady

        clusterNode = ClusterNode(settings, engine, pool, index, store, reactor)
        clusterNode.membership.setServiceParent(top)
        store = clusterNode.store
        ready = bothReady(index.ready, clusterNode.ready)

    from memcachier.analytics.service import makeAnalytics, makeIntrospection

    registry = CacheRegistry(
        store, index, settings, reactor, introspection=makeIntrospection(settings, reactor)
    )
    if clusterNode is not None:
        clusterNode.attach(registry)

    InactiveCacheReaper(
        asyncControlPlane, index, registry.activity, reactor, days=settings.dev_inactivity_days
    ).setServiceParent(top)

    # WIRING: analytics sampler and alert services, built from (registry,
    # asyncControlPlane, index, settings, reactor), go here, before the
    # listeners.
    analytics = makeAnalytics(registry, index, engine, pool, settings, reactor)
    analytics.setServiceParent(top)

    # The web site: the analytics API v2 and the analytics route groups,
    # on its own listener; like the memcache ports it accepts once the
    # index is loaded (authentication reads it).
    from memcachier.web.site import makeSite

    site = makeSite(
        asyncControlPlane, index, registry, settings, reactor,
        groups=analyticsRouteGroups(index, analytics),
    )
    listenerService(
        settings.web_listen, site, reactor, settings.tls_min_version, ready
    ).setServiceParent(top)
    _log.info("web listener: {description}", description=settings.web_listen)

    factory = MemcacheFactory(registry, reactor, settings.auth_timeout)
    for description in settings.listen:
        listenerService(
            description, factory, reactor, settings.tls_min_version, ready
        ).setServiceParent(top)
        _log.info("memcache listener: {description}", description=description)
    return top


def makeService(options):
    """
    twistd's entry point.

    @type options: L{Options}, already parsed.
    @rtype: L{MultiService}
    """
    import gc

    from twisted.internet import reactor

    service = buildService(options.settings, reactor)
    # Everything imported and built so far lives as long as the process:
    # keep it out of every future full collection, whose cost under load
    # is proportional to the tracked objects they scan (docs/performance.md).
    gc.collect()
    gc.freeze()
    return service
