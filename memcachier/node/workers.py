# -*- test-case-name: tests.unit.test_workers -*-
"""
Every core: C{[node] workers = N} runs N node processes as one local
cluster.

The process twistd starts is worker 0 and the supervisor: it keeps the
configured listeners (the single port that forwards, 11211 say) and
spawns workers 1 to N-1 (L{Workers}), each a full node built by the same
L{memcachier.node.build.buildNode} from L{workerSettings}: its own name
and memcache port (port + i), an ephemeral web port, its own warm-restart
directory, the same cluster.  The settings list every worker in the
node's cluster's servers, so a ketama client given them all reaches each
key's owner directly.

A worker that exits while the supervisor runs is started again, after a
delay that doubles while it keeps failing.  On C{SIGTERM} the supervisor
passes the signal on to every worker while it drains its own
connections, and exits once they all have.  A worker whose supervisor is
gone (C{kill -9}) sees its standard input close and stops gracefully
(L{watchSupervisor}), so no worker is left behind.

Workers write their log to the supervisor's output, each line naming
its worker (L{workerLogObserver}, twistd's C{--logger}).
"""

import os
import re
import sys
from typing import Any, Callable, Dict, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready, ReactorNotRunning
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import FileLogObserver, ILogObserver, Logger, formatEventAsClassicLogText
from twisted.python.failure import Failure

from memcachier.node.allocator import REEXECUTED
from memcachier.node.settings import Settings, workerListen, workerName

_WEB_PORT = re.compile(r"^((?:tcp|ssl):(?:port=)?)\d+(?=:|$)")

#: how a worker's twistd is run: this interpreter, twistd's own entry point
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: the environment variable that tells a worker's log observer its number
WORKER_ENV = "MEMCACHIER_WORKER"


def workerLogObserver() -> ILogObserver:
    """
    The log observer of a worker (twistd's C{--logger}): twistd's own line
    format on standard output, with the system field prefixed by
    C{worker-I}, so lines of several workers in one output tell apart::

        2026-12-07T04:40:00+0000 [worker-1 memcachier.node.tap#info] ...
    """
    worker = os.environ.get(WORKER_ENV, "?")

    def format(event: Dict[str, Any]) -> Optional[str]:
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = "{}#{}".format(event.get("log_namespace", "-"),
                                    level.name if level is not None else "-")
        return formatEventAsClassicLogText(dict(event, log_system=f"worker-{worker} {system}"))

    return FileLogObserver(sys.stdout, format)


def workerSettings(settings: Settings, worker: int) -> Settings:
    """
    The settings worker C{worker} is built from: worker 0 is the node as
    configured; worker i > 0 is named C{node.name}'s port + i, listens on
    the first C{tcp:} listener's port + i only, serves its web site on an
    ephemeral port (the API and dashboard are worker 0's) and keeps its
    warm-restart snapshot in C{state_dir/worker-i}.
    """
    if worker == 0:
        return settings
    web = settings.web.listen
    stateDir = settings.node.state_dir
    return settings.evolve(
        node={
            "name": workerName(settings.node.name, worker),
            "state_dir": os.path.join(stateDir, f"worker-{worker}") if stateDir else "",
        },
        memcache={"listen": (workerListen(settings.memcache.listen, worker),)},
        web={"listen": _WEB_PORT.sub(r"\g<1>0", web) if _WEB_PORT.match(web)
             else "tcp:0:interface=127.0.0.1"},
    )


def workerCommand(arguments: Sequence[str]) -> Callable[[int], list[str]]:
    """
    The command line of worker i: twistd in the foreground, without a pid
    file (the supervisor's is the service's), logging through
    L{workerLogObserver}, with the supervisor's own C{memcachier}
    arguments and C{--worker=i}.
    """
    def command(worker: int) -> list[str]:
        return [*TWISTD, "--nodaemon", "--pidfile=", f"--logger={__name__}.workerLogObserver",
                "memcachier", *arguments, f"--worker={worker}"]
    return command


class WorkerProtocol(ProcessProtocol):
    """
    One worker process, as its supervisor sees it: its end is reported to
    the supervisor.  Its standard input is a pipe the worker watches
    (L{watchSupervisor}); its output is the supervisor's.
    """

    def __init__(self, supervisor: "Workers", worker: int) -> None:
        self.supervisor = supervisor
        self.worker = worker

    def processEnded(self, reason: Failure) -> None:
        self.supervisor.ended(self.worker, reason)


