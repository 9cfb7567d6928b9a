"""
The server's ketama ring against libmemcached's: pylibmc with MemCachier's
client settings stores keys on real memcached servers, and each key must
be on the server L{memcachier.cluster.ring.Ring} names as its owner.  One
server listens on memcached's default port, whose point names leave the
port out.
"""

import socket
import subprocess
import time

import pytest

from memcachier.cluster.ring import Ring
from tests.integration.conftest import freePort


def _freeDefaultPortHost():
    for last in range(2, 60):
        host = f"127.0.0.{last}"
        with socket.socket() as s:
            try:
                s.bind((host, 11211))
            except OSError:
                continue
            return host
    pytest.fail("no 127.0.0.x address with port 11211 free")


@pytest.fixture
def memcacheds():
    servers = [f"127.0.0.1:{freePort()}", f"127.0.0.1:{freePort()}", f"{_freeDefaultPortHost()}:11211"]
    processes = []
    for server in servers:
        host, port = server.split(":")
        processes.append(subprocess.Popen(
            ["memcached", "-l", host, "-p", port, "-U", "0", "-u", "nobody"]
        ))
    try:
        for server in servers:
            host, port = server.split(":")
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((host, int(port)), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        yield servers
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_ringMatchesPylibmcKetama(memcacheds):
    import pylibmc

    client = pylibmc.Client(
        memcacheds, binary=True,
        behaviors={"ketama": True, "tcp_nodelay": True, "remove_failed": 1,
                   "retry_timeout": 2, "dead_timeout": 30},
    )
    keys = [f"key{i}" for i in range(500)] + ["user:42", "session/abc", "ünïcode".encode().hex()]
    for key in keys:
        client.set(key, b"x")
    ring = Ring(memcacheds)
    holders = {}
    for server in memcacheds:
        direct = pylibmc.Client([server], binary=True)
        for key in keys:
            if direct.get(key) is not None:
                holders.setdefault(key, []).append(server)
    assert len(holders) == len(keys)
    for key in keys:
        assert holders[key] == [ring.owner(key.encode())], key
    assert {holders[k][0] for k in keys} == set(memcacheds)
