# -*- test-case-name: tests.integration.test_allocator -*-
"""
Does a full cache churning through new keys hold a steady RSS?

    .venv/bin/python -m memcachier.bench.churn                        # 10 x 30 s, jemalloc
    .venv/bin/python -m memcachier.bench.churn --allocator system     # glibc's malloc
    .venv/bin/python -m memcachier.bench.churn --sizes 100 --memory 156MiB --fill 1000000 \\
        --rounds 6 --baseline 0 --get-ratio 0              # 1M x 100 B, 3 minutes

starts C{twistd -n memcachier --config=...} in a temporary directory, as
the docs tell operators to, with one cache of C{--memory} (100 MiB) and
C{[node] allocator = --allocator}, then runs C{--rounds} (10) rounds of
C{--seconds} (30): each round one C{mcload} (C{--connections} 50,
C{--get-ratio} 0.5) over C{--keys} (1M) keys of a prefix no earlier round
used, so every set stores a new key and the full cache evicts, with the
value size of the round taken in turn from C{--sizes} (100, 325, 550,
775, 1000 B: round 5 ends the first cycle, round 10 the second).
C{--fill N} stores N keys first (C{mcload}'s preload), to start full.

After each round it prints the node's C{VmRSS} (C{/proc/PID/status}), the
cache's C{bytes} and C{curr_items}, the requests/s and the p99 latency;
at the end the RSS change from round C{--baseline} (5) to the last.
C{MALLOC_CONF} in this process's environment reaches the node (an
operator's setting wins over the node's own).  The node's log lines about
its allocator (the re-execution; on glibc, how long C{malloc_trim} took at
worst) are printed at the end.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile

from memcachier.bench.cluster import findMcload
from memcachier.bench.fuzz import rss
from memcachier.bench.process import (
    TwistdNode, addMcloadOption, cacheStats, collectLoad, freePort, startLoad, writeConfig,
)

PLAN = "churn"


def roundArguments(options, number):
    """
    The C{mcload} arguments of round C{number} (from 1): its own key
    prefix, of the same length in every round (a key a byte longer can
    fall in the allocator's next size class), and its value size from
    C{--sizes} in turn.
    """
    size = options.sizes[(number - 1) % len(options.sizes)]
    return size, [
        "-n", "-k", str(options.keys), "-x", f"churn{number:03d}:", "-s", str(size),
        "-t", str(options.seconds), "-w", "0", "-c", str(options.connections),
        "-r", str(options.get_ratio),
    ]


def baselineRow(rows, baseline):
    """
    The row of round C{baseline} (0: the fill), or the last if the run
    stopped before it.
    """
    return next((row for row in rows if row["round"] == baseline), rows[-1])


def change(rows, baseline):
    """
    The RSS change, in percent, from the end of round C{baseline} to the
    end of the last.
    """
    first = baselineRow(rows, baseline)["rss"]
    return (rows[-1]["rss"] - first) / first * 100


def run(options, node, credentials, mcload, out):
    """
    The rounds; print a row after each.

    @return: the rows.
    """
    rows = []
    pid = node.process.pid
    print(f"churn: {options.rounds} x {options.seconds} s, {options.memory} cache, "
          f"allocator {options.allocator}, MALLOC_CONF={os.environ.get('MALLOC_CONF', '')!r}, "
          f"start RSS {rss(pid) / 2**20:.1f} MiB", file=out, flush=True)
    print("round  size  RSS MiB  cache MiB    items  req/s  p99 ms", file=out, flush=True)
    if options.fill:
        size = options.sizes[0]
        collectLoad([startLoad(mcload, node.port, credentials, [
            "-k", str(options.fill), "-x", "fill:", "-s", str(size), "-t", "0.1", "-w", "0", "-c", "1"])],
            timeout=600)
        stats = cacheStats(node.port, credentials)
        rows.append(dict(round=0, size=size, rss=rss(pid)))
        print(f" fill  {size:4d}  {rows[0]['rss'] / 2**20:7.1f}  {int(stats.get(b'bytes', 0)) / 2**20:9.1f}"
              f"  {int(stats.get(b'curr_items', 0)):7d}", file=out, flush=True)
    for number in range(1, options.rounds + 1):
        size, arguments = roundArguments(options, number)
        load = collectLoad([startLoad(mcload, node.port, credentials, arguments)],
                           timeout=options.seconds + 120)
        stats = cacheStats(node.port, credentials)
        row = dict(round=number, size=size, rss=rss(pid), cache=int(stats.get(b"bytes", 0)),
                   items=int(stats.get(b"curr_items", 0)), **load)
        rows.append(row)
        print(f"{number:5d}  {size:4d}  {row['rss'] / 2**20:7.1f}  {row['cache'] / 2**20:9.1f}"
              f"  {row['items']:7d}  {row['ops']:5d}  {row['p99'] / 1000:6.1f}", file=out, flush=True)
        if not node.alive():
            raise RuntimeError("the node exited")
    base = baselineRow(rows, options.baseline)
    print(f"RSS round {base['round']} -> {rows[-1]['round']}: {base['rss'] / 2**20:.1f} -> "
          f"{rows[-1]['rss'] / 2**20:.1f} MiB ({change(rows, options.baseline):+.1f} %)",
          file=out, flush=True)
    return rows


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m memcachier.bench.churn",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0, help="per round (30)")
    parser.add_argument("--baseline", type=int, default=5, help="round the RSS change is from (5; 0: the end of --fill)")
    parser.add_argument("--memory", default="100MiB", help="the cache's plan memory (100MiB)")
    parser.add_argument("--allocator", choices=("jemalloc", "system"), default="jemalloc",
                        help="[node] allocator (jemalloc)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[100, 325, 550, 775, 1000],
                        help="value sizes, one per round in turn (100,325,550,775,1000)")
    parser.add_argument("--keys", type=int, default=1_000_000, help="new keys per round (1M)")
    parser.add_argument("--fill", type=int, default=0,
                        help="keys stored first, of the first size, before round 1 (0)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--get-ratio", type=float, default=0.5)
    parser.add_argument("--node-config", default="",
                        help="TOML appended to the node's configuration, e.g. '[analytics]\\nintrospection = false'")
    addMcloadOption(parser, "the mcload binary, or its mcload.c (default: $MCLOAD, ../shared/bench/mcload)")
    options = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))

    directory = tempfile.mkdtemp(prefix="memcachier-churn-")
    try:
        mcload = findMcload(options.mcload, directory)
        port = freePort()
        config = writeConfig(
            os.path.join(directory, "node"), port, f"sqlite:///{directory}/memcachier.sqlite",
            f'[node]\nallocator = "{options.allocator}"\n'
            f'[plans.{PLAN}]\nmemory = "{options.memory}"\nconnections = 1000\n'
            + options.node_config.replace("\\n", "\n") + "\n",
        )
        node = TwistdNode(os.path.dirname(config), config, port)
        created = node.admin("cache", "create", "--plan", PLAN)
        credential = (created.get("credentials") or [created.get("credential") or created])[0]
        credentials = (credential["username"], credential["password"])
        env = dict(os.environ)
        if options.allocator == "system":
            os.environ.pop("LD_PRELOAD", None)
        node.start()
        try:
            run(options, node, credentials, mcload, out)
        finally:
            os.environ.clear()
            os.environ.update(env)
            node.stop()
        lines = node.log().splitlines()
        for line in lines:
            if "malloc_trim" in line or "re-executed" in line:
                print(f"node log: {line.partition(' [')[2] or line}", file=out)
        bad = [line for line in lines
               if "Traceback" in line or "#critical" in line or "#error" in line]
        print(f"node log: {len(bad)} traceback/error lines", file=out)
        return 1 if bad else 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
