# -*- test-case-name: tests.unit.test_bench_process,tests.integration.test_store_pauses -*-
"""
What the benchmark entries share to run servers as operators do: a
C{twistd -n memcachier} process on a configuration file, started and
waited for until it answers C{version}; and the C{mcload} load generators
they run against it, with their results.
"""

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

_RESULT = re.compile(r"ops_per_s=(\d+).*?p99_us=(\d+).*?errors=(\d+)")


_handedOut: "set[int]" = set()
_portChoice = random.Random()


def _ephemeralRange() -> "tuple[int, int]":
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 free at the time of asking, outside the
    kernel's ephemeral range and never one this process handed out before.

    Binding port 0 would pick from the ephemeral range, which the kernel
    hands out again (to the next such bind, or to an outgoing connection)
    before the server given the port has bound it: two nodes of one test
    were once given the same port.
    """
    low, high = _ephemeralRange()
    for _ in range(1000):
        port = _portChoice.randrange(10000, 65536)
        if low <= port <= high or port in _handedOut:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handedOut.add(port)
        return port
    raise RuntimeError("no free TCP port outside the ephemeral range")


def writeConfig(directory: str, port: int, database: str, extra: str = "", memcache: str = "") -> str:
    """
    Create C{directory} and write its C{memcachier.toml}: memcache on
    C{port} (and the C{[memcache]} settings of C{memcache}) and the web
    server on a free port, both on 127.0.0.1, the control plane at
    C{database}, then the TOML of C{extra}.

    @return: the configuration file's path.
    """
    os.makedirs(directory)
    config = os.path.join(directory, "memcachier.toml")
    with open(config, "w") as f:
        f.write(
            "[memcache]\n"
            f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            + memcache
            + "[web]\n"
            f'listen = "tcp:{freePort()}:interface=127.0.0.1"\n'
            "[database]\n"
            f"url = {json.dumps(database)}\n" + extra
        )
    return config


def addDatabaseOption(parser: argparse.ArgumentParser, help: str) -> None:
    """
    C{--database}, by default C{$MEMCACHIER_BENCH_PG}, else
    C{$MEMCACHIER_TEST_PG}: the PostgreSQL database clustered nodes share.
    """
    parser.add_argument(
        "--database",
        default=os.environ.get("MEMCACHIER_BENCH_PG") or os.environ.get("MEMCACHIER_TEST_PG"),
        help=help,
    )


def requirePostgresql(parser: argparse.ArgumentParser, database: Optional[str], why: str = "") -> None:
    """
    Stop with a usage error unless C{database} is a PostgreSQL URL (nodes
    of a cluster cannot share SQLite).
    """
    if not database or not database.startswith("postgresql"):
        parser.error(f"a PostgreSQL URL is needed (--database or $MEMCACHIER_BENCH_PG){why}")


def addMcloadOption(parser: argparse.ArgumentParser, help: str) -> None:
    """
    C{--mcload}, by default C{$MCLOAD}, else C{../shared/bench/mcload}.
    """
    parser.add_argument("--mcload", default=os.environ.get("MCLOAD", "../shared/bench/mcload"),
                        help=help)


def pinnedTo(cpu: Optional[int]) -> Optional[Callable[[], None]]:
    """
    A C{preexec_fn} that keeps the child on CPU C{cpu} (L{None}: anywhere).
    """
    return (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None


def defaultPinning(serverCpu: Optional[int], clientCpu: Optional[int],
                   cpus: Optional[int] = None) -> "tuple[Optional[int], Optional[int]]":
    """
    The CPUs of a bench's server and of its clients: on a machine of two
    CPUs or more (C{cpus}, default: those this process may run on), CPU 1
    and CPU 0 unless given; on one, wherever given (L{None}: anywhere).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    if cpus > 1:
        serverCpu = 1 if serverCpu is None else serverCpu
        clientCpu = 0 if clientCpu is None else clientCpu
    return serverCpu, clientCpu


def startLoad(mcload: str, port: int, credentials: Sequence[str], arguments: Sequence[str],
              binary: bool = False, cpu: Optional[int] = None) -> subprocess.Popen:
    """
    One C{mcload} against C{port}, logging in with C{credentials}
    (username, password), its output kept for L{collectLoad}; on CPU
    C{cpu} if given.
    """
    username, password = credentials
    return subprocess.Popen(
        [mcload, "-p", str(port), *arguments, "-u", username, "-a", password]
        + (["-B"] if binary else []),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=pinnedTo(cpu),
    )


