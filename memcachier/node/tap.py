# -*- test-case-name: tests.unit.test_tap -*-
"""
twistd support: C{twistd -n memcachier [--config=memcachier.toml] ...}.

L{Options} parses the command line and loads the configuration (so that a
bad config stops twistd before anything starts); L{makeService} builds the
node's services in dependency order.
"""

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.logger import Logger
from twisted.python import usage

from memcachier.node.settings import ConfigError, _endpointArgs, loadSettings
from memcachier.tx.ceiling import connectionCeilings, descriptorLimit
from memcachier.node.tls import ReloadingContextFactory, tlsOptions  # noqa: F401 (tlsOptions: API)

_log = Logger()


class Options(usage.Options):
    """
    Command line of C{twistd memcachier}.

    @ivar settings: the loaded L{memcachier.node.settings.Settings}, after
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
        try:
            connectionCeilings(
                self.settings.memcache_max_connections,
                self.settings.web_max_connections,
                descriptorLimit(),
            )
        except ValueError as e:
            raise usage.UsageError(f"configuration error: {e}")


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

    #: what the listener serves, for its log line (C{"memcache"}, C{"web"})
    surface = "memcache"
    description = None

    def _up(self, port):
        address = port.getHost() if hasattr(port, "getHost") else None
        self._log.info(
            "{surface} listener up on {address}",
            event="listener_up",
            surface=self.surface,
            address=getattr(address, "port", None) and f"{address.host}:{address.port}"
            or str(address),
            description=self.description,
        )

    def _listened(self, port):
        self.port = port
        stopReading = getattr(port, "stopReading", None)
        if self.ready is None or stopReading is None:
            self._up(port)
            return port
        stopReading()

        def accept(result):
            if self.running and self.port is port:
                port.startReading()
                self._up(port)
            return result

        self.ready.addBoth(accept)
        return port

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


#: memcached's listen backlog (C{-b}); Twisted's default of 50 left
#: thousands of clients believing they were connected under a burst
DEFAULT_BACKLOG = 1024

#: endpoint types whose descriptions take a C{backlog} option
_BACKLOG_TYPES = ("tcp", "tcp6", "unix", "ssl")


def withBacklog(description, backlog):
    """
    C{description} with C{:backlog=BACKLOG} added when its type takes one
    and it sets none.
    """
    args, kw = _endpointArgs(description)
    if args and args[0] in _BACKLOG_TYPES and "backlog" not in kw:
        return f"{description}:backlog={backlog}"
    return description


def serverEndpoint(description, reactor, tlsMinimum, backlog=DEFAULT_BACKLOG):
    """
    The endpoint of a listener description.

    C{ssl:} descriptions get an L{SSL4ServerEndpoint} whose TLS settings
    come from a L{ReloadingContextFactory} (see L{memcachier.node.tls}); every
    other description goes through L{serverFromString}.  Either way the
    listen backlog is C{backlog} unless the description sets one.

    @param tlsMinimum: the lowest TLS version to accept on C{ssl:}.
    @rtype: L{twisted.internet.interfaces.IStreamServerEndpoint}
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString

    description = withBacklog(description, backlog)
    if description.split(":", 1)[0] != "ssl":
        return serverFromString(reactor, description)
    contextFactory = ReloadingContextFactory(description, tlsMinimum, backlog)
    listening = contextFactory.listening
    endpoint = SSL4ServerEndpoint(
        reactor,
        listening["port"],
        contextFactory,
        backlog=listening["backlog"],
        interface=listening["interface"],
    )
    endpoint.reloadingContextFactory = contextFactory
    return endpoint


def listenerService(description, factory, reactor, tlsMinimum, ready=None,
                    backlog=DEFAULT_BACKLOG, surface="memcache"):
    """
    A L{ListenerService} on C{description} with C{factory}.

    A bind failure raises from C{startService}, so twistd exits instead of
    running deaf.

    @param tlsMinimum: the lowest TLS version to accept on C{ssl:}.
    @param ready: see L{ListenerService}.
    @param backlog: the listen backlog unless the description sets one.
    @param surface: what it serves, for its log line.
    @rtype: L{ListenerService}
    """
    service = ListenerService(
        serverEndpoint(description, reactor, tlsMinimum, backlog), factory, ready
    )
    service.description = description
    service.surface = surface
    return service


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


def alertRouteGroups(index, store, settings):
    """
    The API route group of alerts, for C{makeSite(..., groups=...)}.
    """
    from memcachier.web.alerts import AlertsAPI
    from memcachier.web.common import CacheAuth

    return [AlertsAPI(CacheAuth(index), store, settings.alerts_allow_http_loopback)]


