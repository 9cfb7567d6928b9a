"""
The store benchmark and the pause probe measure what they say.
"""

import json

import pytest

from memcachier.bench import store
from memcachier.bench.probe import PauseProbe


def test_storeRunOne():
    """
    One configuration fills the keyspace, runs the loop and reports RSS
    per item, the cost of a full collection and the worst operation.
    """
    result = store.runOne(2000, 100, 0.05, 0.5)
    assert result["items"] == 2000 and result["operations"] >= 1000
    assert result["full_collection_ms"] > 0
    # wall and CPU clocks tick differently: no order between them holds
    assert result["worst_op_ms"] > 0 and result["worst_op_cpu_ms"] >= 0
    assert len(result["gc_collections"]) == 3


def test_storeRunOneSegments():
    """
    On the segment store the run also reports the segments drained whole
    (none: the steps keep up with a churn through new keys) and the fill's
    slowest stores.
    """
    result = store.runOne(20_000, 100, 0.2, 0.5, newKeys=1.0, store="segment")
    assert result["evictions"] > 0
    assert result["whole_drains"] == 0
    assert (result["fill_ops_over_200us"] == 0) == (result["fill_worst_op_cpu_ms"] == 0)
    assert store.runOne(1000, 10, 0.01, 0.5)["whole_drains"] is None


def test_storeMainJson(capsys):
    """
    The command line runs each configuration in a fresh interpreter and
    prints one JSON line per configuration.
    """
    assert store.main(["--items", "1000", "--values", "10", "50", "--seconds", "0.05", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["items"], r["value_bytes"]) for r in lines] == [(1000, 10), (1000, 50)]


class _Clocks:
    def __init__(self):
        self.wall = 0.0
        self.cpu = 0.0


def test_probeTimerLateness():
    """
    The probe reports how late its timer fired and how much CPU the
    interval took, listing the intervals late or busy enough to matter.
    """
    clocks = _Clocks()
    probe = PauseProbe(wall=lambda: clocks.wall, cpu=lambda: clocks.cpu)
    probe.tick()
    clocks.wall += 0.01 + 0.5
    clocks.cpu += 0.004
    probe.tick()
    clocks.wall += 0.01 + 0.001
    clocks.cpu += 0.002
    probe.tick()
    report = probe.report()
    assert report["timer_worst_late_ms"] == 500.0
    assert report["timer_cpu_of_worst_ms"] == 4.0
    assert report["timer_late_over_ms"] == {5: 1, 25: 1}
    assert report["intervals_t_late_cpu"] == [(0.5, 500.0, 4.0)]


def test_probeCollections():
    """
    Every full collection is listed with its duration and the objects it
    scanned; each generation's worst is kept.
    """
    clocks = _Clocks()
    probe = PauseProbe(wall=lambda: clocks.wall, cpu=lambda: clocks.cpu)
    clocks.wall += 2.0
    probe.gcCallback("start", {"generation": 2})
    clocks.wall += 0.05
    probe.gcCallback("stop", {"generation": 2, "collected": 7})
    probe.gcCallback("start", {"generation": 0})
    clocks.wall += 0.001
    probe.gcCallback("stop", {"generation": 0, "collected": 0})
    report = probe.report()
    assert report["gc_count"] == [1, 0, 1]
    assert report["gc_worst_ms"] == [1.0, 0.0, 50.0]
    [(t, ms, collected, scanned)] = report["full_collections_t_ms_collected_scanned"]
    assert (t, ms, collected) == (2.0, 50.0, 7)
    assert scanned > 0
    assert report["tracked_objects"] > 0


def test_clusterBenchPrefixesAreOwnedByTheirNode():
    """
    The cluster bench's key prefixes: every key mcload makes with the
    prefix found for a node is placed on that node by the ring.
    """
    from memcachier.bench.cluster import ownedPrefixes
    from memcachier.cluster.ring import Ring

    names = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    prefixes = ownedPrefixes(names, 5)
    assert len(set(prefixes)) == 3
    ring = Ring(names)
    for name, prefix in zip(names, prefixes):
        assert {ring.owner(f"{prefix}{n:08d}".encode()) for n in range(5)} == {name}
    with pytest.raises(RuntimeError, match="fewer --keys"):
        ownedPrefixes(names, 40, tries=10)


def test_churnRoundsKeysOfOneLength():
    """
    Every round of L{memcachier.bench.churn} uses its own key prefix, all
    of one length (a longer key can change the allocator's size class,
    which would read as growth), and the value sizes in turn.
    """
    import argparse

    from memcachier.bench.churn import roundArguments

    options = argparse.Namespace(keys=1000, sizes=[100, 1000], seconds=30, connections=50,
                                 get_ratio=0.5)
    rounds = [roundArguments(options, n) for n in (1, 2, 10, 20)]
    prefixes = [args[args.index("-x") + 1] for _, args in rounds]
    assert len(set(prefixes)) == 4
    assert len({len(p) for p in prefixes}) == 1
    assert [size for size, _ in rounds] == [100, 1000, 1000, 1000]


@pytest.mark.parametrize("introspection", [True, False])
def test_neighboursNodeSettings(tmp_path, introspection):
    """
    The neighbours bench's node has the scheduler, introspection and
    login batch as asked, and its own plan for both tenants, in a configuration the
    node's settings accept.
    """
    from memcachier.bench.neighbours import writeNode
    from memcachier.node.settings import loadSettings

    node = writeNode(str(tmp_path / "node"), scheduler=False, reading=4,
                     introspection=introspection, loginBatch=16)
    settings = loadSettings(node.config)
    assert settings.memcache.login_batch == 16
    assert settings.limits.scheduler is False
    assert settings.limits.scheduler_reading == 4
    assert settings.analytics.introspection is introspection


def test_costbenchOptions(capsys):
    """
    C{memcachier.bench.costbench} measures either store, the multi-get
    workload, and the C runs of one-key gets against the codecs' loops,
    which it leaves on afterwards.
    """
    from memcachier.bench import costbench
    from memcachier.protocols import ascii, binary
    from memcachier.speedups import accelerator

    costbench.main(["1", "200", "--store", "segment", "--get-run"])
    costbench.main(["1", "200", "--workload", "mget100"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "ascii (segment)", "binary (segment)", "ascii_mget100 (memory)",
    ]
    assert "codec's loop" in out[0] and "C run" in out[0]
    assert "introspection off" in out[2]
    assert ascii.getRun is accelerator.get_run
    assert binary.getRun is accelerator.binary_get_run
