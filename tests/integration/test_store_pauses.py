"""
The memory store under a real server: items stored through a real socket
leave the garbage collector nothing to walk, seen through the pause probe
(C{python -m memcachier.bench.probe}) a latency benchmark runs the server
under.
"""

import json
import os
import subprocess
import sys

from tests.integration.conftest import waitForMemcache


def test_probeSeesNoTrackedItems(memcachier_server, tmp_path):
    """
    Under the probe, a server that stored 20,000 items over ASCII and
    fetched them all still tracks only a few thousand objects (an item is
    not one of them), and the probe writes its report at shutdown.
    """
    server = memcachier_server
    server.stop()
    out = tmp_path / "probe.json"
    log = open(server.log_path, "ab")
    server.process = subprocess.Popen(
        [sys.executable, "-m", "memcachier.bench.probe", "-n", "--pidfile=", "--logfile=-",
         "memcachier", f"--config={server.config_path}"],
        cwd=server.directory, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PROBE_OUT": str(out)},
    )
    log.close()
    waitForMemcache(server.port, server.process)
    conn = server.ascii()
    value = b"v" * 100
    for start in range(0, 20_000, 500):
        conn.send(b"".join(
            b"set key:%08d 0 0 100 noreply\r\n%b\r\n" % (i, value)
            for i in range(start, start + 500)
        ))
    assert conn.get("key:00019999") == value
    for start in range(0, 20_000, 100):
        conn.send(b"get " + b" ".join(b"key:%08d" % i for i in range(start, start + 100)) + b"\r\n")
        for _ in range(100):
            assert conn.line().startswith(b"VALUE")
            conn.exactly(102)
        assert conn.line() == b"END"
    server.stop()
    report = json.loads(out.read_text())
    assert report["tracked_objects"] < 20_000, report["tracked_objects"]
    assert report["frozen_objects"] > 0
    assert len(report["gc_count"]) == 3 and report["timer_worst_late_ms"] >= 0
