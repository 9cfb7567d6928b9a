"""
The ASCII codec, driven byte for byte without sockets.
"""

import pytest

from memcachier.analytics.introspection import IntrospectionService
from memcachier.control.model import Plan
from tests.unit.helpers import STORES, World


@pytest.fixture(params=sorted(STORES))
def world(request):
    """
    A node over the memory store, and over the same store answering
    through Deferreds: every test of the codec runs against both.
    """
    return World(store=STORES[request.param])


def exchange(conn, data):
    """
    Feed C{data} and return what was written, once every late answer due
    has fired (the clock's calls at the current time).
    """
    proto, transport = conn
    transport.clear()
    proto.dataReceived(data)
    proto.session.reactor.advance(0)
    return transport.value()


def login(world, user=b"rw"):
    conn = world.connect()
    assert exchange(conn, b"set %s 0 0 6\r\nsecret\r\n" % user) == b"STORED\r\n"
    return conn


def test_authRequired(world):
    """
    Before ASCII auth only version and quit work; other commands get
    CLIENT_ERROR unauthenticated, and a wrong password is refused.
    """
    conn = world.connect()
    assert exchange(conn, b"get foo\r\n") == b"CLIENT_ERROR unauthenticated\r\n"
    assert exchange(conn, b"version\r\n").startswith(b"VERSION 1.6")
    assert exchange(conn, b"set rw 0 0 5\r\nwrong\r\n") == b"CLIENT_ERROR authentication failure\r\n"
    assert exchange(conn, b"add k 0 0 1\r\nx\r\nget k\r\n") == b"CLIENT_ERROR unauthenticated\r\n" * 2
    assert exchange(conn, b"set rw 0 0 6\r\nsecret\r\nget k\r\n") == b"STORED\r\nEND\r\n"


def test_authTimeout(world):
    """
    An unauthenticated connection is closed after the auth timeout.
    """
    proto, transport = world.connect()
    world.clock.advance(5)
    assert not transport.connected


def test_setGetPipelined(world):
    """
    Several requests in one read are answered in order in one write.
    """
    conn = login(world)
    reply = exchange(conn, b"set a 5 0 1\r\n1\r\nset b 0 0 2 noreply\r\n22\r\nget a b c\r\ngets a\r\n")
    assert reply.startswith(b"STORED\r\nVALUE a 5 1\r\n1\r\nVALUE b 0 2\r\n22\r\nEND\r\nVALUE a 5 1 ")


def test_valueInPieces(world):
    """
    A value body split over many reads is assembled.
    """
    conn = login(world)
    proto, transport = conn
    transport.clear()
    for piece in (b"set k 0 0 10\r", b"\n01234", b"567", b"89\r", b"\nget k\r\n"):
        proto.dataReceived(piece)
    world.clock.advance(0)
    assert transport.value() == b"STORED\r\nVALUE k 0 10\r\n0123456789\r\nEND\r\n"