def collectLoad(processes: Sequence[subprocess.Popen], timeout: float) -> dict:
    """
    Wait for C{mcload} processes and add their results up.

    @return: L{dict}: C{ops} (requests/s together), C{p99} (the worst, µs)
        and C{errors} (together).
    @raise RuntimeError: one failed or printed no result (with its output).
    """
    result = {"ops": 0, "p99": 0, "errors": 0}
    for process in processes:
        out, _ = process.communicate(timeout=timeout)
        found = _RESULT.search(out.strip().splitlines()[-1] if out.strip() else "")
        if process.returncode != 0 or found is None:
            raise RuntimeError(f"mcload failed (exit {process.returncode}): {out}")
        result["ops"] += int(found.group(1))
        result["p99"] = max(result["p99"], int(found.group(2)))
        result["errors"] += int(found.group(3))
    return result


def liveServers(port: int) -> list:
    """
    The servers C{config get cluster} on C{port} lists (L{bytes} each).

    @raise OSError: the port does not answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"config get cluster\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    lines = data.split(b"\n")
    return lines[2].split() if len(lines) > 3 else []


def cacheStats(port: int, credentials: Sequence[str]) -> dict:
    """
    The C{stats} of the cache C{credentials} log in to, as a L{dict} of
    L{bytes} to L{bytes}.
    """
    username, password = (c.encode() for c in credentials)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"set %b 0 0 %d\r\n%b\r\nstats\r\n" % (username, len(password), password))
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    stats = {}
    for line in data.split(b"\r\n"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"STAT":
            stats[parts[1]] = parts[2]
    return stats


def stopProcess(process: Optional[subprocess.Popen], timeout: float = 30) -> None:
    """
    SIGTERM (a server's graceful stop), then SIGKILL after C{timeout}
    seconds.
    """
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def executable(name):
    """
    The path of console script C{name} of this Python's environment.
    """
    return os.path.join(os.path.dirname(sys.executable), name)


def startNode(config, directory, logPath, port, timeout=60, cpu=None):
    """
    Start C{twistd -n memcachier --config=CONFIG} in C{directory}, its
    output to C{logPath}, and wait until it answers C{version} on C{port};
    on CPU C{cpu} if given.

    @return: the L{subprocess.Popen}.
    @raise RuntimeError: it exited, or did not answer within C{timeout}
        seconds (with its log).
    """
    with open(logPath, "wb") as log:
        process = subprocess.Popen(
            [executable("twistd"), "-n", "--pidfile=", "--logfile=-", "memcachier",
             f"--config={config}"],
            cwd=directory, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pinnedTo(cpu),
        )
    try:
        waitForMemcache(port, process, timeout)
    except RuntimeError as e:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise RuntimeError(f"{e}: {_read(logPath)}") from None
    return process


def waitForMemcache(port, process, timeout=30.0):
    """
    Wait until the memcache port on 127.0.0.1 I{answers} (C{version}).

    Accepting a TCP connection is not enough: the server binds at once but
    accepts only once its control index is loaded, so an early client
    sits in the listen backlog, and one with a short timeout (pylibmc's
    SASL exchange) fails.

    @raise RuntimeError: the process exited, or C{timeout} passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"version\r\n")
                if s.recv(100).startswith(b"VERSION "):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not answering after {timeout}s")


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


class TwistdNode:
    """
    One C{twistd -n memcachier} on the configuration file C{config}, run
    in C{directory} and logging to C{twistd.log} there; on CPU C{cpu} if
    given.
    """

    def __init__(self, directory, config, port, cpu=None):
        self.directory = directory
        self.config = config
        self.port = port
        self.cpu = cpu
        self.logPath = os.path.join(directory, "twistd.log")
        self.process = None

    def admin(self, *args):
        """
        Run C{memcachier-admin ARGS --json} on this node's configuration.

        @return: what it printed, parsed.
        """
        out = subprocess.run(
            [executable("memcachier-admin"), f"--config={self.config}", *args, "--json"],
            cwd=self.directory, capture_output=True, text=True, check=True, timeout=120,
        ).stdout
        return json.loads(out)

    def liveServers(self):
        """
        What C{config get cluster} lists.
        """
        return liveServers(self.port)

    def start(self):
        self.process = startNode(self.config, self.directory, self.logPath, self.port, cpu=self.cpu)

    def alive(self):
        return self.process.poll() is None

    def log(self):
        return _read(self.logPath)

    def stop(self):
        """
        SIGTERM (the graceful stop), then SIGKILL after 30 s.
        """
        stopProcess(self.process)
