"""
A plan's own request ceiling over a real socket: a client of a cache on a
plan with C{requests_per_second = 200} that gets as fast as it can is slowed
to about that rate by back-pressure, never answered with an error, and the
time its cache was held back shows in C{stats}.

The budgets are checked once a round, and ten rounds apart while no cache
is busy, so a client may run at full speed for up to that long before its
debt is counted (then paid back): the rounds here are 5 ms, so that this
head start is short against 1,000 gets.
"""

import time

import pytest

#: the plan's ceiling, requests a second
RATE = 200
#: gets the client makes, one after the other
GETS = 1000

PLAN = f"""
[caches]
default_plan = "metered"
[plans.metered]
memory = "64MiB"
connections = 10
requests_per_second = {RATE}
[limits]
scheduler_round = 0.005
"""


@pytest.mark.memcachier(web=False, config=PLAN)
def test_planRequestCeiling(memcachier_server):
    """
    1,000 gets at a 200-a-second ceiling (a second's worth may run ahead)
    take about 4 seconds: far more than unthrottled, well within the
    loose upper bound; every one is answered (a miss, then hits), and the
    cache's C{held_back_seconds} is above zero.
    """
    conn = memcachier_server.ascii()
    assert conn.call("set k 0 0 1", b"v") == b"STORED"
    started = time.monotonic()
    for _ in range(GETS):
        assert conn.get("k") == b"v"
    elapsed = time.monotonic() - started
    stats = conn.stats()
    seen = {name: stats[name] for name in ("held_back_seconds", "cmd_get", "bytes_read", "curr_connections")}
    # (GETS - RATE) / RATE = 4 s paid back at the ceiling
    assert 2.5 < elapsed < 15, (elapsed, seen)
    assert float(stats["held_back_seconds"]) > 1.0, seen


@pytest.mark.memcachier(web=False, config=PLAN.replace(f"requests_per_second = {RATE}",
                                                        "requests_per_second = 0"))
def test_planWithoutCeiling(memcachier_server):
    """
    The same client on a plan with C{requests_per_second = 0} (no
    ceiling; the node's scaled default, 10,000 a second at least, is not
    reached by 1,000 gets) is never held back.
    """
    conn = memcachier_server.ascii()
    assert conn.call("set k 0 0 1", b"v") == b"STORED"
    started = time.monotonic()
    for _ in range(GETS):
        assert conn.get("k") == b"v"
    assert time.monotonic() - started < 2.5
    assert float(conn.stats()["held_back_seconds"]) == 0
