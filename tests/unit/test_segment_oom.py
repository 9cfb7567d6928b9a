"""
The segment store when the operating system refuses it memory: a segment's
C{mmap} fails (address space exhausted, C{vm.max_map_count} reached) and
the store raises C{MemoryError} (which the codecs answer with
C{SERVER_ERROR}, logged once: L{memcachier.protocols.base}), keeps what it
held intact and stores again once memory is back.  Run in a child process
under a lowered soft C{RLIMIT_AS}, which this process must not keep.
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
