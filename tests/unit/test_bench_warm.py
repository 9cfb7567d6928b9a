"""
The warm restart benchmark measures what it says: a save and a restore
in two fresh interpreters, every item back, the memory of both.
"""

import io
import json

from memcachier.bench import warm


def test_warmMainJson(tmp_path):
    """
    The command line saves and restores the items it filled and reports
    the times, the file size and the memory before and after.
    """
    out = io.StringIO()
    assert warm.main(["--items", "2000", "--values", "50", "--dir", str(tmp_path), "--json"], out) == 0
    result = json.loads(out.getvalue())
    assert result["items"] == result["restored"] == 2000
    assert result["file_bytes"] > 2000 * 50
    assert result["save_seconds"] > 0 and result["restore_seconds"] > 0
    assert result["memory_before"] > 0 and "memory_change" in result and result["machine"]


def test_restoreTakesTheInjectedClock(tmp_path, monkeypatch):
    """
    L{warm.save} and L{warm.restore} take the time from the clock they are
    given (the restore's "now" included), never from the wall clock.
    """
    from twisted.internet.task import Clock

    def wallClock():
        raise AssertionError("time.time() read; the injected clock was to be used")

    monkeypatch.setattr(warm.time, "time", wallClock)
    clock = Clock()
    clock.advance(1_000_000)
    path = str(tmp_path / "snapshot")
    assert warm.save(path, 300, 20, clock)["items"] == 300
    clock.advance(3600)
    assert warm.restore(path, clock)["restored"] == 300
