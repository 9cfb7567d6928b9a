"""
Tests for L{memcachier.node.workers} and C{[node] workers}: the settings
each worker is built from, the configuration errors, the supervisor's
restarts and stop, on a fake process reactor.
"""

import os

import pytest
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure

from memcachier.node.settings import ConfigError, parseSettings, workerListen, workerName
from memcachier.node.tap import Options
from memcachier.node.workers import Workers, workerCommand, workerLogObserver, workerSettings

POSTGRES = '[database]\nurl = "postgresql+psycopg://u@db/memcachier"\n[cluster]\nsecret = "s"\n'


def workersConfig(workers, extra=""):
    return f"[node]\nworkers = {workers}\n{extra}" + POSTGRES


def test_workerNamesAndListeners():
    """
    Worker i's name and listener are node.name's and the first tcp
    listener's port + i, whichever way the port is written.
    """
    assert workerName("cache1.example.com:11211", 2) == "cache1.example.com:11213"
    listen = ("unix:/tmp/mc.sock", "tcp:11211:interface=0.0.0.0:backlog=50", "tcp:9000")
    assert workerListen(listen, 1) == "tcp:11212:interface=0.0.0.0:backlog=50"
    assert workerListen(("tcp:port=11211:interface=127.0.0.1",), 3) == "tcp:port=11214:interface=127.0.0.1"
    assert workerListen(("ssl:11219:privateKey=k.pem",), 1) is None


def test_clustersListEveryWorker():
    """
    With N workers the node's cluster lists every worker after node.name;
    a worker listed already keeps its place, other clusters are untouched.
    """
    settings = parseSettings(workersConfig(3))
    assert settings.clusters == {"default": ("127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213")}
    configured = parseSettings(workersConfig(2, (
        '[clusters.default]\nservers = ["10.0.0.1:11211", "127.0.0.1:11211", "10.0.0.2:11211"]\n'
        '[clusters.dev]\nservers = ["10.0.0.9:11211"]\nkind = "development"\n')))
    assert configured.clusters == {
        "default": ("10.0.0.1:11211", "127.0.0.1:11211", "127.0.0.1:11212", "10.0.0.2:11211"),
        "dev": ("10.0.0.9:11211",),
    }
    listed = parseSettings(workersConfig(2, '[clusters.default]\nservers = ["127.0.0.1:11212", "127.0.0.1:11211"]\n'))
    assert listed.clusters["default"] == ("127.0.0.1:11212", "127.0.0.1:11211")
    assert parseSettings("").clusters == {"default": ("127.0.0.1:11211",)}


def test_workersAuto():
    """
    C{"auto"} is the machine's cores; anything but a positive integer or
    C{"auto"} is an error naming the key.
    """
    cores = os.cpu_count() or 1
    assert parseSettings(workersConfig('"auto"')).node.workers == cores
    assert parseSettings("").node.workers == 1
    for bad in ("0", '"all"', "1.5", "true"):
        with pytest.raises(ConfigError) as info:
            parseSettings(workersConfig(bad))
        assert info.value.errors == [
            f"node.workers: expected a positive integer or \"auto\" (the machine's cores), got "
            f"{bad if bad != '1.5' else '1.5'}"
        ]


def test_workersConfigErrors():
    """
    Several workers need PostgreSQL, a cluster secret and a tcp listener
    whose ports + i exist: each missing one is its own error.
    """
    with pytest.raises(ConfigError) as info:
        parseSettings('[node]\nworkers = 2\n[memcache]\nlisten = ["unix:/tmp/mc.sock"]\n')
    assert info.value.errors == [
        "node.workers: 2 workers share the control plane as a cluster, which needs PostgreSQL; "
        "database.url is SQLite (sqlite:///memcachier.sqlite)",
        "node.workers: 2 workers are a cluster: set cluster.secret",
        "node.workers: workers listen on the first tcp:PORT listener's port + i; memcache.listen has none",
    ]
    with pytest.raises(ConfigError) as info:
        parseSettings(workersConfig(3, '[memcache]\nlisten = ["tcp:65534"]\n'))
    assert info.value.errors == ["node.workers: 3 workers need ports past 65535"]
    # one worker is today's single node: SQLite, no secret
    assert parseSettings("[node]\nworkers = 1\n").node.workers == 1


