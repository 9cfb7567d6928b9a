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


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multi-get", "pipelined", "binary"])
@pytest.mark.memcachier(web=False)
def test_unreadRepliesHoldAboutOneValue(memcachier_server, mode):
    """
    1,000 gets of one 1 MB item in one packet, never read, on 5
    connections: the server holds about one value per connection (memcached
    1.6: +1.2 MB), not a copy of each value it rendered (before: +13-20 MB
    per connection, the first 16 values of a multi-get copied into one
    reply).
    """
    from tests.integration.conftest import binaryRequest

    value = b"v" * 1_000_000
    conn = memcachier_server.ascii()
    assert conn.call(f"set big 0 0 {len(value)}", value) == b"STORED"
    before = memcachier_server.rss()
    clients = []
    for _ in range(5):
        sock = socket.socket()
        # a tiny receive window: the kernel cannot absorb the replies either
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", memcachier_server.port))
        user, password = memcachier_server.username, memcachier_server.password
        if mode == "binary":
            login = binaryRequest(0x21, b"PLAIN", b"\0%s\0%s" % (user.encode(), password.encode()))
            sock.sendall(login + binaryRequest(0x0C, b"big") * 1000)
        else:
            sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (user.encode(), len(password), password.encode()))
            gets = b"get" + b" big" * 1000 + b"\r\n" if mode == "multi-get" else b"get big\r\n" * 1000
            sock.sendall(gets)
        clients.append(sock)
    # wait until the server has answered as far as it will: its hit count
    # (every get above hits) stops moving
    hits, deadline = None, time.time() + 30
    while time.time() < deadline:
        now = int(conn.stats()["get_hits"])
        if now == hits and now >= 5:
            break
        hits = now
        time.sleep(1.0)
    grown = memcachier_server.rss() - before
    assert grown < 10 * 1024 * 1024, grown
    for sock in clients:
        sock.close()
