"""
What the benchmark entries share: the node configuration they write and
the C{mcload} results they add up.
"""

import socket
import subprocess
import sys
import tomllib

import pytest

from memcachier.bench.process import collectLoad, liveServers, writeConfig


def test_writeConfig(tmp_path):
    """
    The configuration listens on the given memcache port and on another
    port for the web, uses the given database, then carries the extra
    TOML; the directory is made.
    """
    directory = tmp_path / "node0"
    database = f"sqlite:///{tmp_path}/m.sqlite"
    path = writeConfig(str(directory), 12345, database, '[caches]\ndefault_plan = "bench"\n')
    assert path == str(directory / "memcachier.toml")
    with open(path, "rb") as f:
        config = tomllib.load(f)
    assert config["memcache"]["listen"] == ["tcp:12345:interface=127.0.0.1"]
    web = config["web"]["listen"]
    assert web.startswith("tcp:") and web.endswith(":interface=127.0.0.1")
    assert web != "tcp:12345:interface=127.0.0.1"
    assert config["database"]["url"] == database
    assert config["caches"] == {"default_plan": "bench"}


def _printing(text, status=0):
    """
    A process that prints C{text} and exits with C{status}, as mcload does.
    """
    return subprocess.Popen(
        [sys.executable, "-c", f"import sys; print({text!r}); sys.exit({status})"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_collectLoad():
    """
    The requests/s and errors of the last lines add up; the p99 is the worst.
    """
    processes = [
        _printing("warming\nops_per_s=1000 p50_us=10 p99_us=300 errors=1"),
        _printing("ops_per_s=2500 p50_us=12 p99_us=120 errors=2"),
    ]
    assert collectLoad(processes, 60) == {"ops": 3500, "p99": 300, "errors": 3}


@pytest.mark.parametrize("text, status", [
    ("ops_per_s=1000 p50_us=10 p99_us=300 errors=0", 1),
    ("connect: Connection refused", 0),
    ("", 0),
])
def test_collectLoadFailure(text, status):
    """
    A generator that failed, or printed no result on its last line, fails
    the run with its output.
    """
    with pytest.raises(RuntimeError, match=f"mcload failed \\(exit {status}\\)"):
        collectLoad([_printing(text, status)], 60)


def test_liveServers():
    """
    The servers of a C{config get cluster} answer, read from a real socket.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-c", (
            "import socket, sys\n"
            f"s = socket.socket(fileno={listener.fileno()})\n"
            "c, _ = s.accept()\n"
            "c.recv(100)\n"
            "c.sendall(b'CONFIG cluster 0 27\\r\\n1\\r\\n127.0.0.1:1 127.0.0.1:2\\r\\nEND\\r\\n')\n"
        )], pass_fds=[listener.fileno()])
        try:
            assert liveServers(port) == [b"127.0.0.1:1", b"127.0.0.1:2"]
        finally:
            server.wait(10)