def test_workerSettings(tmp_path):
    """
    Worker 0 is the node as configured; worker i gets its name, one
    listener on the port + i, an ephemeral web port and its own snapshot
    directory, and keeps everything else (its cluster, the public URL).
    """
    settings = parseSettings(
        f'[node]\nworkers = 2\nname = "10.0.0.1:11211"\nstate_dir = "{tmp_path}"\n' + POSTGRES
        + '[memcache]\nlisten = ["unix:/tmp/x.sock", "tcp:11211:interface=10.0.0.1"]\n'
        + '[web]\nlisten = "tcp:8080:interface=10.0.0.1"\n'
    )
    assert workerSettings(settings, 0) is settings
    worker = workerSettings(settings, 1)
    assert worker.node.name == "10.0.0.1:11212"
    assert worker.memcache.listen == ("tcp:11212:interface=10.0.0.1",)
    assert worker.web.listen == "tcp:0:interface=10.0.0.1"
    assert worker.web.public_url == settings.web.public_url == "http://10.0.0.1:8080"
    assert worker.node.state_dir == str(tmp_path / "worker-1")
    assert worker.node_cluster == settings.node_cluster == "default"
    assert worker.clusters == settings.clusters
    assert worker.database == settings.database and worker.cluster == settings.cluster
    unix = workerSettings(settings.evolve(web={"listen": "unix:/tmp/web.sock"}, node={"state_dir": ""}), 1)
    assert unix.web.listen == "tcp:0:interface=127.0.0.1" and unix.node.state_dir == ""


def test_tapWorkerOption(tmp_path):
    """
    C{--worker=i} builds worker i's settings from the same file and
    arguments; outside 1..N-1 it is a usage error.  The workers' command
    line repeats the supervisor's arguments.
    """
    config = tmp_path / "memcachier.toml"
    config.write_text(workersConfig(3))
    options = Options()
    options.parseOptions([f"--config={config}", "--worker=2"])
    assert options.settings.node.name == "127.0.0.1:11213"
    assert options.settings.memcache.listen == ("tcp:11213:interface=127.0.0.1",)
    for bad in ("0", "3", "x"):
        with pytest.raises(usage.UsageError, match="--worker: expected 1 to 2"):
            Options().parseOptions([f"--config={config}", f"--worker={bad}"])
    supervisor = Options()
    supervisor.parseOptions([f"--config={config}", "--listen", "tcp:11211:interface=127.0.0.1"])
    command = workerCommand(supervisor.arguments)(1)
    assert command[-5:] == ["memcachier", f"--config={config}", "--listen", "tcp:11211:interface=127.0.0.1",
                            "--worker=1"]
    assert "--pidfile=" in command and "--nodaemon" in command
    assert "--logger=memcachier.node.workers.workerLogObserver" in command


def test_workerLogLinesNameTheirWorker(monkeypatch, capsys):
    """
    A worker's log lines are twistd's, with C{worker-I} before the system
    field; a line that names its own system keeps it after the prefix.
    """
    monkeypatch.setenv("MEMCACHIER_WORKER", "2")
    observer = workerLogObserver()
    Logger(namespace="memcachier.node.tap", observer=observer).info("hello {who}", who="there")
    observer({"log_format": "raw", "log_system": "-", "log_time": 0.0, "log_level": LogLevel.warn})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("[worker-2 memcachier.node.tap#info] hello there")
    assert lines[1].endswith("[worker-2 -] raw")


class FakeProcess:
    """
    A spawned process: records the signals it was sent.
    """

    def __init__(self, pid):
        self.pid = pid
        self.signals = []
        self.ended = False

    def signalProcess(self, signal):
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(signal)


