# -*- test-case-name: tests.unit.test_tap -*-
"""
The node's listeners: an endpoint description becomes a service that binds
at start (so a port in use stops twistd before the reactor runs) and
accepts once the node is ready to authenticate.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from constantly import NamedConstant
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReadDescriptor,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from memcachier.node.endpoints import endpointArgs
from memcachier.node.tls import ReloadingContextFactory

#: memcached's listen backlog (C{-b}); Twisted's default of 50 left
#: thousands of clients believing they were connected under a burst
DEFAULT_BACKLOG = 1024

#: endpoint types whose descriptions take a C{backlog} option
BACKLOG_TYPES = ("tcp", "tcp6", "unix", "ssl")


def withBacklog(description: str, backlog: int) -> str:
    """
    C{description} with C{:backlog=BACKLOG} added when its type takes one
    and it sets none.
    """
    args, kw = endpointArgs(description)
    if args and args[0] in BACKLOG_TYPES and "backlog" not in kw:
        return f"{description}:backlog={backlog}"
    return description


class ListenerService(Service):
    """
    Listens on an endpoint as soon as the service starts, but accepts no
    connection until C{ready} fires (the control index is loaded, so
    authentication works).

    Binding at once means a port already in use stops twistd with an error
    before the reactor runs; until C{ready}, clients wait in the listen
    backlog rather than being refused.

    @ivar port: the L{IListeningPort}, once listening.
    @ivar contextFactory: the L{ReloadingContextFactory} of an C{ssl:}
        listener (reloaded on C{SIGHUP}), else L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        ready: Optional[Deferred[Any]] = None,
        description: str = "",
        surface: str = "memcache",
        contextFactory: Optional[ReloadingContextFactory] = None,
        bound: Optional[Callable[[IListeningPort], object]] = None,
    ) -> None:
        """
        @param ready: a L{Deferred} to wait for before accepting, or
            L{None} to accept at once.
        @param bound: called with the port once listening: the fast paths'
            bound on accepts per read (L{memcachier.node.fastpaths}).
        @param description: the endpoint description, for the log line.
        @param surface: what the listener serves (C{"memcache"}, C{"web"}).
        """
        self.endpoint = endpoint
        self.factory = factory
        self.ready = ready
        self.description = description
        self.surface = surface
        self.contextFactory = contextFactory
        self.bound = bound
        self.port: Optional[IListeningPort] = None

    def startService(self) -> None:
        super().startService()
        results: list[Any] = []
        listening = self.endpoint.listen(self.factory)
        listening.addBoth(results.append)
        if results and isinstance(results[0], Failure):
            results[0].raiseException()
        if results:
            self._listened(results[0])
        else:
            # An asynchronous endpoint (a plugin); errors are logged.
            listening.addCallback(self._listened)
            listening.addErrback(
                lambda f: self._log.failure("Cannot listen on {endpoint}", f, endpoint=self.endpoint)
            )

    def _up(self, port: IListeningPort) -> None:
        address = port.getHost()
        hostPort = getattr(address, "port", None)
        self._log.info(
            "{surface} listener up on {address}",
            event="listener_up",
            surface=self.surface,
            address=f"{address.host}:{hostPort}" if hostPort else str(address),  # type: ignore[attr-defined]
            description=self.description,
        )

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        if self.bound is not None:
            self.bound(port)
        # IListeningPort has stopListening only; TCP, SSL and UNIX ports
        # are also IReadDescriptor, whose stopReading/startReading pause
        # and resume accepting without closing the socket.
        if self.ready is None or not IReadDescriptor.providedBy(port):
            self._up(port)
            return port
        port.stopReading()  # type: ignore[attr-defined]

        def accept(result: object) -> object:
            if self.running and self.port is port:
                port.startReading()  # type: ignore[attr-defined]
                self._up(port)
            return result

        self.ready.addBoth(accept)
        return port

    def stopService(self) -> Optional[Deferred[None]]:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            # a Deferred or None, as stopService may return
            return port.stopListening()
        return None


def listenerService(
    description: str,
    factory: IProtocolFactory,
    reactor: IReactorCore,
    tlsMinimum: NamedConstant,
    ready: Optional[Deferred[Any]] = None,
    backlog: int = DEFAULT_BACKLOG,
    surface: str = "memcache",
    bound: Optional[Callable[[IListeningPort], object]] = None,
) -> ListenerService:
    """
    A L{ListenerService} on C{description} with C{factory}.

    C{ssl:} descriptions get an L{SSL4ServerEndpoint} whose TLS settings
    come from a L{ReloadingContextFactory} (see L{memcachier.node.tls});
    every other description goes through L{serverFromString}.  Either way
    the listen backlog is C{backlog} unless the description sets one.

    @param tlsMinimum: the lowest TLS version to accept on C{ssl:}.
    @param ready: see L{ListenerService}.
    @param surface: what it serves, for its log line.
    @param bound: see L{ListenerService}.
    """
    withDefault = withBacklog(description, backlog)
    if withDefault.split(":", 1)[0] != "ssl":
        return ListenerService(
            serverFromString(reactor, withDefault), factory, ready, description, surface,
            bound=bound,
        )
    contextFactory = ReloadingContextFactory(withDefault, tlsMinimum, backlog)
    listening = contextFactory.listening
    endpoint = SSL4ServerEndpoint(
        reactor,
        listening["port"],
        contextFactory,
        backlog=listening["backlog"],
        interface=listening["interface"],
    )
    return ListenerService(endpoint, factory, ready, description, surface, contextFactory, bound)
