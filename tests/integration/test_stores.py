"""
A real node on each store that comes with memcachier (C{[store] plugin =
"segment"}, L{memcachier.stores.segment}, and C{"memory"},
L{memcachier.stores.memory}) serves pylibmc (binary, SASL) and pymemcache
(ASCII auth): sets, gets, multi-gets, incr/decr, cas, delete and
flush_all; and its items survive a warm restart (C{state_dir}) exact, CAS
uniques rising after it, also into the other store (an upgrade from a
release whose default was the memory store).
"""

import re
import time
from pathlib import Path

import pylibmc
import pytest

from tests.integration.conftest import pylibmcClient
from tests.integration.test_memcache_clients import pymc
from tests.integration.test_warm_restart import _gets


def _storeConfig(plugin, stateDir):
    return f'[store]\nplugin = "{plugin}"\n[node]\nstate_dir = "{stateDir}"\n'


@pytest.fixture(params=["segment", "memory"])
def storeNode(memcachier_server_factory, tmp_path, request):
    """
    A node on each store, with warm restart on.
    """
    stateDir = tmp_path / "state"
    server = memcachier_server_factory(config=_storeConfig(request.param, stateDir), web=False)
    server.state_dir = stateDir
    server.store = request.param
    return server


def test_storeChosen(storeNode):
    """
    The node says which store it runs.
    """
    assert f"store plugin: {storeNode.store}" in storeNode.log(), storeNode.log()


def test_defaultIsTheSegmentStore(memcachier_server_factory):
    """
    Without C{[store] plugin} (C{"auto"}), a node installed with its C
    module runs the segment store.
    """
    server = memcachier_server_factory(web=False)
    assert re.search(r"store plugin: segment$", server.log(), re.M), server.log()


def test_pylibmc(storeNode):
    """
    The binary protocol's storage commands, multi-gets, incr/decr, cas,
    delete and flush_all.
    """
    mc = pylibmcClient(storeNode)
    assert mc.set("k", b"v1")
    assert mc.get("k") == b"v1"
    assert not mc.add("k", b"other")
    assert mc.replace("k", b"v2")
    assert mc.append("k", b"-tail") and mc.prepend("k", b"head-")
    assert mc.get("k") == b"head-v2-tail"
    mc.set("obj", {"a": [1, 2]})
    assert mc.get("obj") == {"a": [1, 2]}
    big = bytes(range(256)) * 3000
    assert mc.set("big", big)
    assert mc.get("big") == big
    mc.set_multi({f"m{i}": b"%d" % i for i in range(100)})
    assert mc.get_multi([f"m{i}" for i in range(100)] + ["missing"]) == {
        f"m{i}": b"%d" % i for i in range(100)
    }
    mc.set("n", b"10")
    assert mc.incr("n", 5) == 15
    assert mc.decr("n", 20) == 0
    assert mc.incr("n", 7) == 7
    mc.set("s", b"abc")
    with pytest.raises(pylibmc.Error):
        mc.incr("s")
    value, unique = mc.gets("k")
    assert mc.cas("k", b"cas-1", unique)
    assert not mc.cas("k", b"cas-2", unique)
    assert mc.get("k") == b"cas-1"
    assert mc.delete("k") and not mc.delete("k")
    assert mc.get("k") is None
    mc.flush_all()
    assert mc.get("m1") is None and mc.get("big") is None


def test_pymemcache(storeNode):
    """
    The ASCII protocol's commands.
    """
    client = pymc(storeNode)
    assert client.set(b"k", b"v", noreply=False, flags=7)
    assert client.get(b"k") == b"v"
    assert client.get_many([b"k", b"nope"]) == {b"k": b"v"}
    assert not client.add(b"k", b"x", noreply=False)
    assert client.incr(b"missing", 1) is None
    client.set(b"n", b"100", noreply=False)
    assert client.decr(b"n", 1) == 99
    assert client.get(b"n") == b"99 "
    value, unique = client.gets(b"k")
    assert client.cas(b"k", b"new", unique, noreply=False)
    assert client.cas(b"k", b"newer", unique, noreply=False) is False
    assert client.touch(b"k", 100, noreply=False)
    assert client.delete(b"k", noreply=False)
    assert client.get(b"k") is None
    client.set(b"a", b"1", noreply=False)
    assert client.flush_all(noreply=False)
    assert client.get(b"a") is None
    stats = client.stats()
    assert stats[b"curr_items"] == 0


def _fill(server, prefix, count):
    """
    Store C{count} items of several sizes, every other one with a TTL;
    return what C{gets} answers for them.
    """
    mc = pylibmcClient(server)
    keys = []
    for i in range(count):
        mc.set(f"{prefix}{i}", b"value-%d" % i * (i % 5 + 1), time=3600 if i % 2 else 0)
        keys.append(f"{prefix}{i}".encode())
    before = _gets(server, server.username, server.password, keys)
    assert len(before) == count
    return before


def _restored(server, before):
    """
    What C{gets} answers for the keys of C{before} once the restarted
    node serves them (within 10 s).
    """
    deadline = time.monotonic() + 10
    after = {}
    while time.monotonic() < deadline:
        after = _gets(server, server.username, server.password, list(before))
        if after:
            break
        time.sleep(0.1)
    return after


def test_warmRestart(storeNode):
    """
    Stopped with SIGTERM and started again, the node serves every live
    item as before (value, flags, CAS) and hands out CAS uniques above
    the old ones.
    """
    before = _fill(storeNode, "w", 300)
    assert storeNode.stop() == 0
    saved = [line for line in storeNode.log().splitlines() if "warm restart: saved" in line]
    assert saved and "saved 300 items" in saved[-1], saved
    storeNode.start(web=False)
    assert _restored(storeNode, before) == before
    mc = pylibmcClient(storeNode)
    mc.set("after", b"x")
    assert mc.gets("after")[1] > max(cas for (_f, _v, cas) in before.values())


def test_upgradeFromTheMemoryStore(memcachier_server_factory, tmp_path):
    """
    A node on the memory store (the default of earlier releases) stopped
    and started again with the default store keeps its items exact.
    """
    stateDir = tmp_path / "state"
    server = memcachier_server_factory(config=_storeConfig("memory", stateDir), web=False)
    before = _fill(server, "u", 200)
    assert server.stop() == 0
    config = Path(server.config_path)
    text = config.read_text()
    assert 'plugin = "memory"' in text
    config.write_text(text.replace('plugin = "memory"\n', ""))
    server.start(web=False)
    assert re.search(r"store plugin: segment$", server.log(), re.M), server.log()
    assert _restored(server, before) == before
