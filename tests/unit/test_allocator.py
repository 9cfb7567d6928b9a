"""
Tests for L{memcachier.node.allocator}: the one warning at start when the
process does not run on jemalloc, and the re-execution onto it.
"""

import sys

from twisted.logger import LogLevel, capturedLogs, formatEvent

from memcachier.node.allocator import (
    REEXECUTED,
    allocatorWarning,
    jemallocCommand,
    jemallocMapped,
    runOnJemalloc,
    warnUnlessJemalloc,
)

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
