"""
PostgreSQL LISTEN/NOTIFY between nodes: a join and a control-plane write
reach a listening node by notification (the path that makes changes
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
        control.createCache()
        at, f, args, _ = reactor.calls.get(timeout=10)
        assert args == (M.CONTROL_CHANNEL,)
        delays.append(at - sent)
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
