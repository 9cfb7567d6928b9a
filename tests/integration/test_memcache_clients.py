"""
Real memcache clients against a real server, started as a user starts it
(C{twistd -n memcachier --config=...}): pylibmc (binary protocol, SASL
PLAIN), python-binary-memcached (binary, SASL PLAIN) and pymemcache (ASCII
with MemCachier's ASCII auth), plus raw sockets for what no client sends
(meta commands, pipelines, quiet binary commands).

Also here: capabilities (read-only and no-flush credentials), isolation
between caches, and the plan's limits (memory, connections, item size,
expiry).
"""

import socket
import struct
import time

import bmemcached
import pylibmc
import pytest
from pymemcache.client.base import Client as PymemcacheClient
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError

from tests.integration.conftest import binaryRequest
from tests.integration.conftest import pylibmcClient as libmc

MiB = 1024 * 1024

#: the tests' servers: no web port yet (memcachier.node.tap does not wire one)
SERVER = pytest.mark.memcachier(web=False)

TINY_PLAN = """
[plans.tiny]
memory = "1MiB"
connections = 5
item_size = "100KiB"
"""




class _RecordingSocketModule:
    """
    A stand-in for the C{socket} module that records what pymemcache
    sends, so a test can check the exact bytes of ASCII auth.
    """

    def __init__(self):
        self.sent = []
        recorder = self

        class RecordingSocket(socket.socket):
            def sendall(self, data, *args):
                recorder.sent.append(bytes(data))
                return super().sendall(data, *args)

        self.socket = RecordingSocket

    def __getattr__(self, name):
        return getattr(socket, name)


def pymc(server, username=None, password=None, port=None, **kwargs):
    """
    A pymemcache client, authenticated with MemCachier's ASCII auth: its
    first command is C{set <username> 0 0 <len>} with the password.
    """
    client = PymemcacheClient(("127.0.0.1", port or server.port), timeout=10, **kwargs)
    assert client.set(username or server.username, password or server.password, noreply=False)
    return client


def ascii_stats(server, username=None, password=None):
    conn = server.ascii(username, password)
    try:
        return conn.stats()
    finally:
        conn.close()


# -- pylibmc: binary protocol + SASL --------------------------------------


@SERVER
def test_pylibmcStorageCommands(memcachier_server):
    """
    set/get/add/replace/append/prepend/delete behave as memcached's do
    through pylibmc over SASL.
    """
    mc = libmc(memcachier_server)
    assert mc.set("k", b"v1")
    assert mc.get("k") == b"v1"
    assert mc.get("missing") is None

    assert not mc.add("k", b"other")
    assert mc.add("fresh", b"new")
    assert mc.get("fresh") == b"new"

    assert mc.replace("k", b"v2")
    assert mc.get("k") == b"v2"
    # binary REPLACE of a missing key is 0x01 "Not found", as memcached
    # answers; pylibmc raises for it (it does the same against memcached)
    with pytest.raises(pylibmc.NotFound):
        mc.replace("nope", b"x")
    assert mc.get("nope") is None

    assert mc.append("k", b"-tail")
    assert mc.prepend("k", b"head-")
    assert mc.get("k") == b"head-v2-tail"
    assert not mc.append("nope", b"x")
    assert not mc.prepend("nope", b"x")

    assert mc.delete("k")
    assert mc.get("k") is None
    assert not mc.delete("k")

    # pylibmc's own serialization round-trips through flags
    mc.set("text", "unicode ✓")
    mc.set("number", 42)
    mc.set("obj", {"a": [1, 2]})
    assert mc.get("text") == "unicode ✓"
    assert mc.get("number") == 42
    assert mc.get("obj") == {"a": [1, 2]}