def test_errors(world):
    """
    memcached's error strings for malformed input.
    """
    conn = login(world)
    assert exchange(conn, b"bogus\r\n") == b"ERROR\r\n"
    assert exchange(conn, b"set k 0 0 3\r\nabcd\r\n") == b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"
    assert exchange(conn, b"set k x 0 1\r\n") == b"CLIENT_ERROR bad command line format\r\n"
    assert exchange(conn, b"get " + b"k" * 251 + b"\r\n") == b"CLIENT_ERROR bad command line format\r\n"
    assert exchange(conn, b"incr k abc\r\n") == b"CLIENT_ERROR invalid numeric delta argument\r\n"
    assert exchange(conn, b"touch k abc\r\n") == b"CLIENT_ERROR invalid exptime argument\r\n"
    assert exchange(conn, b"set n 0 0 1\r\nx\r\nincr n 1\r\n").endswith(
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")


def test_tooLargeSwallowed(world):
    """
    A value over the item limit is refused and its body discarded without
    being buffered; the connection goes on.
    """
    conn = login(world)
    proto, transport = conn
    transport.clear()
    proto.dataReceived(b"set big 0 0 2000000\r\n")
    for _ in range(20):
        proto.dataReceived(b"x" * 100000)
    proto.dataReceived(b"\r\nget big\r\n")
    world.clock.advance(0)
    assert transport.value() == b"SERVER_ERROR object too large for cache\r\nEND\r\n"
    assert len(proto.codec._buffer) < 100


def test_longLineCloses(world):
    """
    2048 bytes without a newline close the connection, as memcached does.
    """
    proto, transport = login(world)
    proto.dataReceived(b"x" * 3000)
    assert not transport.connected


def test_httpCloses(world):
    """
    An HTTP request line closes the connection (cross-protocol defence).
    """
    proto, transport = world.connect()
    proto.dataReceived(b"GET / HTTP/1.1\r\n")
    assert not transport.connected


def test_incrDecr(world):
    conn = login(world)
    exchange(conn, b"set n 0 0 20\r\n18446744073709551615\r\n")
    assert exchange(conn, b"incr n 2\r\n") == b"1\r\n"
    assert exchange(conn, b"decr n 5\r\n") == b"0\r\n"
    assert exchange(conn, b"incr missing 1\r\n") == b"NOT_FOUND\r\n"


def test_casAndDelete(world):
    conn = login(world)
    exchange(conn, b"set k 0 0 1\r\nx\r\n")
    reply = exchange(conn, b"gets k\r\n")
    cas = int(reply.split(b"\r\n")[0].split()[-1])
    assert exchange(conn, b"cas k 0 0 1 %d\r\ny\r\n" % (cas + 1)) == b"EXISTS\r\n"
    assert exchange(conn, b"cas k 0 0 1 %d\r\ny\r\n" % cas) == b"STORED\r\n"
    assert exchange(conn, b"cas nope 0 0 1 1\r\ny\r\n") == b"NOT_FOUND\r\n"
    assert exchange(conn, b"delete k\r\ndelete k\r\n") == b"DELETED\r\nNOT_FOUND\r\n"


def test_expiryAndTouch(world):
    conn = login(world)
    exchange(conn, b"set k 0 10 1\r\nx\r\nset gone 0 -1 1\r\nx\r\n")
    assert exchange(conn, b"get gone\r\n") == b"END\r\n"
    assert exchange(conn, b"touch k 100\r\n") == b"TOUCHED\r\n"
    world.clock.advance(50)
    assert exchange(conn, b"gat 10 k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"
    world.clock.advance(10)
    assert exchange(conn, b"get k\r\n") == b"END\r\n"


def test_flushDelay(world):
    conn = login(world)
    exchange(conn, b"set k 0 0 1\r\nx\r\n")
    assert exchange(conn, b"flush_all 10\r\n") == b"OK\r\n"
    assert exchange(conn, b"get k\r\n") != b"END\r\n"
    world.clock.advance(10)
    assert exchange(conn, b"get k\r\n") == b"END\r\n"


def test_readOnlyAndNoFlush(world):
    """
    A read-only credential gets NOT_STORED for every mutation; one
    without flush gets CLIENT_ERROR flush_all not allowed.
    """
    rw = login(world)
    exchange(rw, b"set k 0 0 1\r\nx\r\n")
    ro = login(world, b"ro")
    assert exchange(ro, b"set k 0 0 1\r\ny\r\n") == b"NOT_STORED\r\n"
    assert exchange(ro, b"delete k\r\n") == b"NOT_STORED\r\n"
    assert exchange(ro, b"incr k 1\r\n") == b"NOT_STORED\r\n"
    assert exchange(ro, b"get k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"
    nf = login(world, b"nf")
    assert exchange(nf, b"flush_all\r\n") == b"CLIENT_ERROR flush_all not allowed\r\n"


def test_isolation(world):
    """
    Two caches never see each other's keys, flushes or counts.
    """
    mine = login(world)
    theirs = login(world, b"other")
    exchange(mine, b"set k 0 0 4\r\nmine\r\n")
    assert exchange(theirs, b"get k\r\n") == b"END\r\n"
    exchange(theirs, b"flush_all\r\n")
    assert exchange(mine, b"get k\r\n") == b"VALUE k 0 4\r\nmine\r\nEND\r\n"
    assert b"STAT curr_items 0\r\n" in exchange(theirs, b"stats\r\n")


def test_stats(world):
    conn = login(world)
    exchange(conn, b"set k 0 0 1\r\nx\r\nget k\r\nget nope\r\n")
    stats = exchange(conn, b"stats\r\n")
    for line in (b"STAT cmd_get 2", b"STAT get_hits 1", b"STAT get_misses 1",
                 b"STAT curr_items 1", b"STAT limit_maxbytes 26214400", b"STAT curr_connections 1"):
        assert line + b"\r\n" in stats
    assert exchange(conn, b"stats reset\r\n") == b"RESET\r\n"
    assert b"STAT get_hits 0\r\n" in exchange(conn, b"stats\r\n")
    assert exchange(conn, b"stats nonsense\r\n") == b"ERROR\r\n"
    assert b"STAT item_size_max 1048576\r\n" in exchange(conn, b"stats settings\r\n")


def test_meta(world):
    conn = login(world)
    assert exchange(conn, b"ms k 2 T0 F5\r\nhi\r\n") == b"HD\r\n"
    assert exchange(conn, b"mg k s v f t Oabc k\r\n") == b"VA 2 s2 f5 t-1 Oabc kk\r\nhi\r\n"
    assert exchange(conn, b"mg missing v\r\n") == b"EN\r\n"
    assert exchange(conn, b"mg missing v q\r\nmn\r\n") == b"MN\r\n"
    assert exchange(conn, b"ms k 1 MA\r\n!\r\nmg k v\r\n") == b"HD\r\nVA 3\r\nhi!\r\n"
    assert exchange(conn, b"ms new 1 ME\r\nx\r\nms new 1 ME\r\nx\r\n") == b"HD\r\nNS\r\n"
    assert exchange(conn, b"ma cnt\r\n") == b"NF\r\n"
    assert exchange(conn, b"ma cnt N0 J10 v\r\nma cnt v D5\r\n") == b"VA 2\r\n10\r\nVA 2\r\n15\r\n"
    assert exchange(conn, b"md cnt\r\nmd cnt\r\n") == b"HD\r\nNF\r\n"
    assert exchange(conn, b"me k\r\n").startswith(b"ME k exp=-1 ")
    assert exchange(conn, b"mg k !\r\n") == b"CLIENT_ERROR invalid flag\r\n"
    assert exchange(conn, b"ms k 1 MZ\r\nx\r\n") == b"CLIENT_ERROR invalid mode for ms M token\r\n"


def test_evictionAtPlanLimit():
    """
    A cache evicts its own least recently used keys at its plan's memory.
    """
    world = World([Plan("dev", 100_000, 10, 1024 * 1024, True)])
    conn = login(world)
    for i in range(200):
        exchange(conn, b"set k%d 0 0 1000\r\n%b\r\n" % (i, b"v" * 1000))
    stats = exchange(conn, b"stats\r\n")
    assert b"STAT evictions 0\r\n" not in stats
    assert exchange(conn, b"get k199\r\n").startswith(b"VALUE")
    assert exchange(conn, b"get k0\r\n") == b"END\r\n"


def test_connectionLimit():
    """
    Past the plan's connection limit authentication is refused clearly.
    """
    world = World([Plan("dev", 100_000, 1, 1024 * 1024, True)])
    login(world)
    proto, transport = world.connect()
    proto.dataReceived(b"set rw 0 0 6\r\nsecret\r\n")
    assert transport.value() == b"SERVER_ERROR too many connections for this cache\r\n"
    assert not transport.connected


def test_slowReaderStopsAnswers(world):
    """
    While the transport says the client is not reading (it paused us as
    its producer), a long multi-get stops after a slice and pipelined
    requests wait; once it drains, everything follows in order.
    """
    conn = login(world)
    proto, transport = conn
    value = b"v" * 100_000
    exchange(conn, b"set big 0 0 %d\r\n%b\r\n" % (len(value), value))
    codec = proto.codec
    transport.clear()
    codec.pauseProducing()  # the transport's buffer is full
    proto.dataReceived(b"get" + b" big" * 200 + b"\r\nversion\r\n")
    sent = len(transport.value())
    assert sent < 3_000_000
    assert transport.producerState == "paused"
    codec.resumeProducing()  # drained
    world.clock.advance(0)  # a late multi-get is rendered whole when it arrives
    reply = transport.value()
    assert reply.count(b"VALUE big 0 100000\r\n") == 200
    assert reply.endswith(b"END\r\nVERSION 1.6.21\r\n")


def test_memcachedErrorTexts(world):
    """
    Error replies as memcached 1.6.18 gives them for these inputs.
    """
    conn = login(world)
    assert exchange(conn, b"set k 0 0 1 noreply extra\r\n") == b"ERROR\r\n"
    assert exchange(conn, b"set k 0 0 1 whatever\r\nx\r\nget k\r\n") == (
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n"
    )
    assert exchange(conn, b"flush_all abc\r\n") == b"CLIENT_ERROR invalid exptime argument\r\n"
    assert exchange(conn, b"mg\r\n") == b"ERROR\r\n"
    assert exchange(conn, b"mg k zz\r\n") == b"CLIENT_ERROR invalid flag\r\n"


def test_appendPastLimitNotStored():
    """
    An append that would grow an item past the item limit is NOT_STORED,
    as memcached answers; the item is unchanged.
    """
    world = World([Plan("dev", 1_000_000, 10, 100, True)])
    conn = login(world)
    exchange(conn, b"set k 0 0 90\r\n%b\r\n" % (b"x" * 90))
    assert exchange(conn, b"append k 0 0 20\r\n%b\r\n" % (b"y" * 20)) == b"NOT_STORED\r\n"
    assert exchange(conn, b"get k\r\n") == b"VALUE k 0 90\r\n%b\r\nEND\r\n" % (b"x" * 90)


# -- memcached's behaviour where it differed (issue 7, section 3) ---------------


@pytest.fixture(params=sorted(STORES))
def detailWorld(request):
    """
    A node with introspection (C{stats detail} counts from its taps).
    """
    return World(
        store=STORES[request.param],
        introspection=lambda clock: IntrospectionService(clock),
    )


def test_statsDetail(detailWorld):
    """
    C{stats detail on|off|dump} as memcached 1.6.18 answers it, scoped to
    the caller's cache: gets, hits, sets and deletes per prefix (up to the
    first C{:}; keys without one are not counted; incr and touch are not
    counted), counting only while on, kept when off, cleared by C{stats
    reset}.
    """
    conn = login(detailWorld)
    other = login(detailWorld, b"other")
    assert exchange(conn, b"stats detail dump\r\n") == b"END\r\n"
    assert exchange(conn, b"stats detail on\r\n") == b"OK\r\n"
    assert b"STAT detail_enabled yes\r\n" in exchange(conn, b"stats settings\r\n")
    assert b"STAT detail_enabled no\r\n" in exchange(other, b"stats settings\r\n")
    exchange(
        conn,
        b"get a:b\r\nget nodelim\r\nget b:1 b:2 c:1\r\nset x:y:z 0 0 1\r\nx\r\n"
        b"get x:y:z\r\nincr b:1 1\r\ntouch b:1 10\r\ndelete a:z\r\n",
    )
    exchange(other, b"get a:b\r\n")
    exchange(other, b"stats detail on\r\nget q:1\r\n")
    dump = (
        b"PREFIX a get 1 hit 0 set 0 del 1\r\n"
        b"PREFIX b get 2 hit 0 set 0 del 0\r\n"
        b"PREFIX c get 1 hit 0 set 0 del 0\r\n"
        b"PREFIX x get 1 hit 1 set 1 del 0\r\n"
        b"END\r\n"
    )
    assert exchange(conn, b"stats detail dump\r\n") == dump
    assert exchange(other, b"stats detail dump\r\n") == b"PREFIX q get 1 hit 0 set 0 del 0\r\nEND\r\n"
    assert exchange(conn, b"stats detail off\r\nget a:1\r\n") == b"OK\r\nEND\r\n"
    assert exchange(conn, b"stats detail dump\r\n") == dump
    usage = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
    assert exchange(conn, b"stats detail\r\nstats detail ON\r\n") == usage * 2
    assert exchange(conn, b"stats detail on extra\r\n") == b"OK\r\n"
    assert exchange(conn, b"stats reset\r\nstats detail dump\r\n") == b"RESET\r\nEND\r\n"


def test_statsDetailNeedsIntrospection(world):
    """
    Without introspection (C{[analytics] introspection = false}) there is
    nothing to count from, and C{stats detail} says so.
    """
    conn = login(world)
    assert exchange(conn, b"stats detail on\r\n") == (
        b"CLIENT_ERROR stats detail needs introspection, which is off\r\n"
    )
    assert b"STAT detail_enabled no\r\n" in exchange(conn, b"stats settings\r\n")


def test_deleteWithNumberRefused(world):
    """
    C{delete <key> <number>} is refused as memcached 1.6.18 refuses it
    (silently with C{noreply}) and deletes nothing; a hold time of C{0} is
    still accepted; more tokens are C{ERROR}.
    """
    conn = login(world)
    exchange(conn, b"set k 0 0 1\r\nx\r\n")
    assert exchange(conn, b"delete k 5\r\n") == (
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    )
    assert exchange(conn, b"delete k 5 noreply\r\nget k\r\n") == b"VALUE k 0 1\r\nx\r\nEND\r\n"
    assert exchange(conn, b"delete k noreply noreply\r\nget k\r\n") == (
        b"VALUE k 0 1\r\nx\r\nEND\r\n"
    )
    assert exchange(conn, b"delete k 0 5\r\n") == (
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    )
    assert exchange(conn, b"delete k 0 noreply x\r\ndelete\r\n") == b"ERROR\r\nERROR\r\n"
    assert exchange(conn, b"delete k 0\r\n") == b"DELETED\r\n"
    exchange(conn, b"set k 0 0 1\r\nx\r\n")
    assert exchange(conn, b"delete k 0 noreply\r\nget k\r\n") == b"END\r\n"


@pytest.mark.parametrize("length", [b"2147483647", b"2147483646", b"-1", b"4294967295", b"99999999999"])
def test_badValueLength(world, length):
    """
    A declared length outside memcached's limits is C{CLIENT_ERROR bad
    command line format} before any value is read: the next line is a
    command again (memcached 1.6.18).
    """
    conn = login(world)
    assert exchange(conn, b"set k 0 0 %b\r\nget k\r\n" % length) == (
        b"CLIENT_ERROR bad command line format\r\nEND\r\n"
    )
    assert exchange(conn, b"cas k 0 0 %b 5\r\nversion\r\n" % length) == (
        b"CLIENT_ERROR bad command line format\r\nVERSION 1.6.21\r\n"
    )
    assert exchange(conn, b"ms k %b\r\nversion\r\n" % length) == (
        b"CLIENT_ERROR bad command line format\r\nVERSION 1.6.21\r\n"
    )


def test_largestLengthIsTooLargeNotBadFormat(world):
    """
    The largest length memcached parses (C{INT_MAX - 2}) is a too-large
    value, swallowed as it arrives.
    """
    proto, transport = login(world)
    transport.clear()
    proto.dataReceived(b"set k 0 0 2147483645\r\nxxxx")
    assert transport.value() == b"SERVER_ERROR object too large for cache\r\n"
    assert proto.codec._swallow == 2147483645 + 2 - 4


def test_tooLargeMetaSetCountsAndUnlinks(world):
    """
    A too-large C{ms} counts as a too-large store and unlinks the old
    value whatever its mode, as memcached 1.6.18 does; a too-large classic
    C{add} leaves the item alone, a too-large C{set} unlinks it.
    """
    conn = login(world)
    big = b"x" * (1024 * 1024 + 1)
    exchange(conn, b"set a 0 0 3\r\nold\r\nset b 0 0 3\r\nold\r\nset c 0 0 3\r\nold\r\n")
    assert exchange(conn, b"ms a %d MA\r\n%b\r\n" % (len(big), big)) == (
        b"SERVER_ERROR object too large for cache\r\n"
    )
    assert exchange(conn, b"add b 0 0 %d\r\n%b\r\n" % (len(big), big)) == (
        b"SERVER_ERROR object too large for cache\r\n"
    )
    exchange(conn, b"set c 0 0 %d\r\n%b\r\n" % (len(big), big))
    assert exchange(conn, b"get a b c\r\n") == b"VALUE b 0 3\r\nold\r\nEND\r\n"
    stats = exchange(conn, b"stats\r\n")
    assert b"STAT store_too_large 3\r\n" in stats
    assert b"STAT cmd_set 6\r\n" in stats


def test_statsSettingsArePlanLimits():
    """
    C{stats settings} reports the plan's connection limit as C{maxconns}
    and its item size limit as C{item_size_max}.
    """
    world = World([Plan("dev", 2_000_000, 7, 300_000, True)])
    conn = login(world)
    settings = exchange(conn, b"stats settings\r\n")
    for line in (b"STAT maxbytes 2000000", b"STAT maxconns 7", b"STAT item_size_max 300000",
                 b"STAT stat_key_prefix :"):
        assert line + b"\r\n" in settings
    assert b"STAT max_connections 7\r\n" in exchange(conn, b"stats\r\n")
