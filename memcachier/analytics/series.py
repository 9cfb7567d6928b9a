# -*- test-case-name: tests.unit.test_analytics -*-
"""
Time series arithmetic, without I/O: resolutions and their retention, the
granularity a query gets, the figures of C{insight/processed_stats} and
C{introspection/compound_stats}, and query parameter parsing.

A sample is a L{dict} of counter I{deltas} (what happened during the
sample's C{seconds}) and gauges (the value at the end).  Buckets of every
resolution hold sums of deltas, so a rate is C{delta / seconds} whatever
the resolution.  The definitions are spelled out in C{docs/analytics.md}.
"""

import datetime

MINUTE = 60
HOUR = 3600
DAY = 86400

#: Resolutions of stat and prefix series, finest first, with how long
#: each is kept (seconds).  Rows per cache and server stay below
#: 2880 + 2016 + 2400 + 730.
RETENTION = {
    MINUTE: 2 * DAY,
    10 * MINUTE: 14 * DAY,
    HOUR: 100 * DAY,
    DAY: 730 * DAY,
}
RESOLUTIONS = tuple(sorted(RETENTION))

#: The latency probe's period and finest resolution.
LATENCY_PERIOD = 20
LATENCY_RETENTION = {
    LATENCY_PERIOD: 2 * DAY,
    10 * MINUTE: 14 * DAY,
    HOUR: 100 * DAY,
    DAY: 730 * DAY,
}
LATENCY_RESOLUTIONS = tuple(sorted(LATENCY_RETENTION))

#: The span limits of the contract: up to 24 h, a week, "3 months".
SPAN_LIMITS = ((DAY, MINUTE), (7 * DAY, 10 * MINUTE), (92 * DAY, HOUR))

#: Default span of a query without C{startTime}.
DEFAULT_SPAN = DAY

#: Cumulative counters whose deltas a sample records.
COUNTERS = (
    "auth_cmds", "auth_errors", "bytes_read", "bytes_written",
    "cas_badval", "cas_hits", "cas_misses",
    "cmd_flush", "cmd_get", "cmd_set", "cmd_touch",
    "decr_hits", "decr_misses", "delete_hits", "delete_misses",
    "evictions", "get_expired", "get_hits", "get_misses",
    "incr_hits", "incr_misses", "total_connections",
    "touch_hits", "touch_misses",
)

#: Gauges a sample records as they are at its end: stat name -> series name.
GAUGES = {
    "bytes": "bytes",
    "curr_connections": "connections",
    "curr_items": "items",
    "limit_maxbytes": "max_bytes",
}


class QueryError(ValueError):
    """
    A query parameter is wrong; C{str()} says which and why (HTTP 400).
    """


def _sum(d, *names):
    return sum(d.get(n, 0) for n in names)


def requests(d):
    """
    Requests in a sample: every retrieval, storage, delete, incr/decr,
    touch and flush command (memcached's C{cmd_*} plus incr/decr and
    delete outcomes).
    """
    return (
        d.get("cmd_get", 0) + d.get("cmd_set", 0) + d.get("cmd_touch", 0)
        + d.get("cmd_flush", 0) + _deletes(d) + _incrs(d) + _decrs(d)
    )


def _deletes(d):
    return _sum(d, "delete_hits", "delete_misses")


def _incrs(d):
    return _sum(d, "incr_hits", "incr_misses")


def _decrs(d):
    return _sum(d, "decr_hits", "decr_misses")


def _cas(d):
    return _sum(d, "cas_hits", "cas_misses", "cas_badval")


def _ratio(part, whole):
    return part / whole if whole else 0.0


def _hits(d):
    return _sum(d, "get_hits", "cas_hits", "decr_hits", "delete_hits", "incr_hits", "touch_hits")


def _lookups(d):
    return _hits(d) + _sum(
        d, "get_misses", "cas_misses", "cas_badval", "decr_misses", "delete_misses",
        "incr_misses", "touch_misses",
    )


def hitCounts(data):
    """
    The hits and the lookups behind C{hit_rate} (every retrieval, cas,
    incr/decr, delete and touch that found or did not find its key), for
    rules that need to know how much traffic a rate stands on.

    @return: 2-tuple of L{int}.
    """
    return _hits(data), _lookups(data)


