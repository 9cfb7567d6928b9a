# -*- test-case-name: tests.unit.test_metrics -*-
"""
C{/metrics}: the node's caches in the Prometheus text format, with
memcached_exporter's metric names and a C{cache} label (the cache id), so
dashboards and alerts written for memcached work per tenant; plus the
process's own metrics (CPU, memory, file descriptors, garbage collector).

The numbers are read when Prometheus scrapes, from the same counters the
C{stats} command shows: nothing is added to the hot path.  The node's own
counters (L{NodeCounters}: logins throttled, connections refused at a
ceiling, HTTP requests timed out or refused, TLS reloads) come with them,
under C{memcachier_*} names.  Access is
C{[metrics] access}: C{"off"} (404), C{"open"}, or C{"token"} (a bearer
token, C{[metrics] token}).
"""

from typing import Any, Callable, Dict, List, Mapping, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from memcachier.cluster.states import STATES
from memcachier.tx.ceiling import ConnectionCeiling
from memcachier.web.common import ApiError, errorBody
from memcachier.web.provisioning import checkBearer

_log = Logger()

#: memcached_exporter's C{commands_total{command,status}}: (command,
#: status) -> the stat counting it.
COMMANDS = (
    ("get", "hit", "get_hits"),
    ("get", "miss", "get_misses"),
    ("get", "expired", "get_expired"),
    ("get", "flushed", "get_flushed"),
    ("set", "hit", "cmd_set"),
    ("delete", "hit", "delete_hits"),
    ("delete", "miss", "delete_misses"),
    ("incr", "hit", "incr_hits"),
    ("incr", "miss", "incr_misses"),
    ("decr", "hit", "decr_hits"),
    ("decr", "miss", "decr_misses"),
    ("cas", "hit", "cas_hits"),
    ("cas", "miss", "cas_misses"),
    ("cas", "badval", "cas_badval"),
    ("touch", "hit", "touch_hits"),
    ("touch", "miss", "touch_misses"),
    ("flush", "hit", "cmd_flush"),
)

#: Counters: exporter name (without C{memcached_}) -> stat, help.
COUNTERS = (
    ("connections_total", "total_connections", "Connections opened."),
    ("connections_rejected_total", "rejected_connections", "Connections refused (over the plan's limit)."),
    ("items_total", "total_items", "Items stored."),
    ("items_evicted_total", "evictions", "Items evicted to make room."),
    ("items_reclaimed_total", "reclaimed", "Expired items whose memory was reused."),
    ("item_too_large_total", "store_too_large", "Stores refused as too large."),
    ("item_no_memory_total", "store_no_memory", "Stores refused for lack of memory."),
    ("read_bytes_total", "bytes_read", "Bytes read from clients."),
    ("written_bytes_total", "bytes_written", "Bytes sent to clients."),
    ("auth_commands_total", "auth_cmds", "Authentication attempts."),
    ("auth_errors_total", "auth_errors", "Failed authentication attempts."),
    ("held_back_seconds_total", "held_back_seconds",
     "Seconds the cache's connections were held back (fair share, budgets), averaged over them."),
)

#: Gauges: exporter name -> stat, help.
GAUGES = (
    ("current_connections", "curr_connections", "Open connections."),
    ("current_items", "curr_items", "Items held."),
    ("current_bytes", "bytes", "Bytes held."),
    ("limit_bytes", "limit_maxbytes", "The plan's memory, in bytes."),
)



class CacheSample:
    """
    One cache's numbers at one moment, read on the reactor.
    """

    __slots__ = ("cacheId", "enabled", "uptime", "maxConnections", "stats")

    def __init__(self, cacheId, enabled, uptime, maxConnections, stats):
        self.cacheId = cacheId
        self.enabled = enabled
        self.uptime = uptime
        self.maxConnections = maxConnections
        self.stats = stats


