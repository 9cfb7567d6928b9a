"""
C{scripts/run}, as an operator starts a node: it runs twistd with
jemalloc preloaded when Debian's libjemalloc2 is installed (C{scripts/test}
installs it), because glibc's allocator grows under values of mixed sizes
(docs/performance.md, "The 10-minute soak").
"""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from memcachier.node.allocator import REEXECUTED
from tests.integration.conftest import freePort, waitForMemcache

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path, env):
    port, webPort = freePort(), freePort()
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "run"),
         f"--database=sqlite:///{tmp_path}/m.sqlite",
         f"--listen=tcp:{port}:interface=127.0.0.1",
         f"--web-listen=tcp:{webPort}:interface=127.0.0.1"],
        cwd=tmp_path, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        waitForMemcache(port, process, timeout=120)
    except RuntimeError as e:
        process.kill()
        pytest.fail(f"scripts/run did not answer memcache: {e}")
    return process


def _stop(process):
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def _maps(process):
    # scripts/run execs twistd: the child is the server itself
    return Path(f"/proc/{process.pid}/maps").read_text()


def test_runPreloadsJemalloc(tmp_path):
    """
    The node started by C{scripts/run} has jemalloc mapped and answers.
    """
    if not Path("/usr/share/doc/libjemalloc2").exists():
        pytest.fail("libjemalloc2 is not installed: scripts/test installs it")
    process = _start(tmp_path, {})
    try:
        assert "libjemalloc.so.2" in _maps(process)
    finally:
        _stop(process)


def test_runKeepsGlibcWhenAsked(tmp_path):
    """
    C{MEMCACHIER_MALLOC=system} keeps glibc's allocator: the node is told
    so and does not re-execute itself on jemalloc.
    """
    process = _start(tmp_path, {"MEMCACHIER_MALLOC": "system"})
    try:
        assert "libjemalloc" not in _maps(process)
    finally:
        _stop(process)


ALLOCATOR_WARNING = "glibc's malloc is in use, not jemalloc"


def test_preloadRefusedWarnsOnce(memcachier_server_factory, monkeypatch):
    """
    A node that stays on glibc's allocator although jemalloc is wanted (here:
    the re-execution already happened and the preload did not take, as the
    environment's marker says) logs one warning saying RSS may grow and how
    to preload jemalloc, and does not re-execute again.
    """
    monkeypatch.setenv(REEXECUTED, "/nowhere/libjemalloc.so.2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    s = memcachier_server_factory(web=False)
    assert "libjemalloc" not in _maps(s.process)
    log = s.log()
    assert log.count(ALLOCATOR_WARNING) == 1, log
    [line] = [line for line in log.splitlines() if ALLOCATOR_WARNING in line]
    assert "#warn]" in line
    assert "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 twistd -n memcachier" in line
    assert "scripts/run" in line and "allocator_warning = false" in line


def test_allocatorWarningOff(memcachier_server_factory, monkeypatch):
    """
    C{[node] allocator_warning = false} silences it.
    """
    monkeypatch.setenv(REEXECUTED, "/nowhere/libjemalloc.so.2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    s = memcachier_server_factory(web=False, config="[node]\nallocator_warning = false\n")
    assert "libjemalloc" not in _maps(s.process)
    assert ALLOCATOR_WARNING not in s.log()


def test_noWarningWithJemalloc(memcachier_server_factory, monkeypatch):
    """
    With jemalloc preloaded (as the warning says) there is no warning.
    """
    from memcachier.node.allocator import JEMALLOC_PATH

    if not Path(JEMALLOC_PATH).exists():
        pytest.fail("libjemalloc2 is not installed: scripts/test installs it")
    monkeypatch.setenv("LD_PRELOAD", JEMALLOC_PATH)
    s = memcachier_server_factory(web=False)
    assert "libjemalloc.so.2" in _maps(s.process)
    assert ALLOCATOR_WARNING not in s.log()