#: Counts per sample behind each C{*_rate} name (divided by seconds).
_RATES = {
    "auth_cmds_rate": lambda d: d.get("auth_cmds", 0),
    "auth_errors_rate": lambda d: d.get("auth_errors", 0),
    "bytes_read_rate": lambda d: d.get("bytes_read", 0),
    "bytes_write_rate": lambda d: d.get("bytes_written", 0),
    "cas_badval_rate": lambda d: d.get("cas_badval", 0),
    "cas_rate": _cas,
    "connection_rate": lambda d: d.get("total_connections", 0),
    "decr_rate": _decrs,
    "delete_rate": _deletes,
    "eviction_rate": lambda d: d.get("evictions", 0),
    "flush_rate": lambda d: d.get("cmd_flush", 0),
    "get_expired_rate": lambda d: d.get("get_expired", 0),
    "get_rate": lambda d: d.get("cmd_get", 0),
    "incr_rate": _incrs,
    "request_rate": requests,
    "set_rate": lambda d: d.get("cmd_set", 0),
    "touch_rate": lambda d: d.get("cmd_touch", 0),
}

#: (hits, attempts) behind each hit rate.
_HIT_RATES = {
    "cas_hit_rate": lambda d: (d.get("cas_hits", 0), _cas(d)),
    "decr_hit_rate": lambda d: (d.get("decr_hits", 0), _decrs(d)),
    "delete_hit_rate": lambda d: (d.get("delete_hits", 0), _deletes(d)),
    "get_hit_rate": lambda d: (d.get("get_hits", 0), _sum(d, "get_hits", "get_misses")),
    "hit_rate": lambda d: (_hits(d), _lookups(d)),
    "incr_hit_rate": lambda d: (d.get("incr_hits", 0), _incrs(d)),
    "touch_hit_rate": lambda d: (d.get("touch_hits", 0), _sum(d, "touch_hits", "touch_misses")),
}

#: Counts whose share of L{requests} each fraction is.
_FRACTIONS = {
    "cas_fraction": _cas,
    "decr_fraction": _decrs,
    "delete_fraction": _deletes,
    "flush_fraction": lambda d: d.get("cmd_flush", 0),
    "get_fraction": lambda d: d.get("cmd_get", 0),
    "incr_fraction": _incrs,
    "set_fraction": lambda d: d.get("cmd_set", 0),
    "touch_fraction": lambda d: d.get("cmd_touch", 0),
}

_GAUGE_NAMES = {series: stat for stat, series in GAUGES.items()}

#: Every name C{insight/processed_stats} accepts.
PROCESSED_NAMES = tuple(sorted(set(_RATES) | set(_HIT_RATES) | set(_FRACTIONS) | set(_GAUGE_NAMES)))


def processed(name, data, seconds):
    """
    One figure of C{processed_stats} for one bucket.

    @param name: one of L{PROCESSED_NAMES}.
    @param data: the bucket's summed deltas and last gauges.
    @param seconds: the sampled seconds the bucket covers.
    @rtype: L{float} or L{int}
    """
    if name in _RATES:
        return _ratio(_RATES[name](data), seconds)
    if name in _HIT_RATES:
        return _ratio(*_HIT_RATES[name](data))
    if name in _FRACTIONS:
        return _ratio(_FRACTIONS[name](data), requests(data))
    return data.get(_GAUGE_NAMES[name], 0)


#: Columns of compound_stats / prefix stats.
COMPOUND_COLUMNS = (
    "time", "num_keys", "total_size", "total_hits_rate", "total_misses_rate",
    "total_mutations_rate",
)


def compoundCounts(data):
    """
    Hits, misses and mutations in a stat bucket, with the same meaning as
    the per-key events of L{memcachier.analytics.introspection}: hits and
    misses are retrievals that found or did not find the key; mutations are
    storage commands (whatever their outcome, as C{cmd_set}), deletes,
    incr/decr and touches (a C{gat} is a retrieval and a touch).

    @return: 3-tuple of counts.
    """
    d = data
    mutations = d.get("cmd_set", 0) + _deletes(d) + _incrs(d) + _decrs(d) + d.get("cmd_touch", 0)
    return d.get("get_hits", 0), d.get("get_misses", 0), mutations


def compoundRow(time, data, seconds):
    """
    A C{compound_stats} row of a cache stat bucket.
    """
    hits, misses, mutations = compoundCounts(data)
    return [
        time, data.get("curr_items", 0), data.get("bytes", 0),
        _ratio(hits, seconds), _ratio(misses, seconds), _ratio(mutations, seconds),
    ]


def prefixRow(time, data, seconds):
    """
    A prefix C{stats} row of a prefix bucket.
    """
    return [
        time, data.get("num_keys", 0), data.get("total_size", 0),
        _ratio(data.get("hits", 0), seconds), _ratio(data.get("misses", 0), seconds),
        _ratio(data.get("mutations", 0), seconds),
    ]


