"""
Warm restart with a real twistd and real clients: a node holding items of
two caches (written with pylibmc over binary SASL and pymemcache over
ASCII auth, with flags, TTLs and CAS values) stops on SIGTERM and starts
again; every live item comes back exact, expired ones do not, and CAS
values keep rising.  A node killed with SIGKILL, a truncated snapshot and
a snapshot of another format version each start cold, with one log line.
C{memcachier-admin node snapshot} takes a snapshot of a running node.
"""

import os
import re
import signal
import struct
import subprocess
import sys
import time

import pytest

from memcachier.node.snapshot import FORMAT_VERSION, MAGIC, MANUAL_NAME, SNAPSHOT_NAME
from tests.integration.conftest import _bin, _firstCredential, pylibmcClient
from tests.integration.test_memcache_clients import pymc


def _config(stateDir):
    return f'[node]\nstate_dir = "{stateDir}"\n'


def _gets(server, username, password, keys):
    """
    C{gets} over a raw ASCII connection: key to (flags, value, cas).
    """
    conn = server.ascii(username, password)
    try:
        conn.send(b"gets " + b" ".join(keys) + b"\r\n")
        found = {}
        while True:
            line = conn.line()
            if line == b"END":
                return found
            _, key, flags, length, cas = line.split()
            value = conn.exactly(int(length) + 2)[:-2]
            found[key] = (int(flags), value, int(cas))
    finally:
        conn.close()


def _warmLines(server):
    return [line for line in server.log().splitlines() if "warm restart:" in line]


def _restart(server):
    """
    SIGTERM (a clean exit), then start again.

    @return: the log lines of warm restart the stop wrote.
    """
    assert server.stop() == 0
    saved = [line for line in _warmLines(server) if "warm restart: saved" in line]
    server.start(web=False)
    return saved


@pytest.fixture
def warm(memcachier_server_factory, tmp_path):
    """
    A node with warm restart on, and a second cache.
    """
    stateDir = tmp_path / "state"
    server = memcachier_server_factory(config=_config(stateDir), web=False)
    server.state_dir = stateDir
    other = server.admin("cache", "create")
    server.other = _firstCredential(other)
    # the node sees the new cache within its poll interval
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = server.ascii(auth=False)
        try:
            if conn.auth(server.other[1], server.other[2]) == b"STORED":
                break
        finally:
            conn.close()
        time.sleep(0.1)
    return server


def _fill(server):
    """
    Items of both caches, through both clients.

    @return: what each cache holds, as L{_gets} reads it, and the keys
        that expire before the restart.
    """
    binary = pylibmcClient(server)
    keys1 = []
    for i in range(200):
        key = f"b{i}"
        binary.set(key, b"value-%d" % i, time=3600 if i % 2 else 0)
        keys1.append(key.encode())
    binary.set("short", b"gone soon", time=2)
    server.short_set_at = time.monotonic()
    value, unique = binary.gets("b1")
    assert binary.cas("b1", b"cas-written", unique)
    _, username, password = server.other
    ascii = pymc(server, username, password)
    keys2 = []
    for i in range(150):
        key = f"a{i}".encode()
        assert ascii.set(key, b"other-%d" % i, expire=7200 if i % 3 else 0, noreply=False, flags=i)
        keys2.append(key)
    before1 = _gets(server, server.username, server.password, keys1)
    before2 = _gets(server, username, password, keys2)
    assert len(before1) == 200 and len(before2) == 150
    return before1, before2, keys1, keys2


