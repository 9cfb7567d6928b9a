"""
A node started by hand (C{twistd -n memcachier}, no C{LD_PRELOAD}) runs on
jemalloc: it re-executes itself once with Debian's libjemalloc2 preloaded,
keeping its process id, and says so in one log line.  With
C{[node] allocator = "system"} it stays on the allocator it was started
with.
"""

import os

import pytest

from memcachier.node.allocator import JEMALLOC_PATH


@pytest.fixture(autouse=True)
def _noPreload(monkeypatch):
    if not os.path.exists(JEMALLOC_PATH):
        pytest.fail(f"Debian's libjemalloc2 is missing ({JEMALLOC_PATH}): scripts/test installs it")
    monkeypatch.delenv("LD_PRELOAD", raising=False)


def _maps(server):
    with open(f"/proc/{server.pid}/maps") as f:
        return f.read()


def test_startedByHandRunsOnJemalloc(memcachier_server_factory):
    server = memcachier_server_factory()
    assert "libjemalloc" in _maps(server)
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
