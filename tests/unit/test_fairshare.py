"""
L{memcachier.protocols.fairshare}: a cache alone is never held back;
among busy caches one over its share is read from fewer connections for a
round, in turns; a budget holds every connection of a cache past it; the
held-back time is counted.
"""

from memcachier.alerts.rules import CounterWindow, measure
import attr

from memcachier.control.model import DEFAULT_PLANS
from memcachier.protocols.fairshare import BURST, IDLE_ROUNDS, MIN_BYTES, MIN_REQUESTS, FairShare, budgets
from tests.unit.helpers import World as _World

ROUND = 0.02
DEV = {p.slug: p for p in DEFAULT_PLANS}["dev"]


def World():
    """
    The codec tests' node, its dev plan (both caches') allowing 100
    connections.
    """
    return _World(plans=[attr.evolve(DEV, connections=100)])


def login(world, user):
    proto, transport = world.connect()
    proto.dataReceived(b"set %s 0 0 6\r\nsecret\r\n" % user)
    assert transport.value() == b"STORED\r\n"
    transport.clear()
    return proto, transport


def reading(conns):
    return [c for c in conns if c[1].producerState == "producing"]


def scheduler(world, **kw):
    runtimes = {r.cacheId: r for r in world.registry.runtimes()}
    kw.setdefault("requestsPerMiB", 0)
    kw.setdefault("bytesPerMiB", 0)
    kw.setdefault("minRequests", 0)
    kw.setdefault("minBytes", 0)
    kw.setdefault("burst", ROUND)
    share = FairShare(runtimes, world.clock, round=ROUND, **kw)
    share.startService()
    return share


def firstRounds(world, *busy):
    """
    The scheduler's first round takes readings; the next, an idle round
    later, sees C{busy} (each a list of connections and a number of
    requests each) at work.
    """
    world.clock.advance(ROUND)
    for conns, requests in busy:
        traffic(conns, requests)
    world.clock.advance(ROUND * IDLE_ROUNDS)


def traffic(conns, requests=4):
    for proto, transport in conns:
        proto.dataReceived(b"get k\r\n" * requests)
        transport.clear()


def test_aloneNeverHeld():
    """
    A cache alone may use the whole node: however busy, none of its
    connections is held back, and its held-back time stays zero.
    """
    world = World()
    noisy = [login(world, b"rw") for _ in range(20)]
    share = scheduler(world)
    for _ in range(10):
        traffic(noisy)
        world.clock.advance(ROUND)
        assert len(reading(noisy)) == 20
    assert world.registry.existing(1).stats.held_back_seconds == 0


def test_overShareHeldInTurns():
    """
    With two caches busy, the one doing nearly all the work is read from
    at most C{reading} connections for the next round, the quiet one
    from all of its; which connections are read turns round by round;
    the held-back time is counted; once the quiet cache is idle for
    C{busyFor}, the noisy one is read from every connection again.
    """
    world = World()
    noisy = [login(world, b"rw") for _ in range(20)]
    quiet = [login(world, b"other")]
    share = scheduler(world, reading=4, busyFor=0.1)
    firstRounds(world, (noisy, 4), (quiet, 1))
    assert len(reading(noisy)) == 4
    seen = set()
    for _ in range(5):
        traffic(noisy)
        traffic(quiet, 1)
        world.clock.advance(ROUND)
        now = reading(noisy)
        assert len(now) == 4
        assert reading(quiet) == quiet
        seen.update(id(c[0]) for c in now)
    assert len(seen) == 20
    held = world.registry.existing(1).stats.held_back_seconds
    assert abs(held - 5 * ROUND * 16 / 20) < 1e-4
    assert world.registry.existing(2).stats.held_back_seconds == 0
    assert share.holding() == {1: 16}
    # the quiet cache stops: the noisy one has the node again
    for _ in range(8):
        traffic(noisy)
        world.clock.advance(ROUND)
    assert len(reading(noisy)) == 20
    assert share.holding() == {}


def test_heldConnectionAnswersWhatItReceived():
    """
    Holding back stops reading, not answering: a request already received
    by a held connection is answered; a release is read again once.
    """
    world = World()
    proto, transport = login(world, b"rw")
    proto.holdBack()
    assert transport.producerState == "paused"
    proto.dataReceived(b"get k\r\n")
    assert transport.value() == b"END\r\n"
    proto.release()
    assert transport.producerState == "producing"
    proto.release()
    assert transport.producerState == "producing"


def test_sharingOff():
    """
    With the fair share off, no cache is held back, busy or not.
    """
    world = World()
    noisy = [login(world, b"rw") for _ in range(20)]
    quiet = [login(world, b"other")]
    scheduler(world, sharing=False, reading=4)
    for _ in range(5):
        traffic(noisy)
        traffic(quiet, 1)
        world.clock.advance(ROUND)
        assert len(reading(noisy)) == 20


