"""
A node started by hand (C{twistd -n memcachier}, no C{LD_PRELOAD}) runs on
jemalloc: it re-executes itself once with Debian's libjemalloc2 preloaded,
keeping its process id, and says so in one log line; jemalloc gets the
node's options unless the operator set C{MALLOC_CONF}.  With
C{[node] allocator = "system"} it stays on the allocator it was started
with, and returns glibc's free pages every few seconds.
"""

import io
import os
import re
import time
from pathlib import Path

import pytest

from memcachier.bench import churn
from memcachier.node.allocator import JEMALLOC_CONF, JEMALLOC_PATH, TRIM_INTERVAL


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _noPreload(monkeypatch):
    if not os.path.exists(JEMALLOC_PATH):
        pytest.fail(f"Debian's libjemalloc2 is missing ({JEMALLOC_PATH}): scripts/test installs it")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)


def _maps(server):
    with open(f"/proc/{server.pid}/maps") as f:
        return f.read()


def _environ(server):
    with open(f"/proc/{server.pid}/environ", "rb") as f:
        return dict(entry.decode().partition("=")[::2] for entry in f.read().split(b"\0") if entry)


def test_startedByHandRunsOnJemalloc(memcachier_server_factory):
    server = memcachier_server_factory()
    assert "libjemalloc" in _maps(server)
    assert _environ(server)["MALLOC_CONF"] == JEMALLOC_CONF
    conn = server.ascii()
    assert conn.call("set k 0 0 1", b"v") == b"STORED"
    assert conn.get("k") == b"v"
    conn.close()
    assert server.log().count("re-executed with") == 1
    assert server.stop() == 0


def test_systemAllocatorStays(memcachier_server_factory):
    server = memcachier_server_factory(config='[node]\nallocator = "system"\n')
    assert "libjemalloc" not in _maps(server)
    assert "re-executed" not in server.log()
    assert "glibc's malloc is in use" not in server.log()


def test_operatorsMallocConfWins(memcachier_server_factory, monkeypatch):
    monkeypatch.setenv("MALLOC_CONF", "narenas:2")
    server = memcachier_server_factory()
    assert "libjemalloc" in _maps(server)
    assert _environ(server)["MALLOC_CONF"] == "narenas:2"


#: seconds a node on glibc's allocator runs: a trim at least
WAIT = TRIM_INTERVAL * 2


def test_systemAllocatorTrims(memcachier_server_factory):
    """
    On glibc's allocator, C{malloc_trim} runs every L{TRIM_INTERVAL}
    seconds; the node says how often, and the longest, when it stops.
    """
    server = memcachier_server_factory(config='[node]\nallocator = "system"\n')
    time.sleep(WAIT)
    assert server.stop() == 0
    assert re.search(r"malloc_trim ran [1-9][0-9]* times, the longest [0-9.]+ ms, the most CPU", server.log())


def test_churnBench(tmp_path):
    """
    C{python -m memcachier.bench.churn} starts a node, churns it round by
    round with each round's value size, and prints the RSS table and the
    change from the baseline round.
    """
    mcload = os.environ.get("MCLOAD") or str(ROOT.parent / "shared" / "bench" / "mcload")
    if not (os.path.exists(mcload) or os.path.exists(mcload + ".c")):
        pytest.fail(f"mcload not found at {mcload} (nor {mcload}.c): set MCLOAD")
    out = io.StringIO()
    assert churn.main(["--rounds", "2", "--seconds", "1", "--sizes", "100,700", "--baseline", "1",
                       "--keys", "1000", "--connections", "4", "--mcload", mcload], out) == 0
    text = out.getvalue()
    assert re.search(r"^\s+1\s+100\s+[0-9.]+\s+[0-9.]+\s+[1-9][0-9]*\s", text, re.M)
    assert re.search(r"^\s+2\s+700\s", text, re.M)
    assert re.search(r"RSS round 1 -> 2: [0-9.]+ -> [0-9.]+ MiB \([+-][0-9.]+ %\)", text)
    assert "re-executed with" in text
