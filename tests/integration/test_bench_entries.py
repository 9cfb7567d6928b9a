"""
The long-run entries of issue 12, run briefly against the real server they
start: C{python -m memcachier.bench.soak} and C{python -m
memcachier.bench.fuzz}.  The long runs and their figures are in
C{docs/security.md} and C{docs/performance.md}.
"""

import re
import subprocess
import sys

import pytest


def _run(module, *args, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout
    )
    return result.returncode, result.stdout


@pytest.mark.slow
def test_soakShortRun():
    """
    A 6-second soak at small scale prints a row per interval (RSS, cache
    bytes, request rate, bystander latency) and a summary, with no error
    and no traceback in the server's log.
    """
    code, out = _run(
        "memcachier.bench.soak", "--duration", "6", "--interval", "2", "--warmup", "2",
        "--keys", "2000", "--connections", "4",
    )
    assert code == 0, out
    rows = re.findall(r"^\s+\d+ s  RSS +([\d.]+) MiB  cache +([\d.]+) MiB +(\d+) req/s", out, re.M)
    assert len(rows) >= 2, out
    assert all(float(rss) > 10 for rss, _, _ in rows)
    assert any(int(rate) > 0 for _, _, rate in rows)
    assert re.search(r"RSS after the 2.0 s warm-up: .* churned connections", out), out
    assert "server log: 0 traceback/error lines" in out


@pytest.mark.slow
def test_fuzzShortCampaign():
    """
    A short campaign of every kind reports its inputs, no bad reply, a
    bystander that read back every value, and a clean log.
    """
    code, out = _run("memcachier.bench.fuzz", "--inputs", "400")
    assert code == 0, out
    for campaign in ("ascii", "binary", "ascii-auth", "sasl"):
        assert re.search(rf"^{campaign}: 400 inputs .* 0 bad replies, server alive", out, re.M), out
    assert re.search(r"bystander: \d+ checks, 0 wrong answers", out), out
    assert "log: 0 traceback/error lines" in out
    assert "fuzz: no crash, no traceback, no wrong answer" in out
