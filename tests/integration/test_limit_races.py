"""
The per-cache count limits (credentials, alerts, alert delivery configs,
watched prefixes) hold under concurrent creation, as from several API
requests or several nodes: 20 creations at once through two engines on one
control plane, at a limit of 5, and exactly 5 land, the others get
L{LimitReached} (the API's 409).  On the real PostgreSQL of C{scripts/test}
(C{MEMCACHIER_TEST_PG}), and on a SQLite file shared by two engines.
"""

import threading
import time

import pytest
import sqlalchemy as sa

from memcachier.alerts.repository import AlertRepository
from memcachier.analytics.repository import AnalyticsRepository
from memcachier.control import schema
from memcachier.control.migrations import upgrade
from memcachier.control.model import DEFAULT_PLANS
from memcachier.control.repository import ControlPlane, LimitReached
from memcachier.control.schema import makeEngine

LIMIT = 5
ATTEMPTS = 20
PLANS = {plan.slug: plan for plan in DEFAULT_PLANS}


class WallClock:
    def seconds(self):
        return time.time()


@pytest.fixture(params=["postgresql", "sqlite"])
def engines(request, tmp_path):
    """
    Two engines on one migrated control plane: two nodes' connections.
    """
    if request.param == "postgresql":
        url = request.getfixturevalue("postgresql_url")
    else:
        url = f"sqlite:///{tmp_path / 'control.sqlite'}"
    first, second = makeEngine(url), makeEngine(url)
    upgrade(first)
    yield first, second
    first.dispose()
    second.dispose()


def atOnce(calls):
    """
    Run every call in its own thread, released together.

    @return: how many returned and how many raised L{LimitReached}; any
        other exception is raised.
    """
    barrier = threading.Barrier(len(calls))
    landed, refused, unexpected = [], [], []

    def run(call):
        barrier.wait()
        try:
            call()
        except LimitReached as e:
            refused.append(e)
        except Exception as e:  # raised below, in the test's thread
            unexpected.append(e)
        else:
            landed.append(True)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if unexpected:
        raise unexpected[0]
    return len(landed), refused


def rows(engine, table, cacheId):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.cache_id == cacheId)
        ).scalar()


def controlPlanes(engines):
    return [
        ControlPlane(engine, WallClock(), PLANS, maxCredentials=LIMIT)
        for engine in engines
    ]


def test_credentials(engines):
    """
    A cache's primary credential counts: 4 more land, 16 are refused.
    """
    planes = controlPlanes(engines)
    cache, _ = planes[0].createCache()
    landed, refused = atOnce(
        [lambda p=planes[i % 2]: p.createCredential(cache.id) for i in range(ATTEMPTS)]
    )
    assert (landed, len(refused)) == (LIMIT - 1, ATTEMPTS - LIMIT + 1)
    assert "at most 5 credentials (limits.credentials)" in str(refused[0])
    assert rows(engines[0], schema.credentials, cache.id) == LIMIT


def test_alertConfigsAndAlerts(engines):
    planes = controlPlanes(engines)
    cache, _ = planes[0].createCache()
    repositories = [
        AlertRepository(e, WallClock(), maxAlerts=LIMIT, maxConfigs=LIMIT) for e in engines
    ]

    def config(repository):
        return repository.createConfig(
            cache.id, delivery_type="webhook", webhook_url="https://hooks.example/x"
        )

    landed, refused = atOnce(
        [lambda r=repositories[i % 2]: config(r) for i in range(ATTEMPTS)]
    )
    assert (landed, len(refused)) == (LIMIT, ATTEMPTS - LIMIT)
    assert "at most 5 alert delivery configs (limits.alert_configs)" in str(refused[0])
    assert rows(engines[0], schema.alert_configs, cache.id) == LIMIT

    configId = repositories[0].listConfigs(cache.id)[0]["id"]
    landed, refused = atOnce([
        lambda r=repositories[i % 2]: r.createAlert(
            cache.id, trigger_type="hit_rate", trigger_threshold=50, delivery_config_id=configId,
        )
        for i in range(ATTEMPTS)
    ])
    assert (landed, len(refused)) == (LIMIT, ATTEMPTS - LIMIT)
    assert "at most 5 alerts (limits.alerts)" in str(refused[0])
    assert rows(engines[0], schema.alerts, cache.id) == LIMIT


def test_watchedPrefixes(engines):
    planes = controlPlanes(engines)
    cache, _ = planes[0].createCache()
    repositories = [AnalyticsRepository(e, WallClock(), maxPrefixes=LIMIT) for e in engines]
    landed, refused = atOnce(
        [lambda r=repositories[i % 2], i=i: r.createPrefix(cache.id, f"p{i}:")
         for i in range(ATTEMPTS)]
    )
    assert (landed, len(refused)) == (LIMIT, ATTEMPTS - LIMIT)
    assert "at most 5 watched prefixes (limits.watched_prefixes)" in str(refused[0])
    assert rows(engines[0], schema.prefixes, cache.id) == LIMIT


def test_credentialsThroughTwoNodesAPIs(postgresql_url, memcachier_server_factory):
    """
    Two nodes on one PostgreSQL control plane, 20 C{POST credentials} at
    once spread over their APIs, at C{limits.credentials = 5}: 4 are
    created (the primary is the 5th), the other 16 get the documented
    409, and the control plane holds 5 credentials for the cache.
    """
    import requests

    config = '[caches]\ndefault_plan = "100"\n[limits]\ncredentials = 5\n'
    first = memcachier_server_factory(database=postgresql_url, config=config)
    second = memcachier_server_factory(database=postgresql_url, config=config, create_cache=False)
    auth = (first.username, first.password)
    urls = [
        f"http://127.0.0.1:{node.web_port}/api/v2/caches/{first.cache_id}/credentials"
        for node in (first, second)
    ]
    barrier = threading.Barrier(ATTEMPTS)
    answers = []

    def create(url):
        barrier.wait()
        response = requests.post(url, auth=auth, timeout=60)
        answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=create, args=(urls[i % 2],)) for i in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    codes = sorted(code for code, _ in answers)
    assert codes == [201] * (LIMIT - 1) + [409] * (ATTEMPTS - LIMIT + 1), answers
    refusal = next(body for code, body in answers if code == 409)
    assert refusal == {
        "error": "a cache may have at most 5 credentials (limits.credentials); delete one first"
    }
    # in the control plane itself: a node's API lists what its index has
    # polled, which may lag the other node's writes
    engine = makeEngine(postgresql_url)
    try:
        assert rows(engine, schema.credentials, first.cache_id) == LIMIT
    finally:
        engine.dispose()
