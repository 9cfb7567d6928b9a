# -*- test-case-name: tests.integration.test_workers -*-
"""
Throughput of C{[node] workers = 1} and C{2}: one node, then the same node
with two workers (one local cluster on the shared PostgreSQL).

    .venv/bin/python -m memcachier.bench.workers \\
        --database postgresql+psycopg://USER@HOST/DB --mcload ../shared/bench/mcload

runs C{--generators} C{mcload} load generators at once (C{--connections}
each, 90 % gets, ASCII auth unless C{--binary}) in three scenarios:

  1. C{1 worker}: every generator against the node's port;
  2. C{2 workers, owners}: generator I{g} against worker C{g % 2}, with
     keys that worker owns (what a ketama client given both ports does:
     nothing is forwarded);
  3. C{2 workers, one port}: every generator against worker 0's port
     (a client that takes one server: half the keys are forwarded).

For each it prints the requests/s together, the worst p99, errors, and the
cores each side used over the measured window (user + system CPU seconds
per second, from C{/proc}): the node's processes (supervisor and workers)
and the generators', and the node's CPU per request.
"""

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time

from memcachier.bench.cluster import (
    BENCH_PLAN, Node, cpuSeconds, findMcload, ownedPrefixes, startGenerators,
)
from memcachier.bench.process import (
    addDatabaseOption, addMcloadOption, collectLoad, freePort, requirePostgresql,
)

SECRET = "bench-workers-secret"


def accepts(name):
    """
    Whether C{host:port} accepts connections.
    """
    host, _, port = name.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def processTree(pid):
    """
    C{pid} and its children's process ids.
    """
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [pid] + [int(p) for p in f.read().split()]


def run(mcload, runs, credentials, options, serverPids):
    """
    One mcload per (port, prefix) of C{runs}, all at once.

    @return: L{dict}: C{ops} (requests/s together), C{p99} (worst, µs),
        C{errors}, C{server} and C{load} (cores used by the node's processes
        and by the generators over the measured window).
    """
    processes = startGenerators(mcload, runs, credentials, options)
    time.sleep(options.warmup)
    loadPids = [p.pid for p in processes]
    serverBefore = sum(cpuSeconds(pid) for pid in serverPids)
    loadBefore = sum(cpuSeconds(pid) for pid in loadPids)
    started = time.monotonic()
    time.sleep(options.duration)
    serverAfter = sum(cpuSeconds(pid) for pid in serverPids)
    loadAfter = sum(cpuSeconds(pid) for pid in loadPids)
    elapsed = time.monotonic() - started
    return {**collectLoad(processes, options.duration + options.warmup + 120),
            "server": (serverAfter - serverBefore) / elapsed, "load": (loadAfter - loadBefore) / elapsed}


def startNode(directory, database, workers, cluster):
    """
    A L{Node} with C{workers} workers (not started), on a port whose next
    one is free too (worker 1's).
    """
    port = freePort()
    while True:
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            port = freePort()
    node = Node.write(
        directory, port, database,
        "[node]\n"
        f"workers = {workers}\n"
        "[cluster]\n"
        f'secret = "{SECRET}"\n'
        f"[clusters.{cluster}]\n"
        f'servers = ["127.0.0.1:{port}"]\n'
        "[caches]\n"
        f'default_cluster = "{cluster}"\n'
        f'default_plan = "{BENCH_PLAN}"\n',
    )
    return node


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(
        prog="python -m memcachier.bench.workers", description=__doc__.split("\n\n")[0]
    )
    addDatabaseOption(parser, "PostgreSQL URL (default: $MEMCACHIER_BENCH_PG, $MEMCACHIER_TEST_PG)")
    addMcloadOption(parser, "the mcload binary, or its mcload.c (default: $MCLOAD, ../shared/bench/mcload)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per scenario (2)")
    parser.add_argument("--generators", type=int, default=2, help="load generators at once (2)")
    parser.add_argument("--connections", type=int, default=25, help="connections per generator (25)")
    parser.add_argument("--keys", type=int, default=10, help="keys per generator, all on one worker (10)")
    parser.add_argument("--binary", action="store_true", help="binary protocol (SASL) instead of ASCII")
    options = parser.parse_args(argv)
    requirePostgresql(parser, options.database, ": workers share one")

    directory = tempfile.mkdtemp(prefix="memcachier-bench-workers-")
    results = {}
    try:
        mcload = findMcload(options.mcload, directory)
        for workers in (1, 2):
            node = startNode(os.path.join(directory, f"workers{workers}"), options.database, workers,
                             f"benchw{os.getpid()}x{workers}")
            try:
                created = node.admin("cache", "create")
                credentials = created["username"], created["password"]
                names = [f"127.0.0.1:{node.port + i}" for i in range(workers)]
                prefixes = ownedPrefixes(names, options.keys)
                node.start()
                deadline = time.monotonic() + 30
                while len(node.liveServers()) < workers or not all(map(accepts, names)):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{workers} workers did not all join within 30 s")
                    time.sleep(0.1)
                pids = processTree(node.process.pid)
                owners = [(node.port + g % workers, prefixes[g % workers])
                          for g in range(options.generators)]
                label = "1 worker" if workers == 1 else "2 workers, owners"
                results[label] = run(mcload, owners, credentials, options, pids)
                if workers == 2:
                    results["2 workers, one port"] = run(
                        mcload, [(node.port, prefix) for _, prefix in owners], credentials, options, pids)
            finally:
                node.stop()
        out.write(f"{'binary' if options.binary else 'ascii'}, {options.generators} generators x "
                  f"{options.connections} connections, {options.duration:g} s measured after "
                  f"{options.warmup:g} s, {os.cpu_count()} cores:\n")
        out.write(f"{'scenario':<22} {'req/s':>9} {'p99 us':>8} {'errors':>7} {'node cores':>11} "
                  f"{'loadgen cores':>14} {'node CPU us/req':>16}\n")
        for label, r in results.items():
            perRequest = r["server"] / r["ops"] * 1e6 if r["ops"] else float("nan")
            out.write(f"{label:<22} {r['ops']:>9} {r['p99']:>8} {r['errors']:>7} {r['server']:>11.2f} "
                      f"{r['load']:>14.2f} {perRequest:>16.1f}\n")
        return 1 if sum(r["errors"] for r in results.values()) else 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
