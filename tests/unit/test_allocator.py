"""
Tests for L{memcachier.node.allocator}: the one warning at start when the
process does not run on jemalloc.
"""

from twisted.logger import LogLevel, capturedLogs, formatEvent

from memcachier.node.allocator import allocatorWarning, jemallocMapped, warnUnlessJemalloc

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