def buildService(settings, reactor):
    """
    Build a node's services.  Order matters: children start in the order
    added and stop in reverse, so the thread pool comes first (stops last)
    and listeners come last (stop first).

    Blocking before the reactor runs: migrates the database and, on the
    first start, creates a cache (L{bootstrap}).

    @type settings: L{memcachier.node.settings.Settings}
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

    from memcachier.node.shutdown import CertificateReloader, NodeService

    top = NodeService(reactor, settings.shutdown_timeout)
    memcacheCeiling, webCeiling = connectionCeilings(
        settings.memcache_max_connections, settings.web_max_connections, descriptorLimit()
    )

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
        maxCredentials=settings.limit_credentials,
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
    if clusterNode is not None:
        # a prefix watched through another node is counted here at once
        clusterNode.membership.prefixesChanged = analytics.prefixesChanged

    from memcachier.alerts.service import makeAlerts

    alertService, alertStore = makeAlerts(
        registry, index, engine, pool, settings, reactor, analytics
    )
    alertService.setServiceParent(top)

    # The web site: the analytics API v2 and the analytics route groups,
    # on its own listener; like the memcache ports it accepts once the
    # index is loaded (authentication reads it).
    from memcachier.web.provisioning import makeProvisioning
    from memcachier.web.site import makeSite

    # Provisioning (Heroku's partner API, our own API) and /metrics.
    provisioningGroups, mounts, provisioningServices = makeProvisioning(
        controlPlane, asyncControlPlane, pool, index, registry, settings, reactor
    )
    for service in provisioningServices:
        service.setServiceParent(top)
    from memcachier.web.sso import AsyncSessionStore, SessionStore

    sessions = AsyncSessionStore(SessionStore(engine, reactor), pool, reactor)
    site = makeSite(
        asyncControlPlane, index, registry, settings, reactor,
        groups=(
            analyticsRouteGroups(index, analytics)
            + alertRouteGroups(index, alertStore, settings)
            + provisioningGroups
        ),
        maxConnections=webCeiling,
        mounts=mounts,
        sessions=sessions,
    )
    webListener = listenerService(
        settings.web_listen, site, reactor, settings.tls_min_version, ready,
        backlog=settings.web_backlog, surface="web",
    )
    webListener.setServiceParent(top)
    top.listeners.append(webListener)
    top.drainables.append(site)

    from memcachier.protocols.throttle import AuthThrottle

    throttle = AuthThrottle(settings.auth_failure_rate, settings.auth_failure_burst)
    factory = MemcacheFactory(
        registry, reactor, settings.auth_timeout, throttle, maxConnections=memcacheCeiling,
        maxKeys=settings.limit_multiget_keys,
    )
    top.drainables.append(factory)
    for description in settings.listen:
        listener = listenerService(
            description, factory, reactor, settings.tls_min_version, ready,
            backlog=settings.memcache_backlog,
        )
        listener.setServiceParent(top)
        top.listeners.append(listener)
    contextFactories = [
        listener.endpoint.reloadingContextFactory
        for listener in top.listeners
        if getattr(listener.endpoint, "reloadingContextFactory", None) is not None
    ]
    reloader = None
    if contextFactories:
        reloader = CertificateReloader(reactor, contextFactories)
        reloader.setServiceParent(top)
    from memcachier.web.metrics import NodeCounters

    mounts[b"metrics"].node = NodeCounters(site, factory, throttle, reloader)
    _log.info(
        "connection ceilings: memcache {memcacheCeiling}, web {webCeiling} "
        "(descriptor limit {limit})",
        event="connection_ceilings",
        memcacheCeiling=memcacheCeiling,
        webCeiling=webCeiling,
        limit=descriptorLimit(),
    )
    return top


def makeService(options):
    """
    twistd's entry point.

    @type options: L{Options}, already parsed.
    @rtype: L{MultiService}
    """
    import gc

    from twisted.internet import reactor

    from memcachier.node.fastpaths import streamlinePolling
    from memcachier.node.shutdown import installGracefulStop

    from memcachier.speedups import describe

    _log.info(
        "hot path: multi-get loops in {loops}, epoll loop streamlined: {streamlined}",
        event="hot_path",
        loops=describe(),
        streamlined=streamlinePolling(reactor),
    )
    if options.settings.allocator_warning:
        from memcachier.node.allocator import warnUnlessJemalloc

        warnUnlessJemalloc()
    service = buildService(options.settings, reactor)
    reactor.callWhenRunning(installGracefulStop, reactor)
    # Everything imported and built so far lives as long as the process:
    # keep it out of every future full collection, whose cost under load
    # is proportional to the tracked objects they scan (docs/performance.md).
    gc.collect()
    gc.freeze()
    return service
