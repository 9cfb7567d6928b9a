# -*- test-case-name: tests.unit.test_tap -*-
"""
twistd support: C{twistd -n memcachier [--config=memcachier.toml] ...}.

L{Options} parses the command line and loads the configuration (so that a
bad config stops twistd before anything starts); L{makeService} hands the
settings to L{memcachier.node.build.buildNode}.
"""

import gc

from twisted.logger import Logger
from twisted.python import usage

from memcachier.node.allocator import warnUnlessJemalloc
from memcachier.node.build import buildNode
from memcachier.node.fastpaths import describe as describeFastPaths
from memcachier.node.fastpaths import directSender, streamlinePolling
from memcachier.node.settings import ConfigError, loadSettings
from memcachier.node.shutdown import NodeService, installGracefulStop
from memcachier.speedups import describe
from memcachier.tx.ceiling import connectionCeilings, descriptorLimit

_log = Logger()


class Options(usage.Options):
    """
    Command line of C{twistd memcachier}.

    @ivar settings: the loaded L{memcachier.node.settings.Settings}, after
        C{parseOptions}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a memcachier node: the memcache port(s) (binary and ASCII "
        "protocols, SASL and ASCII auth), the HTTP API and dashboard. "
        "Without --config, embedded defaults are used (memcache on "
        "127.0.0.1:11211, HTTP on 127.0.0.1:8080, SQLite in "
        "./memcachier.sqlite)."
    )

    optParameters = [
        ["config", "c", None, "TOML configuration file (see memcachier.example.toml)."],
        ["database", "d", None, "Control-plane SQLAlchemy URL; overrides [database] url."],
        ["web-listen", None, None, "Endpoint of the HTTP API and dashboard; overrides [web] listen."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self.settings = None

    def opt_listen(self, description):
        "Add a memcache listener endpoint, e.g. tcp:11211:interface=127.0.0.1 or ssl:11219:privateKey=key.pem:certKey=cert.pem; repeatable (replaces [memcache] listen)."
        self["listen"].append(description)

    def postOptions(self):
        """
        Load the settings; every configuration error becomes one
        L{usage.UsageError} listing them all.
        """
        overrides = {
            "listen": self["listen"],
            "database": self["database"],
            "web_listen": self["web-listen"],
        }
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


def makeService(options: Options) -> NodeService:
    """
    twistd's entry point: the node L{buildNode} builds, on the reactor
    twistd installed, with the fast paths the installed Twisted allows.
    """
    # Imported here, not at the top: importing the global reactor installs
    # the default one, and twistd must have installed its own first.
    from twisted.internet import reactor

    _log.info(
        "hot path: multi-get loops in {loops}, epoll loop streamlined: {streamlined}, "
        "fast paths {fastPaths}",
        event="hot_path",
        loops=describe(),
        streamlined=streamlinePolling(reactor),
        fastPaths=describeFastPaths(),
    )
    if options.settings.node.allocator_warning:
        warnUnlessJemalloc()
    service = buildNode(options.settings, reactor, directSend=directSender())
    reactor.callWhenRunning(installGracefulStop, reactor)
    # Everything imported and built so far lives as long as the process:
    # keep it out of every future full collection, whose cost under load
    # is proportional to the tracked objects they scan (docs/performance.md).
    gc.collect()
    gc.freeze()
    return service
