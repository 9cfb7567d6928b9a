# -*- test-case-name: tests.unit.test_fastpaths -*-
"""
The node's fast paths: the only module that uses Twisted internals.

Each fast path buys a measured speed with names Twisted does not promise
to keep.  So they live here, behind one gate (L{enabled}): they are used
only when the installed Twisted is within L{TESTED} (the releases they
were tested on) and the environment does not say
C{MEMCACHIER_FAST_PATHS=off}; otherwise the node takes the public path,
which is always correct (the test suite also runs with the fast paths
off), and says so in one log line.

Direct send (L{directSocket})
=============================

Twisted's C{transport.write} queues data and sends it on the next reactor
pass, registering the socket for writability and unregistering it again:
two C{epoll_ctl} calls per response.  The memcache codecs
(L{memcachier.protocols.base}) instead send on the socket at once when
nothing is queued at the transport, and learn when the transport drained
by being its I{pull} producer.  What is internal: that a
L{twisted.internet.tcp.Connection}'s C{getHandle()} is the very socket it
writes to, so that writing to it between two of its own writes keeps the
byte order.  The composition gives L{directSocket} (or L{None}) to the
memcache factory; the protocols layer never imports this module.

The poll loop (L{streamlinePolling})
====================================

For every ready descriptor, C{EPollReactor.doPoll} calls
C{log.callWithLogger}, which asks the selectable for its C{logPrefix},
copies the legacy log context dict, pushes it on a thread-local stack and
pops it again: about a fifth of the server's CPU when 50 clients each send
one small request at a time (docs/performance.md, "Fast paths").  Only
legacy C{twisted.python.log} messages read that context (their C{system}
field); this project logs through C{twisted.logger}, whose events carry
their own namespace.  L{streamlinePolling} replaces the running reactor's
C{doIteration} with L{poll}: the same epoll call and the same
C{_doReadOrWrite} per event (private names of C{EPollReactor}), with what
escapes it logged and the loop going on, as C{callWithLogger} does.  It
also reads a server-side TCP connection that has input and nothing else
to report itself (C{socket}, C{bufferSize} and C{protocol} of
C{tcp.Server}, and C{_disconnectSelectable} for an error), as
C{tcp.Connection.doRead} would, without the three calls between: about
0.5 us less per ready connection.

Accepts per read (L{boundAccepts})
==================================

Not a speed but a bound on latency.  A L{twisted.internet.tcp.Port}
accepts up to its C{numberAccepts} connections each time its socket is
readable, and adds 20 to it each time it accepted that many: in a storm
of thousands of connections one read of the listening socket accepted
about 500, 10 to 25 ms of one reactor pass while every other request
waited (docs/performance.md, "A noisy neighbour").  L{boundAccepts} caps
it before each read of the port (C{numberAccepts} and C{doRead} are not
underscored, but what C{numberAccepts} does is not promised either).
The memcache listeners accept at most C{memcache.login_batch}
connections per read: as many as may start being read per turn.

Measured gains
==============

Rough figures: a 2-core machine shared with four other busy jobs, so
single runs scattered by a factor of two.  Ratio of our throughput to
memcached's (C{compare.sh}, C{DURATION=3}, the node pinned to the same
core as memcached, Twisted 26.10), the median of 4-5 runs of each:

  - C{ascii}: every fast path on 0.70, all off (C{MEMCACHIER_FAST_PATHS=off})
    0.35; only the direct send off 0.44; only the streamlined loop off 0.42.
    Turning either one off loses about a third (0.70 to 0.42-0.44).
  - C{binary}: on 0.43, off 0.38 (runs from 0.23 to 0.68: within noise).
"""

import errno
import os
import select
import socket
from functools import partial
from typing import Any, Callable, Optional

import twisted
from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger

_log = Logger()

#: the Twisted releases the fast paths were tested on; outside them the
#: node takes the public path.  Run on 26.10 (the test suite, both ways);
#: 24.7 is C{install_requires}' floor, accepted but not run here.
TESTED = ">=24.7,<=26.10"
_LOWEST = (24, 7)
_HIGHEST = (26, 10)

#: the environment variable that turns every fast path off
SWITCH = "MEMCACHIER_FAST_PATHS"

_said = False

#: what L{poll} reads itself: input alone on a server-side TCP connection
_IN = select.EPOLLIN
_SERVER = tcp.Server


