"""
Tests for L{memcachier.node.allocator}: the one warning at start when the
process does not run on jemalloc, and the re-execution onto it.
"""

import sys

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from memcachier.node.allocator import (
    JEMALLOC_CONF,
    REEXECUTED,
    TRIM_INTERVAL,
    MallocTrim,
    allocatorWarning,
    glibcTrim,
    jemallocCommand,
    jemallocMapped,
    memoryReturner,
    runOnJemalloc,
    warnUnlessJemalloc,
)
from memcachier.node.settings import parseSettings

GLIBC_MAPS = (
    "55d0c0000000-55d0c0001000 r--p 00000000 08:01 1 /usr/bin/python3.11\n"
    "7f0000000000-7f0000020000 r--p 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
)
JEMALLOC_MAPS = GLIBC_MAPS + (
    "7f1000000000-7f1000010000 r-xp 00000000 08:01 3 "
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
)


def test_jemallocMapped():
    assert jemallocMapped(JEMALLOC_MAPS)
    assert not jemallocMapped(GLIBC_MAPS)


def test_noWarningOnJemalloc():
    assert allocatorWarning(JEMALLOC_MAPS, "/usr/lib/x/libjemalloc.so.2") is None


def test_warningSaysHowToPreload():
    """
    On glibc's malloc the warning names the installed library to preload,
    or says to install Debian's package first.
    """
    text, fields = allocatorWarning(GLIBC_MAPS, "/opt/lib/libjemalloc.so.2")
    message = text.format(**fields)
    assert "resident memory may grow" in message
    assert "preload it: LD_PRELOAD=/opt/lib/libjemalloc.so.2 twistd -n memcachier" in message
    assert "scripts/run" in message and "allocator_warning = false" in message
    text, fields = allocatorWarning(GLIBC_MAPS, None)
    assert "install Debian's libjemalloc2, then preload it" in text.format(**fields)


def test_warnOnce(tmp_path):
    """
    One warn-level event, with a structured C{event} field; none when the
    maps cannot be read (not Linux) or show jemalloc.
    """
    maps = tmp_path / "maps"
    maps.write_text(GLIBC_MAPS)
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    with capturedLogs() as events:
        assert warnUnlessJemalloc(str(maps), str(library))
        assert not warnUnlessJemalloc(str(tmp_path / "missing"), str(library))
        maps.write_text(JEMALLOC_MAPS)
        assert not warnUnlessJemalloc(str(maps), str(library))
    [event] = events
    assert event["log_level"] == LogLevel.warn
    assert event["event"] == "allocator_warning"
    assert f"LD_PRELOAD={library} twistd" in formatEvent(event)


def test_jemallocCommandPreloadsOnce():
    """
    On glibc's malloc with jemalloc installed, the command is this
    process's own, with jemalloc in front of any other preload and the
    marker that stops a second re-execution.
    """
    argv, env = jemallocCommand(
        GLIBC_MAPS, "/opt/libjemalloc.so.2", {"LD_PRELOAD": "/x.so", "PATH": "/bin"},
        ["/venv/bin/python", "/venv/bin/twistd", "-n", "memcachier"],
    )
    assert argv == ["/venv/bin/python", "/venv/bin/twistd", "-n", "memcachier"]
    assert env["LD_PRELOAD"] == "/opt/libjemalloc.so.2:/x.so"
    assert env["PATH"] == "/bin"
    assert env[REEXECUTED] == "/opt/libjemalloc.so.2"
    assert env["MALLOC_CONF"] == JEMALLOC_CONF
    assert jemallocCommand(GLIBC_MAPS, "/j.so", {}, ["p"])[1]["LD_PRELOAD"] == "/j.so"


def test_jemallocCommandNothingToDo():
    """
    Nothing is re-executed when jemalloc is loaded, not installed, or
    this process is already the re-execution (a preload that did not take
    must not loop).
    """
    assert jemallocCommand(JEMALLOC_MAPS, "/j.so", {}, ["p"]) is None
    assert jemallocCommand(GLIBC_MAPS, None, {}, ["p"]) is None
    assert jemallocCommand(GLIBC_MAPS, "/j.so", {REEXECUTED: "/j.so"}, ["p"]) is None