def sampleCaches(index, registry, clock):
    """
    Read every cache of the control index and the counters of its runtime
    on this node (zeros for a cache this node has not served yet).  Only
    reads plain values: it runs on the reactor, between requests.

    @rtype: L{list} of L{CacheSample}
    """
    now = clock.seconds()
    samples = []
    for cache in index.caches():
        plan = index.planOf(cache.id)
        runtime = registry.existing(cache.id)
        if runtime is None:
            stats, uptime = {"limit_maxbytes": plan.memory}, 0
        else:
            stats, uptime = runtime.statsDict(), max(now - runtime.startTime, 0)
        samples.append(CacheSample(cache.id, cache.enabled, uptime, plan.connections, stats))
    return samples


class CacheCollector:
    """
    A prometheus_client collector of cache samples, in memcached_exporter's
    names with a C{cache} label.  It only formats values read before
    (L{sampleCaches}), so it may run in a thread.
    """

    def __init__(self, samples):
        """
        @param samples: L{CacheSample}s.
        """
        self.samples = samples

    def collect(self):
        labels = ["cache"]
        up = GaugeMetricFamily(
            "memcached_up", "Whether the cache serves clients (1) or is disabled (0).", labels=labels
        )
        uptime = GaugeMetricFamily(
            "memcached_uptime_seconds", "Seconds this node has served the cache.", labels=labels
        )
        maxConnections = GaugeMetricFamily(
            "memcached_max_connections", "The plan's connection limit.", labels=labels
        )
        commands = CounterMetricFamily(
            "memcached_commands", "Commands by command and status.",
            labels=["cache", "command", "status"],
        )
        counters = [
            (CounterMetricFamily("memcached_" + name[: -len("_total")], help, labels=labels), stat)
            for name, stat, help in COUNTERS
        ]
        gauges = [
            (GaugeMetricFamily("memcached_" + name, help, labels=labels), stat)
            for name, stat, help in GAUGES
        ]
        for sample in self.samples:
            label = [str(sample.cacheId)]
            stats = sample.stats
            up.add_metric(label, 1 if sample.enabled else 0)
            uptime.add_metric(label, sample.uptime)
            maxConnections.add_metric(label, sample.maxConnections)
            for command, status, stat in COMMANDS:
                commands.add_metric(label + [command, status], stats.get(stat, 0))
            for family, stat in counters + gauges:
                family.add_metric(label, stats.get(stat, 0))
        yield up
        yield uptime
        yield maxConnections
        yield commands
        for family, _ in counters + gauges:
            yield family


class NodeCounters:
    """
    Where the node's own counters live (what it refused, timed out or
    reloaded, for every cache at once), read by L{sample} on the reactor.
    Each source may be L{None} (a node without TLS listeners has no
    reloader).  All are built before the site and the listeners that feed
    them, and handed in here.

    @ivar web: the web's L{memcachier.tx.ceiling.ConnectionCeiling}.
    @ivar webCounters: the site's L{memcachier.web.site.WebCounters}.
    @ivar memcache: the memcache listeners'
        L{memcachier.tx.ceiling.ConnectionCeiling}.
    @ivar throttle: the L{memcachier.protocols.throttle.AuthThrottle}.
    @ivar tlsReloads: the certificate reloads by result (C{ok},
        C{failed}): the mapping the
        L{memcachier.node.shutdown.CertificateReloader} counts in, or
        L{None} without TLS listeners.
    """

    def __init__(
        self,
        web: Optional[ConnectionCeiling] = None,
        webCounters: Optional[Mapping[str, int]] = None,
        memcache: Optional[ConnectionCeiling] = None,
        throttle: Any = None,
        tlsReloads: Optional[Mapping[str, int]] = None,
        state: Any = None,
    ) -> None:
        self.web = web
        #: the node's L{memcachier.cluster.states.NodeState}, or L{None}
        self.state = state
        self.webCounters = webCounters
        self.memcache = memcache
        self.throttle = throttle
        self.tlsReloads = tlsReloads

    def sample(self) -> Dict[str, Any]:
        """
        Read every counter now (plain attribute reads).

        @return: a L{dict} for L{NodeCollector}.
        """
        values: Dict[str, Any] = {}
        web, memcache = self.web, self.memcache
        if web is not None:
            values["web"] = dict(self.webCounters or {})
            values["web"]["refused_connections"] = web.refused.total
            values["web_open"] = web.connections
            values["web_max"] = web.limit
        if memcache is not None:
            values["memcache_refused"] = memcache.refused.total
            values["memcache_open"] = memcache.connections
            values["memcache_max"] = memcache.limit
        if self.throttle is not None:
            values["auth_throttled"] = self.throttle.refused
        if self.tlsReloads is not None:
            values["tls_reloads"] = dict(self.tlsReloads)
        state = self.state
        if state is not None:
            values["node_state"] = state.state
            values["node_details"] = state.details()
        return values