def test_restartKeepsEveryLiveItem(warm):
    """
    Stopped with SIGTERM and started again, the node serves every live
    item exactly as before (value, flags, CAS), not the expired one, and
    new CAS values are above all the old ones.
    """
    before1, before2, keys1, keys2 = _fill(warm)
    _, username, password = warm.other
    saved = _restart(warm)
    assert len(saved) == 1, saved
    items = int(re.search(r"saved (\d+) items of 2 caches", saved[0]).group(1))
    assert items in (350, 351), saved  # "short" may have expired before the stop
    lines = _warmLines(warm)
    assert len(lines) == 1, lines
    assert re.search(r"restored (350|351) of %d items of 2 caches" % items, lines[0]), lines
    assert not os.path.exists(warm.state_dir / SNAPSHOT_NAME), "consumed at restore"
    # expiry times are whole seconds, as memcached's: a 2 s item set late in
    # a second lives up to 3 s
    time.sleep(max(0.0, warm.short_set_at + 3.5 - time.monotonic()))

    assert _gets(warm, warm.username, warm.password, keys1) == before1
    assert _gets(warm, username, password, keys2) == before2
    binary = pylibmcClient(warm)
    assert binary.get("b1") == b"cas-written"
    assert binary.get("short") is None
    ascii = pymc(warm, username, password)
    assert ascii.get(b"a7") == b"other-7"

    highest = max(cas for (_f, _v, cas) in [*before1.values(), *before2.values()])
    binary.set("after", b"x")
    assert binary.gets("after")[1] > highest
    assert ascii.set(b"after", b"y", noreply=False)
    assert int(ascii.gets(b"after")[1]) > highest
    # an old CAS no longer matches anything
    value, unique = binary.gets("b3")
    assert unique == before1[b"b3"][2]
    assert binary.cas("b3", b"new", unique)
    assert not binary.cas("b3", b"again", unique)


def test_killedNodeStartsCold(warm):
    """
    After a restore, the node runs on and is killed (SIGKILL): the next
    start finds no snapshot (it was consumed) and starts cold, saying why
    in one line; nothing old comes back, CAS uniques included.
    """
    binary = pylibmcClient(warm)
    binary.set("k", b"before the restart")
    _restart(warm)
    binary = pylibmcClient(warm)
    assert binary.get("k") == b"before the restart"
    binary.set("k", b"changed after the restart")
    _, before = binary.gets("k")
    warm.process.send_signal(signal.SIGKILL)
    warm.process.wait(10)
    warm.start(web=False)
    lines = _warmLines(warm)
    assert len(lines) == 1 and "did not stop cleanly" in lines[0], lines
    binary = pylibmcClient(warm)
    assert binary.get("k") is None
    # even cold, no CAS unique of the killed run comes back
    binary.set("k", b"new")
    assert binary.gets("k")[1] > before


@pytest.mark.parametrize("damage", ["truncated", "other version"])
def test_damagedSnapshotStartsCold(warm, damage):
    """
    A truncated snapshot, or one of another format version, restores
    nothing: the node starts cold with one line saying why, and serves.
    """
    binary = pylibmcClient(warm)
    for i in range(100):
        binary.set(f"k{i}", b"v" * 100)
    assert warm.stop() == 0
    path = warm.state_dir / SNAPSHOT_NAME
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
        expected = "truncated"
    else:
        path.write_bytes(MAGIC + struct.pack("<I", FORMAT_VERSION + 1) + data[len(MAGIC) + 4:])
        expected = f"format version {FORMAT_VERSION + 1}"
    warm.start(web=False)
    lines = _warmLines(warm)
    assert len(lines) == 1 and "unusable" in lines[0] and expected in lines[0], lines
    binary = pylibmcClient(warm)
    assert binary.get_multi([f"k{i}" for i in range(100)]) == {}
    binary.set("fresh", b"1")
    assert binary.get("fresh") == b"1"


def test_adminSnapshot(warm):
    """
    C{memcachier-admin node snapshot} has the running node write an
    on-demand snapshot, which it checks and counts; the node serves on.
    """
    binary = pylibmcClient(warm)
    for i in range(30):
        binary.set(f"k{i}", b"v")
    pidfile = warm.directory / "node.pid"
    pidfile.write_text(f"{warm.pid}\n")
    result = subprocess.run(
        [_bin("memcachier-admin"), f"--config={warm.config_path}", "node", "snapshot",
         f"--pidfile={pidfile}", "--json"],
        cwd=warm.directory, capture_output=True, text=True, timeout=60,
    )
    print(result.stderr, file=sys.stderr)
    assert result.returncode == 0
    assert '"items": 30' in result.stdout and '"caches": 2' in result.stdout
    assert (warm.state_dir / MANUAL_NAME).exists()
    assert not (warm.state_dir / SNAPSHOT_NAME).exists()
    assert binary.get("k3") == b"v"