def test_runOnJemallocExecutes(tmp_path, monkeypatch):
    """
    L{runOnJemalloc} hands the command to C{execve} with this
    interpreter; it returns L{False} where C{/proc} cannot tell.
    """
    maps = tmp_path / "maps"
    maps.write_text(GLIBC_MAPS)
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    monkeypatch.delenv(REEXECUTED, raising=False)
    calls = []
    runOnJemalloc(str(maps), str(library), lambda *a: calls.append(a))
    [(path, argv, env)] = calls
    assert path == sys.executable and argv == sys.orig_argv
    assert env["LD_PRELOAD"].startswith(str(library))
    assert not runOnJemalloc(str(tmp_path / "missing"), str(library), lambda *a: calls.append(a))
    assert len(calls) == 1


def test_jemallocCommandKeepsTheOperatorsConf():
    """
    An operator's C{MALLOC_CONF} (even an empty one: jemalloc's own
    defaults) is passed on as it is, not replaced by the node's.
    """
    for conf in ("narenas:4,dirty_decay_ms:10000", ""):
        _, env = jemallocCommand(GLIBC_MAPS, "/j.so", {"MALLOC_CONF": conf}, ["p"])
        assert env["MALLOC_CONF"] == conf


def test_jemallocConf():
    """
    The node's jemalloc options: one arena (one reactor thread), dirty
    pages purged by a background thread after a second.
    """
    options = dict(option.split(":") for option in JEMALLOC_CONF.split(","))
    assert options == {"narenas": "1", "background_thread": "true",
                       "dirty_decay_ms": "1000", "muzzy_decay_ms": "0"}


def test_mallocTrimEveryInterval():
    """
    L{MallocTrim} calls C{malloc_trim(0)} every interval of its clock, not
    at start, and times the longest call; stopping it logs how many ran.
    """
    clock = Clock()
    calls = []
    ticks = iter([0.0, 0.002, 1.0, 1.0005])
    cpu = iter([0.0, 0.0001, 0.5, 0.5004])
    trimmer = MallocTrim(clock, calls.append, timer=lambda: next(ticks), cpuTimer=lambda: next(cpu))
    trimmer.startService()
    assert calls == []
    clock.advance(TRIM_INTERVAL)
    assert calls == [0]
    clock.advance(TRIM_INTERVAL)
    assert calls == [0, 0]
    assert trimmer.trims == 2 and abs(trimmer.worst - 0.002) < 1e-9
    with capturedLogs() as events:
        trimmer.stopService()
    [event] = events
    assert event["event"] == "malloc_trim"
    assert formatEvent(event) == "malloc_trim ran 2 times, the longest 2.0 ms, the most CPU 0.4 ms"
    clock.advance(TRIM_INTERVAL)
    assert calls == [0, 0]


def test_memoryReturnerOnGlibcOnly(tmp_path):
    """
    The trim timer exists on glibc's allocator only: not on jemalloc,
    not where C{/proc} cannot tell.
    """
    maps = tmp_path / "maps"
    maps.write_text(GLIBC_MAPS)
    calls = []
    trimmer = memoryReturner(Clock(), str(maps), calls.append)
    assert isinstance(trimmer, MallocTrim)
    trimmer.trim()
    assert calls == [0]
    maps.write_text(JEMALLOC_MAPS)
    assert memoryReturner(Clock(), str(maps), calls.append) is None
    assert memoryReturner(Clock(), str(tmp_path / "missing"), calls.append) is None


def test_memoryReturnerInterval(tmp_path):
    """
    C{[node] malloc_trim} sets how often the trim runs; C{0} turns it off.
    """
    maps = tmp_path / "maps"
    maps.write_text(GLIBC_MAPS)
    calls = []
    clock = Clock()
    trimmer = memoryReturner(clock, str(maps), calls.append, interval=5.0)
    trimmer.startService()
    clock.advance(4.9)
    assert calls == []
    clock.advance(0.1)
    assert calls == [0]
    assert memoryReturner(Clock(), str(maps), calls.append, interval=0.0) is None
    assert parseSettings("").node.malloc_trim == 1.0
    assert parseSettings('[node]\nmalloc_trim = "5s"\n').node.malloc_trim == 5.0
    assert parseSettings("[node]\nmalloc_trim = 0\n").node.malloc_trim == 0.0


def test_glibcTrim():
    """
    This test process's C library (glibc, as on the machines the node runs
    on) has C{malloc_trim}, and calling it works.
    """
    trim = glibcTrim()
    assert trim is not None
    assert trim(0) in (0, 1)
