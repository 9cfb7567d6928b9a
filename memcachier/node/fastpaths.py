# -*- test-case-name: tests.unit.test_polling -*-
"""
The epoll reactor's poll loop without Twisted's per-event log context.

For every ready descriptor, C{EPollReactor.doPoll} calls
C{log.callWithLogger}, which asks the selectable for its C{logPrefix},
copies the legacy log context dict, pushes it on a thread-local stack and
pops it again: about a fifth of the server's CPU when 50 clients each send
one small request at a time (docs/performance.md, "The poll loop").  Only
legacy C{twisted.python.log} messages read that context (their C{system}
field); this project logs through C{twisted.logger}, whose events carry
their own namespace.

L{streamlinePolling} replaces the running reactor's C{doIteration} with
L{poll}: the same epoll call and the same C{_doReadOrWrite} per event, with
what escapes it logged and the loop going on, as C{callWithLogger} does.
"""

import errno
from functools import partial

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

_log = Logger()


def poll(reactor, timeout):
    """
    One iteration of C{reactor}'s loop: wait up to C{timeout} seconds
    (L{None}: indefinitely) for descriptors, then handle each.
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
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        try:
            readOrWrite(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            _log.failure("Unhandled error handling {selectable!r}", selectable=selectable)


def streamlinePolling(reactor):
    """
    Run C{reactor}'s loop through L{poll} if it is Twisted's epoll
    reactor (as twistd installs by default on Linux); leave any other
    reactor alone.

    @return: whether the loop was replaced.
    """
    if type(reactor) is not EPollReactor:
        return False
    reactor.doIteration = reactor.doPoll = partial(poll, reactor)
    return True
