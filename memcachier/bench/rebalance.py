# -*- test-case-name: tests.integration.test_cluster_joins -*-
"""
The hit rate of a cluster through a rolling restart, a join and a drain,
with the warm paths on and off.

    .venv/bin/python -m memcachier.bench.rebalance \\
        --database postgresql+psycopg://USER@HOST/DB --svg rebalance.svg

For each of C{on} (C{[cluster] warmup = "30s"}) and C{off} (C{"0s"}) it
starts, in a temporary directory, three clustered nodes sharing the
PostgreSQL database (C{--database}, else C{MEMCACHIER_BENCH_PG}, else
C{MEMCACHIER_TEST_PG}; a cluster of its own name), one cache, and one
pylibmc client (binary SASL, ketama, as MemCachier documents it) on the
three nodes doing 90 % gets and 10 % sets over C{--keys} keys that fit.
After the fill and a steady phase it restarts the three nodes one after
another (SIGTERM, then start again), starts a fourth node (a join), and
drains it (C{memcachier-admin node drain}), each followed by C{--settle}
seconds.  It prints the hit rate of every C{--interval} seconds of each
run, the events in it, the client's errors and the values it read that
were not the last it wrote; and writes an SVG chart of both runs with
C{--svg}.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

from memcachier.bench.process import (
    TwistdNode, addDatabaseOption, freePort, liveServers, requirePostgresql, writeConfig,
)

SECRET = "bench-rebalance-secret"
BEHAVIORS = {
    "tcp_nodelay": True,
    "ketama": True,
    "remove_failed": 1,
    "retry_timeout": 2,
    "dead_timeout": 30,
}


class Load(threading.Thread):
    """
    One client, 90 % gets over C{keys} keys; counts hits and misses per
    time bucket, errors, and stale values.

    @ivar stale: C{(monotonic time, key, value read, value expected)} of
        each get that answered an older value than the last one stored.
    @ivar errors: C{(monotonic time, repr of the exception)} of each
        request that raised.
    """

    def __init__(self, names, username, password, keys):
        super().__init__(daemon=True)
        import pylibmc

        self.client = pylibmc.Client(
            names, binary=True, username=username, password=password, behaviors=BEHAVIORS,
        )
        self.keys = keys
        self.expected = {}
        self.version = 0
        self.samples = []
        self.errors = []
        self.stale = []
        self.stopping = threading.Event()

    def set(self, key):
        self.version += 1
        value = f"{key}:{self.version}"
        if self.client.set(key, value):
            self.expected[key] = value

    def fill(self):
        for i in range(self.keys):
            self.set(f"key{i}")

    def run(self):
        rng = random.Random(11)
        while not self.stopping.is_set():
            key = f"key{rng.randrange(self.keys)}"
            try:
                if rng.random() < 0.1:
                    self.set(key)
                else:
                    value = self.client.get(key)
                    if value is not None and value != self.expected.get(key):
                        self.stale.append((time.monotonic(), key, value, self.expected.get(key)))
                    self.samples.append((time.monotonic(), value is not None))
            except Exception as e:
                self.errors.append((time.monotonic(), repr(e)))

    def hitRate(self, start, end):
        """
        The hit rate of the gets between two monotonic times, and how many
        gets there were (the rate is L{None} without any).
        """
        taken = [hit for at, hit in self.samples if start <= at < end]
        return (sum(taken) / len(taken) if taken else None), len(taken)

    def buckets(self, start, interval):
        """
        (seconds from C{start}, hit rate, gets) of each C{interval}.
        """
        out = {}
        for at, hit in self.samples:
            if at < start:
                continue
            index = int((at - start) // interval)
            hits, gets = out.get(index, (0, 0))
            out[index] = (hits + hit, gets + 1)
        return [
            (index * interval, hits / gets, gets)
            for index, (hits, gets) in sorted(out.items()) if gets
        ]


def _config(directory, port, names, database, cluster, warmup, i):
    """
    Node C{i} of C{names} (not started), with the warm paths' window
    C{warmup}.
    """
    config = writeConfig(
        directory, port, database,
        "[node]\n"
        f'name = "{names[i]}"\n'
        "[cluster]\n"
        f'secret = "{SECRET}"\n'
        'heartbeat_timeout = "2s"\n'
        f'warmup = "{warmup}"\n'
        f"[clusters.{cluster}]\n"
        f"servers = {json.dumps(names)}\n"
        "[caches]\n"
        f'default_cluster = "{cluster}"\n'
        'default_plan = "bench"\n'
        "[plans.bench]\n"
        'memory = "256MiB"\n'
        "connections = 10000\n",
    )
    return TwistdNode(directory, config, port)


def _live(node):
    """
    How many servers C{node} lists as live; 0 while it does not answer.
    """
    try:
        return len(liveServers(node.port))
    except OSError:
        return 0


def _waitLive(nodes, count, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_live(n) == count for n in nodes):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the nodes did not all see {count} live nodes in {timeout:g}s")


def runOnce(database, warmup, options, label, out):
    """
    One run: 3 nodes, the load, the events.

    @return: a L{dict}: C{buckets}, C{events} (seconds, name), C{errors},
        C{stale}, C{steady} (the steady phase's hit rate).
    """
    directory = tempfile.mkdtemp(prefix=f"memcachier-bench-rebalance-{label}-")
    cluster = f"rebalance{os.getpid()}{label}"
    ports = [freePort() for _ in range(4)]
    names = [f"127.0.0.1:{p}" for p in ports]
    nodes = [
        _config(os.path.join(directory, f"node{i}"), ports[i], names, database, cluster, warmup, i)
        for i in range(4)
    ]
    load = None
    events = []
    try:
        created = nodes[0].admin("cache", "create")
        for node in nodes[:3]:
            node.start()
        _waitLive(nodes[:3], 3)
        load = Load(names[:3], created["username"], created["password"], options.keys)
        load.fill()
        start = time.monotonic()
        load.start()

        def event(name):
            events.append((time.monotonic() - start, name))
            print(f"  {label} {time.monotonic() - start:6.1f}s {name}", file=out, flush=True)

        time.sleep(options.steady)
        for i in range(3):
            event(f"restart node {i}")
            nodes[i].stop()
            nodes[i].start()
            _waitLive(nodes[:3], 3)
            time.sleep(options.settle)
        event("node 3 joins")
        nodes[3].start()
        _waitLive(nodes, 4)
        time.sleep(options.settle)
        event("node 3 drains")
        nodes[0].admin("node", "drain", names[3], "--wait", "--timeout", "60")
        _waitLive(nodes[:3], 3)
        time.sleep(options.settle)
        event("end")
    finally:
        if load is not None:
            load.stopping.set()
            load.join(10)
        for node in nodes:
            node.stop()
        if not options.keep:
            shutil.rmtree(directory, ignore_errors=True)
    buckets = load.buckets(start, options.interval)
    steady = [rate for at, rate, _ in buckets if at + options.interval <= options.steady]
    return {
        "buckets": buckets,
        "events": events,
        "errors": [(round(at - start, 1), error) for at, error in load.errors],
        "stale": len(load.stale),
        "steady": sum(steady) / len(steady) if steady else None,
    }


def report(runs, interval, out):
    """
    The table: each interval's hit rate, as a share of the steady one too,
    with the events that started in it.
    """
    print(file=out)
    print(f"{'t (s)':>6}  {'event':<28} {'on':>7} {'on/steady':>9} {'off':>7} {'off/steady':>10}",
          file=out)
    rows = max(len(r["buckets"]) for r in runs.values())
    for i in range(rows):
        cells = []
        names = []
        for label in ("on", "off"):
            run = runs[label]
            buckets = run["buckets"]
            if i < len(buckets):
                at, rate, _ = buckets[i]
                share = rate / run["steady"] if run["steady"] else 0.0
                cells.append((f"{rate:.3f}", f"{share:.3f}"))
                if label == "on":
                    names = [n for t, n in run["events"] if at <= t < at + interval and n != "end"]
            else:
                cells.append(("", ""))
        print(
            f"{i * interval:>6.0f}  {', '.join(names):<28} {cells[0][0]:>7} {cells[0][1]:>9} "
            f"{cells[1][0]:>7} {cells[1][1]:>10}",
            file=out,
        )
    for label, run in runs.items():
        worst = min((rate for _, rate, _ in run["buckets"]), default=0.0)
        print(
            f"{label}: steady {run['steady']:.3f}, worst interval {worst:.3f} "
            f"({worst / run['steady']:.1%} of steady), client errors {len(run['errors'])}, "
            f"stale values {run['stale']}",
            file=out,
        )


def chart(runs, interval, path):
    """
    An SVG line chart of both runs' hit rates, with the events of the
    warm run marked.
    """
    width, height, left, top, bottom = 720, 300, 50, 20, 40
    span = max(r["buckets"][-1][0] + interval for r in runs.values() if r["buckets"])
    plotW, plotH = width - left - 20, height - top - bottom

    def x(t):
        return left + plotW * t / span

    def y(rate):
        return top + plotH * (1.0 - rate)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for rate in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{left + plotW}" y1="{y(rate):.1f}" y2="{y(rate):.1f}" '
            f'stroke="#ddd"/><text x="{left - 6}" y="{y(rate) + 4:.1f}" text-anchor="end">'
            f"{rate:.2f}</text>"
        )
    for at, name in runs["on"]["events"]:
        if name == "end":
            continue
        parts.append(
            f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{top}" y2="{top + plotH}" '
            f'stroke="#999" stroke-dasharray="3,3"/>'
            f'<text x="{x(at) + 2:.1f}" y="{top + plotH + 14}" font-size="9">{name}</text>'
        )
    for label, colour in (("on", "#1f77b4"), ("off", "#d62728")):
        points = " ".join(
            f"{x(at + interval / 2):.1f},{y(rate):.1f}" for at, rate, _ in runs[label]["buckets"]
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
    parts.append(
        f'<text x="{left}" y="{top - 6}">hit rate per {interval:g} s: '
        '<tspan fill="#1f77b4">warm paths on</tspan>, <tspan fill="#d62728">off</tspan></text>'
    )
    parts.append(
        f'<text x="{left + plotW}" y="{height - 4}" text-anchor="end">seconds</text></svg>'
    )
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(
        prog="python -m memcachier.bench.rebalance", description=__doc__.split("\n\n")[0]
    )
    addDatabaseOption(parser, "PostgreSQL URL the nodes share (default $MEMCACHIER_BENCH_PG, $MEMCACHIER_TEST_PG)")
    parser.add_argument("--keys", type=int, default=5000, help="working set (default 5000)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds per sample (5)")
    parser.add_argument("--steady", type=float, default=10.0, help="steady seconds first (10)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds after each event (10)")
    parser.add_argument("--warmup", default="30s", help='[cluster] warmup of the "on" run (30s)')
    parser.add_argument("--only", choices=("on", "off"), help="run one side only")
    parser.add_argument("--svg", help="write the chart here")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' directories")
    options = parser.parse_args(argv)
    requirePostgresql(parser, options.database)
    runs = {}
    for label, warmup in (("on", options.warmup), ("off", "0s")):
        if options.only and options.only != label:
            continue
        print(f"warm paths {label} ([cluster] warmup = {warmup!r})", file=out, flush=True)
        runs[label] = runOnce(options.database, warmup, options, label, out)
        print("  " + " ".join(f"{rate:.3f}" for _, rate, _ in runs[label]["buckets"]),
              file=out, flush=True)
    if len(runs) == 2:
        report(runs, options.interval, out)
        if options.svg:
            chart(runs, options.interval, options.svg)
    else:
        for label, run in runs.items():
            for at, rate, gets in run["buckets"]:
                print(f"{label} {at:6.0f}s {rate:.3f} ({gets} gets)", file=out)
            print(f"{label}: steady {run['steady']}, errors {len(run['errors'])}, "
                  f"stale {run['stale']}", file=out)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(runs, f, indent=2)
    failed = any(run["stale"] for run in runs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
