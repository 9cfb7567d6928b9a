# -*- test-case-name: tests.integration.test_bench_cluster -*-
"""
The 3-node figures: what a cluster costs against one node, with
clients that reach each key's owner and with clients that do not.

    .venv/bin/python -m memcachier.bench.cluster \\
        --database postgresql+psycopg://USER@HOST/DB --mcload ../shared/bench/mcload

starts, in a temporary directory, one node alone (SQLite) and three
clustered nodes sharing the PostgreSQL database (C{--database}, else
C{MEMCACHIER_BENCH_PG}, else C{MEMCACHIER_TEST_PG}; a cluster of its own
name, so rows other runs left are ignored), one cache on a plan without a
connection limit worth the name, then runs three C{mcload} load
generators at once (C{--connections} each, ASCII auth, 90 % gets) in
three scenarios:

  1. C{single}: all three against the node alone;
  2. C{owners}: generator I{i} against node I{i}, with keys node I{i} owns
     (what a ketama client such as pylibmc does: nothing is forwarded);
  3. C{one-node}: all three against node 0 of the cluster (what a client
     that hashes differently does at worst: two thirds of the requests
     are forwarded, the keys of generators 1 and 2).

C{mcload} cannot hash keys: its keys are C{<prefix><8 digits>} for
C{0 <= n < --keys}.  So for each node the bench searches a prefix whose
C{--keys} keys the cluster's ring all places on that node; the three
scenarios use the same three prefixes (the same keys), so only placement
differs.  The search costs about 3^keys ring lookups per node: keep
C{--keys} small (10 by default; the key set then also fits the ring's
owner cache, as hot keys do).

For each scenario it prints the requests/s of the three generators
together, their worst p99, errors, and the servers' CPU time per request
(user + system of every node process over the measured window, from
C{/proc}); then the cost per forwarded request: the CPU per request of
C{one-node} minus that of C{owners}, divided by the forwarded fraction
(2/3).  On a machine with fewer cores than nodes plus generators the
requests/s are shared-CPU figures; the CPU per request is the steadier
one.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from memcachier.bench.process import (
    TwistdNode, addDatabaseOption, addMcloadOption, collectLoad, freePort, requirePostgresql,
    startLoad, writeConfig,
)
from memcachier.cluster.ring import Ring

SECRET = "bench-cluster-secret"
BENCH_PLAN = "bench"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpuSeconds(pid):
    """
    User + system CPU seconds a process has used (C{/proc/PID/stat}).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def ownedPrefixes(names, keys, tries=5_000_000):
    """
    For each server of C{names}, a key prefix such that every key
    C{<prefix><n:08d>} for C{0 <= n < keys} is placed on it by the ring.

    @return: L{list} of prefixes (L{str}), in the order of C{names}.
    @raise RuntimeError: none found within C{tries} prefixes.
    """
    ring = Ring(names)
    prefixes = []
    for index, name in enumerate(names):
        for attempt in range(tries):
            prefix = f"n{index}p{attempt}:"
            if all(ring.owner(f"{prefix}{n:08d}".encode()) == name for n in range(keys)):
                prefixes.append(prefix)
                break
        else:
            raise RuntimeError(
                f"no prefix of {keys} keys all on {name} in {tries} tries; use fewer --keys"
            )
    return prefixes


def findMcload(path, directory):
    """
    The C{mcload} binary to run: C{path} itself, or built from
    C{mcload.c} (C{path} ending in C{.c}, or next to a missing or older
    C{path}) into C{directory}.

    @raise SystemExit: neither the binary nor its source exists.
    """
    source = path if path.endswith(".c") else path + ".c"
    binary = None if path.endswith(".c") else path
    if binary and os.access(binary, os.X_OK) and not (
        os.path.exists(source) and os.path.getmtime(source) > os.path.getmtime(binary)
    ):
        return binary
    if not os.path.exists(source):
        raise SystemExit(f"mcload not found: neither {path} nor {source} exists (--mcload)")
    built = os.path.join(directory, "mcload")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", built, source], check=True)
    return built


class Node(TwistdNode):
    """
    One C{twistd -n memcachier} in its own directory.
    """

    @classmethod
    def write(cls, directory, port, database, extra=""):
        """
        A node on C{port} with the bench plan (1 GiB, no connection limit
        worth the name), the control plane at C{database}, then C{extra}.
        """
        config = writeConfig(
            directory, port, database,
            f"[plans.{BENCH_PLAN}]\n"
            'memory = "1GiB"\n'
            "connections = 10000\n" + extra,
        )
        return cls(directory, config, port)


def _credential(created):
    """
    The (username, password) C{cache create --json} printed.
    """
    return created["username"], created["password"]


def startGenerators(mcload, runs, credentials, options):
    """
    One mcload per (port, prefix) of C{runs}, all at once: C{--keys} keys
    of that prefix, for C{--warmup} then C{--duration} seconds.

    @return: the processes, for L{collectLoad}.
    """
    return [
        startLoad(
            mcload, port, credentials,
            ["-c", str(options.connections), "-k", str(options.keys), "-x", prefix,
             "-t", str(options.duration), "-w", str(options.warmup)],
            options.binary,
        )
        for port, prefix in runs
    ]


