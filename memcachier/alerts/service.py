# -*- test-case-name: tests.unit.test_alerts_service -*-
"""
The alert service of a node: every C{interval} seconds of the reactor's
clock, if it holds the evaluation lease, it reads the counters of every
cache that has an alert, over the whole cache (every live node that
serves it, through the C{wholeStats} callable it is given), evaluates
every alert (L{memcachier.alerts.rules}) and delivers what fired or
resolved (L{memcachier.alerts.delivery}).

Exactly one node evaluates and delivers: the one whose name is in the
control plane's C{alert_lease} row, renewed at every tick and valid for
L{LEASE_INTERVALS} intervals; another node takes it over when it expires.

A firing or resolution is written, with one pending delivery, in one
transaction before anything is sent.  A delivery is retried with backoff
on the reactor clock (C{interval}, then doubling) up to L{MAX_ATTEMPTS}
attempts, each outcome recorded; a process restarting (or a new lease
holder) finds the pending rows and goes on, so a restart mid-retry still
delivers, once.
"""

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent

from memcachier.alerts import delivery, rules
from memcachier.alerts.message import AlertMessage
from memcachier.alerts.repository import AlertRepository, AsyncAlerts
from memcachier.analytics import series
from memcachier.tx.periodic import PeriodicService

#: Attempts per delivery (the first and the retries).
MAX_ATTEMPTS = 6

#: The longest wait between two attempts, seconds.
MAX_BACKOFF = 3600.0

#: The lease lasts this many intervals: a holder that misses two ticks
#: loses it.
LEASE_INTERVALS = 3


def backoff(interval, failures):
    """
    Seconds to wait after the C{failures}-th failed attempt: C{interval},
    then doubling, at most L{MAX_BACKOFF}.
    """
    return min(MAX_BACKOFF, interval * 2 ** (failures - 1))


