# -*- test-case-name: tests.unit.test_bench -*-
"""
A store's footprint and pauses, in-process (the memory store, or
C{--store segment}): resident memory per
item after filling a keyspace, what one full garbage collection costs with
the keyspace full (the server's own allocations trigger them now and then,
and each walks every tracked object), then the worst pause under a
replace-heavy loop (the collector's, seen through C{gc.callbacks}, and the
slowest single operation, which includes them: in wall time, which also
counts the scheduler's preemptions on a busy machine, and in CPU time of
the thread, which does not).

    .venv/bin/python -m memcachier.bench.store                # 100k and 1M items, 100 B and 1 KiB
    .venv/bin/python -m memcachier.bench.store --items 1000000 --values 100 --seconds 60

Each configuration runs in a fresh interpreter so that memory freed by one
does not flatter the next.  Keys are 12 bytes (C{key:%08d}), as in the
figures of C{docs/performance.md}; the loop stores over existing keys
(C{--sets}, default half the operations) and fetches the others, which is
the C{mcload -r 0.5} load without the sockets.

    .venv/bin/python -m memcachier.bench.store --store segment --items 160000 --values 550 \\
        --new-keys 1 --seconds 100 --rounds 10 --round-sizes 100 325 550 775 1000

churns through new keys in rounds, each round's values of the next size
in C{--round-sizes}, and prints the RSS at the end of each round and its
change from round 5 to the last (C{--json} for every figure).
"""

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time

from memcachier.commands import StoreMode
from memcachier.stores.memory import ITEM_OVERHEAD, MemoryStore
from memcachier.stores.segment import SegmentStore

#: the stores C{--store} names
STORES = {"memory": MemoryStore, "segment": SegmentStore}

_PAGE = os.sysconf("SC_PAGE_SIZE")


def residentBytes():
    """
    This process's resident set size (C{/proc/self/statm}).
    """
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class _WallClock:
    """
    The store's clock: wall time, no timers (nothing here flushes).
    """

    seconds = staticmethod(time.time)


class _GcPauses:
    """
    Collector pauses, timed by C{gc.callbacks}.
    """

    def __init__(self):
        self.worst = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            elapsed = time.perf_counter() - self._started
            self.count[generation] += 1
            self.worst[generation] = max(self.worst[generation], elapsed)


