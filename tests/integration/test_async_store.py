"""
A server whose store answers through Deferreds, over real sockets with
real clients: a store plugin dropped into a C{memcachier/plugins/}
directory on C{PYTHONPATH} (as a third-party plugin ships) wraps the
memory store in L{memcachier.testing.AsyncStore}.  Keys starting with
C{late} answer 50 ms later on the reactor, keys starting with C{fail} fail
with a L{memcachier.commands.KeyspaceError}, and every other key answers
synchronously, so one pipeline mixes all three.
"""

import struct
import textwrap
import time

import pytest

from tests.integration.conftest import binaryRequest, pylibmcClient

PLUGIN = textwrap.dedent('''
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from memcachier.interfaces import IStorePlugin


    def schedule(method, args):
        key = args[1] if method == "store" else args[0]
        if isinstance(key, list):
            key = key[0] if key else b""
        if key.startswith(b"late"):
            return 0.05
        if key.startswith(b"fail"):
            from memcachier.commands import KeyspaceError

            return KeyspaceError("shard down")
        return None


    @implementer(IPlugin, IStorePlugin)
    class ClockworkPlugin:
        name = "clockwork"
        description = "The memory store answering late or failing by key (tests)."

        def makeStore(self, settings, reactor):
            from memcachier.stores.memory import MemoryStore
            from memcachier.testing import AsyncStore

            return AsyncStore(MemoryStore(reactor), reactor, schedule)


    clockwork = ClockworkPlugin()
''')


@pytest.fixture
def server(memcachier_server_factory, tmp_path, monkeypatch):
    plugins = tmp_path / "dropins" / "memcachier" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "clockwork_store.py").write_text(PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "dropins"))
    return memcachier_server_factory(config='[store]\nplugin = "clockwork"\n', web=False)


def test_asciiPipelineInOrder(server):
    """
    One write of immediate, late and failing requests over a real socket:
    the replies come back in request order, the failure as C{SERVER_ERROR
    shard down} for its request alone, and the connection goes on.
    """
    conn = server.ascii()
    conn.send(
        b"set a 0 0 1\r\n1\r\n"
        b"set late1 0 0 2\r\nL1\r\n"
        b"get late1\r\n"
        b"get fail1\r\n"
        b"get a\r\n"
        b"get a late1 x\r\n"
        b"delete fail2\r\n"
        b"version\r\n"
    )
    lines = [conn.line() for _ in range(15)]
    assert lines == [
        b"STORED",
        b"STORED",
        b"VALUE late1 0 2", b"L1", b"END",
        b"SERVER_ERROR shard down",
        b"VALUE a 0 1", b"1", b"END",
        b"VALUE a 0 1", b"1", b"VALUE late1 0 2", b"L1", b"END",
        b"SERVER_ERROR shard down",
    ]
    assert conn.line().startswith(b"VERSION ")
    conn.send(b"get fail3\r\nget a\r\n")
    assert [conn.line() for _ in range(4)] == [
        b"SERVER_ERROR shard down", b"VALUE a 0 1", b"1", b"END",
    ]
    conn.close()
    assert "shard down" in server.log()


def test_binaryPipelineInOrder(server):
    """
    The same over the binary protocol with raw frames: one reply per
    request in request order, 0x84 for the failures.
    """
    conn = server.binary()
    frames = [
        binaryRequest(0x01, b"a", b"1", struct.pack(">II", 0, 0), opaque=1),
        binaryRequest(0x01, b"late1", b"L1", struct.pack(">II", 0, 0), opaque=2),
        binaryRequest(0x00, b"late1", opaque=3),
        binaryRequest(0x00, b"fail1", opaque=4),
        binaryRequest(0x00, b"a", opaque=5),
        binaryRequest(0x0A, opaque=6),
    ]
    conn.send(b"".join(frames))
    responses = [conn.response() for _ in frames]
    assert [(r.opaque, r.status) for r in responses] == [
        (1, 0), (2, 0), (3, 0), (4, 0x84), (5, 0), (6, 0),
    ]
    assert responses[2].value == b"L1"
    assert responses[4].value == b"1"


def test_pylibmcOverAsyncStore(server):
    """
    pylibmc (libmemcached, binary protocol, SASL) works against the
    asynchronous store: sets and gets answered late, a multi-get mixing
    immediate and late answers (pipelined GETKQs and a NOOP), and a
    failing key is an error for that call alone.
    """
    import pylibmc

    client = pylibmcClient(server)
    client.set("a", "immediate")
    client.set("late:1", "later")
    assert client.get("late:1") == "later"
    start = time.monotonic()
    assert client.get_multi(["a", "late:1", "missing", "late:2"]) == {
        "a": "immediate", "late:1": "later",
    }
    assert time.monotonic() - start >= 0.05
    with pytest.raises(pylibmc.Error):
        client.get("fail:1")
    assert client.get("a") == "immediate"