@SERVER
def test_pylibmcIncrDecr(memcachier_server):
    """
    incr/decr on decimal values; incr wraps at 2**64, decr floors at 0,
    a missing key is not created, a non-numeric value is an error.
    """
    mc = libmc(memcachier_server)
    mc.set("n", b"10")
    assert mc.incr("n") == 11
    assert mc.incr("n", 9) == 20
    assert mc.decr("n", 5) == 15
    assert mc.get("n") == b"15"

    mc.set("big", str(2**64 - 1).encode())
    assert mc.incr("big", 2) == 1

    mc.set("small", b"5")
    assert mc.decr("small", 10) == 0
    # a shrinking decr leaves memcached's space padding; it still counts
    mc.set("hundred", b"100")
    assert mc.decr("hundred", 99) == 1
    assert mc.incr("hundred", 1) == 2

    with pytest.raises(pylibmc.NotFound):
        mc.incr("missing")
    assert mc.get("missing") is None

    # libmemcached marks the server failed after a 0x06 (non-numeric)
    # reply, against memcached too: use a throwaway client for it
    mc.set("word", b"abc")
    throwaway = libmc(memcachier_server)
    with pytest.raises(pylibmc.Error):
        throwaway.incr("word")
    assert libmc(memcachier_server).get("word") == b"abc"


@SERVER
def test_pylibmcCas(memcachier_server):
    """
    gets returns a CAS unique; cas with it stores once, a stale one is
    refused.
    """
    mc = libmc(memcachier_server)
    mc.set("c", b"one")
    value, unique = mc.gets("c")
    assert value == b"one" and unique
    assert mc.cas("c", b"two", unique)
    assert mc.get("c") == b"two"
    assert not mc.cas("c", b"three", unique)
    assert mc.get("c") == b"two"
    _, fresh = mc.gets("c")
    assert fresh != unique
    assert mc.cas("c", b"three", fresh)
    assert mc.get("c") == b"three"


@SERVER
@pytest.mark.slow
def test_binaryTouchAndExpiry(memcachier_server):
    """
    Binary TOUCH and GAT change an item's expiry: a key pylibmc set to
    expire in 1 s survives when touched to 100 s; a key touched to 1 s is
    gone after 2 s.

    pylibmc's touch of an existing key takes 5 s (libmemcached mis-reads
    the flags extras memcached sends with a TOUCH reply; it does the same
    against memcached 1.6.18, byte-identical reply), so hits are touched
    over raw frames and pylibmc only touches a missing key.
    """
    s = memcachier_server
    mc = libmc(s)
    mc.set("short", b"x", time=1)
    mc.set("long", b"y")
    mc.set("gat", b"z", time=1)
    assert mc.touch("missing", 10) is False
    conn = s.binary()
    touched = conn.request(0x1C, "short", extras=struct.pack(">I", 100), opaque=5)
    assert (touched.status, touched.opaque, touched.value) == (0, 5, b"")
    assert conn.request(0x1C, "long", extras=struct.pack(">I", 1)).status == 0
    assert conn.request(0x1C, "missing", extras=struct.pack(">I", 1)).status == 0x01
    gat = conn.request(0x1D, "gat", extras=struct.pack(">I", 100))
    assert (gat.status, gat.value) == (0, b"z")
    time.sleep(2.1)
    assert mc.get("short") == b"x"
    assert mc.get("gat") == b"z"
    assert mc.get("long") is None


@SERVER
def test_pylibmcMulti(memcachier_server):
    """
    set_multi/get_multi (quiet binary gets ending in a NOOP) and
    delete_multi, flush_all.
    """
    mc = libmc(memcachier_server)
    values = {f"key{i}": f"value{i}".encode() for i in range(200)}
    assert mc.set_multi(values) == []
    got = mc.get_multi(list(values) + ["missing1", "missing2"])
    assert got == values
    assert mc.get_multi(["key1", "missing"], key_prefix="") == {"key1": b"value1"}
    assert mc.delete_multi(["key0", "key1"])
    assert mc.get_multi(["key0", "key1", "key2"]) == {"key2": b"value2"}
    assert mc.flush_all()
    assert mc.get_multi(list(values)) == {}