class AlertService(PeriodicService):
    """
    Evaluates alerts and delivers their messages.

    @ivar leader: whether this node held the lease at the last tick.
    @ivar pending: the L{Deferred} of the last tick (tests wait on it).
    """

    _log = Logger()

    def __init__(self, store, registry, index, makeDeliverer, nodeName, publicUrl, reactor,
                 interval=60.0, window=300.0, latencyOf=None, wholeStats=None):
        """
        @param store: an L{memcachier.alerts.repository.AsyncAlerts}.
        @param registry: the L{memcachier.runtime.CacheRegistry} (counters).
        @param index: the control index (caches, plans, enabled).
        @param makeDeliverer: C{makeDeliverer(config dict) -> IAlertDeliverer}.
        @param nodeName: this node's name, the lease holder's.
        @param publicUrl: C{[web] public_url}, for the dashboard link.
        @param latencyOf: C{latencyOf(cacheId, now) -> Deferred(ms or None)},
            or L{None} if latency is not measured.
        @param wholeStats: C{wholeStats(cacheId) -> Deferred((readings,
            missing))}: the cache's cumulative counters on every live node
            that answered, as (node name, L{dict}) pairs, and the names of
            the live nodes that did not (the API's C{stats} mechanism,
            L{memcachier.web.api.wholeCacheStats}); L{None} reads this
            node's runtime of the cache only (a single node).
        """
        PeriodicService.__init__(self, interval, self.tick, reactor, "alert evaluation")
        self.store = store
        self.registry = registry
        self.index = index
        self.makeDeliverer = makeDeliverer
        self.nodeName = nodeName
        self.publicUrl = publicUrl.rstrip("/")
        self._reactor = reactor
        self.window = window
        self.latencyOf = latencyOf
        self.wholeStats = wholeStats if wholeStats is not None else self._localStats
        self.leader = False
        self._windows = {}
        self._states = {}
        self._inflight = set()
        self._recorded = {}
        self._timers = {}

    # -- service

    def stopService(self):
        """
        Stop the timer and the delivery retries; once the round under way
        (if any) is over, give the lease up.
        """
        stopped = defer.maybeDeferred(super().stopService)
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

        def release(_):
            if not self.leader:
                return None
            self.leader = False
            d = self.store.releaseLease(self.nodeName)
            d.addErrback(lambda f: self._log.warn("could not release the alert lease: {e}",
                                                  e=f.getErrorMessage()))
            return d

        return stopped.addCallback(release)

    # -- evaluation

    def dashboardUrl(self, cacheId):
        return f"{self.publicUrl}/caches/{cacheId}/"

    def _localStats(self, cacheId):
        runtime = self.registry.existing(cacheId)
        readings = [] if runtime is None else [(self.nodeName, runtime.statsDict())]
        return defer.succeed((readings, []))

    def takeReadings(self, cacheIds, now):
        """
        Add a reading of each cache's counters, over every live node, to
        its window; forget the windows of other caches.  The caches are
        read side by side: a peer that does not answer costs one request
        timeout per round, not one per cache.

        @return: a L{Deferred} firing when every reading is in.
        """
        cacheIds = sorted(cacheIds)
        for cacheId in list(self._windows):
            if cacheId not in cacheIds:
                del self._windows[cacheId]

        def read(results):
            for cacheId, (ok, value) in zip(cacheIds, results):
                window = self._windows.get(cacheId)
                if window is None:
                    window = self._windows[cacheId] = rules.CacheWindow(self.window)
                if not ok:
                    self._log.warn("reading the counters of cache {cacheId} failed: {error}",
                                   cacheId=cacheId, error=value.getErrorMessage())
                    window.add(now, [], complete=False)
                    continue
                readings, missing = value
                window.add(now, readings, complete=not missing)

        return defer.DeferredList(
            [defer.maybeDeferred(self.wholeStats, cacheId) for cacheId in cacheIds],
            consumeErrors=True,
        ).addCallback(read)

    @defer.inlineCallbacks
    def tick(self):
        """
        One round: the lease, readings, evaluation, due deliveries.
        """
        now = self._reactor.seconds()
        holder = yield self.store.acquireLease(
            self.nodeName, now, LEASE_INTERVALS * self.interval
        )
        if not holder:
            if self.leader:
                self._log.info("alert lease lost; another node evaluates alerts")
            self.leader = False
            self._states.clear()
            self._windows.clear()
            return
        if not self.leader:
            self._log.info("this node evaluates and delivers alerts (lease taken)")
        self.leader = True
        snapshot = yield self.store.evaluationSnapshot()
        yield self.takeReadings(self._counted(snapshot), now)
        yield self.evaluate(snapshot, now)
        yield self.sendDue()

    def _counted(self, snapshot):
        """
        The caches whose counters some live alert of C{snapshot} judges.
        """
        found = set()
        for alert, config in snapshot:
            if not alert["enabled"] or config is None or alert["trigger_type"] == "latency":
                continue
            cache = self.index.cache(alert["cache_id"])
            if cache is not None and cache.enabled:
                found.add(cache.id)
        return found

    @defer.inlineCallbacks
    def evaluate(self, snapshot, now):
        """
        Step every alert's rule and record what fired or resolved.

        @param snapshot: (alert, config) pairs from the repository.
        """
        live = set()
        for alert, config in snapshot:
            alertId = alert["id"]
            cache = self.index.cache(alert["cache_id"])
            if not alert["enabled"] or cache is None or not cache.enabled or config is None:
                self._states.pop(alertId, None)
                continue
            live.add(alertId)
            state = self._states.get(alertId)
            if state is None or state.firing != alert["firing"]:
                state = rules.RuleState(alert["firing"], alert["state_since"])
            value = yield self._measure(alert, now)
            state, transition = rules.step(
                state, alert["trigger_type"], value, alert["trigger_threshold"], now
            )
            self._states[alertId] = state
            if transition is None:
                continue
            message = AlertMessage(
                kind=transition,
                alertId=alertId,
                cacheId=cache.id,
                cacheName=cache.name,
                triggerType=alert["trigger_type"],
                description=alert["description"],
                value=value,
                threshold=alert["trigger_threshold"],
                time=now,
                dashboardUrl=self.dashboardUrl(cache.id),
            )
            self._log.info(
                "alert {alertId} of cache {cacheId} {kind}: {condition}, measured {value}",
                alertId=alertId, cacheId=cache.id, kind=transition,
                condition=message.condition(), value=message.value,
            )
            yield self.store.recordTransition(
                alertId, transition, now, message.value, message.threshold,
                message.triggerType, message.toJSON(), config,
            )
        for alertId in list(self._states):
            if alertId not in live:
                del self._states[alertId]

    def _measure(self, alert, now):
        cacheId = alert["cache_id"]
        trigger = alert["trigger_type"]
        if trigger == "latency":
            if self.latencyOf is None:
                return defer.succeed(None)
            return self.latencyOf(cacheId, now)
        window = self._windows.get(cacheId)
        if window is None:
            return defer.succeed(None)
        seconds, data, complete = window.total()
        return defer.succeed(
            rules.measure(trigger, seconds, data, self.index.planOf(cacheId), complete=complete)
        )

    # -- delivery

    @defer.inlineCallbacks
    def sendDue(self):
        """
        Attempt every pending delivery that is due and not already under
        way; schedule a wake-up for the later ones.
        """
        if not self.leader:
            return
        now = self._reactor.seconds()
        rows = yield self.store.pendingDeliveries()
        pending = {row["id"] for row in rows}
        for deliveryId in list(self._recorded):
            if deliveryId not in pending and deliveryId not in self._inflight:
                del self._recorded[deliveryId]
        for row in rows:
            if row["id"] in self._inflight:
                continue
            if row["attempts"] < self._recorded.get(row["id"], 0):
                # Read before an attempt of ours was recorded: stale.
                continue
            due = row["next_attempt"] or 0.0
            if due <= now:
                self._attempt(row)
            else:
                self._wakeAt(row["id"], due - now)

    def _wakeAt(self, deliveryId, delay):
        call = self._timers.get(deliveryId)
        if call is not None and call.active():
            return
        self._timers[deliveryId] = self._reactor.callLater(max(0.0, delay), self._wake, deliveryId)

    def _wake(self, deliveryId):
        self._timers.pop(deliveryId, None)
        if self.running:
            self.sendDue().addErrback(
                lambda f: self._log.failure("sending alert deliveries failed", f)
            )

    def _attempt(self, row):
        deliveryId = row["id"]
        self._inflight.add(deliveryId)
        attempts = row["attempts"] + 1
        destination = row["destination"]
        try:
            message = AlertMessage.fromJSON(row["message"])
            deliverer = self.makeDeliverer(destination)
            d = defer.maybeDeferred(deliverer.deliver, message)
        except Exception:
            d = defer.fail()

        def delivered(_):
            self._recorded[deliveryId] = MAX_ATTEMPTS + 1
            self._log.info(
                "alert delivery {deliveryId} ({kind}) to {type} config {configId} delivered "
                "(attempt {attempts})",
                deliveryId=deliveryId, kind=message.kind, type=destination.get("delivery_type"),
                configId=destination.get("id"), attempts=attempts,
            )
            return self.store.deliveryDone(deliveryId, self._reactor.seconds(), attempts)

        def failed(failure):
            self._recorded[deliveryId] = attempts if attempts < MAX_ATTEMPTS else MAX_ATTEMPTS + 1
            error = failure.getErrorMessage() or failure.type.__name__
            if attempts >= MAX_ATTEMPTS:
                nextAttempt = None
                self._log.warn(
                    "alert delivery {deliveryId} to {type} config {configId} failed for good "
                    "after {attempts} attempts: {error}",
                    deliveryId=deliveryId, type=destination.get("delivery_type"),
                    configId=destination.get("id"), attempts=attempts, error=error,
                )
            else:
                delay = backoff(self.interval, attempts)
                nextAttempt = self._reactor.seconds() + delay
                self._log.warn(
                    "alert delivery {deliveryId} to {type} config {configId} failed "
                    "(attempt {attempts}), retrying in {delay}s: {error}",
                    deliveryId=deliveryId, type=destination.get("delivery_type"),
                    configId=destination.get("id"), attempts=attempts, delay=delay, error=error,
                )
            d = self.store.deliveryFailed(deliveryId, attempts, error, nextAttempt)
            if nextAttempt is not None:
                d.addCallback(lambda _: self._wakeAt(deliveryId, nextAttempt - self._reactor.seconds()))
            return d

        def finished(result):
            self._inflight.discard(deliveryId)
            return result

        d.addCallbacks(delivered, failed)
        d.addBoth(finished)
        d.addErrback(lambda f: self._log.failure("recording alert delivery {deliveryId} failed",
                                                 f, deliveryId=deliveryId))
        return d