class NodeCollector:
    """
    A prometheus_client collector of a L{NodeCounters.sample}, in
    C{memcachier_*} names (these have no memcached_exporter equivalent).
    """

    def __init__(self, values):
        self.values = values

    def collect(self):
        values = self.values
        if "auth_throttled" in values:
            throttled = CounterMetricFamily(
                "memcachier_auth_throttled",
                "Logins refused without checking the password: their source address "
                "or username was over its failed-login budget.",
            )
            throttled.add_metric([], values["auth_throttled"])
            yield throttled
        refused = CounterMetricFamily(
            "memcachier_connections_refused",
            "Connections refused at the surface's connection ceiling (memcache: "
            "'ERROR Too many open connections'; web: 503).",
            labels=["surface"],
        )
        open_ = GaugeMetricFamily(
            "memcachier_current_connections", "Connections open now.", labels=["surface"]
        )
        ceiling = GaugeMetricFamily(
            "memcachier_max_connections", "The surface's connection ceiling.",
            labels=["surface"],
        )
        if "memcache_refused" in values:
            refused.add_metric(["memcache"], values["memcache_refused"])
            open_.add_metric(["memcache"], values["memcache_open"])
            if values["memcache_max"] is not None:
                ceiling.add_metric(["memcache"], values["memcache_max"])
        web = values.get("web")
        if web is not None:
            refused.add_metric(["web"], web["refused_connections"])
            open_.add_metric(["web"], values["web_open"])
            if values["web_max"] is not None:
                ceiling.add_metric(["web"], values["web_max"])
        yield refused
        yield open_
        yield ceiling
        if web is not None:
            timeouts = CounterMetricFamily(
                "memcachier_http_request_timeouts",
                "HTTP requests answered 408 because their headers or body did not "
                "arrive in time (web.header_timeout, web.body_timeout).",
                labels=["phase"],
            )
            timeouts.add_metric(["header"], web["header_timeouts"])
            timeouts.add_metric(["body"], web["body_timeouts"])
            yield timeouts
            for name, counter, help in (
                ("memcachier_http_idle_timeouts", "idle_timeouts",
                 "Keep-alive HTTP connections closed after web.idle_timeout without a request."),
                ("memcachier_http_bodies_too_large", "bodies_too_large",
                 "HTTP requests answered 413 for a declared body over the cap."),
                ("memcachier_http_bad_urls", "bad_urls",
                 "HTTP requests answered 400 for a URL or Host that is not UTF-8 (not logged)."),
            ):
                family = CounterMetricFamily(name, help)
                family.add_metric([], web[counter])
                yield family
        if "node_state" in values:
            family = GaugeMetricFamily(
                "memcachier_node_state",
                "1 for the state the node is in (restoring, warming, serving, draining), "
                "0 for the others.",
                labels=["state"],
            )
            for state in STATES:
                family.add_metric([state], 1 if values["node_state"] == state else 0)
            yield family
            details = values["node_details"]
            for name, key, help in (
                ("memcachier_node_warmup_progress", "warmup",
                 "How far the warm-up (or drain) window under way is, 0 to 1 (1: none runs)."),
                ("memcachier_node_items_restored", "restored",
                 "Items the warm restart put back at this node's start."),
                ("memcachier_node_items_taken_over", "taken_over",
                 "Items copied from their previous owner node on a miss in a warm-up window "
                 "(handed off to this node by a node that drained or whose range it took)."),
                ("memcachier_node_items_handed_off", "handed_off",
                 "Items this node pushed to their new owners as it drained."),
            ):
                gauge = GaugeMetricFamily(name, help)
                gauge.add_metric([], details[key])
                yield gauge
        if "tls_reloads" in values:
            reloads = CounterMetricFamily(
                "memcachier_tls_reloads",
                "TLS certificate reloads (SIGHUP) per listener, by result: ok, or failed "
                "(the previous certificate kept).",
                labels=["result"],
            )
            for result in ("ok", "failed"):
                reloads.add_metric([result], values["tls_reloads"][result])
            yield reloads