def runScenario(mcload, runs, credentials, options, pids):
    """
    Run one mcload per (port, prefix) of C{runs} at once.

    @return: L{dict} with C{ops} (requests/s together), C{p99} (worst, µs),
        C{errors} and C{cpu} (server CPU seconds over the measured window).
    """
    processes = startGenerators(mcload, runs, credentials, options)
    # the measured window starts after the warm-up (preloading a few keys
    # takes no time) and lasts the duration
    time.sleep(options.warmup)
    before = sum(cpuSeconds(pid) for pid in pids)
    time.sleep(options.duration)
    after = sum(cpuSeconds(pid) for pid in pids)
    result = collectLoad(processes, options.duration + options.warmup + 120)
    result["cpu"] = after - before
    return result


def cpuPerRequest(result, duration):
    """
    Server CPU microseconds per request.
    """
    requests = result["ops"] * duration
    return result["cpu"] / requests * 1e6 if requests else float("nan")


def report(results, duration, out):
    """
    Print the table and the cost per forwarded request.
    """
    labels = {
        "single": "one node alone",
        "owners": "3 nodes, each key to its owner",
        "one-node": "3 nodes, all to one node (2/3 forwarded)",
    }
    out.write(
        f"{'scenario':<42} {'req/s':>9} {'p99 us':>8} {'errors':>7} {'server CPU us/req':>18}\n"
    )
    for name, label in labels.items():
        r = results[name]
        out.write(
            f"{label:<42} {r['ops']:>9} {r['p99']:>8} {r['errors']:>7} "
            f"{cpuPerRequest(r, duration):>18.1f}\n"
        )
    owners, one = results["owners"], results["one-node"]
    cpu = (cpuPerRequest(one, duration) - cpuPerRequest(owners, duration)) / (2 / 3)
    if one["ops"] and owners["ops"]:
        wall = ((1e6 / one["ops"]) - (1e6 / owners["ops"])) / (2 / 3)
    else:
        wall = float("nan")
    out.write(
        f"cost per forwarded request: {cpu:.1f} us of server CPU "
        f"({wall:.2f} us of wall time per request at these rates)\n"
    )


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(
        prog="python -m memcachier.bench.cluster", description=__doc__.split("\n\n")[0]
    )
    addDatabaseOption(parser, "PostgreSQL URL the three nodes share "
                      "(default: $MEMCACHIER_BENCH_PG, $MEMCACHIER_TEST_PG)")
    addMcloadOption(parser, "the mcload binary, or its mcload.c (built with gcc) "
                    "(default: $MCLOAD, ../shared/bench/mcload)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds measured per scenario (10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of warm-up per scenario (2)")
    parser.add_argument("--connections", type=int, default=16,
                        help="connections per generator (16; three generators)")
    parser.add_argument("--keys", type=int, default=10,
                        help="keys per generator, all owned by one node (10)")
    parser.add_argument("--binary", action="store_true",
                        help="binary protocol (SASL) instead of ASCII")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs)")
    options = parser.parse_args(argv)
    requirePostgresql(parser, options.database, ": the nodes of a cluster share one")

    directory = tempfile.mkdtemp(prefix="memcachier-bench-cluster-")
    nodes = []
    try:
        mcload = findMcload(options.mcload, directory)
        cluster = f"bench{os.getpid()}"
        ports = [freePort() for _ in range(3)]
        names = [f"127.0.0.1:{port}" for port in ports]
        for i, port in enumerate(ports):
            nodes.append(Node.write(
                os.path.join(directory, f"node{i}"), port, options.database,
                "[node]\n"
                f'name = "{names[i]}"\n'
                "[cluster]\n"
                f'secret = "{SECRET}"\n'
                f"[clusters.{cluster}]\n"
                f"servers = {json.dumps(names)}\n"
                "[caches]\n"
                f'default_cluster = "{cluster}"\n'
                f'default_plan = "{BENCH_PLAN}"\n',
            ))
        alone = Node.write(
            os.path.join(directory, "alone"), freePort(),
            f"sqlite:///{directory}/alone/memcachier.sqlite",
            "[caches]\n"
            f'default_plan = "{BENCH_PLAN}"\n',
        )
        nodes.append(alone)
        clusterCredentials = _credential(nodes[0].admin("cache", "create"))
        aloneCredentials = _credential(alone.admin("cache", "create"))
        started = time.monotonic()
        prefixes = ownedPrefixes(names, options.keys)
        out.write(f"prefixes owned by each node ({options.keys} keys each, "
                  f"{time.monotonic() - started:.1f} s to find): {', '.join(prefixes)}\n")
        for node in nodes:
            node.start()
        deadline = time.monotonic() + 30
        while not all(len(n.liveServers()) == 3 for n in nodes[:3]):
            if time.monotonic() > deadline:
                raise RuntimeError("the three nodes did not see each other within 30 s")
            time.sleep(0.1)
        clusterPids = [n.process.pid for n in nodes[:3]]
        results = {}
        results["single"] = runScenario(
            mcload, [(alone.port, p) for p in prefixes], aloneCredentials, options,
            [alone.process.pid],
        )
        results["owners"] = runScenario(
            mcload, list(zip(ports, prefixes)), clusterCredentials, options, clusterPids
        )
        results["one-node"] = runScenario(
            mcload, [(ports[0], p) for p in prefixes], clusterCredentials, options, clusterPids
        )
        out.write(
            f"{'binary' if options.binary else 'ascii'}, 3 generators x {options.connections} "
            f"connections, {options.duration:g} s measured after {options.warmup:g} s:\n"
        )
        report(results, options.duration, out)
        failed = sum(r["errors"] for r in results.values())
        return 1 if failed else 0
    finally:
        for node in nodes:
            node.stop()
        if options.keep:
            out.write(f"logs kept in {directory}\n")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