def deliverersFor(settings, reactor, http=None, connectSMTP=None):
    """
    The C{makeDeliverer(config)} of L{AlertService}: an L{IAlertDeliverer}
    for a delivery config L{dict}.

    @param settings: L{memcachier.node.settings.Settings} (C{[alerts.smtp]}).
    @param http: a treq L{HTTPClient} (one over an L{Agent} on C{reactor},
        which verifies certificates, by default).
    @param connectSMTP: C{connect(host, port, factory)} (TCP by default).
    """
    if http is None:
        http = HTTPClient(Agent(reactor))
    smtp = delivery.SMTPSettings(
        host=settings.alerts.smtp.host, port=settings.alerts.smtp.port, starttls=settings.alerts.smtp.starttls,
        username=settings.alerts.smtp.username, password=settings.alerts.smtp.password,
        sender=settings.alerts.smtp.sender,
    )
    connect = connectSMTP or delivery.tcpConnector(reactor)

    def makeDeliverer(config):
        kind = config.get("delivery_type")
        if kind == "email":
            return delivery.EmailDeliverer(smtp, config["email"], reactor, connect)
        if kind == "slack":
            return delivery.SlackDeliverer(
                http, reactor, config["slack_url"], config.get("slack_channel", "")
            )
        if kind == "webhook":
            return delivery.WebhookDeliverer(
                http, reactor, config["webhook_url"], config["webhook_secret"]
            )
        raise ValueError(f"unknown delivery type {kind!r}")

    return makeDeliverer


