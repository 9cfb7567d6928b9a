"""
A noisy neighbour over real sockets: C{python -m memcachier.bench.neighbours}
starts a real node, floods it as tenant A with the shared C{mcload} (50
connections, 4 requests in flight each) while tenant B gets at 400 a
second on one connection, then storms it with logins.  With the fair
share on, B's p99 under the flood stays within a loose bound of its solo
p99 (the figure itself is taken on a quiet machine, docs/performance.md),
and every storm login is answered.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: B's p99 under the flood, at most this many times its solo p99 (the
#: aim is 3 on a quiet machine; this one is shared)
BOUND = 10.0


def _mcload():
    path = os.environ.get("MCLOAD") or str(ROOT.parent / "shared" / "bench" / "mcload")
    if not (os.path.exists(path) or os.path.exists(path + ".c")):
        pytest.fail(
            f"mcload not found at {path} (nor {path}.c): set MCLOAD to the shared bench's mcload"
        )
    return path


def _run(*args):
    result = subprocess.run(
        [sys.executable, "-m", "memcachier.bench.neighbours", "--mcload", _mcload(),
         "--duration", "4", "--warmup", "1", *args],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_quietTenantUnderFlood():
    """
    With the scheduler on, tenant B's p99 under tenant A's flood is
    within L{BOUND} times its solo p99, A is still served, and a storm of
    1,000 logins is answered in full.
    """
    out = _run("--only", "on", "--storm", "1000")
    found = re.search(r"^on +B's p99 under the flood / solo: ([\d.]+)x; A's errors: 0$", out, re.M)
    assert found, out
    assert float(found.group(1)) < BOUND, out
    flood = re.search(r"^on +flood +(\d+) +(\d+) ", out, re.M)
    assert flood and int(flood.group(1)) > 0 and int(flood.group(2)) > 0, out
    assert re.search(r"^on +login storm: 1000 connections logged in", out, re.M), out