def exposition(samples, node=None):
    """
    The text of C{/metrics}: the cache samples, the node's own counters
    and the process's own metrics, through a registry of its own (not the
    library's global one, which anything imported could add to).

    @param node: a L{NodeCounters.sample}, or L{None}.
    @rtype: L{bytes}
    """
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(CacheCollector(samples))
    if node is not None:
        metrics.register(NodeCollector(node))
    ProcessCollector(registry=metrics)
    PlatformCollector(registry=metrics)
    GCCollector(registry=metrics)
    return generate_latest(metrics)


class MetricsResource(Resource):
    """
    C{GET /metrics} in the Prometheus text format, behind C{[metrics]
    access}.

    @ivar node: the node's L{NodeCounters}, or L{None} for none.
    """

    isLeaf = True

    def __init__(
        self,
        index: Any,
        registry: Any,
        settings: Any,
        clock: IReactorTime,
        inThread: Callable[..., Deferred],
        node: Optional[NodeCounters] = None,
    ) -> None:
        """
        @param index: the control index (C{caches}, C{planOf}).
        @param registry: the L{memcachier.runtime.CacheRegistry}.
        @param settings: L{memcachier.node.settings.Settings} (C{metrics.access},
            C{metrics.token}).
        @param clock: the reactor, for uptimes.
        @param inThread: C{inThread(f, *args)} runs C{f} off the reactor
            and returns a L{Deferred} of its result.  Formatting a
            thousand caches takes about half a second, which would stall
            every memcache client if done on the reactor; only the reading
            (L{sampleCaches}) is.
        @param node: the node's own counters, or L{None} for none.
        """
        super().__init__()
        self.index = index
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.inThread = inThread
        self.node = node

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return errorBody(request, 405, "method not allowed here")
        return super().render(request)

    def render_GET(self, request):
        try:
            if self.settings.metrics.access == "off":
                raise ApiError(404, "metrics are off ([metrics] access)")
            if request.postpath not in ([], [b""]):
                raise ApiError(404, "no such path")
            if self.settings.metrics.access == "token":
                checkBearer(request, self.settings.metrics.token, "metrics endpoint")
        except ApiError as e:
            for name, value in e.headers.items():
                request.setHeader(name, value)
            return errorBody(request, e.code, e.message)
        samples = sampleCaches(self.index, self.registry, self.clock)
        node = self.node.sample() if self.node is not None else None
        gone: List[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = self.inThread(exposition, samples, node)
        d.addCallbacks(self.writeExposition, self.exposeFailed, callbackArgs=(request, gone),
                       errbackArgs=(request, gone))
        return NOT_DONE_YET

    def writeExposition(self, body: bytes, request: Any, gone: List[bool]) -> None:
        if gone:
            return
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(body)
        request.finish()

    def exposeFailed(self, failure: Any, request: Any, gone: List[bool]) -> None:
        _log.failure("/metrics failed", failure)
        if not gone:
            request.write(errorBody(request, 500, "internal error"))
            request.finish()