# -- samples and buckets --------------------------------------------------


def delta(previous, current):
    """
    The counter deltas between two L{CacheRuntime.statsDict} readings, and
    the gauges of the second.

    A counter that went down was reset (C{stats reset}, a restart): its
    delta is its new value, what was counted since the reset.

    @param previous: the earlier reading, or L{None} (all zero).
    @rtype: L{dict}
    """
    out = {}
    for name in COUNTERS:
        now = current.get(name, 0)
        before = previous.get(name, 0) if previous else 0
        out[name] = now - before if now >= before else now
    for name in GAUGES:
        out[name] = current.get(name, 0)
    return out


def merge(bucket, sample, gauges=GAUGES):
    """
    Add a sample's deltas to a bucket; gauges take the sample's value
    (the bucket then holds the last reading).

    @param bucket: summed data so far (changed in place and returned).
    @param gauges: the names that are gauges, not counters.
    """
    for name, value in sample.items():
        if name in gauges:
            bucket[name] = value
        else:
            bucket[name] = bucket.get(name, 0) + value
    return bucket


def bucketStart(t, resolution):
    """
    The start of the bucket of C{resolution} holding time C{t}.
    """
    return int(t // resolution) * resolution


def granularity(start, end, now, retention=RETENTION, finest=None):
    """
    The resolution a query gets: by its span, as the contract says (up to
    24 h: 1 minute, or C{finest}; up to a week: 10 minutes; up to 92 days:
    1 hour; beyond: 1 day), made coarser if the chosen resolution is no
    longer kept as far back as C{start}.

    A C{start} older than every retention is refused, as the issue asks:
    the user learns how far back data goes instead of a silently shorter
    series.  (No document can state a bound that moves with the clock; the
    OpenAPI document says it in prose.)

    @param finest: the resolution for spans up to 24 h (latency: 20 s).
    @raise QueryError: no resolution is kept as far back as C{start}.
    @rtype: L{int}
    """
    span = end - start
    chosen = RESOLUTIONS[-1]
    for limit, resolution in SPAN_LIMITS:
        if span <= limit:
            chosen = resolution
            break
    if chosen == MINUTE and finest is not None:
        chosen = finest
    for resolution in sorted(retention):
        if resolution >= chosen and start >= now - retention[resolution] - resolution:
            return resolution
    oldest = max(retention.values())
    raise QueryError(
        f"startTime is more than {oldest // DAY} days ago; data is kept for {oldest // DAY} days"
    )


def parseTime(value, name):
    """
    Parse an ISO 8601 time (C{2023-01-08T15:20:00Z}; an offset or C{Z} is
    needed, or it is taken as UTC).

    @return: POSIX seconds.
    @raise QueryError: not an ISO 8601 time.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            f"{name}: expected an ISO 8601 time such as 2023-01-08T15:20:00Z, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def formatTime(seconds):
    """
    C{2023-01-08T15:20:00Z} for POSIX seconds (whole seconds).
    """
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def timeRange(args, now):
    """
    C{startTime} and C{endTime} of a query, with the contract's defaults
    (24 h ago, now).  A parameter given empty (C{startTime=}) is not left
    out: it is an unparseable time.

    @param args: L{dict} of L{str} to L{str} (query parameters).
    @return: 2-tuple of POSIX seconds.
    @raise QueryError: unparseable, or C{endTime} before C{startTime}.
    """
    end = parseTime(args["endTime"], "endTime") if "endTime" in args else now
    start = parseTime(args["startTime"], "startTime") if "startTime" in args else end - DEFAULT_SPAN
    if end < start:
        raise QueryError("endTime is before startTime")
    return start, end


#: What the C{names} parameter must match: known names, comma-separated,
#: without spaces (the OpenAPI document's pattern).
NAMES_PATTERN = "^(?:{0})(?:,(?:{0}))*$".format("|".join(PROCESSED_NAMES))


def parseNames(value):
    """
    The C{names} parameter: processed stat names separated by commas, as
    L{NAMES_PATTERN} says (no spaces, no empty entries).

    @raise QueryError: missing, empty, or naming an unknown stat.
    @rtype: L{list} of L{str}
    """
    if not value:
        raise QueryError("query parameter names is required (comma-separated stat names)")
    names = value.split(",")
    unknown = [n for n in names if n not in PROCESSED_NAMES]
    if unknown:
        raise QueryError(
            f"unknown stat name(s): {', '.join(map(repr, unknown))}; "
            f"names are separated by commas without spaces; known: {', '.join(PROCESSED_NAMES)}"
        )
    return names
