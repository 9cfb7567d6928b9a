"""
Responses sent straight to the socket when nothing is queued must stay
complete and in order when the client stops reading (the transport's
buffer takes over), and a client that never reads cannot make the server
buffer without bound.
"""

import socket
import time

import pytest


@pytest.mark.slow
@pytest.mark.memcachier(web=False, config='[caches]\ndefault_plan = "100"\n')
def test_slowReaderGetsEverythingInOrder(memcachier_server):
    """
    Thousands of 100 KB replies to a client that reads nothing for a
    while arrive complete and in request order.
    """
    conn = memcachier_server.ascii()
    value = b"v" * 100_000
    for i in range(4):
        assert conn.call(f"set k{i} 0 0 {len(value)}", value) == b"STORED"
    count = 400
    conn.send(b"".join(b"get k%d\r\n" % (i % 4) for i in range(count)))
    time.sleep(1.0)  # let the socket buffers fill: sends must queue
    for i in range(count):
        assert conn.line() == b"VALUE k%d 0 %d" % (i % 4, len(value))
        assert conn.exactly(len(value) + 2) == value + b"\r\n"
        assert conn.line() == b"END"
    # the direct path is usable again once drained
    assert conn.call("version").startswith(b"VERSION ")


@pytest.mark.slow
@pytest.mark.memcachier(web=False, config='[caches]\ndefault_plan = "100"\n')
def test_clientThatNeverReadsIsBounded(memcachier_server):
    """
    Pipelining big gets without ever reading stops the server from
    reading once a few MB are queued: its memory stays bounded.
    """
    conn = memcachier_server.ascii()
    value = b"v" * 500_000
    assert conn.call(f"set big 0 0 {len(value)}", value) == b"STORED"
    before = memcachier_server.rss()
    conn.sock.setblocking(False)
    request = b"get big\r\n" * 100
    sent = 0
    deadline = time.time() + 5
    while time.time() < deadline and sent < 10_000_000:
        try:
            sent += conn.sock.send(request)
        except BlockingIOError:
            time.sleep(0.05)
    grown = memcachier_server.rss() - before
    # 10 MB of requests ask for 500 GB of replies; we hold a few MB at most
    assert grown < 64 * 1024 * 1024, grown
    other = memcachier_server.ascii()
    assert other.call("version").startswith(b"VERSION ")
    conn.sock.close()
