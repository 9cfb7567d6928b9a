"""
Tests for L{memcachier.control}: schema and migrations, the repository,
the in-memory index and the inactive cache reaper.

Everything runs synchronously: SQLite, a thread pool that runs work at
once, and a L{Clock} for timers.  One test runs against PostgreSQL when
C{MEMCACHIER_TEST_PG} holds a URL of a server where it may create and drop
a database.
"""

import os
import re
import secrets

import pytest
import sqlalchemy as sa
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from memcachier.control import schema
from memcachier.control.index import ControlIndex
from memcachier.control.maintenance import DAY, InactiveCacheReaper
from memcachier.control.migrations import currentRevision, upgrade
from memcachier.control.model import DEFAULT_PLANS
from memcachier.control.repository import (
    AsyncControlPlane,
    CannotDeletePrimary,
    ControlPlane,
    DuplicateCacheName,
    UnknownCache,
    UnknownCluster,
    UnknownCredential,
    UnknownPlan,
)


PLANS = {p.slug: p for p in DEFAULT_PLANS}
START = 1_700_000_000.0


class SynchronousReactor(Clock):
    """
    A L{Clock} that also delivers thread results at once.
    """

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class SynchronousThreadPool:
    """
    A thread pool that runs work in the calling thread, immediately.
    """

    def callInThreadWithCallback(self, onResult, func, *args, **kwargs):
        try:
            result = func(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


def makeControlPlane(url="sqlite://", clock=None, **kwargs):
    engine = schema.makeEngine(url)
    upgrade(engine)
    if clock is None:
        clock = SynchronousReactor()
        clock.advance(START)
    return ControlPlane(engine, clock, PLANS, **kwargs)


@pytest.fixture
def reactor():
    clock = SynchronousReactor()
    clock.advance(START)
    return clock


@pytest.fixture
def cp(reactor):
    return makeControlPlane(clock=reactor, clusters=["default", "eu"])


def result(d):
    """
    The result of a L{Deferred} that has already fired (raising its
    failure's exception).
    """
    results = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


# -- schema and migrations


def test_upgradeCreatesSchemaAndIsIdempotent():
    """
    L{upgrade} creates the tables of L{schema.metadata} exactly as
    described there, records the head revision, and does nothing the second
    time.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = schema.makeEngine("sqlite://")
    assert currentRevision(engine) is None
    upgrade(engine)
    upgrade(engine)
    assert currentRevision(engine) == _headRevision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
        assert conn.execute(sa.select(schema.control_version)).all() == [(1, 1)]


def test_upgradeFileDatabase(tmp_path):
    """
    A file database is created (with its directory) and survives engines.
    """
    url = f"sqlite:///{tmp_path}/sub/control.sqlite"
    cp = makeControlPlane(url)
    cache, _ = cp.createCache(name="kept")
    cp.engine.dispose()
    again = makeControlPlane(url)
    assert again.getCache(cache.id).name == "kept"


def test_foreignKeysCascadeOnSQLite(cp):
    """
    Deleting a cache row deletes its credentials through the foreign key
    (SQLite connections have foreign keys on).
    """
    cache, _ = cp.createCache()
    cp.createCredential(cache.id)
    with cp.engine.begin() as conn:
        conn.execute(schema.caches.delete())
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.credentials)).scalar() == 0


# -- repository


def test_createCacheDefaults(cp, reactor):
    """
    A cache created with no arguments gets a generated name, the default
    plan and cluster, and a primary credential with every capability and
    MemCachier-style username and password.
    """
    cache, credential = cp.createCache()
    assert re.fullmatch(r"mc-[0-9a-f]{8}", cache.name)
    assert cache.label == cache.name
    assert cache.plan == "dev"
    assert cache.cluster == "default"
    assert cache.enabled
    assert cache.created_at == cache.last_active == START
    assert len(cache.sso_secret) >= 32
    assert re.fullmatch(r"[0-9A-F]{6}", credential.username)
    assert re.fullmatch(r"[0-9A-F]{32}", credential.password)
    assert credential.cache_id == cache.id
    assert (credential.write, credential.flush, credential.api, credential.primary) == (
        True,
        True,
        True,
        True,
    )
    assert cp.getCache(cache.id) == cache
    assert cp.getCredential(credential.username) == credential
    assert cp.listCaches() == [cache]


def test_createCacheExplicit(cp):
    """
    Name, plan, cluster and label can be given.
    """
    cache, _ = cp.createCache(name="shop", plan="1g", cluster="eu", label="Shop")
    assert (cache.name, cache.plan, cache.cluster, cache.label) == ("shop", "1g", "eu", "Shop")


def test_createCacheRefusesUnknownPlanClusterAndDuplicateName(cp):
    """
    An unknown plan or cluster, or a name already taken, is a domain error
    and creates nothing.
    """
    cp.createCache(name="shop")
    with pytest.raises(UnknownPlan) as e:
        cp.createCache(plan="huge")
    assert "huge" in str(e.value) and "dev" in str(e.value)
    with pytest.raises(UnknownCluster):
        cp.createCache(cluster="mars")
    with pytest.raises(DuplicateCacheName):
        cp.createCache(name="shop")
    assert len(cp.listCaches()) == 1


def test_everyWriteBumpsTheVersion(cp):
    """
    Each write increases the control version; reads do not.
    """
    versions = [cp.version()]

    def wrote():
        versions.append(cp.version())
        assert versions[-1] > versions[-2]

    cache, primary = cp.createCache()
    wrote()
    other = cp.createCredential(cache.id)
    wrote()
    cp.updateCredential(other.username, write=False)
    wrote()
    cp.promoteCredential(other.username)
    wrote()
    cp.deleteCredential(primary.username)
    wrote()
    cp.setEnabled(cache.id, False)
    wrote()
    cp.setPlan(cache.id, "100")
    wrote()
    cp.setCluster(cache.id, "eu")
    wrote()
    cp.setLabel(cache.id, "x")
    wrote()
    cp.rotateSso(cache.id)
    wrote()
    cp.touchActive([cache.id], START + 10)
    wrote()
    cp.deleteCache(cache.id)
    wrote()
    cp.listCaches()
    cp.snapshot()
    assert cp.version() == versions[-1]


def test_unknownIds(cp):
    """
    Operations on missing caches and credentials raise domain errors.
    """
    for call in [
        lambda: cp.getCache(42),
        lambda: cp.deleteCache(42),
        lambda: cp.setEnabled(42, False),
        lambda: cp.setPlan(42, "dev"),
        lambda: cp.rotateSso(42),
        lambda: cp.createCredential(42),
        lambda: cp.listCredentials(42),
    ]:
        with pytest.raises(UnknownCache):
            call()
    for call in [
        lambda: cp.getCredential("NOSUCH"),
        lambda: cp.deleteCredential("NOSUCH"),
        lambda: cp.promoteCredential("NOSUCH"),
        lambda: cp.updateCredential("NOSUCH", write=False),
    ]:
        with pytest.raises(UnknownCredential):
            call()


def test_cacheUpdates(cp):
    """
    Enabling, plan, cluster and SSO secret changes are stored.
    """
    cache, _ = cp.createCache()
    assert not cp.setEnabled(cache.id, False).enabled
    assert not cp.getCache(cache.id).enabled
    assert cp.setPlan(cache.id, "5g").plan == "5g"
    with pytest.raises(UnknownPlan):
        cp.setPlan(cache.id, "6g")
    assert cp.setCluster(cache.id, "eu").cluster == "eu"
    secret = cp.rotateSso(cache.id)
    assert secret != cache.sso_secret
    assert cp.getCache(cache.id).sso_secret == secret


def test_deleteCacheDeletesCredentials(cp):
    """
    Deleting a cache deletes its credentials, not other caches'.
    """
    cache, primary = cp.createCache()
    other, otherPrimary = cp.createCache()
    cp.createCredential(cache.id)
    cp.deleteCache(cache.id)
    with pytest.raises(UnknownCredential):
        cp.getCredential(primary.username)
    assert cp.listCaches() == [other]
    assert cp.listCredentials(other.id) == [otherPrimary]


def test_touchActive(cp):
    """
    C{touchActive} moves C{last_active} forward only, takes ids with one
    time or a mapping, and ignores unknown ids.
    """
    a, _ = cp.createCache()
    b, _ = cp.createCache()
    assert cp.touchActive([a.id, b.id, 999], START + 100) == 2
    assert cp.touchActive([a.id], START + 50) == 0
    assert cp.getCache(a.id).last_active == START + 100
    assert cp.touchActive({a.id: START + 200, b.id: START + 1}) == 1
    assert cp.getCache(a.id).last_active == START + 200
    assert cp.getCache(b.id).last_active == START + 100
    version = cp.version()
    assert cp.touchActive({}) == 0
    assert cp.version() == version


def test_credentials(cp):
    """
    Credentials are created with the given capabilities, listed primary
    first, updated, promoted (one primary per cache) and deleted, except
    the primary.
    """
    cache, primary = cp.createCache()
    reader = cp.createCredential(cache.id, write=False, flush=False, api=False)
    assert (reader.write, reader.flush, reader.api, reader.primary) == (False, False, False, False)
    assert reader.username != primary.username
    assert cp.listCredentials(cache.id) == [primary, reader]

    updated = cp.updateCredential(reader.username, flush=True)
    assert (updated.write, updated.flush, updated.api) == (False, True, False)
    assert cp.updateCredential(reader.username) == updated

    with pytest.raises(CannotDeletePrimary):
        cp.deleteCredential(primary.username)

    promoted = cp.promoteCredential(reader.username)
    assert promoted.primary
    listed = cp.listCredentials(cache.id)
    assert [c.username for c in listed] == [reader.username, primary.username]
    assert [c.primary for c in listed] == [True, False]

    cp.deleteCredential(primary.username)
    assert cp.listCredentials(cache.id) == [promoted]


def test_passwordNotInRepr(cp):
    """
    A credential's repr does not show its password (it may end up in logs).
    """
    _, credential = cp.createCache()
    assert credential.password not in repr(credential)


# -- AsyncControlPlane and ControlIndex


def makeIndex(cp, reactor, **kwargs):
    acp = AsyncControlPlane(cp, SynchronousThreadPool(), reactor)
    index = ControlIndex(acp, PLANS, reactor, pollInterval=1.0, **kwargs)
    return acp, index


def test_asyncControlPlaneReturnsDeferreds(cp, reactor):
    """
    L{AsyncControlPlane} methods return Deferreds of the synchronous
    results, or failing with the domain errors.
    """
    acp = AsyncControlPlane(cp, SynchronousThreadPool(), reactor)
    cache, credential = result(acp.createCache(name="a"))
    assert result(acp.getCache(cache.id)) == cache
    assert result(acp.listCredentials(cache.id)) == [credential]
    with pytest.raises(CannotDeletePrimary):
        result(acp.deleteCredential(credential.username))
    with pytest.raises(UnknownCache):
        result(acp.getCache(999))


def test_asyncControlPlaneInThreads(cp):
    """
    With a real thread pool and reactor the calls run in a thread and fire
    on the reactor.
    """
    from twisted.python.threadpool import ThreadPool

    class ThreadReactor(Clock):
        def __init__(self):
            super().__init__()
            import queue

            self.calls = queue.Queue()

        def callFromThread(self, f, *args, **kwargs):
            self.calls.put((f, args, kwargs))

    reactor = ThreadReactor()
    pool = ThreadPool(minthreads=1, maxthreads=1)
    pool.start()
    try:
        acp = AsyncControlPlane(cp, pool, reactor)
        d = acp.createCache(name="threaded")
        f, args, kwargs = reactor.calls.get(timeout=10)
        f(*args, **kwargs)
        cache, _ = result(d)
        assert cache.name == "threaded"
    finally:
        pool.stop()


def test_indexStartLoadsAndFiresReady(cp, reactor):
    """
    Starting the index loads everything and fires C{ready}.
    """
    cache, credential = cp.createCache()
    _, index = makeIndex(cp, reactor)
    assert not index.ready.called
    d = index.startService()
    assert result(d) is None
    assert index.ready.called
    assert index.caches() == [cache]
    assert index.cache(cache.id) == cache
    assert index.credential(credential.username) == credential
    assert index.credentials(cache.id) == [credential]
    assert index.planOf(cache.id) == PLANS["dev"]
    assert index.plan("1g") == PLANS["1g"]
    with pytest.raises(UnknownPlan):
        index.plan("nope")
    with pytest.raises(UnknownCache):
        index.planOf(999)
    index.stopService()
    assert reactor.getDelayedCalls() == []


def test_authenticate(cp, reactor):
    """
    C{authenticate} returns the credential for the right password only,
    and nothing for unknown users, undecodable names or disabled caches.
    """
    cache, credential = cp.createCache()
    acp, index = makeIndex(cp, reactor)
    index.startService()
    user = credential.username.encode()
    password = credential.password.encode()
    assert index.authenticate(user, password) == credential
    assert index.authenticate(user, password[:-1]) is None
    assert index.authenticate(user, b"") is None
    assert index.authenticate(b"NOSUCH", password) is None
    assert index.authenticate(b"\xff\xfe", password) is None
    result(acp.setEnabled(cache.id, False))
    assert index.authenticate(user, password) is None
    result(acp.setEnabled(cache.id, True))
    assert index.authenticate(user, password) == credential
    result(acp.deleteCache(cache.id))
    assert index.authenticate(user, password) is None
    assert index.cache(cache.id) is None


def test_writesThroughAsyncAreVisibleAtOnce(cp, reactor):
    """
    A write through the index's L{AsyncControlPlane} is in the index by
    the time its Deferred fires, without any poll.
    """
    acp, index = makeIndex(cp, reactor)
    index.startService()
    cache, credential = result(acp.createCache())
    assert index.cache(cache.id) == cache
    result(acp.setPlan(cache.id, "1g"))
    assert index.planOf(cache.id) == PLANS["1g"]
    other = result(acp.createCredential(cache.id, write=False))
    assert index.credential(other.username) == other
    result(acp.promoteCredential(other.username))
    assert [c.username for c in index.credentials(cache.id)] == [
        other.username,
        credential.username,
    ]


def test_listenersCalledOnChangeOnly(cp, reactor):
    """
    Listeners run after a reload that changed something, not after one
    that did not; a failing listener does not stop the others.
    """
    acp, index = makeIndex(cp, reactor)
    calls = []

    def broken():
        raise RuntimeError("boom")

    index.addListener(broken)
    index.addListener(lambda: calls.append(len(index.caches())))
    index.startService()
    assert calls == []  # empty database: nothing changed
    result(acp.createCache())
    assert calls == [1]
    assert result(index.refresh()) is False
    assert calls == [1]


def test_changeByAnotherProcessSeenWithinOnePoll(tmp_path, reactor):
    """
    A change made by a separate L{ControlPlane} (another process: the admin
    CLI, another node) on the same database reaches the index within one
    poll interval.
    """
    url = f"sqlite:///{tmp_path}/control.sqlite"
    serverSide = makeControlPlane(url, clock=reactor)
    cliSide = makeControlPlane(url)
    _, index = makeIndex(serverSide, reactor)
    changes = []
    index.addListener(lambda: changes.append(index.version))
    index.startService()
    assert index.caches() == []

    cache, credential = cliSide.createCache(plan="100")
    assert index.cache(cache.id) is None
    reactor.advance(1.0)
    assert index.cache(cache.id) == cache
    assert index.authenticate(credential.username.encode(), credential.password.encode())
    assert len(changes) == 1

    reactor.advance(1.0)  # nothing changed: no reload, no listener
    assert len(changes) == 1

    cliSide.setPlan(cache.id, "1g")
    reactor.advance(1.0)
    assert index.planOf(cache.id) == PLANS["1g"]
    cliSide.setEnabled(cache.id, False)
    reactor.advance(1.0)
    assert index.authenticate(credential.username.encode(), credential.password.encode()) is None
    assert len(changes) == 3


def test_pollFailureIsLoggedAndPollingGoesOn(cp, reactor):
    """
    A failing poll (database unreachable) is logged and the next poll
    tries again; C{ready} waits for the first successful load.
    """
    acp, index = makeIndex(cp, reactor)
    broken = [True]
    realVersion = acp.version

    def version():
        if broken[0]:
            return result_fail(RuntimeError("database down"))
        return realVersion()

    def result_fail(exc):
        from twisted.internet.defer import fail

        return fail(exc)

    acp.version = version
    index.startService()
    assert not index.ready.called
    broken[0] = False
    reactor.advance(1.0)
    assert index.ready.called


def test_planOfFallsBackToDefaultPlan(cp, reactor):
    """
    A cache whose plan is no longer configured gets the default plan when
    the index has one, else L{UnknownPlan}.
    """
    cache, _ = cp.createCache(plan="5g")
    acp = AsyncControlPlane(cp, SynchronousThreadPool(), reactor)
    plans = {k: v for k, v in PLANS.items() if k != "5g"}
    strict = ControlIndex(acp, plans, reactor)
    lenient = ControlIndex(acp, plans, reactor, defaultPlan="dev")
    result(strict.refresh())
    result(lenient.refresh())
    with pytest.raises(UnknownPlan):
        strict.planOf(cache.id)
    assert lenient.planOf(cache.id) == PLANS["dev"]


# -- InactiveCacheReaper


def test_reaperDisablesIdleDevelopmentCaches(cp, reactor):
    """
    The reaper records activity and disables development caches idle for
    more than C{days}, leaving production and active caches alone.
    """
    acp, index = makeIndex(cp, reactor)
    idleDev, _ = cp.createCache(name="idle-dev")
    activeDev, _ = cp.createCache(name="active-dev")
    idleProd, _ = cp.createCache(name="idle-prod", plan="100")
    activity = {}
    reaper = InactiveCacheReaper(acp, index, lambda: activity, reactor, days=30, interval=3600)
    index.startService()
    reaper.startService()

    # After 20 days nothing is old enough.
    activity[activeDev.id] = START + 20 * DAY
    reactor.advance(20 * DAY)
    assert all(c.enabled for c in index.caches())
    assert cp.getCache(activeDev.id).last_active == START + 20 * DAY

    # After 31 days the idle development cache goes, recorded activity
    # keeps the other.
    reactor.advance(11 * DAY)
    assert not index.cache(idleDev.id).enabled
    assert index.cache(activeDev.id).enabled
    assert index.cache(idleProd.id).enabled
    reaper.stopService()
    index.stopService()
    assert reactor.getDelayedCalls() == []


def test_reaperWaitsForIndexAndRunsReap(cp, reactor):
    """
    C{reap} returns the ids it disabled; the timer starts once the index
    is ready.
    """
    acp, index = makeIndex(cp, reactor)
    cache, _ = cp.createCache()
    reaper = InactiveCacheReaper(acp, index, dict, reactor, days=1, interval=60)
    reaper.startService()
    assert reactor.getDelayedCalls() == []
    reactor.advance(2 * DAY)
    index.startService()  # the first run happens now, the cache is idle
    assert not index.cache(cache.id).enabled
    assert result(reaper.reap()) == []
    reaper.stopService()
    index.stopService()


def test_reaperStopsBeforeTheIndexIsReady(cp, reactor):
    """
    A reaper stopped while its first run still waits for the index stops
    at once, and never runs.
    """
    acp, index = makeIndex(cp, reactor)
    cache, _ = cp.createCache()
    reaper = InactiveCacheReaper(acp, index, dict, reactor, days=1, interval=60)
    reaper.startService()
    stopped = reaper.stopService()
    assert stopped is None or stopped.called
    reactor.advance(2 * DAY)
    index.startService()
    assert index.cache(cache.id).enabled
    index.stopService()


# -- PostgreSQL


@pytest.fixture
def postgresURL():
    url = os.environ.get("MEMCACHIER_TEST_PG")
    if not url:
        pytest.fail("MEMCACHIER_TEST_PG is not set: run scripts/test, which starts PostgreSQL")
    server = sa.engine.make_url(url)
    name = "memcachier_test_" + secrets.token_hex(4)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_postgresql(postgresURL, reactor):
    """
    Migrations, the repository and index polling work on PostgreSQL (in a
    throwaway database created on the server of C{MEMCACHIER_TEST_PG}).
    """
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    serverSide = makeControlPlane(postgresURL, clock=reactor)
    cliSide = makeControlPlane(postgresURL)
    try:
        with serverSide.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
        _, index = makeIndex(serverSide, reactor)
        index.startService()
        cache, primary = cliSide.createCache(name="pg")
        other = cliSide.createCredential(cache.id, write=False)
        cliSide.promoteCredential(other.username)
        with pytest.raises(CannotDeletePrimary):
            cliSide.deleteCredential(other.username)
        cliSide.touchActive({cache.id: START + 5})
        reactor.advance(1.0)
        assert index.cache(cache.id).last_active == START + 5
        assert index.authenticate(other.username.encode(), other.password.encode()).primary
        cliSide.deleteCache(cache.id)
        reactor.advance(1.0)
        assert index.caches() == []
        with pytest.raises(UnknownCredential):
            serverSide.getCredential(primary.username)
        index.stopService()
    finally:
        serverSide.engine.dispose()
        cliSide.engine.dispose()


def _headRevision():
    """
    The newest Alembic revision shipped (branches add theirs).
    """
    from alembic.script import ScriptDirectory

    from memcachier.control.migrations import alembicConfig

    return ScriptDirectory.from_config(alembicConfig()).get_current_head()