@SERVER
def test_pylibmcItemSizeLimit(memcachier_server):
    """
    key+value up to the plan's item size (1 MiB) is stored; one byte more
    is refused with "too big", and the same connection keeps working.
    """
    mc = libmc(memcachier_server)
    key = "big"
    largest = b"x" * (MiB - len(key))
    assert mc.set(key, largest)
    assert mc.get(key) == largest

    with pytest.raises(pylibmc.TooBig):
        mc.set("big2", b"y" * (MiB - len("big2") + 1))
    with pytest.raises(pylibmc.TooBig):
        mc.set("big3", b"y" * (3 * MiB))
    assert mc.get("big2") is None
    assert mc.get("big3") is None

    # a refused set unlinks the old item, as memcached does
    for size in (MiB, 2 * MiB):
        mc.set("replaced", b"old")
        with pytest.raises(pylibmc.TooBig):
            mc.set("replaced", b"z" * size)
        assert mc.get("replaced") is None

    # append past the limit is refused and leaves the value alone: 0x05
    # "Not stored" as memcached answers, which pylibmc reports as False
    mc.set("grow", b"a" * (MiB - 100))
    assert mc.append("grow", b"b" * 200) is False
    assert mc.get("grow") == b"a" * (MiB - 100)

    mc.set("after", b"fine")
    assert mc.get("after") == b"fine"
    assert mc.get(key) == largest
    # all of it on pylibmc's one connection: it never had to reconnect
    [(_, stats)] = mc.get_stats()
    assert stats["total_connections"] == b"1"

    # the same over one raw binary connection, pipelined behind the refusal
    conn = memcachier_server.binary()
    conn.send(
        binaryRequest(0x01, "raw", b"r" * (2 * MiB), b"\0" * 8, opaque=1)
        + binaryRequest(0x01, "raw", b"small", b"\0" * 8, opaque=2)
        + binaryRequest(0x00, "raw", opaque=3)
    )
    refused, stored, got = conn.response(), conn.response(), conn.response()
    assert (refused.opaque, refused.status, refused.value) == (1, 0x03, b"Too large.")
    assert (stored.opaque, stored.status) == (2, 0)
    assert (got.opaque, got.value) == (3, b"small")
    stats = ascii_stats(memcachier_server)
    assert int(stats["store_too_large"]) >= 3


@SERVER
def test_pylibmcStats(memcachier_server):
    """
    pylibmc's get_stats sees this cache's counters.
    """
    mc = libmc(memcachier_server)
    mc.set("a", b"1")
    mc.get("a")
    mc.get("b")
    [(server, stats)] = mc.get_stats()
    assert stats["curr_items"] == b"1"
    assert int(stats["get_hits"]) == 1
    assert int(stats["get_misses"]) == 2  # "b" and libmc's warm-up
    assert int(stats["limit_maxbytes"]) == 25 * MiB
    assert int(stats["curr_connections"]) == 1
    # libmemcached only returns the stat names it knows; the rest over ASCII
    stats = ascii_stats(memcachier_server)
    assert int(stats["auth_cmds"]) == 2
    assert int(stats["cmd_set"]) == 1
    assert stats["pid"] == str(memcachier_server.pid)


@SERVER
def test_pylibmcWrongPassword(memcachier_server):
    """
    A wrong password fails every operation; the right one still works
    afterwards.
    """
    bad = libmc(memcachier_server, password="wrong")
    with pytest.raises(pylibmc.Error):
        bad.set("a", b"b")
    good = libmc(memcachier_server)
    assert good.set("a", b"b")


# -- python-binary-memcached ----------------------------------------------


def bmc(server, username=None, password=None):
    return bmemcached.Client(
        (server.servers,), username or server.username, password or server.password
    )


