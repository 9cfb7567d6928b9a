"""
The same ASCII transcripts sent to a real memcached 1.6 and to our
server, over real sockets, must get the same bytes back: C{delete} with a
number, storage commands with declared lengths outside memcached's limits,
and C{stats detail}.  (Our server is authenticated first; memcached runs
without auth.)
"""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from tests.integration.conftest import freePort, waitForPort


@pytest.fixture
def memcached():
    """
    A memcached 1.6 on a free loopback port, stopped at teardown.
    """
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail("memcached is not installed (scripts/test installs the apt package)")
    port = freePort()
    command = [binary, "-p", str(port), "-U", "0", "-l", "127.0.0.1"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waitForPort(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def transcript(sock, data):
    """
    Send C{data} and C{mn}, and return everything answered before C{MN}.
    """
    sock.sendall(data + b"mn\r\n")
    received = b""
    deadline = time.monotonic() + 10
    while not received.endswith(b"MN\r\n"):
        assert time.monotonic() < deadline, received
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return received[:-4]


def sortedPrefixes(reply):
    """
    memcached dumps prefixes in hash order, we in first-seen order: compare
    each dump's lines as a set.
    """
    return re.sub(
        rb"((?:PREFIX [^\r]*\r\n)+)",
        lambda m: b"".join(sorted(m.group(1).splitlines(keepends=True))),
        reply,
    )


TRANSCRIPTS = {
    "deleteWithNumber": (
        b"set k 0 0 1\r\nx\r\ndelete k 5\r\ndelete k 5 noreply\r\n"
        b"delete k noreply noreply\r\nget k\r\ndelete k 0 5\r\ndelete k 0 noreply x\r\n"
        b"delete\r\ndelete k 0\r\nset k 0 0 1\r\nx\r\ndelete k 0 noreply\r\nget k\r\n"
    ),
    "badLengths": b"".join(
        b"set k 0 0 %b\r\nget k\r\ncas k 0 0 %b 5\r\nms k %b\r\n" % (n, n, n)
        for n in (b"2147483647", b"2147483646", b"-1", b"4294967295")
    ),
    "statsDetail": (
        b"stats detail dump\r\nstats detail on\r\nget a:b\r\nget nodelim\r\n"
        b"get b:1 b:2 c:1\r\nset x:y:z 0 0 1\r\nx\r\nget x:y:z\r\nincr b:1 1\r\n"
        b"touch b:1 10\r\ndelete a:z\r\nstats detail dump\r\nstats detail off\r\n"
        b"get a:1\r\nstats detail dump\r\nstats detail\r\nstats detail foo\r\n"
        b"stats detail ON\r\nstats detail on extra\r\n"
    ),
}


@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_sameAnswersAsMemcached(name, memcached, memcachier_server):
    data = TRANSCRIPTS[name]
    with socket.create_connection(("127.0.0.1", memcached), timeout=10) as sock:
        expected = transcript(sock, data)
    ours = memcachier_server.ascii()
    got = transcript(ours.sock, data)
    assert sortedPrefixes(got) == sortedPrefixes(expected)
    assert expected  # the transcript did exercise something
