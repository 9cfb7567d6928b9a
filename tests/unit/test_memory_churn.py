"""
Under churn through new keys at a steady item count, a memory keyspace
with C{compactTables} (C{[store] compact_tables = true}) keeps the table a
fill gave each dict: before CPython would grow the full table (to three
times the items), the keyspace copies the dict into one sized for what it
holds.  Without it, CPython grows it.
"""

import sys
from itertools import count

from twisted.internet.task import Clock

import pytest

from memcachier.commands import StoreMode, StoreResult
from memcachier.plugins.memory_store import memoryStore
from memcachier.stores.memory import (
    COMPACT_FROM, ITEM_OVERHEAD, MemoryKeyspace, MemoryStore, copiedRoom, grownRoom,
)


def _keyspace(items, valueSize=100, compactTables=True):
    """
    A one-dict keyspace that holds C{items} items of C{valueSize} bytes
    under 7-byte keys.
    """
    return MemoryKeyspace(Clock(), items * (7 + valueSize + ITEM_OVERHEAD), 1 << 20, count(1),
                          compactTables)


def test_roomModelsThisPython():
    """
    L{copiedRoom} and L{grownRoom} are how many inserts a copied, and a
    grown, dict takes before its table grows, on this interpreter.
    """
    d = {b"%d" % i: None for i in range(30_000)}
    for i in range(10_000):
        del d[b"%d" % i]
    copy = dict(d)
    size = sys.getsizeof(copy)
    for i in range(copiedRoom(len(d))):
        copy[b"new%d" % i] = None
    assert sys.getsizeof(copy) == size
    used = len(copy)
    copy[b"one more"] = None
    grown = sys.getsizeof(copy)
    assert grown > size
    for i in range(grownRoom(used) - 1):
        copy[b"more%d" % i] = None
    assert sys.getsizeof(copy) == grown
    copy[b"and one more"] = None
    assert sys.getsizeof(copy) > grown


def _churn(ks, items, rounds):
    """
    Fill C{ks} until it evicts, then store C{rounds} times C{items} new
    keys.

    @return: the dict's C{sys.getsizeof} after the fill, and the largest
        after it (every 500 stores).
    """
    value = b"v" * 100
    keys = (b"k%06d" % i for i in range(10_000_000))
    for key in keys:
        assert ks.store(StoreMode.SET, key, value, 0, 0, 0)[0] == StoreResult.STORED
        if ks.evictions:
            break
    filled = sys.getsizeof(ks._shards[0])
    largest = 0
    for i, key in zip(range(rounds * items), keys):
        ks.store(StoreMode.SET, key, value, 0, 0, 0)
        if i % 500 == 0:
            largest = max(largest, sys.getsizeof(ks._shards[0]))
    return filled, largest


def test_defaultGrowsAsCPython():
    """
    Without C{compactTables} (the default) churn doubles the dict's table,
    as CPython does; L{MemoryStore} passes the option on.
    """
    filled, largest = _churn(_keyspace(12_000, compactTables=False), 12_000, 3)
    assert largest > filled
    assert not MemoryStore(Clock()).keyspace(1, 1 << 20, 1 << 20)._compactFrom
    assert MemoryStore(Clock(), compactTables=True).keyspace(1, 1 << 20, 1 << 20)._compactFrom


def test_pluginOption():
    """
    C{[store] compact_tables} reaches the store; anything but a boolean is
    refused.
    """
    assert memoryStore.makeStore({"compact_tables": True}, Clock())._compactTables
    assert not memoryStore.makeStore({}, Clock())._compactTables
    with pytest.raises(ValueError, match="compact_tables"):
        memoryStore.makeStore({"compact_tables": "yes"}, Clock())


def test_churnKeepsTheTable():
    """
    A full keyspace storing new keys (each evicts the oldest) keeps its
    dict's table at the size the fill gave it, and the dict's order (the
    LRU) and contents are a store's.
    """
    items = 12_000
    assert items >= COMPACT_FROM
    ks = _keyspace(items)
    value = b"v" * 100
    keys = (b"k%06d" % i for i in range(1_000_000))
    for key in keys:
        assert ks.store(StoreMode.SET, key, value, 0, 0, 0)[0] == StoreResult.STORED
        if ks.evictions:
            break
    [table] = ks._shards
    filled = sys.getsizeof(table)
    largest = 0
    for i, key in zip(range(10 * items), keys):
        ks.store(StoreMode.SET, key, value, 0, 0, 0)
        if i % 500 == 0:
            largest = max(largest, sys.getsizeof(ks._shards[0]))
    assert largest == filled
    [table] = ks._shards
    assert len(table) == ks.stats()["curr_items"] > items * 0.95
    # the newest keys, oldest first
    assert list(table) == [b"k%06d" % i for i in range(int(key[1:]) - len(table) + 1, int(key[1:]) + 1)]
    assert ks.get(key) is not None


def test_tooFullToCopyGrows():
    """
    A dict whose items would fill most of a copied table grows as CPython
    grows it (copying it again soon after would cost more than the
    memory it saves).
    """
    items = 20_000
    assert copiedRoom(items) < items // 4
    ks = _keyspace(items)
    value = b"v" * 100
    keys = (b"k%06d" % i for i in range(1_000_000))
    for key in keys:
        ks.store(StoreMode.SET, key, value, 0, 0, 0)
        if ks.evictions:
            break
    filled = sys.getsizeof(ks._shards[0])
    for _, key in zip(range(3 * items), keys):
        ks.store(StoreMode.SET, key, value, 0, 0, 0)
    assert sys.getsizeof(ks._shards[0]) > filled