@SERVER
def test_bmemcachedCore(memcachier_server):
    """
    python-binary-memcached: set/get/add/replace/delete/incr/decr/cas,
    multi, flush and stats over SASL PLAIN (it has no touch).
    """
    mc = bmc(memcachier_server)
    assert mc.set("k", "v")
    assert mc.get("k") == "v"
    assert mc.get("missing") is None
    assert not mc.add("k", "x")
    assert mc.add("a", "1")
    assert mc.replace("a", "2")
    assert mc.get("a") == "2"
    assert not mc.replace("zzz", "2")

    assert mc.set("n", 10)
    assert mc.incr("n", 5) == 15
    assert mc.decr("n", 20) == 0

    value, unique = mc.gets("k")
    assert value == "v"
    assert mc.cas("k", "w", unique)
    assert not mc.cas("k", "again", unique)
    assert mc.get("k") == "w"

    assert mc.set_multi({"m1": "a", "m2": "b"}) in (True, [])
    assert mc.get_multi(["m1", "m2", "m3"]) == {"m1": "a", "m2": "b"}

    assert mc.delete("k")
    assert mc.get("k") is None

    [stats] = mc.stats().values()
    assert stats["curr_items"] in (b"4", "4", 4)
    assert mc.flush_all()
    assert mc.get("m1") is None
    [stats] = mc.stats().values()
    assert stats["curr_items"] in (b"0", "0", 0)


# -- pymemcache: ASCII with MemCachier's ASCII auth --------------------------


@SERVER
def test_pymemcacheAsciiAuthBytes(memcachier_server):
    """
    pymemcache's C{set(username, password, noreply=False)} sends exactly
    MemCachier's ASCII auth command and gets STORED.
    """
    s = memcachier_server
    recorder = _RecordingSocketModule()
    client = PymemcacheClient(("127.0.0.1", s.port), timeout=10, socket_module=recorder)
    assert client.set(s.username, s.password, noreply=False) is True
    assert recorder.sent == [
        f"set {s.username} 0 0 {len(s.password)}\r\n{s.password}\r\n".encode()
    ]
    assert client.set("k", b"v", noreply=False)
    assert client.get("k") == b"v"


@SERVER
def test_pymemcacheUnauthenticated(memcachier_server):
    """
    Before auth every command but version gets C{CLIENT_ERROR
    unauthenticated}; a wrong password gets C{CLIENT_ERROR authentication
    failure}.
    """
    s = memcachier_server
    client = PymemcacheClient(("127.0.0.1", s.port), timeout=10)
    assert client.version()
    with pytest.raises(MemcacheClientError, match="unauthenticated"):
        client.get("k")
    client = PymemcacheClient(("127.0.0.1", s.port), timeout=10)
    with pytest.raises(MemcacheClientError, match="authentication failure"):
        client.set(s.username, "wrong", noreply=False)


