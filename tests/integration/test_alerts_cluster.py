"""
Alerts over the whole cache on a cluster: two C{twistd memcachier} nodes
on one PostgreSQL control plane, one holding the evaluation lease.  A
real client's misses go only through the other node; the lease holder,
which serves no lookup of the cache itself, reads every live node's
counters over the peer connections and fires the hit rate alert to a
real HTTP server standing in for Slack.
"""

import re
import time

import pytest

from tests.integration.conftest import freePort
from tests.integration.test_alerts import Api, SlackStandIn, alertsConfig, delivered
from tests.integration.test_cluster import Cluster

DEADLINE = 90.0
LEASE_LINE = "this node evaluates and delivers alerts"


@pytest.fixture
def slack():
    standIn = SlackStandIn()
    yield standIn
    standIn.stop()


@pytest.fixture
def pair(tmp_path, postgresql_url, request):
    c = Cluster(tmp_path, postgresql_url, size=2, extra=alertsConfig(freePort()))
    try:
        c.start()
        yield c
    finally:
        c.stopAndShowLogs(request)


def until(predicate, what, during=None):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if during is not None:
            during()
        else:
            time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_missesOnOneNodeFireTheAlertEvaluatedOnTheOther(pair, slack):
    """
    Every lookup goes through the node without the lease; the lease
    holder's own counters see none, yet the hit rate alert it evaluates
    fires once, with the rate of the misses made on the other node.
    """
    holder = until(
        lambda: [n for n in pair.nodes if LEASE_LINE in n.log()], "the alert lease"
    )
    assert len(holder) == 1
    holder = holder[0]
    other = pair.nodes[1] if holder is pair.nodes[0] else pair.nodes[0]

    api = Api(holder)
    config = api.config(delivery_type="slack", slack_url=slack.url)
    alert = api.alert("hit_rate", 50, config["id"])
    conn = other.ascii()
    n = [0]

    def misses():
        for _ in range(20):
            n[0] += 1
            assert conn.get(f"missing-{n[0]}") is None
        time.sleep(0.05)

    until(lambda: slack.accepted("fired"), "the hit rate alert", during=misses)
    text = slack.accepted("fired")[0]["json"]["text"]
    assert "hit_rate below 50%" in text
    assert float(re.search(r"Measured:\s+([\d.]+)%", text).group(1)) < 50
    until(lambda: delivered(api, alert["id"], ["fired"]), "the delivery record")

    # the lease holder served none of those lookups: they were counted on
    # the other node only, and summed over the peer connection
    assert LEASE_LINE not in other.log()
    own = holder.ascii().stats()
    assert (own["get_misses"], own["get_hits"]) == ("0", "0")
    assert int(other.ascii().stats()["get_misses"]) >= 20
    conn.close()
