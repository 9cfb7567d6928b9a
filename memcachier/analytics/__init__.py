"""
Analytics of a node: counters sampled into rollups (insight), latency
probes, and introspection of individual commands (recent logs, popular
keys and prefixes, key stats, watched prefixes).

  - L{memcachier.analytics.series}: the arithmetic, no I/O.
  - L{memcachier.analytics.repository}: the tables, in the thread pool.
  - L{memcachier.analytics.introspection}: per-cache sketches and rings,
    fed in batches from the sessions' taps (L{memcachier.analytics.events}).
  - L{memcachier.analytics.service}: the sampler, the latency probe, the
    prefix watcher, and the queries of the HTTP API.

See C{docs/analytics.md}.
"""