@SERVER
def test_pymemcacheCommands(memcachier_server):
    """
    get_many, gets/cas, incr/decr, touch, delete, flush_all through
    pymemcache.
    """
    mc = pymc(memcachier_server)
    assert mc.set("a", b"1", noreply=False)
    assert mc.set_many({"b": b"2", "c": b"3"}, noreply=False) == []
    assert mc.get_many(["a", "b", "c", "d"]) == {"a": b"1", "b": b"2", "c": b"3"}

    assert mc.add("a", b"x", noreply=False) is False
    assert mc.replace("a", b"one", noreply=False) is True
    assert mc.append("a", b"!", noreply=False) is True
    assert mc.prepend("a", b"<", noreply=False) is True
    assert mc.get("a") == b"<one!"

    value, unique = mc.gets("a")
    assert value == b"<one!"
    assert mc.cas("a", b"two", unique, noreply=False) is True
    assert mc.cas("a", b"three", unique, noreply=False) is False
    assert mc.cas("missing", b"x", unique, noreply=False) is None
    assert mc.get("a") == b"two"

    mc.set("n", b"41", noreply=False)
    assert mc.incr("n", 1) == 42
    assert mc.decr("n", 50) == 0
    assert mc.incr("missing", 1) is None
    mc.set("wrap", str(2**64 - 1).encode(), noreply=False)
    assert mc.incr("wrap", 1) == 0

    assert mc.touch("b", 100, noreply=False) is True
    assert mc.touch("missing", 100, noreply=False) is False

    assert mc.delete("b", noreply=False) is True
    assert mc.delete("b", noreply=False) is False
    assert mc.get("b") is None

    stats = mc.stats()
    assert stats[b"curr_items"] == 4
    assert mc.flush_all(noreply=False) is True
    assert mc.get_many(["a", "c", "n", "wrap"]) == {}
    assert mc.version().startswith(b"1.6")

    # last: pymemcache drops its connection after a CLIENT_ERROR (and
    # with it the ASCII auth)
    mc.set("word", b"abc", noreply=False)
    with pytest.raises(MemcacheClientError, match="non-numeric"):
        mc.incr("word", 1)


@SERVER
def test_pymemcacheTooLarge(memcachier_server):
    """
    An ASCII value over the item limit gets C{SERVER_ERROR object too
    large for cache}; the value is swallowed and the connection stays
    usable (pymemcache itself reconnects after a server error, which
    loses ASCII auth, so we use a raw socket for the "same connection"
    part).
    """
    s = memcachier_server
    mc = pymc(s)
    with pytest.raises(MemcacheServerError, match="object too large for cache"):
        mc.set("big", b"x" * (MiB + 1), noreply=False)

    conn = s.ascii()
    largest = b"y" * (MiB - 3)
    assert conn.call("set big 0 0 %d" % len(largest), largest) == b"STORED"
    assert conn.get("big") == largest
    assert conn.call("set big 0 0 %d" % (MiB - 2), b"z" * (MiB - 2)) == (
        b"SERVER_ERROR object too large for cache"
    )
    # memcached unlinks the old item when a set is refused
    assert conn.get("big") is None
    assert conn.call("set small 0 0 2", b"ok") == b"STORED"
    assert conn.get("small") == b"ok"


@SERVER
def test_metaCommands(memcachier_server):
    """
    mg/ms/md/ma/mn over a raw socket.
    """
    conn = memcachier_server.ascii()
    assert conn.call("ms mkey 5 T0 F7", b"hello") == b"HD"
    assert conn.call("mg mkey v f s") == b"VA 5 f7 s5"
    assert conn.exactly(7) == b"hello\r\n"
    line = conn.call("mg mkey c k Oabc")
    assert line.startswith(b"HD c") and b" kmkey" in line and b" Oabc" in line
    cas = int(line.split()[1][1:])
    assert conn.call(f"ms mkey 3 C{cas + 1000}", b"new") == b"EX"
    assert conn.call(f"ms mkey 3 C{cas}", b"new") == b"HD"
    assert conn.call("mg mkey v") == b"VA 3"
    assert conn.exactly(5) == b"new\r\n"
    assert conn.call("mg missing v") == b"EN"
    assert conn.call("ms mkey 4 MA", b"-end") == b"HD"
    assert conn.get("mkey") == b"new-end"
    assert conn.call("ms fresh 1 ME", b"1") == b"HD"
    assert conn.call("ms fresh 1 ME", b"2") == b"NS"

    assert conn.call("ma cnt") == b"NF"
    assert conn.call("ma cnt N0 J10 v") == b"VA 2"
    assert conn.exactly(4) == b"10\r\n"
    assert conn.call("ma cnt D5 v") == b"VA 2"
    assert conn.exactly(4) == b"15\r\n"
    assert conn.call("ma cnt MD D20 v") == b"VA 1"
    assert conn.exactly(3) == b"0\r\n"
    assert conn.call("ma cnt") == b"HD"

    assert conn.call("md mkey") == b"HD"
    assert conn.call("md mkey") == b"NF"
    assert conn.call("md mkey q") == b"NF"
    assert conn.call("mg mkey v") == b"EN"

    # quiet mode: only the misses and the mn barrier answer
    conn.send(b"mg fresh v q\r\nmg nope v q\r\nmd fresh q\r\nmn\r\n")
    assert conn.line() == b"VA 1"
    assert conn.exactly(3) == b"1\r\n"
    assert conn.line() == b"MN"
    assert conn.call("mg fresh v") == b"EN"


