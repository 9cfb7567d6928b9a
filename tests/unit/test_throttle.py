"""
Tests for L{memcachier.protocols.throttle}: failure budgets per address and
per username, checked before the password, bounded in memory and
arithmetic, logged once per burst.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import capturedLogs

from memcachier.protocols.throttle import AuthThrottle, TokenBuckets, addressKey
from tests.unit.helpers import World


def login(world, username, password, peer="10.0.0.1"):
    """
    One ASCII login on a fresh connection from C{peer}.

    @return: (reply bytes, still connected)
    """
    proto = world.factory.buildProtocol(None)
    transport = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", peer, 4000))
    transport.protocol = proto
    proto.makeConnection(transport)
    proto.dataReceived(b"set %s 0 0 %d\r\n%s\r\n" % (username, len(password), password))
    return transport.value(), transport.connected


def loginAndClose(world, username, password, peer):
    """
    L{login}, then the client hangs up (so that a cache's connection
    limit does not refuse the next login).

    @return: the reply bytes.
    """
    proto = world.factory.buildProtocol(None)
    transport = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", peer, 4000))
    transport.protocol = proto
    proto.makeConnection(transport)
    proto.dataReceived(b"set %s 0 0 %d\r\n%s\r\n" % (username, len(password), password))
    reply = transport.value()
    if transport.connected:
        transport.loseConnection()
    return reply


def test_bucketBurstThenRate():
    """
    A key may spend C{burst} tokens at once, then one per 1/C{rate}
    seconds; it never goes below zero nor above C{burst}.
    """
    buckets = TokenBuckets(rate=5, burst=10, maxEntries=100)
    for _ in range(12):
        buckets.spend("a", 100.0)
    assert buckets.level("a", 100.0) == 0
    assert 0.9 < buckets.level("a", 100.2) < 1.1
    assert buckets.level("a", 1e9) == 10
    assert buckets.level("never seen", 0) == 10


def test_bucketArithmeticCannotOverflow():
    """
    A million failures, clocks far in the future or stepping back: the
    level stays a finite float within bounds (the old throttle raised
    OverflowError from 0.1 * 2 ** 1024).
    """
    buckets = TokenBuckets(rate=5, burst=10, maxEntries=10)
    for i in range(1_000_000):
        buckets.spend("a", 5.0)
    assert buckets.level("a", 5.0) == 0
    assert buckets.level("a", 1.0) == 0  # clock stepped back: no refill
    assert buckets.level("a", 1e308) == 10
    buckets.spend("a", 1e308)
    assert buckets.level("a", 1e308) == 9


def test_bucketMemoryBounded():
    """
    A flood of distinct keys keeps at most C{maxEntries}, dropping the
    least recently spent.
    """
    buckets = TokenBuckets(rate=5, burst=10, maxEntries=1000)
    buckets.spend("victim", 0)
    for i in range(100_000):
        buckets.spend(f"k{i}", 0)
    assert len(buckets) == 1000
    assert buckets.level("victim", 0) == 10


def test_addressKeyGroupsIPv6By64():
    """
    IPv6 peers are counted per /64; IPv4 (and IPv4-mapped) per address.
    """
    assert addressKey("10.0.0.1") == "10.0.0.1"
    assert addressKey("2001:db8::1") == addressKey("2001:db8::ffff:1") == "2001:db8::/64"
    assert addressKey("2001:db8:0:1::1") != addressKey("2001:db8::1")
    assert addressKey("::ffff:10.0.0.1") == "10.0.0.1"
    assert addressKey("not an address:") == "not an address:"


def test_addressBudget():
    """
    One address gets C{burst} failures, then every attempt (any username,
    right password or not) is refused and closed until tokens come back.
    """
    world = World()
    world.factory.throttle = AuthThrottle(rate=5, burst=10)
    for i in range(10):
        reply, connected = login(world, b"user%d" % i, b"wrong")
        assert (reply, connected) == (b"CLIENT_ERROR authentication failure\r\n", True)
    assert login(world, b"rw", b"secret") == (b"CLIENT_ERROR authentication failure\r\n", False)
    assert login(world, b"rw", b"secret", peer="10.0.0.2")[0] == b"STORED\r\n"
    world.clock.advance(0.2)
    assert login(world, b"rw", b"secret")[0] == b"STORED\r\n"


def test_usernameBudget():
    """
    Guesses at one username from many addresses share its budget: the
    right password is refused once it is spent.
    """
    world = World()
    world.factory.throttle = AuthThrottle(rate=5, burst=10)
    for i in range(10):
        assert login(world, b"rw", b"wrong", peer=f"10.1.0.{i}")[1]
    assert login(world, b"rw", b"secret", peer="10.2.0.1") == (
        b"CLIENT_ERROR authentication failure\r\n", False
    )
    # another credential is not affected
    assert login(world, b"other", b"secret", peer="10.2.0.1")[0] == b"STORED\r\n"


def test_successNeverClearsOthersFailures():
    """
    A valid login to one's own cache between guesses at another buys no
    guesses (the old throttle reset the address on any success).
    """
    world = World()
    world.factory.throttle = AuthThrottle(rate=5, burst=10)
    answered = 0
    for i in range(300):
        if i % 3 == 0:
            login(world, b"rw", b"secret")
        elif login(world, b"other", b"guess%d" % i)[1]:
            answered += 1
    assert answered == 10


def test_pipelinedGuessesShareTheBudget():
    """
    Guesses pipelined on one connection without waiting for replies draw
    on the same budget: the connection closes at the first refusal.
    """
    world = World()
    world.factory.throttle = AuthThrottle(rate=5, burst=3)
    guesses = b"".join(b"set rw 0 0 2\r\ng%d\r\n" % i for i in range(8))
    proto, transport = world.connect()
    proto.dataReceived(guesses + b"set rw 0 0 6\r\nsecret\r\n")
    assert transport.value() == b"CLIENT_ERROR authentication failure\r\n" * 4
    assert not transport.connected
    assert world.registry.runtime(1).stats.auth_errors == 4


def test_floodLoggedOncePerBurst():
    """
    A flood of refusals logs one line, with structured fields; a new
    burst after a quiet period logs again, saying how many the previous
    one refused.
    """
    clock_world = World()
    throttle = AuthThrottle(rate=1, burst=1, quietPeriod=60)
    clock_world.factory.throttle = throttle
    with capturedLogs() as events:
        for _ in range(1000):
            login(clock_world, b"rw", b"wrong")
        clock_world.clock.advance(30)
        for _ in range(10):
            login(clock_world, b"rw", b"wrong")
        clock_world.clock.advance(61)
        login(clock_world, b"rw", b"wrong")
        login(clock_world, b"rw", b"wrong")
    floods = [e for e in events if e.get("event") == "auth_flood_throttled"]
    assert len(floods) == 2
    assert floods[0]["address"] == "10.0.0.1" and floods[0]["username"] == "rw"
    assert floods[1]["previousBurst"] == 999 + 9
    assert len(events) == 2
    assert throttle.refused == 999 + 9 + 1


def test_rightfulAddressKeepsAccess():
    """
    An address spraying wrong passwords at a username does not lock out
    the address that rightly logs in as it: that one is not refused by the
    username's budget.  The sprayer spends its own budget and the
    username's, and is refused (the right password too) once either is
    spent; an address that never logged in is refused by the username's.
    """
    world = World()
    throttle = AuthThrottle(rate=5, burst=10)
    world.factory.throttle = throttle
    assert login(world, b"rw", b"secret", peer="10.0.0.1")[0] == b"STORED\r\n"
    rightful = answered = 0
    for i in range(200):
        if login(world, b"rw", b"wrong%d" % i, peer="10.6.6.6")[1]:
            answered += 1
        if loginAndClose(world, b"rw", b"secret", "10.0.0.1") == b"STORED\r\n":
            rightful += 1
        world.clock.advance(0.01)
    assert rightful == 200
    # burst, then 5 a second over the 2 s
    assert 10 <= answered <= 21
    assert login(world, b"rw", b"secret", peer="10.6.6.6")[1] is False
    assert throttle.usernames.level(b"rw", world.clock.seconds()) < 1
    assert login(world, b"rw", b"secret", peer="10.7.7.7") == (
        b"CLIENT_ERROR authentication failure\r\n", False
    )


def test_rightfulAddressStillSpendsItsOwnBudget():
    """
    A remembered address that itself fails is refused by its address
    budget, like any other.
    """
    world = World()
    world.factory.throttle = AuthThrottle(rate=5, burst=10)
    assert login(world, b"rw", b"secret")[0] == b"STORED\r\n"
    for i in range(10):
        assert login(world, b"rw", b"wrong")[1]
    assert login(world, b"rw", b"secret") == (b"CLIENT_ERROR authentication failure\r\n", False)


def test_rememberedLoginExpires():
    """
    After C{rememberFor} seconds without a login the address is a stranger
    again: the username's budget refuses it.
    """
    throttle = AuthThrottle(rate=1, burst=2, rememberFor=60)
    throttle.succeeded("10.0.0.1", b"rw", 100.0)
    for i in range(2):
        throttle.failed(f"10.1.0.{i}", b"rw", 100.0)
    assert throttle.admit("10.0.0.1", b"rw", 100.0)
    assert not throttle.admit("10.0.0.2", b"rw", 100.0)
    for i in range(2):
        throttle.failed(f"10.2.0.{i}", b"rw", 160.5)
    assert throttle.admit("10.0.0.1", b"rw", 160.0)
    assert not throttle.admit("10.0.0.1", b"rw", 160.5)
    assert throttle.remembered == 0
    # a clock stepping back forgets too (no negative age counts)
    throttle.succeeded("10.0.0.1", b"rw", 200.0)
    assert not throttle.known("10.0.0.1", b"rw", 199.0)


def test_rememberedIsPerUsernameAndIPv6Block():
    """
    A login as one username vouches for nothing else; IPv6 addresses are
    remembered per /64, as they are budgeted.
    """
    throttle = AuthThrottle(rate=1, burst=1)
    throttle.succeeded("2001:db8::1", b"rw", 0.0)
    assert throttle.known("2001:db8::ffff", b"rw", 1.0)
    assert not throttle.known("2001:db8:0:1::1", b"rw", 1.0)
    assert not throttle.known("2001:db8::1", b"other", 1.0)


def test_rememberedMemoryBounded():
    """
    A flood of logins from distinct addresses keeps at most
    C{rememberEntries}, dropping the least recent.
    """
    throttle = AuthThrottle(rememberEntries=100)
    throttle.succeeded("10.0.0.1", b"rw", 0.0)
    for i in range(10_000):
        throttle.succeeded(f"10.{i // 250}.{i % 250}.9", b"rw", 1.0)
    assert throttle.remembered == 100
    assert not throttle.known("10.0.0.1", b"rw", 2.0)
    assert throttle.known("10.39.249.9", b"rw", 2.0)


def test_retryAfter():
    """
    Once refused, C{retryAfter} says in whole seconds when a token is back
    (at least 1): 1/rate for a spent bucket.
    """
    throttle = AuthThrottle(rate=0.1, burst=2)
    for _ in range(2):
        throttle.failed("10.0.0.1", b"rw", 0.0)
    assert not throttle.admit("10.0.0.1", b"rw", 0.0)
    assert throttle.retryAfter("10.0.0.1", b"rw", 0.0) == 10
    assert throttle.retryAfter("10.0.0.1", b"rw", 4.5) == 6
    assert throttle.admit("10.0.0.1", b"rw", 10.0)
    assert throttle.retryAfter("10.0.0.9", b"nobody", 0.0) == 1
