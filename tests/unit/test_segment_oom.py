"""
The segment store when the operating system refuses it memory: a segment's
C{mmap} fails (address space exhausted, C{vm.max_map_count} reached) and
the store raises C{MemoryError} (which the codecs answer with
C{SERVER_ERROR}, logged once: L{memcachier.protocols.base}), keeps what it
held intact and stores again once memory is back.  Run in child processes:
one under a lowered soft C{RLIMIT_AS}, one that takes every mapping
C{vm.max_map_count} allows, neither of which this process must keep.
"""

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent('''
    import json, resource
    from twisted.internet.task import Clock
    from memcachier.commands import StoreMode, StoreResult, itemValue
    from memcachier.stores.segment import SegmentStore

    MiB = 1024 * 1024
    clock = Clock()
    clock.advance(1_000_000)
    store = SegmentStore(clock)
    # a plan far larger than what the system will give
    ks = store.keyspace(1, 8 * 1024 * MiB, MiB)
    value = b"v" * 100_000
    keys = [b"k%d" % i for i in range(3000)]
    pages = int(open("/proc/self/statm").read().split()[0])
    limit = pages * resource.getpagesize() + 96 * MiB
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    stored, refused = 0, None
    for key in keys:
        try:
            result = ks.store(StoreMode.SET, key, value, 0, 0, 0)
        except MemoryError:
            # memory is back (the rest of this process needs some too)
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
            refused = stored
            break
        assert result[0] == StoreResult.STORED, result
        stored += 1
    # what it held is intact, and it stores again
    intact = all(itemValue(ks.get(key)) == value for key in keys[:stored])
    again = ks.store(StoreMode.SET, b"again", value, 0, 0, 0)[0] == StoreResult.STORED
    again = again and itemValue(ks.get(b"again")) == value
    print(json.dumps({"stored": stored, "refused": refused, "intact": intact, "again": again}))
''')


def test_mappingRefused():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    # refused before the 3,000 items (300 MB) the plan allows, after some
    assert outcome["refused"] is not None and 100 < outcome["refused"] < 3000, outcome
    assert outcome["intact"] and outcome["again"], outcome


MAP_COUNT_CHILD = textwrap.dedent('''
    import ctypes, ctypes.util, json, mmap
    from twisted.internet.task import Clock
    from memcachier.commands import StoreMode, StoreResult, itemValue
    from memcachier.stores.segment import SegmentStore

    limit = int(open("/proc/sys/vm/max_map_count").read())
    if limit > 2_000_000:
        print(json.dumps({"limit": limit}))
        raise SystemExit(0)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    MAP_NORESERVE = 0x4000
    FAILED = ctypes.c_void_p(-1).value
    MiB = 1024 * 1024
    clock = Clock()
    clock.advance(1_000_000)
    ks = SegmentStore(clock).keyspace(1, 8 * 1024 * MiB, MiB)
    value = b"v" * 100_000
    keys = [b"k%d" % i for i in range(300)]
    for key in keys[:50]:
        assert ks.store(StoreMode.SET, key, value, 0, 0, 0)[0] == StoreResult.STORED
    # every mapping left, one page each, alternately unreadable and
    # readable so that no two merge into one
    held = []
    while True:
        p = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ if len(held) % 2 else 0,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p is None or p == FAILED:
            break
        held.append(p)
    stored, refused = 50, None
    for key in keys[50:]:
        try:
            result = ks.store(StoreMode.SET, key, value, 0, 0, 0)
        except MemoryError:
            refused = stored
            break
        assert result[0] == StoreResult.STORED, result
        stored += 1
    for p in held:
        libc.munmap(p, mmap.PAGESIZE)
    intact = all(itemValue(ks.get(key)) == value for key in keys[:stored])
    again = ks.store(StoreMode.SET, b"again", value, 0, 0, 0)[0] == StoreResult.STORED
    again = again and itemValue(ks.get(b"again")) == value
    print(json.dumps({"limit": limit, "held": len(held), "stored": stored, "refused": refused,
                      "intact": intact, "again": again}))
''')


def test_mapCountExhausted():
    """
    With every mapping C{vm.max_map_count} allows taken, the store raises
    C{MemoryError} once its segment being written is full (a new segment
    is a new mapping), keeps what it holds, and stores again once
    mappings are free.
    """
    result = subprocess.run([sys.executable, "-c", MAP_COUNT_CHILD], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert "held" in outcome, (
        f"vm.max_map_count is {outcome['limit']}: too many mappings to take in a test"
    )
    # the 1 MiB segment being written holds at most 10 more items of 100 KB
    assert outcome["refused"] is not None and 50 <= outcome["refused"] <= 60, outcome
    assert outcome["intact"] and outcome["again"], outcome