@SERVER
def test_asciiPipelining(memcachier_server):
    """
    Many requests in one write are answered in order.
    """
    conn = memcachier_server.ascii()
    requests = []
    expected = []
    for i in range(500):
        requests.append(b"set p%d 0 0 %d\r\n%d\r\n" % (i, len(str(i)), i))
        expected.append(b"STORED")
        requests.append(b"get p%d\r\n" % i)
        expected += [b"VALUE p%d 0 %d" % (i, len(str(i))), b"%d" % i, b"END"]
        requests.append(b"incr p%d 1\r\n" % i)
        expected.append(b"%d" % (i + 1))
        requests.append(b"delete p%d\r\n" % i)
        expected.append(b"DELETED")
        requests.append(b"mn\r\n")
        expected.append(b"MN")
    conn.send(b"".join(requests))
    assert [conn.line() for _ in expected] == expected


@SERVER
def test_binaryQuietPipeline(memcachier_server):
    """
    Quiet binary commands (SETQ, GETKQ, ...) in one write: successes of
    quiet mutations and misses of quiet gets are silent, the NOOP ends
    the batch, opaques come back in order.
    """
    conn = memcachier_server.binary()
    frames = []
    for i in range(100):
        frames.append(
            binaryRequest(0x11, f"q{i}", f"v{i}".encode(), b"\0\0\0\0\0\0\0\0", opaque=i)
        )
    for i in range(0, 200, 2):
        frames.append(binaryRequest(0x0D, f"q{i}", opaque=1000 + i))  # GETKQ
    frames.append(binaryRequest(0x0A, opaque=9999))  # NOOP
    conn.send(b"".join(frames))
    responses = []
    while True:
        response = conn.response()
        responses.append(response)
        if response.opcode == 0x0A:
            break
    hits = responses[:-1]
    assert [r.opaque for r in hits] == [1000 + i for i in range(0, 100, 2)]
    assert all(r.status == 0 for r in hits)
    assert [(r.key, r.value) for r in hits] == [
        (f"q{i}".encode(), f"v{i}".encode()) for i in range(0, 100, 2)
    ]
    assert responses[-1].opaque == 9999

    # a quiet command's error is still sent (ADDQ on an existing key)
    conn.send(
        binaryRequest(0x12, "q1", b"x", b"\0" * 8, opaque=1)
        + binaryRequest(0x14, "nope", opaque=2)  # DELETEQ miss
        + binaryRequest(0x0A, opaque=3)
    )
    first, second, noop = conn.response(), conn.response(), conn.response()
    assert (first.opaque, first.status) == (1, 0x02)
    assert (second.opaque, second.status) == (2, 0x01)
    assert (noop.opcode, noop.opaque) == (0x0A, 3)


# -- capabilities -------------------------------------------------------------


