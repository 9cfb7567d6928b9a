# -*- test-case-name: tests.unit.test_bench_warm -*-
"""
Warm restart's cost: how long a snapshot of a full keyspace takes to write
(synced to disk) and to restore, and the resident memory of the items
before the stop and after the restore.

    .venv/bin/python -m memcachier.bench.warm                    # 1M items of 100 B
    .venv/bin/python -m memcachier.bench.warm --items 100000 --values 1024

The save and the restore each run in a fresh interpreter, as a stopping
node and the next one do, so the memory figures are those of one process
each: resident memory after filling (or restoring) minus resident memory
before.  Keys are 12 bytes (C{key:%08d}), as in C{memcachier.bench.store}.
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from memcachier.bench.store import residentBytes
from memcachier.commands import StoreMode
from memcachier.node.snapshot import restoreSnapshot, writeSnapshot
from memcachier.stores.discovery import AUTO, chooseStore

#: the keyspace's limit: room for every item, as a plan that fits them
MAX_BYTES = 4 << 30
ITEM_SIZE = 1 << 20
IDENTITY = {"id": 1, "uuid": "bench", "created_at": 0.0, "cluster": "default"}


class _WallClock:
    """
    The store's clock: wall time, no timers (nothing here flushes).
    """

    seconds = staticmethod(time.time)


WALL_CLOCK = _WallClock()


def save(path, items, valueSize, clock=WALL_CLOCK, storeName=AUTO):
    """
    Fill a keyspace and write its snapshot.

    @param clock: the store's clock (an C{IReactorTime}'s C{seconds}).
    @param storeName: the store plugin, as C{[store] plugin}.
    @return: a L{dict} of the figures.
    """
    gc.collect()
    base = residentBytes()
    chosen, store, _ = chooseStore(storeName, {}, clock)
    keyspace = store.keyspace(1, MAX_BYTES, ITEM_SIZE)
    value = b"v" * valueSize
    put = keyspace.store
    for i in range(items):
        put(StoreMode.SET, b"key:%08d" % i, value, 0, 0, 0)
    gc.collect()
    memory = residentBytes() - base
    started = time.perf_counter()
    saved = writeSnapshot(path, store, [(1, IDENTITY)])
    seconds = time.perf_counter() - started
    return {"items": saved.items, "file_bytes": saved.size, "save_seconds": seconds,
            "memory_before": memory, "store": chosen}


def restore(path, clock=WALL_CLOCK, storeName=AUTO):
    """
    Restore a snapshot into a new store.

    @param clock: the store's clock, which also says what has expired.
    @param storeName: the store plugin, as C{[store] plugin}.
    @return: a L{dict} of the figures.
    """
    gc.collect()
    base = residentBytes()
    _, store, _ = chooseStore(storeName, {}, clock)
    started = time.perf_counter()
    with open(path, "rb") as f:
        done, _ = restoreSnapshot(f, store, lambda meta: (MAX_BYTES, ITEM_SIZE), clock.seconds())
    seconds = time.perf_counter() - started
    gc.collect()
    memory = residentBytes() - base
    return {"restored": done.restored, "restore_seconds": seconds, "memory_after": memory}


def _child(*args):
    result = subprocess.run(
        [sys.executable, "-m", "memcachier.bench.warm", *args],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout)


def machine():
    """
    What the figures were measured on.
    """
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m memcachier.bench.warm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--values", type=int, default=100, help="value size in bytes")
    parser.add_argument("--dir", help="where to write the snapshot (default: a temporary directory)")
    parser.add_argument("--store", default=AUTO, help="the store plugin, as [store] plugin (auto)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--phase", choices=("save", "restore"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        path = os.path.join(args.dir, "snapshot")
        if args.phase == "save":
            result = save(path, args.items, args.values, storeName=args.store)
        else:
            result = restore(path, storeName=args.store)
        print(json.dumps(result), file=out)
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        figures = _child("--phase", "save", "--dir", directory, "--items", str(args.items),
                         "--values", str(args.values), "--store", args.store)
        figures.update(_child("--phase", "restore", "--dir", directory, "--store", args.store))
    figures["memory_change"] = figures["memory_after"] / figures["memory_before"] - 1
    figures["machine"] = machine()
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True), file=out)
        return 0
    print(f"{figures['items']} items of {args.values} B, store {figures['store']}; {machine()}", file=out)
    print(f"  save:    {figures['save_seconds']:.2f} s ({figures['file_bytes'] / 2**20:.0f} MiB, synced)",
          file=out)
    print(f"  restore: {figures['restore_seconds']:.2f} s ({figures['restored']} items)", file=out)
    print(f"  memory:  {figures['memory_before'] / 2**20:.0f} MiB before the stop, "
          f"{figures['memory_after'] / 2**20:.0f} MiB after the restore "
          f"({figures['memory_change']:+.1%})", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
