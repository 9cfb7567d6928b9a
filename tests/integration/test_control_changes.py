"""
Changes made with C{memcachier-admin} (a separate process writing the
control plane's database) reach a running server within 2 seconds,
without a restart: new caches and credentials authenticate, deleted
credentials and disabled or deleted caches stop authenticating, plan
changes show in C{stats}.
"""

import time

import pytest

from tests.integration.conftest import AsciiConnection, BinaryConnection, pylibmcClient

#: how fast a control-plane change must reach the server (seconds)
WITHIN = 2.0

SERVER = pytest.mark.memcachier(web=False)


def within(predicate, limit=WITHIN, step=0.05):
    """
    Poll C{predicate} until it is true; fail if that takes longer than
    C{limit} seconds.

    @return: the seconds it took.
    """
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            pytest.fail(f"not true within {limit} s: {predicate.__doc__ or predicate}")
        time.sleep(step)


def asciiAuth(server, username, password):
    """
    The reply to ASCII auth on a fresh connection.
    """
    conn = AsciiConnection(server.port)
    try:
        return conn.auth(username, password)
    finally:
        conn.close()


def saslStatus(server, username, password):
    """
    The status of SASL PLAIN on a fresh binary connection.
    """
    conn = BinaryConnection(server.port)
    try:
        return conn.auth(username, password).status
    finally:
        conn.close()


def canAuth(server, username, password):
    return (
        asciiAuth(server, username, password) == b"STORED"
        and saslStatus(server, username, password) == 0
    )


def cannotAuth(server, username, password):
    return (
        asciiAuth(server, username, password) == b"CLIENT_ERROR authentication failure"
        and saslStatus(server, username, password) == 0x20
    )


@SERVER
def test_newCacheAndCredential(memcachier_server):
    """
    A cache created with the CLI while the server runs, and a second
    credential of it, authenticate within 2 s, with both protocols.
    """
    s = memcachier_server
    created = s.admin("cache", "create")
    user, password = created["username"], created["password"]
    within(lambda: canAuth(s, user, password))

    mc = pylibmcClient(s, user, password)
    assert mc.set("k", b"v")

    extra = s.admin("credential", "create", str(created["id"]))
    within(lambda: canAuth(s, extra["username"], extra["password"]))
    conn = s.ascii(extra["username"], extra["password"])
    assert conn.get("k") == b"v"


@SERVER
def test_deletedCredential(memcachier_server):
    """
    A deleted credential stops authenticating within 2 s; the cache's
    other credentials keep working.
    """
    s = memcachier_server
    extra = s.admin("credential", "create", str(s.cache_id))
    user, password = extra["username"], extra["password"]
    within(lambda: canAuth(s, user, password))
    s.admin("credential", "delete", user)
    within(lambda: cannotAuth(s, user, password))
    assert canAuth(s, s.username, s.password)


@SERVER
def test_disabledCache(memcachier_server):
    """
    Disabling a cache stops new authentications within 2 s and ends its
    open connections (ASCII: C{SERVER_ERROR cache disabled}, binary:
    0x20); enabling it again lets clients back in, with the data kept.
    """
    s = memcachier_server
    other = s.admin("cache", "create")
    within(lambda: canAuth(s, other["username"], other["password"]))
    conn = s.ascii()
    assert conn.call("set k 0 0 1", b"v") == b"STORED"
    bconn = s.binary()
    bystander = s.ascii(other["username"], other["password"])

    s.admin("cache", "disable", str(s.cache_id))
    within(lambda: cannotAuth(s, s.username, s.password))

    assert conn.call("get k") == b"SERVER_ERROR cache disabled"
    assert conn.closed()
    response = bconn.request(0x00, "k")
    assert response.status == 0x20
    assert bconn.closed()
    # another cache is not affected
    assert bystander.call("set x 0 0 1", b"1") == b"STORED"

    s.admin("cache", "enable", str(s.cache_id))
    within(lambda: canAuth(s, s.username, s.password))
    assert s.ascii().get("k") == b"v"


