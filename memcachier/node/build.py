# -*- test-case-name: tests.unit.test_tap -*-
"""
What a node is made of: L{buildNode} builds every part, each with its
collaborators as constructor arguments, in dependency order.

Order matters twice.  Parts are built after what they use.  Services start
in the order they are added to the node and stop in reverse, so the thread
pool comes first (stops last) and the listeners last (stop first).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger

from memcachier.alerts.service import makeAlerts
from memcachier.analytics.service import makeAnalytics, makeIntrospection
from memcachier.cluster.flushes import FlushGenerations
from memcachier.cluster.keyspace import Cluster, ClusterStore
from memcachier.cluster.membership import Membership
from memcachier.cluster.peer import PeerAuthenticator, PeerPool
from memcachier.cluster.states import NodeState
from memcachier.control.index import ControlIndex
from memcachier.control.maintenance import InactiveCacheReaper
from memcachier.control.migrations import upgrade
from memcachier.control.repository import AsyncControlPlane, ControlPlane, makeThreadPool
from memcachier.control.schema import makeEngine
from memcachier.interfaces import ISnapshottableStore, IStore
from memcachier.node.listeners import listenerService
from memcachier.node.settings import Settings, workerName
from memcachier.node.shutdown import CertificateReloader, NodeService
from memcachier.node.snapshot import WarmRestart
from memcachier.node.workers import Workers
from memcachier.protocols.admission import LoginAdmission
from memcachier.protocols.fairshare import FairShare
from memcachier.protocols.sniff import MemcacheFactory, memcacheConnectionCeiling
from memcachier.protocols.throttle import AuthThrottle
from memcachier.runtime import CacheRegistry, ServedCaches
from memcachier.stores.discovery import chooseStore
from memcachier.tx.ceiling import connectionCeilings, descriptorLimit
from memcachier.tx.threads import ThreadPoolRunner, ThreadPoolService
from memcachier.web.alerts import AlertsAPI
from memcachier.web.common import CacheAuth
from memcachier.web.health import ControlPlaneCheck, Health, membershipJoined
from memcachier.web.insight import InsightAPI
from memcachier.web.introspection import IntrospectionAPI
from memcachier.heroku.api import makeHeroku
from memcachier.web.api import CacheAPI, wholeCacheStats
from memcachier.web.metrics import MetricsResource, NodeCounters
from memcachier.web.provisioning import makeProvisioning
from memcachier.web.site import WebCounters, makeSite
from memcachier.web.site import webCeiling as webConnectionCeiling
from memcachier.web.sso import AsyncSessionStore, SessionStore

_log = Logger()


def buildNode(settings: Settings, reactor: Any, directSend: Optional[Callable[..., Any]] = None,
              workerCommand: Optional[Callable[[int], list[str]]] = None,
              boundAccepts: Optional[Callable[..., object]] = None) -> NodeService:
    """
    Build a node's services.

    Blocking before the reactor runs: migrates the database and, on the
    first start, creates a cache (L{bootstrap}).

    @param reactor: the reactor every part gets as its clock.
    @param directSend: the memcache codecs' fast send path
        (L{memcachier.node.fastpaths}), or L{None} for the public one.
    @param boundAccepts: the fast paths' bound on the connections a
        listener accepts per read, given the port and the bound
        (C{memcache.login_batch}), or L{None} for Twisted's own.
    @param workerCommand: with C{[node] workers} > 1, given to worker 0
        only: the command line of worker i (L{memcachier.node.workers}),
        which this node then supervises.
    """
    services: list[IService] = []
    memcacheCeiling, webCeiling = connectionCeilings(
        settings.memcache.max_connections, settings.web.max_connections, descriptorLimit()
    )

    # The store first: a missing or broken plugin must stop us before any I/O.
    storeName, localStore, passedOver = chooseStore(
        settings.store.plugin, settings.store.settings, reactor
    )
    if passedOver:
        _log.warn("store plugin: {plugin} ({why})", event="store", plugin=storeName, why=passedOver)
    else:
        _log.info("store plugin: {plugin}", event="store", plugin=storeName)

    # The control plane: SQL in a thread pool, read through an index in memory.
    engine = makeEngine(settings.database.url)
    upgrade(engine)
    controlPlane = ControlPlane(
        engine, reactor, settings.plans,
        defaultPlan=settings.caches.default_plan,
        defaultCluster=settings.caches.default_cluster,
        clusters=settings.clusters,
        maxCredentials=settings.limits.credentials,
    )
    bootstrap(controlPlane, settings)
    pool = makeThreadPool(engine)
    services.append(ThreadPoolService(pool))
    asyncControlPlane = AsyncControlPlane(controlPlane, pool, reactor)
    services.append(StoreCloser(localStore))
    index = ControlIndex(
        asyncControlPlane, settings.plans, reactor, settings.database.poll_interval,
        defaultPlan=settings.caches.default_plan,
    )
    services.append(index)

    # The caches this node serves, and with several nodes the cluster
    # they are spread over: a key's owner is found on the ring of live
    # nodes, and the local store is wrapped by one that forwards.
    served = ServedCaches()
    ready: Deferred[Any] = index.ready
    store: IStore = localStore
    cluster: Optional[Cluster] = None
    membership: Optional[Membership] = None
    clusterStore: Optional[ClusterStore] = None
    # restoring, warming, serving, draining (memcachier.cluster.states)
    nodeState = NodeState(
        reactor, settings.cluster.warmup if settings.clustered else 0.0,
        restoring=bool(settings.node.state_dir) and settings.node.warm_restart,
    )
    if settings.clustered:
        membership = Membership(
            engine, pool, reactor, settings.node.name, settings.node_cluster,
            settings.clusters, settings.cluster.heartbeat_timeout,
            usage=served.usage, controlChanged=index.refresh, state=nodeState,
            # memcachier-admin node drain: a graceful stop (which drains)
            drainAsked=lambda: reactor.callLater(0, reactor.stop),
        )
        services.append(membership)
        peers = PeerPool(
            settings.cluster.secret, reactor, settings.cluster.request_timeout,
            membership.suspect, capabilities=settings.cluster.peer_capabilities,
        )
        flushes = FlushGenerations(asyncControlPlane, index)
        cluster = Cluster(
            settings.node.name, membership, index, peers, flushes,
            state=nodeState, warmup=settings.cluster.warmup,
        )
        clusterStore = ClusterStore(localStore, cluster)
        index.addListener(clusterStore.applyFlushes)
        membership.addListener(clusterStore.refresh)
        # back after being out: drop what it holds, warm from the others
        membership.addRejoinListener(clusterStore.joined)
        # suspected by a peer: its range is the others' until the
        # suspicion ends, so what it holds would be older: drop it
        membership.addSuspectedListener(clusterStore.suspected)
        membership.addListener(lambda: peers.forget(membership.liveEverywhere()))
        index.addListener(clusterStore.refresh)
        store = clusterStore
        ready = allFired(index.ready, membership.firstView())

    # Warm restart: the snapshot goes back into the local store once the
    # index is loaded, before the listeners accept; it is written when the
    # node stops, after the drain (it stops after the listeners, before the
    # store closes).
    warm = WarmRestart(
        localStore, index, settings.node.state_dir, settings.node.warm_restart, reactor, ready,
        storeName=storeName,
    )
    services.append(warm)
    ready = warm.restored
    ready.addCallback(restoreDone, nodeState, localStore, membership, clusterStore)

    introspection = makeIntrospection(settings, reactor)
    registry = CacheRegistry(
        store, index, settings, reactor, served, introspection=introspection,
        cluster=cluster,
        peerAuthenticator=(
            PeerAuthenticator(settings.cluster.secret, settings.cluster.peer_capabilities)
            if cluster else None
        ),
    )
    # The fair share between busy caches and their budgets, round by round.
    limits = settings.limits
    services.append(FairShare(
        served.runtimes, reactor, sharing=limits.scheduler, round=limits.scheduler_round,
        reading=limits.scheduler_reading, requestsPerMiB=limits.budget_requests,
        bytesPerMiB=limits.budget_bytes, plans=settings.plans.values(),
    ))
    services.append(InactiveCacheReaper(
        asyncControlPlane, index, registry.activity, reactor,
        days=settings.caches.dev_inactivity_days,
    ))

    # Analytics and alerts, before the listeners.
    analytics = makeAnalytics(registry, index, engine, pool, settings, reactor)
    services.append(analytics)
    if membership is not None:
        # a prefix watched through another node is counted here at once
        membership.addPrefixListener(analytics.prefixesChanged)
    alertService, alertStore = makeAlerts(
        registry, index, engine, pool, settings, reactor, analytics,
        # alerts judge the whole cache, summed over its live nodes as the
        # API's stats are
        wholeStats=lambda cacheId: wholeCacheStats(registry, cacheId),
    )
    services.append(alertService)

    # The web site: API v2, dashboard, provisioning, Heroku, /metrics.
    # What /metrics reads (the ceilings, the web's counters, the TLS
    # reloads) is built first, the site and factories that count in it after.
    throttle = AuthThrottle(settings.memcache.auth_failure_rate,
                            settings.memcache.auth_failure_burst,
                            rememberFor=settings.memcache.auth_remember_for,
                            rememberEntries=settings.memcache.auth_remember_entries)
    webConnections = webConnectionCeiling(webCeiling, reactor)
    memcacheConnections = memcacheConnectionCeiling(memcacheCeiling, reactor)
    webCounters = WebCounters()
    tlsReloads = (
        {"ok": 0, "failed": 0}
        if any(d.startswith("ssl:") for d in [settings.web.listen, *settings.memcache.listen])
        else None
    )
    provisioning = makeProvisioning(asyncControlPlane, index, registry, settings)
    heroku, herokuServices = makeHeroku(
        controlPlane, pool, index, provisioning.provisioner, settings, reactor
    )
    services.extend(herokuServices)
    auth = CacheAuth(index)
    api = CacheAPI(asyncControlPlane, index, registry, settings, reactor, [
        InsightAPI(auth, analytics),
        IntrospectionAPI(auth, analytics),
        AlertsAPI(auth, alertStore, settings.alerts.allow_http_loopback),
        provisioning,
    ])
    metrics = MetricsResource(
        index, registry, settings, reactor,
        ThreadPoolRunner(reactor).run,
        NodeCounters(webConnections, webCounters, memcacheConnections, throttle, tlsReloads,
                     state=nodeState),
    )
    # /healthz and /readyz: the listeners (made below) accept once bound
    # and ready; the control plane answers its poller's query.
    listeners: list[Any] = []
    health = Health(
        lambda: ready.called and all(l.port is not None for l in listeners),
        ControlPlaneCheck(asyncControlPlane.version, reactor),
        membershipJoined(membership) if membership is not None else None,
    )
    site = makeSite(
        api, settings, reactor,
        sessions=AsyncSessionStore(SessionStore(engine, reactor), pool, reactor),
        heroku=heroku, metrics=metrics, ceiling=webConnections, counters=webCounters,
        throttle=throttle, health=health,
    )
    listeners += [listenerService(
        settings.web.listen, site, reactor, settings.memcache.tls_min_version, ready,
        backlog=settings.web.backlog, surface="web",
    )]

    # The memcache port(s): one factory behind every listener.
    factory = MemcacheFactory(
        registry, reactor, settings.memcache.auth_timeout, throttle,
        ceiling=memcacheConnections,
        maxKeys=settings.limits.multiget_keys, directSend=directSend,
        admission=LoginAdmission(reactor, settings.memcache.login_batch),
    )
    loginBatch = settings.memcache.login_batch
    listeners += [
        listenerService(
            description, factory, reactor, settings.memcache.tls_min_version, ready,
            backlog=settings.memcache.backlog,
            bound=partial(boundAccepts, most=loginBatch) if boundAccepts and loginBatch else None,
        )
        for description in settings.memcache.listen
    ]
    # Worker 0 of several supervises the others: they start with it and
    # stop with it (drained, in parallel with its own connections).
    workers = None
    if workerCommand is not None and settings.node.workers > 1:
        workers = Workers(
            reactor, settings.node.workers, workerCommand,
            lambda i: workerName(settings.node.name, i),
            killAfter=settings.node.shutdown_timeout + 30,
        )
        services.append(workers)
    contextFactories = [l.contextFactory for l in listeners if l.contextFactory is not None]
    if contextFactories:
        services.append(CertificateReloader(reactor, contextFactories, counters=tlsReloads))

    node = NodeService(
        reactor, settings.node.shutdown_timeout, listeners=listeners,
        drainables=[site, factory, *([workers] if workers else [])],
        beforeStop=(
            (lambda: drainNode(
                nodeState, membership, clusterStore, reactor, settings.node.shutdown_timeout
            ))
            if membership is not None else None
        ),
    )
    for service in services + listeners:
        service.setServiceParent(node)
    _log.info(
        "connection ceilings: memcache {memcacheCeiling}, web {webCeiling} "
        "(descriptor limit {limit})",
        event="connection_ceilings", memcacheCeiling=memcacheCeiling,
        webCeiling=webCeiling, limit=descriptorLimit(),
    )
    return node


def restoreDone(
    result: object, state: NodeState, localStore: IStore, membership: Optional[Membership],
    clusterStore: Optional[ClusterStore],
) -> object:
    """
    The warm restart is over: count what it put back, and warm from the
    other live nodes of this node's cluster if there are any.
    """
    restored = 0
    if ISnapshottableStore.providedBy(localStore):
        for cacheId in localStore.snapshotCaches():
            restored += localStore.keyspace(cacheId, 1, 1).stats().get("curr_items", 0)
    state.restoreDone(restored)
    if membership is not None and clusterStore is not None:
        others = set(membership.reachable(membership.cluster)) - {membership.name}
        if others:
            clusterStore.joined()
    return result


def drainNode(
    state: NodeState, membership: Optional[Membership], clusterStore: Optional[ClusterStore],
    reactor: Any, limit: float,
) -> Deferred[None]:
    """
    A graceful stop of a cluster node, when another node of its cluster
    serves: drain.  The node leaves the rings (its row says C{draining});
    once the others have seen it (a heartbeat interval) it pushes its
    items to their new owners, and stays their fallback meanwhile.  Over
    when the push is, or after the warm-up window, at most C{limit}
    seconds.
    """
    if membership is None or clusterStore is None:
        return succeed(None)
    others = set(membership.servers(membership.cluster)) - {membership.name}
    window = state.drain(limit if others else 0.0)
    if window.called or not state.warmup:
        return window
    over: Deferred[None] = Deferred()

    def finish(_: object) -> None:
        if not over.called:
            over.callback(None)

    window.addCallback(finish)
    settled: Deferred[None] = Deferred()
    reactor.callLater(membership.interval, settled.callback, None)
    settled.addCallback(lambda _: None if over.called else clusterStore.handOff())
    settled.addBoth(finish)
    return over


class StoreCloser(Service):
    """
    Closes the store at shutdown, after the listeners, which stop first
    because they were added later.
    """

    def __init__(self, store: IStore) -> None:
        self.store = store

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return maybeDeferred(self.store.close)


def allFired(*deferreds: Deferred[Any]) -> Deferred[Any]:
    """
    A L{Deferred} firing once every one of C{deferreds} fired, without
    taking their results.
    """
    def passOn(result: object, observer: Deferred[None]) -> object:
        observer.callback(None)
        return result

    observers = []
    for d in deferreds:
        observer: Deferred[None] = Deferred()
        d.addBoth(passOn, observer)
        observers.append(observer)
    return gatherResults(observers)


def firstStartMessage(servers: list[str] | tuple[str, ...], username: str, password: str) -> str:
    """
    What to paste into an application's environment to use the cache made
    on first start.
    """
    return (
        f"MEMCACHIER_SERVERS={','.join(servers)}\n"
        f"MEMCACHIER_USERNAME={username}\n"
        f"MEMCACHIER_PASSWORD={password}"
    )


def bootstrap(controlPlane: ControlPlane, settings: Settings) -> Any:
    """
    On the first start against an empty control plane, create one cache on
    the default plan and log its credentials, ready to paste.

    Blocking (SQL): runs from L{buildNode}, before the reactor starts.

    @return: the created cache's primary credential, or L{None} if caches
        existed.
    """
    if controlPlane.listCaches():
        return None
    cache, credential = controlPlane.createCache(
        plan=settings.caches.default_plan, cluster=settings.caches.default_cluster
    )
    servers = settings.clusters.get(settings.caches.default_cluster, (settings.node.name,))
    _log.info(
        "First start: created cache {cacheName} (plan {plan}). Use it with:\n{env}",
        cacheName=cache.name,
        plan=cache.plan,
        env=firstStartMessage(servers, credential.username, credential.password),
    )
    return credential
