# -*- test-case-name: tests.unit.test_tap -*-
"""
twistd support: C{twistd -n memcachier [--config=memcachier.toml] ...}.

L{Options} parses the command line and loads the configuration (so that a
bad config stops twistd before anything starts); L{makeService} hands the
settings to L{memcachier.node.build.buildNode}.
"""

import gc
from typing import Optional, Sequence

from twisted.logger import Logger
from twisted.python import usage

from memcachier.node.allocator import memoryReturner, reexecutedOn, runOnJemalloc, warnUnlessJemalloc
from memcachier.node.build import buildNode
from memcachier.node.fastpaths import describe as describeFastPaths
from memcachier.node.fastpaths import acceptBounder, directSender, streamlinePolling
from memcachier.node.settings import FLAGS, ConfigError, Settings, loadSettings
from memcachier.node.shutdown import NodeService, installGracefulStop
from memcachier.node.workers import watchSupervisor, workerCommand, workerSettings
from memcachier.speedups import describe
from memcachier.tx.ceiling import connectionCeilings, descriptorLimit

_log = Logger()


class Options(usage.Options):
    """
    Command line of C{twistd memcachier}.

    @ivar settings: the loaded L{memcachier.node.settings.Settings}, after
        C{parseOptions}.
    """

    settings: Settings
    synopsis = "[options]"
    longdesc = (
        "Run a memcachier node: the memcache port(s) (binary and ASCII "
        "protocols, SASL and ASCII auth), the HTTP API and dashboard. "
        "Without --config, embedded defaults are used (memcache on "
        "127.0.0.1:11211, HTTP on 127.0.0.1:8080, SQLite in "
        "./memcachier.sqlite)."
    )

    #: --config, then a flag for each option of L{FLAGS} that has one
    optParameters = [["config", "c", None, "TOML configuration file (see memcachier.example.toml)."]] + [
        [f.name, f.short, None, f.help] for f in FLAGS if not f.repeatable
    ] + [["worker", None, None, "Run as worker N of [node] workers (given by the supervisor, worker 0)."]]

    #: the arguments given, which the workers are started with
    arguments: Sequence[str] = ()

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        self.arguments = tuple(options or ())
        super().parseOptions(options)

    def __init__(self) -> None:
        super().__init__()
        for f in FLAGS:
            if f.repeatable:
                self[f.name] = []

    def opt_listen(self, description: str) -> None:
        self["listen"].append(description)

    opt_listen.__doc__ = next(f.help for f in FLAGS if f.name == "listen")

    def postOptions(self) -> None:
        """
        Load the settings; every configuration error becomes one
        L{usage.UsageError} listing them all.
        """
        overrides = {f.name.replace("-", "_"): self[f.name] for f in FLAGS}
        try:
            self.settings = loadSettings(self["config"], overrides)
        except ConfigError as e:
            raise usage.UsageError(str(e))
        try:
            connectionCeilings(
                self.settings.memcache.max_connections,
                self.settings.web.max_connections,
                descriptorLimit(),
            )
        except ValueError as e:
            raise usage.UsageError(f"configuration error: {e}")
        if self["worker"] is not None:
            workers = self.settings.node.workers
            if not (self["worker"].isdigit() and 0 < int(self["worker"]) < workers):
                raise usage.UsageError(f"--worker: expected 1 to {workers - 1} ([node] workers = {workers}), "
                                       f"got {self['worker']!r}")
            self.settings = workerSettings(self.settings, int(self["worker"]))


def makeService(options: Options) -> NodeService:
    """
    twistd's entry point: the node L{buildNode} builds, on the reactor
    twistd installed, with the fast paths the installed Twisted allows.
    """
    # Imported here, not at the top: importing the global reactor installs
    # the default one, and twistd must have installed its own first.
    from twisted.internet import reactor

    if options.settings.node.allocator == "jemalloc":
        runOnJemalloc()
    _log.info(
        "hot path: one-key gets and multi-get loops in {loops}, epoll loop streamlined: {streamlined}, "
        "fast paths {fastPaths}",
        event="hot_path",
        loops=describe(),
        streamlined=streamlinePolling(reactor),
        fastPaths=describeFastPaths(),
    )
    if reexecutedOn():
        _log.info("re-executed with {preload} preloaded ([node] allocator = \"jemalloc\")",
                  event="allocator", preload=reexecutedOn())
    if options.settings.node.allocator_warning and options.settings.node.allocator == "jemalloc":
        warnUnlessJemalloc()
    worker = options["worker"] is not None
    service = buildNode(
        options.settings, reactor, directSend=directSender(),
        workerCommand=None if worker else workerCommand(options.arguments),
        boundAccepts=acceptBounder(),
    )
    trimmer = memoryReturner(reactor, interval=options.settings.node.malloc_trim)
    if trimmer is not None:
        trimmer.setServiceParent(service)
    reactor.callWhenRunning(installGracefulStop, reactor)
    if worker:
        reactor.callWhenRunning(watchSupervisor, reactor)
    # Everything imported and built so far lives as long as the process:
    # keep it out of every future full collection, whose cost under load
    # is proportional to the tracked objects they scan (docs/performance.md).
    gc.collect()
    gc.freeze()
    return service
