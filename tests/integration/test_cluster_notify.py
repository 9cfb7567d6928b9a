"""
PostgreSQL LISTEN/NOTIFY between nodes: a join, a control-plane write and
a watched prefix change reach a listening node by notification (the path that makes changes
visible in milliseconds), without waiting for any poll.
"""

import queue
import time

import sqlalchemy as sa

from memcachier.cluster import membership as M
from memcachier.control.migrations import upgrade
from memcachier.control.schema import makeEngine


class RecordingReactor:
    """
    Stands in for the reactor the listener thread hands notifications to.
    """

    def __init__(self):
        self.calls = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self.calls.put((time.monotonic(), f, args, kwargs))


def test_joinAndControlWritesAreNotified(postgresql_url):
    engine = makeEngine(postgresql_url)
    upgrade(engine)
    reactor = RecordingReactor()
    seen = []
    listener = M._Listener(engine, reactor, seen.append)
    listener.start()
    try:
        # wait until LISTEN is in place: notify until one arrives
        deadline = time.monotonic() + 30
        while True:
            with engine.begin() as conn:
                M._notify(conn, M.NODES_CHANNEL, "probe")
            try:
                at, f, args, _ = reactor.calls.get(timeout=0.5)
            except queue.Empty:
                assert time.monotonic() < deadline, "LISTEN never received anything"
                continue
            if f == seen.append:
                break
        while not reactor.calls.empty():
            reactor.calls.get()

        delays = []
        for i in range(5):
            sent = time.monotonic()
            M.heartbeat(engine, M.NodeRecord(f"10.0.0.{i}:11211", "default", 1.0, time.time(), 0, 0), 5.0)
            at, f, args, _ = reactor.calls.get(timeout=10)
            assert args == (M.NODES_CHANNEL,)
            delays.append(at - sent)
        from memcachier.control.repository import ControlPlane

        class Clock:
            def seconds(self):
                return time.time()

        from memcachier.control.model import DEFAULT_PLANS

        control = ControlPlane(engine, Clock(), {p.slug: p for p in DEFAULT_PLANS}, defaultPlan="dev",
                               defaultCluster="default")
        sent = time.monotonic()
        cache, _ = control.createCache()
        at, f, args, _ = reactor.calls.get(timeout=10)
        assert args == (M.CONTROL_CHANNEL,)
        delays.append(at - sent)
        from memcachier.analytics.repository import AnalyticsRepository

        prefixes = AnalyticsRepository(engine, Clock())
        sent = time.monotonic()
        created = prefixes.createPrefix(cache.id, "user:")
        at, f, args, _ = reactor.calls.get(timeout=10)
        assert args == (M.PREFIXES_CHANNEL,)
        delays.append(at - sent)
        prefixes.deletePrefix(cache.id, created["id"])
        assert reactor.calls.get(timeout=10)[2] == (M.PREFIXES_CHANNEL,)
        print(f"NOTIFY delays (s): {', '.join(f'{d:.4f}' for d in delays)}")
        # a regular heartbeat is not a change: nothing is sent
        M.heartbeat(engine, M.NodeRecord("10.0.0.0:11211", "default", 1.0, time.time(), 0, 0), 5.0)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        time.sleep(0.5)
        assert reactor.calls.empty()
    finally:
        listener.stop()
        engine.dispose()


def test_changesReachOtherNodesByNotifyNotByPoll(tmp_path, postgresql_url, capsys):
    """
    Three real nodes that poll the control plane only every 600 s: a
    credential created through one node's API authenticates on the two
    others, a credential deleted with the admin CLI stops working on all
    three, and a cache disabled and enabled again with the CLI is refused
    and let in again everywhere, each within seconds (no poll can have
    run: the nodes started less than 600 s ago).  The delays measured are
    printed (C{pytest -s}); no timing is asserted beyond "long before the
    poll" on a shared machine.
    """
    from tests.integration.test_cluster import Cluster, api, waitFor

    # the refusals while a change travels must not hit the login throttle
    cluster = Cluster(
        tmp_path, postgresql_url, pollInterval=600,
        memcache="auth_failure_rate = 100000\nauth_failure_burst = 100000\n",
    )
    started = time.monotonic()
    try:
        cluster.start()
        a, b, c = cluster.nodes
        delays = {}

        def timed(what, nodes, condition):
            sent = time.monotonic()
            for node in nodes:
                waitFor(lambda: condition(node), timeout=30, interval=0.01)
                delays[f"{what} on {node.servers}"] = time.monotonic() - sent

        def authenticates(node, username, password):
            conn = node.ascii(auth=False)
            try:
                return conn.auth(username, password) == b"STORED"
            finally:
                conn.close()

        created = api(a, "/credentials", "POST")
        username, password = created["sasl_username"], created["sasl_password"]
        timed("credential created", (b, c), lambda n: authenticates(n, username, password))
        a.admin("credential", "delete", username)
        timed("credential deleted", (a, b, c), lambda n: not authenticates(n, username, password))
        a.admin("cache", "disable", str(a.cache_id))
        timed("cache disabled", (a, b, c), lambda n: not authenticates(n, a.username, a.password))
        a.admin("cache", "enable", str(a.cache_id))
        timed("cache enabled", (a, b, c), lambda n: authenticates(n, a.username, a.password))
        assert time.monotonic() - started < 600
    finally:
        cluster.stop()
    with capsys.disabled():
        print("\nNOTIFY delays between nodes (s, write to seen, polled every 600 s): " + ", ".join(
            f"{what} {delay:.3f}" for what, delay in delays.items()
        ))
    assert all(delay < 30 for delay in delays.values())