class ProcessClock(Clock):
    """
    A clock that spawns L{FakeProcess}es: an C{IReactorProcess} and
    C{IReactorTime} for L{Workers}.
    """

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((protocol, executable, args, env, childFDs, process))
        return process

    def end(self, index, reason=ProcessDone(0)):
        protocol, *_, process = self.spawned[index]
        process.ended = True
        protocol.processEnded(Failure(reason))


def supervisor(count=3, **kw):
    clock = ProcessClock()
    workers = Workers(clock, count, lambda i: ["twistd", f"--worker={i}"], lambda i: f"h:{11211 + i}",
                      env={"A": "1"}, **kw)
    return clock, workers


def test_supervisorStartsWorkers():
    """
    Starting spawns workers 1 to N-1 with their command, the given
    environment and the supervisor's output; standard input is a pipe.
    """
    clock, workers = supervisor()
    workers.startService()
    assert [(e, a, env, fds) for _, e, a, env, fds, _ in clock.spawned] == [
        ("twistd", ["twistd", "--worker=1"], {"A": "1", "MEMCACHIER_WORKER": "1"}, {0: "w", 1: 1, 2: 2}),
        ("twistd", ["twistd", "--worker=2"], {"A": "1", "MEMCACHIER_WORKER": "2"}, {0: "w", 1: 1, 2: 2}),
    ]
    assert sorted(workers.processes) == [1, 2]


def test_supervisorRestartsWithBackoff():
    """
    A worker that exits is started again after 1 s, then 2, 4, ... up to
    the maximum while it keeps exiting young; one that ran for C{steady}
    seconds is started again after 1 s.
    """
    clock, workers = supervisor(count=2, maxDelay=4.0, steady=10.0)
    workers.startService()
    delays = []
    for attempt in range(4):
        clock.advance(0.5)
        clock.end(len(clock.spawned) - 1, ProcessTerminated(signal=9))
        assert 1 not in workers.processes
        before = clock.seconds()
        while len(clock.spawned) == attempt + 1:
            clock.advance(0.25)
        delays.append(clock.seconds() - before)
    assert delays == [1.0, 2.0, 4.0, 4.0]
    clock.advance(10)
    clock.end(len(clock.spawned) - 1)
    clock.advance(0.999)
    assert len(clock.spawned) == 5
    clock.advance(0.001)
    assert len(clock.spawned) == 6 and workers.processes[1] is clock.spawned[-1][-1]


def test_supervisorDrainsOnStop():
    """
    The node's drain sends SIGTERM to every worker and fires once all
    have exited; a worker exiting then is not started again, nor is one
    that was waiting to be.
    """
    clock, workers = supervisor(count=4)
    workers.startService()
    clock.end(2, ProcessTerminated(exitCode=1))  # worker 3 waits for its restart
    drained = workers.drain()
    assert [p.signals for *_, p in clock.spawned] == [["TERM"], ["TERM"], []]
    assert not drained.called
    clock.end(0)
    assert not drained.called
    clock.end(1)
    assert drained.called
    clock.advance(100)
    assert len(clock.spawned) == 3
    stopped = workers.stopService()
    assert stopped.called and workers.abort() == 0


def test_supervisorKillsLateWorkers():
    """
    A worker still running C{killAfter} seconds after its SIGTERM gets
    SIGKILL; stopService waits for its end.
    """
    clock, workers = supervisor(count=2, killAfter=40.0)
    workers.startService()
    stopped = workers.stopService()
    process = clock.spawned[0][-1]
    clock.advance(39.9)
    assert process.signals == ["TERM"] and not stopped.called
    clock.advance(0.1)
    assert process.signals == ["TERM", "KILL"]
    clock.end(0, ProcessTerminated(signal=9))
    assert stopped.called


def test_supervisorStopsQuietlyWithoutWorkers():
    """
    With every worker gone already (or one worker), stopping fires at once
    and signals nothing.
    """
    clock, workers = supervisor(count=1)
    workers.startService()
    assert clock.spawned == []
    assert workers.stopService().called
    assert clock.getDelayedCalls() == []
