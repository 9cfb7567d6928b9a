"""
A stop prints only the node's own lines: a real C{twistd} that counted
gets and sets in its introspection sketches (Apache DataSketches objects,
C++ behind nanobind) is stopped with C{SIGTERM}, and nothing in its output
comes from an object still alive when the interpreter exits (nanobind
reports each one as a C{leaked} instance, about 600 lines per stop).
"""

import re
import time

import requests

#: the lines a node writes from the C{SIGTERM} on (the signal, its
#: listening ports closing, the drain finished, twistd's own two); anything
#: else after the signal is someone else's (a library at exit, a traceback)
SHUTDOWN_LINES = re.compile(
    r"received SIGTERM: stopping gracefully"
    r"|\((TCP|TLS|SSL) Port \d+ Closed\)"
    r"|stopped accepting; every connection finished"
    r"|Main loop terminated\."
    r"|Server Shut Down\."
)


def _busy(server, rounds=200):
    """
    Sets, hits and misses through one authenticated connection, so the
    introspection sketches of the cache hold keys.
    """
    conn = server.ascii()
    try:
        for i in range(rounds):
            assert conn.call(f"set key:{i % 37} 0 0 5", b"value") == b"STORED"
            assert conn.get(f"key:{i % 37}") == b"value"
            assert conn.get(f"missing:{i % 11}") is None
        # wait for a drain (every 0.1 s by default) to move the batch into
        # the sketches
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = conn.stats()
            if int(stats.get("get_hits", 0)) >= rounds:
                break
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        conn.close()


def _askIntrospection(server):
    """
    The API calls that merge and encode sketches (popular items, key
    stats), so that their copies have been made too.
    """
    base = f"http://127.0.0.1:{server.web_port}/api/v2/caches/{server.cache_id}/introspection"
    auth = (server.username, server.password)
    for path in ("popular_items", "key_stats?key=key:1", "recent_logs"):
        reply = requests.get(f"{base}/{path}", auth=auth, timeout=10)
        assert reply.status_code == 200, (path, reply.status_code, reply.text)


def test_quietStop(memcachier_server):
    """
    After gets and sets with introspection on, C{SIGTERM} stops the node
    with exit code 0 and no C{nanobind} line, and every line after the
    signal is one of the node's own shutdown lines.
    """
    s = memcachier_server
    _busy(s)
    _askIntrospection(s)

    assert s.stop(30) == 0
    lines = s.log().splitlines()
    assert not [line for line in lines if "nanobind" in line or "leaked" in line], lines[-40:]
    signalled = [i for i, line in enumerate(lines) if "received SIGTERM" in line]
    assert signalled, lines[-20:]
    after = lines[signalled[0]:]
    foreign = [line for line in after if line.strip() and not SHUTDOWN_LINES.search(line)]
    assert not foreign, foreign
    assert "Server Shut Down." in after[-1]
