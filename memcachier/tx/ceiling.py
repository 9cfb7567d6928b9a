# -*- test-case-name: tests.unit.test_limits -*-
"""
Connection ceilings and the descriptor budget they share, and L{Bursts},
which keeps a refusal that repeats a thousand times a second down to one
log line.

Each surface (the memcache listeners together, the web listener) has its
own ceiling, and both sit below the process's descriptor limit with a
reserve for everything else (the database, log files, listening sockets,
the thread pool), so neither can starve the other: a flood of idle HTTP
connections fills the web ceiling, not the descriptors memcache clients
need.
"""

import resource

#: descriptors kept for what is not a client connection: listening
#: sockets, log files, SQLite and PostgreSQL connections, the thread pool,
#: the latency probe, and the one a refused connection briefly holds
RESERVED_DESCRIPTORS = 64

#: the web ceiling when not configured: at most this (memcached's default
#: maxconns: 1,000 concurrent API requests are served, not refused), and at most a
#: quarter of the descriptor limit
DEFAULT_WEB_MAX_CONNECTIONS = 1024


def descriptorLimit():
    """
    The process's soft C{RLIMIT_NOFILE}.

    @rtype: L{int}
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return soft


def connectionCeilings(memcacheMax, webMax, limit):
    """
    The memcache and web connection ceilings for a descriptor limit.

    @param memcacheMax: C{memcache.max_connections}, or C{0} for all that
        the web ceiling and the reserve leave.
    @param webMax: C{web.max_connections}, or C{0} for the default.
    @param limit: the descriptor limit (L{descriptorLimit}).
    @return: C{(memcache, web)} ceilings.
    @raise ValueError: they do not fit under C{limit}, saying by how much.
    """
    web = webMax or min(DEFAULT_WEB_MAX_CONNECTIONS, limit // 4)
    room = limit - RESERVED_DESCRIPTORS - web
    memcache = memcacheMax or room
    if web < 1 or memcache < 1 or memcache > room:
        raise ValueError(
            f"memcache.max_connections ({memcacheMax or 'auto'} -> {memcache}) + "
            f"web.max_connections ({webMax or 'auto'} -> {web}) + "
            f"{RESERVED_DESCRIPTORS} reserved descriptors exceed the descriptor "
            f"limit {limit} (ulimit -n): lower them or raise the limit"
        )
    return memcache, web


class Bursts:
    """
    Groups repeated events into bursts: a burst ends after C{quietPeriod}
    seconds without one.  Callers log at the first event of a burst only.

    @ivar total: events since start.
    """

    def __init__(self, quietPeriod=60.0):
        self.quietPeriod = quietPeriod
        self.total = 0
        self._last = None
        self._count = 0

    def occurred(self, now):
        """
        Count one event at clock time C{now}.

        @return: L{None} within a burst; at the first event of a new burst,
            how many events the previous burst had (C{0} for the first).
        """
        self.total += 1
        last, self._last = self._last, now
        if last is not None and now - last < self.quietPeriod:
            self._count += 1
            return None
        previous, self._count = self._count, 1
        return previous
