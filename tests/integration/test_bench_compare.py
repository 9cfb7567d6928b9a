"""
C{python -m memcachier.bench.compare}, run briefly: it builds the
project's load generator, starts a real memcached and a real node, and
reports a ratio and both sides' latencies for each workload.  The figures
themselves are taken on a quiet machine (C{docs/performance.md}).
"""

import json
import re
import shutil
import subprocess
import sys

import pytest

SHORT = ["--duration", "1", "--warmup", "0.2", "--pairs", "1", "--keys", "2000", "--connections", "4"]
TIME = r"(?:\d+ us|\d+\.\d\d ms)"
LATENCY = rf"p50 {TIME}, p99 {TIME}, max {TIME}"


def _compare(tmp_path, *args):
    if shutil.which("memcached") is None:
        pytest.fail("memcached is not installed (scripts/test installs the apt package)")
    result = subprocess.run(
        [sys.executable, "-m", "memcachier.bench.compare", *args, *SHORT,
         "--build-dir", str(tmp_path / "build")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_compareAsciiAndBinary(tmp_path):
    """
    ASCII (MemCachier's ASCII login) and binary (SASL PLAIN) against the
    node it starts: the machine, a pair with both sides' requests/s and
    latencies, the ratio, and no error.
    """
    out = _compare(tmp_path, "ascii", "binary")
    assert re.search(r"^machine: .+, \d+ cores, Linux .+, Python 3[\d.]+, Twisted [\d.]+\w*, "
                     r"memcached 1\.6", out, re.M), out
    for workload in ("ascii", "binary"):
        section = out[out.index(f"\n{workload}: "):]  # its lines come first
        pair = re.search(rf"pair 1: memcached (\d+) req/s \({LATENCY}\), memcachier (\d+) req/s "
                         rf"\({LATENCY}\), ratio ([\d.]+)", section)
        assert pair, out
        assert int(pair.group(1)) > 0 and int(pair.group(2)) > 0 and float(pair.group(3)) > 0, out
        ratio = re.search(rf"^{workload}: ratio=([\d.]+)$", out, re.M)
        assert ratio and float(ratio.group(1)) > 0, out
        assert re.search(rf"^  memcachier: {LATENCY}$", section, re.M), out
    assert "ERRORS" not in out


@pytest.mark.slow
def test_compareJsonPipelinedAndMultiGet(tmp_path):
    """
    C{--json}: the pipelined and multi-get workloads, each with its ratio,
    both sides' latencies, every key of a multi-get found (the keys were
    stored before the run) and no error.
    """
    report = json.loads(_compare(tmp_path, "ascii_pipe16", "ascii_mget100", "--json"))
    assert report["machine"]["memcached"].startswith("memcached 1.6")
    assert [w["workload"] for w in report["workloads"]] == ["ascii_pipe16", "ascii_mget100"]
    for workload in report["workloads"]:
        assert workload["ratio"] > 0 and workload["errors"] == 0
        for side in ("memcached", "memcachier"):
            figures = workload["latency"][side]
            assert 0 <= figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
            assert figures["max_us"] > 0
            run = workload["pairs"][0][side]
            assert run["requests_per_s"] > 0
    mget = report["workloads"][1]["pairs"][0]
    assert mget["memcached"]["hit_rate"] == 1.0 and mget["memcachier"]["hit_rate"] == 1.0
    assert mget["memcachier"]["keys_per_s"] == pytest.approx(100 * mget["memcachier"]["requests_per_s"],
                                                             rel=0.01)