def test_budgetHoldsEveryConnection():
    """
    A cache past its request budget (per MiB of its plan, a second) by
    more than a round's worth has every connection held back, alone or
    not, until it is within its budget again; then it is read again.
    """
    world = World()
    conns = [login(world, b"rw") for _ in range(3)]
    # the dev plan (25 MiB) at 4 requests a second per MiB: 100 a second,
    # 2 a round
    scheduler(world, requestsPerMiB=4)
    # 60 requests in an idle round (0.2 s, 20 allowed): 40 owed
    firstRounds(world, (conns, 20))
    assert reading(conns) == []
    # 2 paid back a round: held while more than a round's 2 is owed
    for _ in range(12):
        world.clock.advance(ROUND)
    assert reading(conns) == []
    for _ in range(8):
        world.clock.advance(ROUND)
    assert len(reading(conns)) == 3
    held = world.registry.existing(1).stats.held_back_seconds
    # (the last round paid back may fall either side of the line)
    assert 19 * ROUND - 1e-4 < held < 20 * ROUND + 1e-4


def test_byteBudget():
    """
    The byte budget counts what the cache sends: a cache reading large
    values past it is held back.
    """
    world = World()
    proto, transport = login(world, b"rw")
    value = b"x" * 100_000
    proto.dataReceived(b"set big 0 0 %d\r\n%s\r\n" % (len(value), value))
    share = scheduler(world, bytesPerMiB=1024)  # 25 KiB a second
    firstRounds(world)
    proto.dataReceived(b"get big\r\n")
    world.clock.advance(ROUND * IDLE_ROUNDS)
    assert transport.producerState == "paused"
    assert share.holding() == {1: 1}


def test_stopReleases():
    """
    Stopping the scheduler lets every held connection be read.
    """
    world = World()
    noisy = [login(world, b"rw") for _ in range(20)]
    quiet = [login(world, b"other")]
    share = scheduler(world, reading=4)
    firstRounds(world, (noisy, 4), (quiet, 1))
    assert len(reading(noisy)) == 4
    share.stopService()
    assert len(reading(noisy)) == 20
    assert [c for c in world.clock.getDelayedCalls() if c.func == share.tick] == []


def test_closedConnectionsLeaveTheCache():
    """
    A cache's connections are what the scheduler may hold back: they
    join at authentication and leave when they close.
    """
    world = World()
    proto, transport = login(world, b"rw")
    runtime = world.registry.existing(1)
    assert runtime.connections == {proto}
    proto.connectionLost(None)
    assert runtime.connections == set()


def test_statsLine():
    """
    C{stats} reports the cache's held-back seconds.
    """
    world = World()
    proto, transport = login(world, b"rw")
    world.registry.existing(1).stats.held_back_seconds = 1.5
    proto.dataReceived(b"stats\r\n")
    assert b"STAT held_back_seconds 1.500000\r\n" in transport.value()


def test_heldBackAlert():
    """
    The C{held_back} trigger is the part of the window the cache spent
    held back, in percent.
    """
    window = CounterWindow(60)
    window.add(0, {"held_back_seconds": 0.0})
    window.add(30, {"held_back_seconds": 6.0})
    window.add(60, {"held_back_seconds": 15.0})
    seconds, data = window.total()
    assert measure("held_back", seconds, data, DEV) == 25.0
    # reset: counts from zero
    window.add(90, {"held_back_seconds": 3.0})
    seconds, data = window.total()
    assert measure("held_back", seconds, data, DEV) == 100.0 * 12.0 / 60


def test_budgetFloor():
    """
    However small the plan, its budgets are at least L{MIN_REQUESTS}
    requests and L{MIN_BYTES} bytes a second, with a second's worth of
    burst: a small cache filled at once is not held back.
    """
    world = World()
    conns = [login(world, b"rw") for _ in range(3)]
    scheduler(world, requestsPerMiB=4, bytesPerMiB=1024, minRequests=MIN_REQUESTS,
              minBytes=MIN_BYTES, burst=BURST)
    firstRounds(world, (conns, 2000))
    assert len(reading(conns)) == 3


def test_planRequestCeiling():
    """
    A plan's own C{requests_per_second} replaces the node's scaled default:
    with no default budget at all, a cache of a plan allowing 100 requests
    a second is held back past it, and read again once within it.
    """
    world = _World(plans=[attr.evolve(DEV, connections=100, requests_per_second=100)])
    conns = [login(world, b"rw") for _ in range(3)]
    share = scheduler(world, plans=[world.registry.existing(1).plan])
    assert share.active
    # 60 requests in an idle round (0.2 s, 20 allowed): 40 owed
    firstRounds(world, (conns, 20))
    assert reading(conns) == []
    for _ in range(20):
        world.clock.advance(ROUND)
    assert len(reading(conns)) == 3
    assert world.registry.existing(1).stats.held_back_seconds > 0


def test_releasedCacheMeteredNextRound():
    """
    A cache just read again after its debt was paid back is checked a
    round later, not an idle round later: running ahead again at once, it
    is held again at once.
    """
    world = _World(plans=[attr.evolve(DEV, connections=100, requests_per_second=100)])
    conns = [login(world, b"rw") for _ in range(3)]
    scheduler(world, plans=[world.registry.existing(1).plan])
    firstRounds(world, (conns, 20))
    for _ in range(100):
        world.clock.advance(ROUND)
        if reading(conns):
            break
    assert len(reading(conns)) == 3
    traffic(conns, 20)
    world.clock.advance(ROUND)
    assert reading(conns) == []