def runOne(items, valueSize, seconds, setRatio, seed=1, newKeys=0.0, store="memory",
           rounds=0, roundSizes=()):
    """
    Fill one keyspace with C{items} values of C{valueSize} bytes, then
    replace and fetch random keys for C{seconds}; with C{newKeys}, that
    share of the stores are of keys never seen, in a keyspace the fill
    filled, so each evicts (churn).  With C{rounds}, the loop is cut in
    that many rounds, round M storing values of C{roundSizes[M % len]}
    bytes, and the RSS is read at the end of each.

    @param store: C{"memory"} or C{"segment"} (L{STORES}).
    @return: a L{dict} of the figures.
    """
    storeName = store
    store = STORES[storeName](_WallClock())
    limit = items * (12 + valueSize + ITEM_OVERHEAD) if newKeys else 1 << 40
    keyspace = store.keyspace(1, limit, 1 << 20)
    setMode = StoreMode.SET
    value = b"x" * valueSize
    gc.collect()
    before = residentBytes()
    fillPauses = _GcPauses()
    gc.callbacks.append(fillPauses)
    started = time.perf_counter()
    cpu = time.thread_time_ns
    fillWorst = fillSlow = 0  # the fill's slowest store, and those over 0.2 ms (CPU)
    for i in range(items):
        c0 = cpu()
        keyspace.store(setMode, b"key:%08d" % i, value, 0, 0, 0)
        onCpu = cpu() - c0
        if onCpu > 200_000:
            fillSlow += 1
            fillWorst = max(fillWorst, onCpu)
    fillSeconds = time.perf_counter() - started
    gc.callbacks.remove(fillPauses)
    # what any full collection costs from now on, whenever the server's
    # other allocations trigger one
    started = time.perf_counter()
    gc.collect()
    fullCollection = time.perf_counter() - started
    filled = residentBytes()

    pauses = _GcPauses()
    gc.callbacks.append(pauses)
    rng = random.Random(seed)
    randrange = rng.randrange
    rand = rng.random
    clock = time.perf_counter_ns
    store_, get = keyspace.store, keyspace.get
    worst = worstCpu = 0
    slow = 0  # operations over 1 ms of wall time
    operations = 0
    fresh = items
    rssSamples = [filled]
    roundRss = []
    sizes = list(roundSizes) or [valueSize]
    values = [b"x" * size for size in sizes]
    if rounds:
        value = values[0]
    roundSeconds = seconds / rounds if rounds else seconds
    roundEnds = time.perf_counter() + roundSeconds
    deadline = time.perf_counter() + seconds
    nextSample = time.perf_counter() + 1
    try:
        while True:
            for _ in range(1000):
                key = b"key:%08d" % randrange(items)
                if rand() < setRatio:
                    if newKeys and rand() < newKeys:
                        key = b"key:%08d" % fresh
                        fresh += 1
                    c0 = cpu()
                    t0 = clock()
                    store_(setMode, key, value, 0, 0, 0)
                    elapsed = clock() - t0
                    onCpu = cpu() - c0
                else:
                    c0 = cpu()
                    t0 = clock()
                    get(key)
                    elapsed = clock() - t0
                    onCpu = cpu() - c0
                if elapsed > worst:
                    worst = elapsed
                if onCpu > worstCpu:
                    worstCpu = onCpu
                if elapsed > 1_000_000:
                    slow += 1
            operations += 1000
            now = time.perf_counter()
            if now >= nextSample:
                rssSamples.append(residentBytes())
                nextSample = now + 1
            if rounds and now >= roundEnds:
                roundRss.append(residentBytes())
                value = values[len(roundRss) % len(values)]
                roundEnds = now + roundSeconds
            if now >= deadline or (rounds and len(roundRss) >= rounds):
                break
    finally:
        gc.callbacks.remove(pauses)
    rssSamples.append(residentBytes())
    if rounds and len(roundRss) < rounds:
        roundRss.append(residentBytes())
    return {
        "store": storeName,
        "items": items,
        "value_bytes": valueSize,
        "new_keys": newKeys,
        "evictions": keyspace.stats()["evictions"],
        "curr_items": keyspace.stats()["curr_items"],
        "rss_mb_rounds": [round(r / 1e6, 1) for r in roundRss],
        # the change from the end of round 5 (the first cycle of sizes) to
        # the end of the last
        "rss_round5_to_last_pct": (
            round((roundRss[-1] - roundRss[4]) / roundRss[4] * 100, 2)
            if len(roundRss) > 5 else None
        ),
        "rss_per_item": round((filled - before) / items, 1),
        "fill_us_per_item": round(fillSeconds / items * 1e6, 2),
        "fill_gc_worst_ms": [round(w * 1e3, 3) for w in fillPauses.worst],
        # an index growing, or room made, in the store that needed it
        "fill_worst_op_cpu_ms": round(fillWorst / 1e6, 3),
        "fill_ops_over_200us": fillSlow,
        "full_collection_ms": round(fullCollection * 1e3, 3),
        "tracked_objects": len(gc.get_objects()),
        "loop_seconds": seconds,
        "operations": operations,
        "worst_op_ms": round(worst / 1e6, 3),
        "worst_op_cpu_ms": round(worstCpu / 1e6, 3),
        "ops_over_1ms": slow,
        # segments the segment store had to drain in one go, its steps
        # having fallen behind (each is a pause of a segment's items)
        "whole_drains": (
            keyspace.segmentStats()["whole_drains"] if storeName == "segment" else None
        ),
        "gc_collections": pauses.count,
        "gc_worst_ms": [round(w * 1e3, 3) for w in pauses.worst],
        "rss_mb_min_max": [
            round(min(rssSamples) / 1e6, 1), round(max(rssSamples) / 1e6, 1)
        ],
        # drift against what the items take (a tiny fill may take no page)
        "rss_drift_pct": round(
            (max(rssSamples) - min(rssSamples)) / max(filled - before, _PAGE) * 100, 2
        ),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m memcachier.bench.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--values", type=int, nargs="+", default=[100, 1024], help="value sizes in bytes")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the replace-heavy loop")
    parser.add_argument("--sets", type=float, default=0.5, help="share of the loop's operations that store")
    parser.add_argument(
        "--new-keys", type=float, default=0.0,
        help="share of the stores that are of new keys, evicting old ones (churn)",
    )
    parser.add_argument("--store", choices=sorted(STORES), default="memory")
    parser.add_argument("--rounds", type=int, default=0, help="cut the loop in rounds (churn)")
    parser.add_argument(
        "--round-sizes", type=int, nargs="+", default=[],
        help="value size of each round in turn (default: --values)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(runOne(args.items[0], args.values[0], args.seconds, args.sets,
                                newKeys=args.new_keys, store=args.store, rounds=args.rounds,
                                roundSizes=args.round_sizes)))
        return 0
    if not args.json:
        print(
            f"{'items':>9} {'value':>6} {'RSS/item':>9} {'full gc':>9} {'worst op':>9}"
            f" {'(on CPU)':>9} {'>1ms':>5} {'gen2 n':>6} {'RSS drift':>9}"
        )
    for items in args.items:
        for size in args.values:
            out = subprocess.run(
                [sys.executable, "-m", "memcachier.bench.store", "--one",
                 "--items", str(items), "--values", str(size),
                 "--seconds", str(args.seconds), "--sets", str(args.sets),
                 "--new-keys", str(args.new_keys), "--store", args.store,
                 "--rounds", str(args.rounds)]
                + (["--round-sizes", *map(str, args.round_sizes)] if args.round_sizes else []),
                check=True, capture_output=True, text=True,
            ).stdout
            result = json.loads(out)
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(
                    f"{items:>9} {size:>6} {result['rss_per_item']:>8}B"
                    f" {result['full_collection_ms']:>7}ms"
                    f" {result['worst_op_ms']:>7}ms {result['worst_op_cpu_ms']:>7}ms"
                    f" {result['ops_over_1ms']:>5} {result['gc_collections'][2]:>6}"
                    f" {result['rss_drift_pct']:>8}%",
                    flush=True,
                )
                if args.rounds:
                    print(
                        f"  RSS MB by round: {result['rss_mb_rounds']};"
                        f" round 5 to last: {result['rss_round5_to_last_pct']}%",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
