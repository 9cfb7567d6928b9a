# -*- test-case-name: tests.unit.test_bench_compare -*-
"""
Throughput and latency of a memcachier node against memcached, side by
side, with the project's own load generator: how the throughput figures
of C{docs/performance.md} are measured.

    .venv/bin/python -m memcachier.bench.compare                 # all four workloads
    .venv/bin/python -m memcachier.bench.compare ascii binary --json

starts its own memcached (C{-t 1}) and, unless C{--port} names a running
node, its own node (C{twistd -n memcachier}, a fresh SQLite control plane
in a scratch directory, one cache on the C{1g} plan, jemalloc preloaded
when installed), both on CPU C{--server-cpu} (1) when there is more than
one; builds C{loadgen.c} when needed and runs it on CPU C{--loadgen-cpu}
(0).  For each workload it runs memcached then the node, C{--pairs} (3)
times, and prints each pair, the median ratio (node / memcached requests
per second) and each side's p50, p99 and worst latency, after the machine
it ran on.  Exit status 1 when a run failed or a server answered an error.

The workloads are C{../shared/bench/compare.sh}'s: 50 connections, 100k
keys stored once before each run, 100-byte values, 90 % gets:
C{ascii}, C{binary} (SASL PLAIN), C{ascii_pipe16} (16 requests in flight
per connection) and C{ascii_mget100} (gets of 100 keys; a request is one
multi-get).
"""

import argparse
import ctypes.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from typing import Optional, Sequence, TextIO

import twisted

from memcachier.bench import loadgen
from memcachier.bench.process import (
    defaultPinning, executable, freePort, pinnedTo, stopProcess, waitForMemcache,
)

SIDES = ("memcached", "memcachier")
PLAN = "1g"


def parseArguments(argv: Optional[Sequence[str]] = None, cpus: Optional[int] = None) -> argparse.Namespace:
    """
    The command line; C{cpus} (default: those this process may run on)
    decides whether servers and load generator are pinned.
    """
    parser = argparse.ArgumentParser(prog="python -m memcachier.bench.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", default=list(loadgen.WORKLOADS),
                        help=f"any of {', '.join(loadgen.WORKLOADS)} (default: all)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (1)")
    parser.add_argument("--pairs", type=int, default=3, help="memcached-then-node pairs (3)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--port", type=int, help="a running node to measure (default: start one)")
    parser.add_argument("--username", help="its cache's username (with --port)")
    parser.add_argument("--password", help="its cache's password (with --port)")
    parser.add_argument("--memcached", default="memcached", help="the memcached to run (memcached)")
    parser.add_argument("--server-cpu", type=int, help="CPU of memcached and the node (1)")
    parser.add_argument("--loadgen-cpu", type=int, help="CPU of the load generator (0)")
    parser.add_argument("--no-jemalloc", action="store_true",
                        help="run the node with glibc's allocator even when jemalloc is installed")
    parser.add_argument("--build-dir", default=None,
                        help=f"where the load generator is built ({loadgen.defaultBuildDirectory()})")
    parser.add_argument("--build", action="store_true",
                        help="only build the load generator and print its path")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    options = parser.parse_args(argv)
    unknown = [w for w in options.workloads if w not in loadgen.WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(loadgen.WORKLOADS)}")
    if (options.username is None) != (options.password is None):
        parser.error("--username and --password go together")
    if options.username is not None and options.port is None:
        parser.error("--username and --password are the credential of the node given by --port")
    if options.pairs < 1 or options.duration <= 0 or options.warmup < 0:
        parser.error("--pairs must be at least 1, --duration positive, --warmup not negative")
    options.server_cpu, options.loadgen_cpu = defaultPinning(options.server_cpu, options.loadgen_cpu, cpus)
    options.build_dir = options.build_dir or loadgen.defaultBuildDirectory()
    return options


def memcachedVersion(path: str) -> str:
    """
    What C{memcached -V} says (C{memcached 1.6.18}).
    """
    return subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10).stdout.strip()