def twistedTested(version: Any = None) -> bool:
    """
    Whether C{version} (default: the installed Twisted's) is within
    L{TESTED}.
    """
    version = twisted.version if version is None else version
    return _LOWEST <= (version.major, version.minor) <= _HIGHEST


def _why() -> Optional[str]:
    """
    Why the fast paths are off, or L{None} when they are on.
    """
    if os.environ.get(SWITCH, "").strip().lower() == "off":
        return f"{SWITCH}=off"
    if not twistedTested():
        return f"Twisted {twisted.version.short()} is outside the tested {TESTED}"
    return None


def enabled() -> bool:
    """
    Whether the fast paths may be used; the first time they may not, log
    one line saying why.
    """
    global _said
    why = _why()
    if why is not None and not _said:
        _said = True
        _log.warn(
            "fast paths off ({why}): the node uses Twisted's public API only",
            event="fast_paths_off",
            why=why,
        )
    return why is None


def describe() -> str:
    """
    The fast paths' state for the node's startup line.
    """
    why = _why()
    if why is None:
        return f"on (Twisted {twisted.version.short()}, tested {TESTED})"
    return f"off ({why})"


def directSocket(transport: ITransport) -> Optional[socket.socket]:
    """
    The socket a codec may send on directly for C{transport}: a plain TCP
    connection's own socket, or L{None} (TLS, tests, anything else).
    """
    if isinstance(transport, tcp.Connection):
        sock = transport.getHandle()
        if isinstance(sock, socket.socket):
            return sock
    return None


def directSender() -> Optional[Callable[[ITransport], Optional[socket.socket]]]:
    """
    What the composition gives the memcache factory as its C{directSend}:
    L{directSocket} when the fast paths are L{enabled}, else L{None}.
    """
    return directSocket if enabled() else None


def boundAccepts(port: Any, most: int) -> bool:
    """
    Keep the listening C{port} from accepting more than C{most}
    connections per read of its socket, if it is a TCP (or TLS) port.

    @return: whether it was bounded.
    """
    if not isinstance(port, tcp.Port) or most <= 0:
        return False
    read = port.doRead

    def boundedRead() -> Any:
        if port.numberAccepts > most:
            port.numberAccepts = most
        return read()

    port.doRead = boundedRead
    return True


def acceptBounder() -> Optional[Callable[[Any, int], bool]]:
    """
    What the composition gives the memcache listeners as their bound on
    accepts per read: L{boundAccepts} when the fast paths are L{enabled},
    else L{None} (Twisted's own growth).
    """
    return boundAccepts if enabled() else None


def poll(reactor: EPollReactor, timeout: Optional[float]) -> None:
    """
    One iteration of C{reactor}'s loop: wait up to C{timeout} seconds
    (L{None}: indefinitely) for descriptors, then handle each.

    A TCP connection with input and nothing else to report is read here
    as C{tcp.Connection.doRead} would read it, without the three calls
    between (C{_doReadOrWrite}, C{doRead}, C{_dataReceived}); anything
    else (no data: the end or an error; output; a hang-up) goes through
    Twisted's own C{_doReadOrWrite}, which reads again and says why.
    """
    if timeout is None:
        timeout = -1
    selectables = reactor._selectables
    try:
        events = reactor._poller.poll(timeout, len(selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        raise
    readOrWrite = reactor._doReadOrWrite
    inputOnly, server = _IN, _SERVER
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        if event == inputOnly and type(selectable) is server:
            try:
                data = selectable.socket.recv(selectable.bufferSize)
            except OSError:
                data = b""
            if data:
                try:
                    selectable.protocol.dataReceived(data)
                except KeyboardInterrupt:
                    raise
                except BaseException as escaped:
                    _log.failure("Unhandled error handling {selectable!r}", selectable=selectable)
                    reactor._disconnectSelectable(selectable, escaped, True)
                continue
        try:
            readOrWrite(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            _log.failure("Unhandled error handling {selectable!r}", selectable=selectable)


def streamlinePolling(reactor: Any) -> bool:
    """
    Run C{reactor}'s loop through L{poll} if the fast paths are
    L{enabled} and it is Twisted's epoll reactor (as twistd installs by
    default on Linux); leave any other reactor alone.

    @return: whether the loop was replaced.
    """
    if type(reactor) is not EPollReactor or not enabled():
        return False
    reactor.doIteration = reactor.doPoll = partial(poll, reactor)
    return True