def test_longGapForgivesNoDebt():
    """
    A round that comes late (a stalled reactor, or a wall clock stepped
    forward) pays the budget back for at most an idle round: a cache far
    past its ceiling stays held.
    """
    world = _World(plans=[attr.evolve(DEV, connections=100, requests_per_second=100)])
    conns = [login(world, b"rw") for _ in range(3)]
    scheduler(world, plans=[world.registry.existing(1).plan])
    # 3,000 requests in an idle round (0.2 s, 20 allowed)
    firstRounds(world, (conns, 1000))
    assert reading(conns) == []
    world.clock.advance(60.0)
    assert reading(conns) == []


def test_planCeilingNone():
    """
    A plan's C{requests_per_second} of C{0} is no ceiling, whatever the
    node's default.
    """
    world = _World(plans=[attr.evolve(DEV, connections=100, requests_per_second=0)])
    conns = [login(world, b"rw") for _ in range(3)]
    scheduler(world, requestsPerMiB=4)
    firstRounds(world, (conns, 20))
    assert len(reading(conns)) == 3


def test_planByteCeiling():
    """
    A plan's own C{bytes_per_second} holds back a cache sending more,
    though the node's byte budget is off.
    """
    world = _World(plans=[attr.evolve(DEV, connections=100, bytes_per_second=25 * 1024)])
    proto, transport = login(world, b"rw")
    value = b"x" * 100_000
    proto.dataReceived(b"set big 0 0 %d\r\n%s\r\n" % (len(value), value))
    share = scheduler(world, plans=[world.registry.existing(1).plan])
    firstRounds(world)
    proto.dataReceived(b"get big\r\n")
    world.clock.advance(ROUND * IDLE_ROUNDS)
    assert transport.producerState == "paused"
    assert share.holding() == {1: 1}


def test_budgetsOfAPlan():
    """
    L{budgets}: the plan's own ceilings where set, else the default per
    MiB (never below the least), C{0} for none.
    """
    plan = attr.evolve(DEV, memory=100 * 1024 * 1024)
    assert budgets(plan, 2000, 2 * 1024 * 1024, 0, 0) == (200_000, 200 * 1024 * 1024)
    assert budgets(plan, 20, 1, MIN_REQUESTS, MIN_BYTES) == (MIN_REQUESTS, MIN_BYTES)
    assert budgets(plan, 0, 0) == (0, 0)
    assert budgets(attr.evolve(plan, requests_per_second=200, bytes_per_second=0), 2000, 1) == (200, 0)


def test_noBudgetNoTimer():
    """
    With the share and both defaults off, and no plan setting a ceiling,
    the scheduler does not run; a plan with a ceiling turns it on.
    """
    world = World()
    assert not scheduler(world, sharing=False).active
    assert scheduler(world, sharing=False,
                     plans=[attr.evolve(DEV, bytes_per_second=1)]).active


def test_newCacheChargedFromZero():
    """
    A cache first served after the scheduler's first round is charged for
    everything it did before its first round: a client logging in and
    making its requests at once is held back at the next round.
    """
    world = _World(plans=[attr.evolve(DEV, connections=100, requests_per_second=100)])
    runtimes = {}
    share = FairShare(runtimes, world.clock, round=ROUND, requestsPerMiB=0, bytesPerMiB=0,
                      burst=ROUND, plans=[attr.evolve(DEV, requests_per_second=100)])
    share.startService()
    world.clock.advance(ROUND)
    conns = [login(world, b"rw")]
    runtimes.update({r.cacheId: r for r in world.registry.runtimes()})
    # 60 requests in an idle round (0.2 s, 20 allowed): 40 owed
    traffic(conns, 60)
    world.clock.advance(ROUND * IDLE_ROUNDS)
    assert reading(conns) == []


def test_heldStaysPausedAcrossRounds():
    """
    A connection held back in two rounds in a row is not let go and
    paused again in between: from one round to the next only the
    connections the turn moves by change (a cache of thousands of
    connections over its share would otherwise cost two C{epoll_ctl}
    calls per connection per round).
    """
    world = World()
    noisy = [login(world, b"rw") for _ in range(20)]
    quiet = [login(world, b"other")]
    scheduler(world, reading=4, busyFor=0.1)
    firstRounds(world, (noisy, 4), (quiet, 1))
    resumed = []
    for proto, transport in noisy:
        original = transport.resumeProducing

        def resume(original=original, transport=transport):
            resumed.append(transport)
            original()

        transport.resumeProducing = resume
    traffic(noisy)
    traffic(quiet, 1)
    world.clock.advance(ROUND)
    # 4 left the held part (their turn came), none of the 12 held in
    # both rounds was resumed
    assert len(resumed) == 4
    assert len(reading(noisy)) == 4