def latencyFrom(analytics, settings):
    """
    C{latencyOf(cacheId, now)} for L{AlertService}: the highest of the
    cache's servers' latest probe (over the last two probe periods, or
    the window if longer), in milliseconds, from the analytics store.
    """
    def latencyOf(cacheId, now):
        cache = analytics.index.cache(cacheId)
        cluster = cache.cluster if cache is not None else settings.caches.default_cluster
        servers = settings.clusters.get(cluster, (settings.node.name,))
        span = max(settings.alerts.window, 2 * settings.analytics.latency_period)
        d = analytics.store.latencyBuckets(servers, series.LATENCY_PERIOD, now - span, now)

        def latest(rows):
            last = {}
            for server, time, ns in rows:
                last[server] = ns
            return max(last.values()) / 1e6 if last else None

        return d.addCallback(latest)

    return latencyOf


def makeAlerts(registry, index, engine, pool, settings, reactor, analytics=None,
               wholeStats=None):
    """
    The alert service of a node and the store the API's alert routes use.

    @param wholeStats: see L{AlertService}.
    @return: a 2-tuple of L{AlertService} and L{AsyncAlerts}.
    """
    repository = AlertRepository(
        engine, reactor, maxAlerts=settings.limits.alerts, maxConfigs=settings.limits.alert_configs
    )
    store = AsyncAlerts(repository, pool, reactor)
    service = AlertService(
        store, registry, index, deliverersFor(settings, reactor), settings.node.name,
        settings.web.public_url, reactor, interval=settings.alerts.interval,
        window=settings.alerts.window,
        latencyOf=latencyFrom(analytics, settings) if analytics is not None else None,
        wholeStats=wholeStats,
    )
    return service, store