@SERVER
def test_readOnlyCredential(memcachier_server):
    """
    A read-only credential reads the cache, and every mutation is "not
    stored": pylibmc's set returns False (binary 0x05), delete/incr raise,
    pymemcache gets NOT_STORED.
    """
    s = memcachier_server
    libmc(s).set("shared", b"value")
    ro = s.admin("credential", "create", str(s.cache_id), "--read-only")
    assert ro["write_capability"] is False
    time.sleep(1)  # the server polls the control plane every 0.2 s

    mc = libmc(s, ro["username"], ro["password"])
    assert mc.get("shared") == b"value"
    assert mc.set("shared", b"changed") is False
    assert mc.add("new", b"x") is False
    # libmemcached error 14 is MEMCACHED_NOTSTORED
    with pytest.raises(pylibmc.Error, match="error 14 "):
        mc.delete("shared")
    with pytest.raises(pylibmc.Error):
        mc.incr("shared")
    assert mc.get("shared") == b"value"

    client = pymc(s, ro["username"], ro["password"])
    assert client.get("shared") == b"value"
    assert client.set("shared", b"changed", noreply=False) is False
    assert client.add("other", b"x", noreply=False) is False
    conn = s.ascii(ro["username"], ro["password"])
    assert conn.call("set shared 0 0 1", b"z") == b"NOT_STORED"
    assert conn.call("delete shared") == b"NOT_STORED"
    assert conn.call("incr shared 1") == b"NOT_STORED"
    assert conn.call("touch shared 10") == b"NOT_STORED"
    assert conn.get("shared") == b"value"


@SERVER
def test_noFlushCredential(memcachier_server):
    """
    A credential without the flush capability gets C{CLIENT_ERROR
    flush_all not allowed} (ASCII) and an error (binary, 0x20); nothing
    is flushed.
    """
    s = memcachier_server
    libmc(s).set("keep", b"me")
    nf = s.admin("credential", "create", str(s.cache_id), "--no-flush")
    assert nf["flush_capability"] is False
    time.sleep(1)

    conn = s.ascii(nf["username"], nf["password"])
    assert conn.call("flush_all") == b"CLIENT_ERROR flush_all not allowed"
    assert conn.call("flush_all noreply") == b"CLIENT_ERROR flush_all not allowed"
    assert conn.get("keep") == b"me"
    assert conn.call("set other 0 0 1", b"1") == b"STORED"

    client = pymc(s, nf["username"], nf["password"])
    with pytest.raises(MemcacheClientError, match="flush_all not allowed"):
        client.flush_all(noreply=False)

    # binary FLUSH gets 0x20, as from memcached -F; what libmemcached makes
    # of it varies by version (the PyPI wheel's reports success, then marks
    # the server failed; Debian's 1.0.18 goes on), so only the effect is
    # checked here and the status on raw frames below
    mc = libmc(s, nf["username"], nf["password"])
    assert mc.get("keep") == b"me"
    try:
        mc.flush_all()
    except pylibmc.Error:
        pass
    bconn = s.binary(nf["username"], nf["password"])
    assert bconn.request(0x08, opaque=7).status == 0x20
    assert bconn.request(0x08).status == 0x20
    assert bconn.request(0x00, "keep").value == b"me"
    assert libmc(s).get("keep") == b"me"


# -- isolation ----------------------------------------------------------------


@SERVER
def test_cachesAreIsolated(memcachier_server):
    """
    Two caches: the same keys hold different values, a flush of one
    leaves the other, stats are per cache.
    """
    s = memcachier_server
    other = s.admin("cache", "create")
    time.sleep(1)
    one = libmc(s)
    two = libmc(s, other["username"], other["password"])
    one.set("k", b"one")
    two.set("k", b"two")
    one.set("only-one", b"1")
    assert one.get("k") == b"one"
    assert two.get("k") == b"two"
    assert two.get("only-one") is None

    [(_, stats1)] = one.get_stats()
    [(_, stats2)] = two.get_stats()
    assert stats1["curr_items"] == b"2"
    assert stats2["curr_items"] == b"1"

    assert two.flush_all()
    assert two.get("k") is None
    assert one.get("k") == b"one"
    assert ascii_stats(s)["curr_items"] == "2"
    assert ascii_stats(s, other["username"], other["password"])["curr_items"] == "0"


# -- limits -------------------------------------------------------------------


