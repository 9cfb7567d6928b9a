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
#: aim is 3 on a quiet machine; this one is shared) ...
BOUND = 10.0
#: ... or this many microseconds, whichever is more: a solo p99 of 100 us
#: on a machine whose other jobs stall any process for milliseconds would
#: otherwise make the bound a measure of the machine
FLOOR_US = 10_000


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
    With the scheduler on, tenant A (the flood) is held back and tenant B
    never is; B's p99 under the flood is within L{BOUND} times its solo
    p99 (or L{FLOOR_US}); A is still served, without errors; a storm of
    1,000 logins is answered in full.
    """
    out = _run("--only", "on", "--storm", "1000")
    solo = re.search(r"^on +solo +- +\d+ +\d+ +(\d+) ", out, re.M)
    flood = re.search(r"^on +flood +(\d+) +(\d+) +\d+ +(\d+) ", out, re.M)
    assert solo and flood, out
    assert int(flood.group(1)) > 0 and int(flood.group(2)) > 0, out
    assert int(flood.group(3)) < max(BOUND * int(solo.group(1)), FLOOR_US), out
    assert re.search(r"^on +B's p99 under the flood / solo: [\d.]+x; A's errors: 0$", out, re.M), out
    held = re.search(r"^on +held back: A ([\d.]+) s, B ([\d.]+) s$", out, re.M)
    assert held and float(held.group(1)) > 0 and float(held.group(2)) == 0, out
    assert re.search(r"^on +login storm: 1000 connections logged in", out, re.M), out