class Workers(Service):
    """
    The supervisor of workers 1 to C{count}-1: starts them with the node,
    starts one that exits again (after C{firstDelay} seconds, doubled
    after each start that did not last C{steady} seconds, at most
    C{maxDelay}), and stops them all with the node.  A drainable of the
    L{memcachier.node.shutdown.NodeService}: C{drain} sends C{SIGTERM} to
    every worker (each drains its own connections) while the node drains
    its own, and C{stopService} waits for them to exit.

    @ivar processes: worker number to its running process transport.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        command: Callable[[int], Sequence[str]],
        names: Callable[[int], str],
        env: Optional[Dict[str, str]] = None,
        firstDelay: float = 1.0,
        maxDelay: float = 30.0,
        steady: float = 10.0,
        killAfter: float = 60.0,
    ) -> None:
        """
        @param reactor: an C{IReactorProcess} and C{IReactorTime}.
        @param command: worker i's command line (L{workerCommand}).
        @param names: worker i's node name, for the log.
        @param env: the workers' environment (if L{None}, the supervisor's,
            whose allocator preload they inherit without re-executing).
        """
        self.reactor = reactor
        self.count = count
        self.command = command
        self.names = names
        self.env = (
            {k: v for k, v in os.environ.items() if k != REEXECUTED} if env is None else env
        )
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay
        self.steady = steady
        self.killAfter = killAfter
        self.processes: Dict[int, IProcessTransport] = {}
        self.stopping = False
        self._startedAt: Dict[int, float] = {}
        self._delays: Dict[int, float] = {}
        self._restarts: Dict[int, IDelayedCall] = {}
        self._allEnded: list[Deferred[None]] = []
        self._killer: Optional[IDelayedCall] = None

    def startService(self) -> None:
        super().startService()
        for worker in range(1, self.count):
            self._spawn(worker)

    def _spawn(self, worker: int) -> None:
        self._restarts.pop(worker, None)
        args = list(self.command(worker))
        self._startedAt[worker] = self.reactor.seconds()
        self.processes[worker] = self.reactor.spawnProcess(
            WorkerProtocol(self, worker), args[0], args, env={**self.env, WORKER_ENV: str(worker)},
            childFDs={0: "w", 1: 1, 2: 2},
        )
        self._log.info("worker {worker} ({name}) started, pid {pid}", event="worker_started",
                       worker=worker, name=self.names(worker), pid=self.processes[worker].pid)

    def ended(self, worker: int, reason: Failure) -> None:
        """
        Worker C{worker} exited: start it again unless the node is
        stopping; once stopping, fire L{drain}'s L{Deferred} when it was
        the last.
        """
        self.processes.pop(worker, None)
        if self.stopping:
            self._log.info("worker {worker} ({name}) stopped: {reason}", event="worker_stopped",
                           worker=worker, name=self.names(worker), reason=reason.getErrorMessage())
            if not self.processes:
                if self._killer is not None and self._killer.active():
                    self._killer.cancel()
                waiting, self._allEnded = self._allEnded, []
                for d in waiting:
                    d.callback(None)
            return
        lasted = self.reactor.seconds() - self._startedAt[worker]
        delay = self.firstDelay if lasted >= self.steady else min(
            self.maxDelay, self._delays.get(worker, self.firstDelay / 2) * 2)
        self._delays[worker] = delay
        self._log.warn(
            "worker {worker} ({name}) exited after {lasted:.1f}s: {reason}; starting it again in {delay}s",
            event="worker_exited", worker=worker, name=self.names(worker), lasted=lasted,
            reason=reason.getErrorMessage(), delay=delay,
        )
        self._restarts[worker] = self.reactor.callLater(delay, self._spawn, worker)

    def drain(self) -> Deferred[None]:
        """
        Pass the graceful stop on: C{SIGTERM} to every worker (C{SIGKILL}
        to those still running C{killAfter} seconds later), no restart
        from now on.

        @return: a L{Deferred} firing once every worker has exited.
        """
        if self.stopping:
            return self._whenEnded()
        self.stopping = True
        for pending in self._restarts.values():
            pending.cancel()
        self._restarts.clear()
        for process in list(self.processes.values()):
            self._signal(process, "TERM")
        if self.processes:
            self._killer = self.reactor.callLater(self.killAfter, self._kill)
        return self._whenEnded()

    def abort(self) -> int:
        """
        The node's deadline passed: each worker keeps its own (it aborts
        its connections itself); nothing is dropped here.
        """
        return 0

    def stopService(self) -> Deferred[None]:
        """
        Wait for every worker to exit (L{drain} first, if the node has not).
        """
        super().stopService()
        return self.drain()

    def _kill(self) -> None:
        for worker, process in list(self.processes.items()):
            self._log.error("worker {worker} ({name}) still running {seconds}s after SIGTERM: killed",
                            event="worker_killed", worker=worker, name=self.names(worker),
                            seconds=self.killAfter)
            self._signal(process, "KILL")

    def _whenEnded(self) -> Deferred[None]:
        if not self.processes:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._allEnded.append(d)
        return d

    @staticmethod
    def _signal(process: IProcessTransport, signal: str) -> None:
        try:
            process.signalProcess(signal)
        except ProcessExitedAlready:
            pass


class _SupervisorPipe(Protocol):
    """
    A worker's standard input: the supervisor holds the other end, so it
    closes only when the supervisor is gone.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.stopping = False
        reactor.addSystemEventTrigger("before", "shutdown", self.shuttingDown)

    def shuttingDown(self) -> None:
        self.stopping = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.stopping:
            return  # the reactor's own shutdown closes standard input too
        self._log.warn("the supervisor is gone: stopping", event="supervisor_gone")
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass


def watchSupervisor(reactor: Any) -> StandardIO:
    """
    Stop this worker gracefully when its supervisor's end of standard
    input closes.  Call once the reactor runs.
    """
    return StandardIO(_SupervisorPipe(reactor), stdin=0,
                      stdout=os.open(os.devnull, os.O_WRONLY), reactor=reactor)  # type: ignore[call-arg]
