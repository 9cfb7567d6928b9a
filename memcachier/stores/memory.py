# -*- test-case-name: tests.unit.test_memory_store -*-
"""
The default store: every cache's items in this process's memory.

Each cache has its own keyspace: an insertion-ordered dict used as an LRU
(oldest first, a hit moves the key to the end) with byte accounting, so a
cache evicts only its own keys once it reaches its plan's memory.  Expired
items are removed lazily when touched or when they reach the LRU tail,
as memcached does.

Sizes are counted as memcached counts them: key + value + a fixed item
header (L{ITEM_OVERHEAD}), so C{bytes} and C{limit_maxbytes} compare the
way memcached users expect.
"""

from collections import OrderedDict
from itertools import count

from zope.interface import implementer

from memcachier.commands import (
    U64,
    DeleteResult,
    DeltaResult,
    Item,
    StoreMode,
    StoreResult,
)
from memcachier.interfaces import IKeyspace, IStore

#: a hit moves an item to the LRU head at most this often (seconds), as
#: memcached's ITEM_UPDATE_INTERVAL: relinking costs more than the lookup
ITEM_UPDATE_INTERVAL = 60

#: bytes charged per item on top of key and value (memcached's item header
#: with CAS is 48-56 bytes)
ITEM_OVERHEAD = 50

_SET = StoreMode.SET
_ADD = StoreMode.ADD
_REPLACE = StoreMode.REPLACE
_APPEND = StoreMode.APPEND
_PREPEND = StoreMode.PREPEND
_CAS = StoreMode.CAS
_STORED = StoreResult.STORED
_NOT_STORED = StoreResult.NOT_STORED
_EXISTS = StoreResult.EXISTS
_NOT_FOUND = StoreResult.NOT_FOUND


def _parseCounter(value):
    """
    Parse a stored value as memcached's C{strtoull} does for incr/decr:
    decimal digits, possibly followed by the spaces a shrinking decr
    leaves.

    @return: the L{int}, or L{None} if the value is not a number below
        2**64.
    """
    digits = value.rstrip(b" ")
    if not digits.isdigit() or len(digits) > 20:
        return None
    number = int(digits)
    if number >= U64:
        return None
    return number


