"""
C{python -m memcachier.bench.cluster}, run for a few seconds against the
real nodes it starts (three on the test PostgreSQL, one alone) with the
shared C{mcload} load generator.  The figures themselves are taken on a
quiet machine (C{docs/performance.md}, "A 3-node cluster").
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mcload():
    """
    The shared load generator (C{$MCLOAD}, else C{../shared/bench/} next
    to the checkout): its source is enough, the bench builds it.
    """
    path = os.environ.get("MCLOAD") or str(ROOT.parent / "shared" / "bench" / "mcload")
    if not (os.path.exists(path) or os.path.exists(path + ".c")):
        pytest.fail(
            f"mcload not found at {path} (nor {path}.c): set MCLOAD to the shared bench's mcload"
        )
    return path


@pytest.mark.slow
def test_clusterBenchShortRun(postgresql_url):
    """
    A 2-second run of each scenario prints the table (requests/s, p99,
    errors, CPU per request) and the cost per forwarded request, without
    errors.
    """
    result = subprocess.run(
        [sys.executable, "-m", "memcachier.bench.cluster", "--database", postgresql_url,
         "--mcload", _mcload(), "--duration", "2", "--warmup", "0.5", "--keys", "5",
         "--connections", "2"],
        capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    rows = {}
    for label in ("one node alone", "3 nodes, each key to its owner",
                  "3 nodes, all to one node (2/3 forwarded)"):
        found = re.search(rf"^{re.escape(label)} +(\d+) +(\d+) +(\d+) +([\d.]+)$", out, re.M)
        assert found, out
        rows[label] = [float(v) for v in found.groups()]
    assert all(ops > 0 and errors == 0 and cpu > 0 for ops, _, errors, cpu in rows.values()), out
    assert re.search(r"^cost per forwarded request: -?[\d.]+ us of server CPU", out, re.M), out
