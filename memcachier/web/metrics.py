# -*- test-case-name: tests.unit.test_metrics -*-
"""
C{/metrics}: the node's caches in the Prometheus text format, with
memcached_exporter's metric names and a C{cache} label (the cache id), so
dashboards and alerts written for memcached work per tenant; plus the
process's own metrics (CPU, memory, file descriptors, garbage collector).

The numbers are read when Prometheus scrapes, from the same counters the
C{stats} command shows: nothing is added to the hot path.  Access is
C{[metrics] access}: C{"off"} (404), C{"open"}, or C{"token"} (a bearer
token, C{[metrics] token}).
"""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from twisted.web.resource import Resource

from memcachier.web.common import ApiError, errorBody
from memcachier.web.provisioning import checkBearer

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
)

#: Gauges: exporter name -> stat, help.
GAUGES = (
    ("current_connections", "curr_connections", "Open connections."),
    ("current_items", "curr_items", "Items held."),
    ("current_bytes", "bytes", "Bytes held."),
    ("limit_bytes", "limit_maxbytes", "The plan's memory, in bytes."),
)


class CacheCollector:
    """
    A prometheus_client collector of every cache in the control index,
    with the counters of its runtime on this node (zeros for a cache this
    node has not served yet).
    """

    def __init__(self, index, registry, clock):
        """
        @param index: the control index (C{caches}, C{planOf}).
        @param registry: the L{memcachier.runtime.CacheRegistry}.
        @param clock: the reactor, for uptimes.
        """
        self.index = index
        self.registry = registry
        self.clock = clock

    def _stats(self, cache):
        runtime = self.registry.existing(cache.id)
        plan = self.index.planOf(cache.id)
        if runtime is None:
            return {"limit_maxbytes": plan.memory}, None, plan
        return runtime.statsDict(), runtime, plan

    def collect(self):
        labels = ["cache"]
        up = GaugeMetricFamily("memcached_up", "Whether the cache serves clients (1) or is disabled (0).", labels=labels)
        uptime = GaugeMetricFamily("memcached_uptime_seconds", "Seconds this node has served the cache.", labels=labels)
        maxConnections = GaugeMetricFamily("memcached_max_connections", "The plan's connection limit.", labels=labels)
        commands = CounterMetricFamily(
            "memcached_commands", "Commands by command and status.", labels=["cache", "command", "status"]
        )
        counters = [
            (CounterMetricFamily("memcached_" + name[: -len("_total")], help, labels=labels), stat)
            for name, stat, help in COUNTERS
        ]
        gauges = [
            (GaugeMetricFamily("memcached_" + name, help, labels=labels), stat)
            for name, stat, help in GAUGES
        ]
        now = self.clock.seconds()
        for cache in self.index.caches():
            label = [str(cache.id)]
            stats, runtime, plan = self._stats(cache)
            up.add_metric(label, 1 if cache.enabled else 0)
            uptime.add_metric(label, 0 if runtime is None else max(now - runtime.startTime, 0))
            maxConnections.add_metric(label, plan.connections)
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


def makeMetricsRegistry(index, registry, clock):
    """
    A prometheus_client registry of the caches and the process (its own,
    not the library's global one, so several sites in one process, as in
    tests, do not collide).

    @rtype: L{CollectorRegistry}
    """
    metrics = CollectorRegistry(auto_describe=False)
    metrics.register(CacheCollector(index, registry, clock))
    ProcessCollector(registry=metrics)
    PlatformCollector(registry=metrics)
    GCCollector(registry=metrics)
    return metrics


class MetricsResource(Resource):
    """
    C{GET /metrics} in the Prometheus text format, behind C{[metrics]
    access}.
    """

    isLeaf = True

    def __init__(self, metrics, settings):
        """
        @param metrics: a L{CollectorRegistry} (L{makeMetricsRegistry}).
        @param settings: L{memcachier.config.Settings} (C{metrics_access},
            C{metrics_token}).
        """
        super().__init__()
        self.metrics = metrics
        self.settings = settings

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return errorBody(request, 405, "method not allowed here")
        return super().render(request)

    def render_GET(self, request):
        try:
            if self.settings.metrics_access == "off":
                raise ApiError(404, "metrics are off ([metrics] access)")
            if request.postpath not in ([], [b""]):
                raise ApiError(404, "no such path")
            if self.settings.metrics_access == "token":
                checkBearer(request, self.settings.metrics_token, "metrics endpoint")
        except ApiError as e:
            for name, value in e.headers.items():
                request.setHeader(name, value)
            return errorBody(request, e.code, e.message)
        body = generate_latest(self.metrics)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body
