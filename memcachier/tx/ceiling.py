# -*- test-case-name: tests.unit.test_ceiling -*-
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

L{ConnectionCeiling} is the one mechanism both surfaces use to count
their connections and refuse past their ceiling.
"""

import resource
from typing import Any, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

#: descriptors kept for what is not a client connection: listening
#: sockets, log files, SQLite and PostgreSQL connections, the thread pool,
#: the latency probe, and the one a refused connection briefly holds
RESERVED_DESCRIPTORS = 64

#: the web ceiling when not configured: at most this (memcached's default
#: maxconns: 1,000 concurrent API requests are served, not refused), and at most a
#: quarter of the descriptor limit
DEFAULT_WEB_MAX_CONNECTIONS = 1024


def descriptorLimit() -> int:
    """
    The process's soft C{RLIMIT_NOFILE}.

    @rtype: L{int}
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return soft


def connectionCeilings(memcacheMax: int, webMax: int, limit: int) -> Tuple[int, int]:
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

    def __init__(self, quietPeriod: float = 60.0) -> None:
        self.quietPeriod = quietPeriod
        self.total = 0
        self._last: Optional[float] = None
        self._count = 0

    def occurred(self, now: float) -> Optional[int]:
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


@implementer(IProtocol)
class RefusingProtocol(Protocol):
    """
    Says why and hangs up: the connection is over its surface's ceiling.

    @ivar refusal: the bytes written before the close.
    """

    def __init__(self, refusal: bytes) -> None:
        self.refusal = refusal

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None  # connectionMade follows makeConnection
        transport.write(self.refusal)
        transport.loseConnection()


class ConnectionCeiling:
    """
    One surface's connection ceiling: the count of its open connections,
    the refusal past the limit, one log line per burst of refusals, and
    the open connections themselves for a graceful stop.

    The composition builds one per surface (the memcache listeners share
    one, the web listener has its own), with the limits of
    L{connectionCeilings}, before the factories that use it, and hands it
    to them as a constructor argument.  A factory asks L{admit} in its
    C{buildProtocol}: L{None} means build the surface's protocol, which
    then reports L{opened} from its C{connectionMade} and L{closed} from
    its C{connectionLost}; anything else is the protocol to return
    instead (it writes the refusal and closes).

    Why not L{twisted.protocols.policies.LimitTotalConnectionsFactory}:
    its L{WrappingFactory} puts a L{ProtocolWrapper} between the transport
    and the protocol, one more Python call on every read and every write
    of every connection, and the protocol no longer sees its TCP
    transport, so the memcache direct send
    (L{memcachier.node.fastpaths}) could never apply.  Here the cost is
    two set operations per connection and nothing per read.

    @ivar limit: the ceiling, or L{None} for none.
    @ivar open: the protocols of the connections open now (each has a
        C{drain()} method and a C{transport}).
    @ivar refused: the refused connections, in L{Bursts} (C{refused.total}
        counts them since start).
    """

    _log = Logger()

    def __init__(
        self,
        limit: Optional[int],
        clock: IReactorTime,
        refusal: bytes = b"",
        surface: str = "memcache",
        refusedHow: str = "refusing new connections",
    ) -> None:
        """
        @param limit: the most connections open at once, or L{None}.
        @param clock: the time source of the bursts.
        @param refusal: what a refused connection is sent before the close.
        @param surface: C{memcache} or C{web}: names the log line
            (C{<surface> connection ceiling reached: ...}) and its event
            (C{<surface>_connections_refused}).
        @param refusedHow: how the log line says connections are refused.
        """
        self.limit = limit
        self.clock = clock
        self.refusal = refusal
        self.surface = surface
        self.refusedHow = refusedHow
        self.open: Set[Any] = set()
        self.refused = Bursts()
        self._waiting: List[Deferred] = []

    @property
    def connections(self) -> int:
        """
        How many connections are open.
        """
        return len(self.open)

    def admit(self) -> Optional[Protocol]:
        """
        Whether one more connection may open: L{None} if it may, else the
        L{RefusingProtocol} to give it (counted, and logged at the first
        refusal of a burst).
        """
        if self.limit is None or len(self.open) < self.limit:
            return None
        previous = self.refused.occurred(self.clock.seconds())
        if previous is not None:
            self._log.warn(
                self.surface + " connection ceiling reached: {maxConnections} open; "
                + self.refusedHow.replace("{", "{{").replace("}", "}}")
                + " (logged once per burst; {previousBurst} refused in the previous burst)",
                event=self.surface + "_connections_refused",
                maxConnections=self.limit,
                previousBurst=previous,
            )
        return RefusingProtocol(self.refusal)

    def opened(self, protocol: Any) -> None:
        """
        A connection admitted by L{admit} is open.
        """
        self.open.add(protocol)

    def closed(self, protocol: Any) -> None:
        """
        A connection reported by L{opened} closed; the last one to close
        fires what L{whenEmpty} and L{drain} returned.
        """
        self.open.discard(protocol)
        if not self.open and self._waiting:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def whenEmpty(self) -> Deferred:
        """
        @return: a L{Deferred} firing once no connection is open.
        """
        if not self.open:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def drain(self) -> Deferred:
        """
        Ask every open connection to close once what it was sent is
        answered (its protocol's C{drain()}, see
        L{memcachier.node.shutdown}).

        @return: L{whenEmpty}.
        """
        done = self.whenEmpty()
        for protocol in list(self.open):
            protocol.drain()
        return done

    def abort(self) -> int:
        """
        Drop every connection still open (past the shutdown deadline).

        @return: how many were open.
        """
        left = list(self.open)
        for protocol in left:
            protocol.transport.abortConnection()
        return len(left)