def cpuModel(cpuinfo: str = "/proc/cpuinfo") -> str:
    """
    The first C{model name} of C{/proc/cpuinfo} (else the platform's).
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(memcached: str, options: argparse.Namespace, allocator: str) -> dict:
    """
    What a reader needs to judge a figure: the CPU, the cores, the kernel,
    the software on both sides, where each process ran, the load average.
    """
    return {
        "cpu": cpuModel(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "memcached": memcachedVersion(memcached),
        "node_allocator": allocator,
        "server_cpu": options.server_cpu,
        "loadgen_cpu": options.loadgen_cpu,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def formatMachine(info: dict) -> str:
    """
    The machine as two lines of text.
    """
    pinning = (f"servers on CPU {info['server_cpu']}, load generator on CPU {info['loadgen_cpu']}"
               if info["server_cpu"] is not None else "not pinned (one CPU)")
    return (f"machine: {info['cpu']}, {info['cores']} cores, {info['kernel']}, "
            f"Python {info['python']}, Twisted {info['twisted']}, {info['memcached']}\n"
            f"{pinning}; node allocator: {info['node_allocator']}; "
            f"load average {' '.join(str(x) for x in info['load_average'])}")


class Memcached:
    """
    memcached with one worker thread on a free loopback port.
    """

    def __init__(self, path: str, cpu: Optional[int]) -> None:
        self.path = path
        self.cpu = cpu
        self.port = 0
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        binary = shutil.which(self.path)
        if binary is None:
            raise SystemExit(f"memcached not found ({self.path}): Debian: apt-get install memcached")
        self.port = freePort()
        command = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-t", "1",
                   "-m", "1024", "-c", "4096"]
        if os.geteuid() == 0:
            command += ["-u", "root"]
        self.process = subprocess.Popen(command, preexec_fn=pinnedTo(self.cpu),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waitForMemcache(self.port, self.process, 30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Node:
    """
    C{twistd -n memcachier} as C{docs/performance.md} starts it: a fresh
    SQLite control plane in C{directory}, one cache on the C{1g} plan.
    """

    def __init__(self, directory: str, cpu: Optional[int], preload: Optional[str]) -> None:
        self.directory = directory
        self.cpu = cpu
        self.preload = preload
        self.port = 0
        self.credentials: tuple[str, str] = ("", "")
        self.process: Optional[subprocess.Popen] = None
        self.logPath = os.path.join(directory, "twistd.log")

    def start(self) -> None:
        database = f"sqlite:///{os.path.join(self.directory, 'm.sqlite')}"
        created = json.loads(subprocess.run(
            [executable("memcachier-admin"), "--database", database, "cache", "create", "--plan", PLAN,
             "--json"], capture_output=True, text=True, check=True, timeout=120).stdout)
        self.credentials = (created["username"], created["password"])
        self.port = freePort()
        environment = dict(os.environ)
        if self.preload:
            environment["LD_PRELOAD"] = self.preload
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [executable("twistd"), "-n", "--pidfile=", "--logfile=-", "memcachier",
                 "--database", database, "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                 "--web-listen", "tcp:0:interface=127.0.0.1"],
                cwd=self.directory, env=environment, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=pinnedTo(self.cpu))
        try:
            waitForMemcache(self.port, self.process, 60)
        except RuntimeError as e:
            self.stop()
            with open(self.logPath, errors="replace") as f:
                raise RuntimeError(f"the node did not start ({e}): {f.read()}") from None

    def stop(self) -> None:
        stopProcess(self.process)


def latency(runs: Sequence[dict]) -> dict:
    """
    One side's latency over its runs: the median p50 and p99, the worst max.
    """
    return {
        "p50_us": int(statistics.median(r["p50_us"] for r in runs)),
        "p99_us": int(statistics.median(r["p99_us"] for r in runs)),
        "max_us": max(r["max_us"] for r in runs),
    }


def summarize(name: str, pairs: Sequence[dict]) -> dict:
    """
    A workload's result from its pairs (each C{memcached}, C{memcachier}
    and C{ratio}): the median ratio and each side's latency.
    """
    return {
        "workload": name,
        "pairs": list(pairs),
        "ratio": round(statistics.median(p["ratio"] for p in pairs), 3),
        "latency": {side: latency([p[side] for p in pairs]) for side in SIDES},
        "errors": sum(p[side]["errors"] for p in pairs for side in SIDES),
    }


def formatMicroseconds(us: int) -> str:
    """
    C{850 us} below a millisecond, C{1.25 ms} above.
    """
    return f"{us} us" if us < 1000 else f"{us / 1000:.2f} ms"


def _latencyText(figures: dict) -> str:
    return (f"p50 {formatMicroseconds(figures['p50_us'])}, p99 {formatMicroseconds(figures['p99_us'])}, "
            f"max {formatMicroseconds(figures['max_us'])}")


def formatWorkload(result: dict) -> str:
    """
    A workload's result as text: a line per pair, then the median ratio
    and the latencies.
    """
    lines = []
    for number, pair in enumerate(result["pairs"], 1):
        lines.append(
            f"  pair {number}: memcached {pair['memcached']['requests_per_s']} req/s "
            f"({_latencyText(pair['memcached'])}), memcachier {pair['memcachier']['requests_per_s']} "
            f"req/s ({_latencyText(pair['memcachier'])}), ratio {pair['ratio']:.3f}")
    lines.append(f"{result['workload']}: ratio={result['ratio']:.3f}")
    for side in SIDES:
        lines.append(f"  {side}: {_latencyText(result['latency'][side])}")
    if result["errors"]:
        lines.append(f"  ERRORS: {result['errors']} requests answered with an error")
    return "\n".join(lines)


def runWorkload(binary: str, workload: loadgen.Workload, memcachedPort: int, nodePort: int,
                credentials: Optional[Sequence[str]], options: argparse.Namespace) -> dict:
    """
    C{options.pairs} pairs of runs, memcached then the node.
    """
    common = dict(connections=options.connections, keys=options.keys, valueBytes=options.value_bytes,
                  seconds=options.duration, warmup=options.warmup)
    pairs = []
    for _ in range(options.pairs):
        a = loadgen.run(binary, loadgen.arguments(workload, memcachedPort, **common), options.loadgen_cpu)
        b = loadgen.run(binary, loadgen.arguments(workload, nodePort, credentials=credentials, **common),
                        options.loadgen_cpu)
        if a["requests_per_s"] <= 0:
            raise RuntimeError(f"memcached completed no request on {workload.name}")
        pair = {"memcached": a, "memcachier": b, "ratio": round(b["requests_per_s"] / a["requests_per_s"], 3)}
        pairs.append(pair)
    return summarize(workload.name, pairs)


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    options = parseArguments(argv)
    binary = loadgen.build(options.build_dir)
    if options.build:
        print(binary, file=out)
        return 0
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    preload = None if options.no_jemalloc or options.port else ctypes.util.find_library("jemalloc")
    allocator = ("as started (--port)" if options.port else
                 f"jemalloc ({preload})" if preload else "glibc")
    info = machine(options.memcached, options, allocator)
    if not options.json:
        print(formatMachine(info), file=out, flush=True)
    memcached = Memcached(options.memcached, options.server_cpu)
    node = directory = None
    results = []
    try:
        memcached.start()
        if options.port:
            nodePort = options.port
            credentials = (options.username, options.password) if options.username else None
        else:
            directory = tempfile.mkdtemp(prefix="memcachier-compare-")
            node = Node(directory, options.server_cpu, preload)
            node.start()
            nodePort, credentials = node.port, node.credentials
        for name in options.workloads:
            workload = loadgen.WORKLOADS[name]
            if not options.json:
                print(f"{name}: {workload.describe(options.connections, options.keys, options.value_bytes)}; "
                      f"{options.duration:g} s after {options.warmup:g} s of warm-up", file=out, flush=True)
            result = runWorkload(binary, workload, memcached.port, nodePort, credentials, options)
            results.append(result)
            if not options.json:
                print(formatWorkload(result), file=out, flush=True)
    except RuntimeError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.stop()
        memcached.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    if options.json:
        json.dump({"machine": info, "duration": options.duration, "warmup": options.warmup,
                   "connections": options.connections, "keys": options.keys,
                   "value_bytes": options.value_bytes, "workloads": results}, out)
        out.write("\n")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