@implementer(IKeyspace)
class MemoryKeyspace:
    """
    One cache's keys in memory.

    @ivar _items: key -> L{Item}, least recently used first.
    """

    synchronous = True

    def __init__(self, clock, maxBytes, maxItemSize, casCounter):
        self._clock = clock
        self.maxBytes = maxBytes
        self.maxItemSize = maxItemSize
        self._nextCas = casCounter.__next__
        self._items = OrderedDict()
        self._bytes = 0
        self._flushCall = None
        self.resetStats()

    def resetStats(self):
        self.total_items = 0
        self.evictions = 0
        self.evicted_unfetched = 0
        self.expired_unfetched = 0
        self.reclaimed = 0
        self.get_expired = 0
        self.get_flushed = 0

    # -- internals ---------------------------------------------------------

    def _unlink(self, key, item):
        del self._items[key]
        self._bytes -= len(key) + len(item.value) + ITEM_OVERHEAD

    def _expire(self, key, item):
        """
        Remove an item found expired.
        """
        self._unlink(key, item)
        self.reclaimed += 1
        if not item.fetched:
            self.expired_unfetched += 1

    def _live(self, key, now=None):
        """
        The item under C{key} if it has not expired, else L{None} (the
        expired item is removed).
        """
        item = self._items.get(key)
        if item is not None and item.exptime:
            if now is None:
                now = self._clock.seconds()
            if item.exptime <= now:
                self._expire(key, item)
                return None
        return item

    def _link(self, key, item):
        """
        Insert a new item, evicting from the LRU head until it fits.
        """
        size = len(key) + len(item.value) + ITEM_OVERHEAD
        if size > self.maxBytes:
            return False
        items = self._items
        if self._bytes + size > self.maxBytes:
            now = self._clock.seconds()
            while self._bytes + size > self.maxBytes:
                oldKey, old = items.popitem(last=False)
                self._bytes -= len(oldKey) + len(old.value) + ITEM_OVERHEAD
                if old.exptime and old.exptime <= now:
                    self.reclaimed += 1
                    if not old.fetched:
                        self.expired_unfetched += 1
                else:
                    self.evictions += 1
                    if not old.fetched:
                        self.evicted_unfetched += 1
        items[key] = item
        self._bytes += size
        self.total_items += 1
        return True

    # -- IKeyspace ---------------------------------------------------------

    def get(self, key):
        item = self._items.get(key)
        if item is None:
            return None
        now = self._clock.seconds()
        if item.exptime and item.exptime <= now:
            self._expire(key, item)
            self.get_expired += 1
            return None
        if now - item.atime >= ITEM_UPDATE_INTERVAL:
            self._items.move_to_end(key)
            item.atime = now
        item.fetched = True
        return item

    def getMany(self, keys):
        # the multi-get hot loop: locals only, one clock read
        lookup = self._items.get
        now = self._clock.seconds()
        stale = now - ITEM_UPDATE_INTERVAL
        found = []
        append = found.append
        for key in keys:
            item = lookup(key)
            if item is not None:
                if item.exptime and item.exptime <= now:
                    self._expire(key, item)
                    self.get_expired += 1
                    append(None)
                    continue
                if item.atime <= stale:
                    self._items.move_to_end(key)
                    item.atime = now
                item.fetched = True
            append(item)
        return found

    def peek(self, key):
        return self._live(key)

    def touch(self, key, exptime):
        item = self.get(key)
        if item is not None:
            item.exptime = exptime
        return item

    def store(self, mode, key, value, flags, exptime, cas):
        now = self._clock.seconds()
        old = self._live(key, now)
        if mode == _SET:
            if cas:
                if old is None:
                    return (_NOT_FOUND, 0)
                if old.cas != cas:
                    return (_EXISTS, 0)
        elif mode == _ADD:
            if old is not None:
                # memcached bumps the existing item on a failed add
                self._items.move_to_end(key)
                return (_NOT_STORED, 0)
        elif mode == _CAS:
            if old is None:
                return (_NOT_FOUND, 0)
            if old.cas != cas:
                return (_EXISTS, 0)
        else:
            if old is None:
                return (_NOT_STORED, 0)
            if cas and old.cas != cas:
                return (_EXISTS, 0)
            if mode == _APPEND:
                value = old.value + value
                flags, exptime = old.flags, old.exptime
            elif mode == _PREPEND:
                value = value + old.value
                flags, exptime = old.flags, old.exptime
            if len(key) + len(value) > self.maxItemSize:
                # memcached cannot allocate the grown item: not stored
                return (_NOT_STORED, 0)
        if old is not None:
            self._unlink(key, old)
        if exptime and exptime <= now:
            # stored and immediately expired, as memcached does
            return (_STORED, self._nextCas())
        newCas = self._nextCas()
        if not self._link(key, Item(key, value, flags, exptime, newCas, now)):
            return (StoreResult.NO_MEMORY, 0)
        return (_STORED, newCas)

    def delete(self, key, cas):
        item = self._live(key)
        if item is None:
            return DeleteResult.NOT_FOUND
        if cas and item.cas != cas:
            return DeleteResult.EXISTS
        self._unlink(key, item)
        return DeleteResult.DELETED

    def delta(self, key, incr, delta, initial, exptime, cas):
        now = self._clock.seconds()
        item = self._live(key, now)
        if item is None:
            if initial is None:
                return (DeltaResult.NOT_FOUND, 0, 0)
            result, newCas = self.store(
                _ADD, key, b"%d" % initial, 0, exptime, 0
            )
            if result != _STORED:
                return (DeltaResult.NO_MEMORY, 0, 0)
            return (DeltaResult.OK, initial, newCas)
        if cas and item.cas != cas:
            return (DeltaResult.EXISTS, 0, 0)
        number = _parseCounter(item.value)
        if number is None:
            return (DeltaResult.NON_NUMERIC, 0, 0)
        if incr:
            number = (number + delta) % U64
        else:
            number = number - delta if delta < number else 0
        value = b"%d" % number
        old = item.value
        if len(value) < len(old):
            # memcached rewrites in place and pads with spaces
            value = value.ljust(len(old))
        self._bytes += len(value) - len(old)
        item.value = value
        item.header = None
        item.cas = self._nextCas()
        item.fetched = True
        self._items.move_to_end(key)
        return (DeltaResult.OK, number, item.cas)

    def flush(self, delay):
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        if delay > 0:
            self._flushCall = self._clock.callLater(delay, self._flushNow)
        else:
            self._flushNow()

    def _flushNow(self):
        self._flushCall = None
        self._items.clear()
        self._bytes = 0

    def stats(self):
        return {
            "curr_items": len(self._items),
            "total_items": self.total_items,
            "bytes": self._bytes,
            "limit_maxbytes": self.maxBytes,
            "evictions": self.evictions,
            "evicted_unfetched": self.evicted_unfetched,
            "expired_unfetched": self.expired_unfetched,
            "reclaimed": self.reclaimed,
            "get_expired": self.get_expired,
            "get_flushed": self.get_flushed,
            "expired": self.reclaimed,
        }

    def configure(self, maxBytes, maxItemSize):
        self.maxBytes = maxBytes
        self.maxItemSize = maxItemSize
        items = self._items
        while self._bytes > maxBytes and items:
            key, item = items.popitem(last=False)
            self._bytes -= len(key) + len(item.value) + ITEM_OVERHEAD
            self.evictions += 1

    def keys(self):
        now = self._clock.seconds()
        return [
            key for key, item in list(self._items.items())
            if not item.exptime or item.exptime > now
        ]


@implementer(IStore)
class MemoryStore:
    """
    Keyspaces of many caches in this process's memory.  CAS uniques come
    from one counter for the whole store, as in memcached.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._keyspaces = {}
        self._cas = count(1)

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        keyspace = self._keyspaces.get(cacheId)
        if keyspace is None:
            keyspace = MemoryKeyspace(self._reactor, maxBytes, maxItemSize, self._cas)
            self._keyspaces[cacheId] = keyspace
        return keyspace

    def dropKeyspace(self, cacheId):
        keyspace = self._keyspaces.pop(cacheId, None)
        if keyspace is not None:
            keyspace.flush(0)

    def close(self):
        self._keyspaces.clear()