@SERVER
def test_deletedCache(memcachier_server):
    """
    A deleted cache stops authenticating within 2 s and its connections
    end.
    """
    s = memcachier_server
    other = s.admin("cache", "create")
    user, password = other["username"], other["password"]
    within(lambda: canAuth(s, user, password))
    conn = s.ascii(user, password)
    assert conn.call("set k 0 0 1", b"v") == b"STORED"
    s.admin("cache", "delete", str(other["id"]))
    within(lambda: cannotAuth(s, user, password))
    conn.send(b"get k\r\n")
    assert conn.line() == b"SERVER_ERROR cache disabled"
    assert conn.closed()
    assert canAuth(s, s.username, s.password)


@SERVER
def test_setPlan(memcachier_server):
    """
    C{cache set-plan} shows in C{stats} (limit_maxbytes, max_connections)
    of an open connection within 2 s.
    """
    s = memcachier_server
    conn = s.ascii()
    stats = conn.stats()
    assert stats["limit_maxbytes"] == str(25 * 1024 * 1024)
    assert stats["max_connections"] == "10"

    s.admin("cache", "set-plan", str(s.cache_id), "100")

    def planChanged():
        "limit_maxbytes is 100 MiB"
        return conn.stats()["limit_maxbytes"] == str(100 * 1024 * 1024)

    within(planChanged)
    assert conn.stats()["max_connections"] == "250"
    assert conn.stats("settings")["plan"] == "100"
    assert s.ascii().stats()["limit_maxbytes"] == str(100 * 1024 * 1024)


@pytest.mark.memcachier(web=False, config='[plans.tiny]\nmemory = "1MiB"\nconnections = 5\n')
def test_setPlanSmallerEvicts(memcachier_server):
    """
    Moving a cache to a smaller plan evicts down to the new limit, oldest
    keys first.
    """
    s = memcachier_server
    conn = s.ascii()
    value = b"x" * 10000
    conn.send(b"".join(b"set k%d 0 0 10000 noreply\r\n%b\r\n" % (i, value) for i in range(300)))
    assert conn.stats()["curr_items"] == "300"
    s.admin("cache", "set-plan", str(s.cache_id), "tiny")

    def shrunk():
        "limit_maxbytes is 1 MiB"
        return conn.stats()["limit_maxbytes"] == str(1024 * 1024)

    within(shrunk)
    stats = conn.stats()
    assert int(stats["bytes"]) <= 1024 * 1024
    assert int(stats["evictions"]) > 0
    assert conn.get("k299") == value
    assert conn.get("k0") is None


@SERVER
def test_capabilityChanges(memcachier_server):
    """
    C{credential update --no-write --no-flush} applies to new connections
    within 2 s, and C{--write --flush} gives the capabilities back.

    Connections authenticated before the change keep the capabilities
    they authenticated with (as they keep working after their credential
    is deleted): the session copies them at authentication.
    """
    s = memcachier_server
    extra = s.admin("credential", "create", str(s.cache_id))
    user, password = extra["username"], extra["password"]
    within(lambda: canAuth(s, user, password))
    before = s.ascii(user, password)

    updated = s.admin("credential", "update", user, "--no-write", "--no-flush")
    assert (updated["write_capability"], updated["flush_capability"]) == (False, False)

    def readOnly():
        "a new connection of the credential cannot write"
        conn = s.ascii(user, password)
        try:
            return conn.call("set k 0 0 1", b"v") == b"NOT_STORED"
        finally:
            conn.close()

    within(readOnly)
    conn = s.ascii(user, password)
    assert conn.call("flush_all") == b"CLIENT_ERROR flush_all not allowed"
    assert before.call("set old 0 0 1", b"v") == b"STORED"

    s.admin("credential", "update", user, "--write", "--flush")
    within(lambda: not readOnly())
    assert s.ascii(user, password).call("flush_all") == b"OK"