@pytest.mark.memcachier(web=False, config=TINY_PLAN)
def test_evictionAtPlanLimit(memcachier_server):
    """
    Writing 3 MiB into a 1 MiB cache evicts the oldest keys: C{bytes}
    stays within C{limit_maxbytes}, C{evictions} counts them, recent keys
    are readable.
    """
    s = memcachier_server
    tiny = s.admin("cache", "create", "--plan", "tiny")
    neighbour = libmc(s)
    neighbour.set("untouched", b"n" * 50000)
    time.sleep(1)
    conn = s.ascii(tiny["username"], tiny["password"])
    value = b"v" * 10000
    count = 3 * MiB // len(value)
    conn.send(b"".join(b"set e%d 0 0 %d noreply\r\n%b\r\n" % (i, len(value), value)
                       for i in range(count)))
    stats = conn.stats()
    assert int(stats["limit_maxbytes"]) == MiB
    assert int(stats["bytes"]) <= MiB
    assert int(stats["evictions"]) > 0
    assert int(stats["curr_items"]) + int(stats["evictions"]) == count
    for i in range(count - 20, count):
        assert conn.get(f"e{i}") == value
    assert conn.get("e0") is None
    # another tenant's keys are never evicted
    assert neighbour.get("untouched") == b"n" * 50000

    # the plan's item size applies too
    assert conn.call("set huge 0 0 %d" % (200 * 1024), b"h" * (200 * 1024)) == (
        b"SERVER_ERROR object too large for cache"
    )


@pytest.mark.memcachier(web=False, config=TINY_PLAN)
def test_connectionLimit(memcachier_server):
    """
    A plan allowing 5 connections: the 6th authentication is refused with
    a clear error (ASCII and binary); closing one frees a slot.
    """
    s = memcachier_server
    tiny = s.admin("cache", "create", "--plan", "tiny")
    time.sleep(1)
    user, password = tiny["username"], tiny["password"]
    conns = [s.ascii(user, password) for _ in range(5)]

    sixth = s.ascii(auth=False)
    assert sixth.auth(user, password) == b"SERVER_ERROR too many connections for this cache"
    assert sixth.closed()

    binary = s.binary(auth=False)
    response = binary.auth(user, password)
    assert response.status == 0x20
    assert response.value == b"Too many connections"

    mc = libmc(s, user, password)
    with pytest.raises(pylibmc.Error):
        mc.set("x", b"y")

    stats = conns[0].stats()
    assert stats["curr_connections"] == "5"
    assert int(stats["rejected_connections"]) >= 2

    conns.pop().close()
    time.sleep(0.3)
    again = s.ascii(user, password)
    assert again.call("set x 0 0 1", b"y") == b"STORED"
    # the primary cache is on another plan and unaffected
    assert libmc(s).set("fine", b"yes")


@SERVER
@pytest.mark.slow
def test_expiry(memcachier_server):
    """
    An item set with a 1 s TTL is gone 2 s later; a negative exptime
    stores an item already expired; an absolute exptime in the past
    likewise.
    """
    s = memcachier_server
    conn = s.ascii()
    assert conn.call("set ttl 0 1 1", b"x") == b"STORED"
    assert conn.call("set neg 0 -1 1", b"x") == b"STORED"
    assert conn.get("neg") is None
    assert conn.call("set past 0 %d 1" % (int(time.time()) - 10), b"x") == b"STORED"
    assert conn.get("past") is None
    assert conn.call("set future 0 %d 1" % (int(time.time()) + 100), b"x") == b"STORED"
    assert conn.get("ttl") == b"x"
    mc = libmc(s)
    mc.set("libttl", b"y", time=1)
    assert mc.get("libttl") == b"y"
    time.sleep(2.1)
    assert conn.get("ttl") is None
    assert mc.get("libttl") is None
    assert conn.get("future") == b"x"
    assert conn.call("touch future -1") == b"TOUCHED"
    assert conn.get("future") is None
