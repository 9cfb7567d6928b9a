# -*- test-case-name: tests.unit.test_memory_store -*-
"""
The default store: every cache's items in this process's memory.

Each cache has its own keyspace: one plain dict, key -> item, where an item
is one immutable L{bytes} (L{memcachier.commands.packItem}); sixteen dicts,
by key hash, for keyspaces of L{SHARD_FROM} bytes or more, so that a dict
rebuilding its table (as churn makes it do) pauses for a sixteenth of the
keyspace.  Neither the dicts nor their items are tracked by the garbage
collector, so a full collection costs the same with ten items or ten
million, and an item costs its key, its blob and its dict slot: no object
per item for the LRU either.

The LRU is each dict's insertion order, oldest first, driven the way
memcached's segmented LRU drives its own (C{items.c}: C{do_item_bump},
C{lru_pull_tail}): a hit does not move an item, it marks it ACTIVE once
(rewriting its blob in place, keeping its slot); replacing a key keeps its
slot and marks it ACTIVE.  When a store needs room, a window of the oldest
items is looked at: expired ones are reclaimed first, ACTIVE ones get a
second chance (moved to the end, mark cleared), the rest are evicted.  The
window is taken in one pass because every walk from the front of a dict
first steps over the holes its removals left there.  A sharded keyspace
evicts from the dict of the key being stored first (an LRU per dict, as
memcached keeps one per slab class), then from the others; ACTIVE items
are spared in every dict before any is evicted, so a dict holding only
hot items does not lose them while another holds cold ones.  It
reclaims expired items at the tail of every dict.

Sizes are counted as memcached counts them: key + value + a fixed item
header (L{ITEM_OVERHEAD}), so C{bytes} and C{limit_maxbytes} compare the
way memcached users expect.
"""

from itertools import count, islice

from zope.interface import implementer

from memcachier.commands import (
    ITEM_ACTIVE,
    ITEM_ATIME_AT,
    ITEM_BITS_AT,
    ITEM_EXPIRES,
    ITEM_EXPTIME_AT,
    ITEM_FETCHED,
    ITEM_PREFIX_SIZE,
    ITEM_SUFFIX_LENGTH_AT,
    U64,
    DeleteResult,
    DeltaResult,
    StoreMode,
    StoreResult,
    itemCas,
    itemExptime,
    itemFlags,
    itemValue,
    packAtimeAndBits,
    packItem,
    repackItem,
    unpackU32,
)
from memcachier.interfaces import IKeyspace, ISnapshottableStore, IStore
from memcachier.speedups import accelerator

#: bytes charged per item on top of key and value (memcached's item header
#: with CAS is 48-56 bytes)
ITEM_OVERHEAD = 50

#: items looked at, at least, each time the LRU tail is inspected
#: (memcached's lru_pull_tail searches 5)
TAIL_WINDOW = 5

#: while the LRU tail holds expired items, new keys look at it this often
#: (in inserts; small keyspaces on every insert) and reclaim twice as many
TAIL_CHECK_EVERY = 256

#: while it holds none, the looks back off to this many inserts (or one a
#: second)
TAIL_CHECK_MAX = 1 << 16

#: a store that must evict frees 1/2**EVICT_SLACK_SHIFT of the limit more
#: than it needs, so the walk to the dict's first live entry is amortized
EVICT_SLACK_SHIFT = 9

#: keyspaces allowed this many bytes or more keep their items in L{SHARDS}
#: dicts instead of one: a dict that fills its entry table (new keys
#: replacing evicted ones do) copies every entry into a new one, a pause
#: of ~60 ms at 1M items; sixteen dicts pause a sixteenth as long, as often
#: in total (docs/performance.md, "Eviction churn")
SHARD_FROM = 64 * 1024 * 1024

#: dicts of a large keyspace (a power of two)
SHARDS = 16

#: with C{[store] compact_tables = true}, dicts of this many items or more
#: are copied into a table sized for what they hold when churn has filled
#: theirs, instead of letting CPython grow it: under churn through new
#: keys at a steady item count, CPython doubles a dict's table (it sizes a
#: full table for three times the items), and a copy keeps it at the size
#: a fill gave it, for copies four times as frequent and about twice as
#: long as CPython's rebuilds (docs/performance.md, "Eviction churn")
COMPACT_FROM = 4096


def _tableRoom(used, minimum):
    """
    How many inserts CPython's dict table sized for C{minimum} slots takes
    once it holds C{used} items (C{USABLE_FRACTION} of the smallest power
    of two, 8 at least, with C{minimum} slots).
    """
    size = 8
    while size < minimum:
        size <<= 1
    return (size << 1) // 3 - used


def copiedRoom(used):
    """
    The inserts a copy of a dict of C{used} items takes before its table
    grows (C{dict(d)} sizes it for 1.5 times its items).
    """
    return _tableRoom(used, (used * 3 + 1) // 2)


def grownRoom(used):
    """
    The inserts a dict of C{used} items takes after CPython grew its table
    (to three times its items).
    """
    return _tableRoom(used, used * 3)


#: items a flushed keyspace frees per reactor turn: dropping 1M items at
#: once is a pause of ~90 ms, this many ~1 ms
FREE_SLICE = 10_000

#: a snapshot takes this many items from each dict of a sharded keyspace
#: in turn, so the items come out in about the keyspace's LRU order
SNAPSHOT_RUN = 256


def shardCount(maxBytes):
    """
    How many dicts a keyspace allowed C{maxBytes} keeps its items in.
    """
    return SHARDS if maxBytes >= SHARD_FROM else 1

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

#: the bits of an item a hit has nothing more to do for
_HOT = ITEM_FETCHED | ITEM_ACTIVE
_EXPTIME = unpackU32
_EXPTIME_AT = ITEM_EXPTIME_AT
_BITS = ITEM_BITS_AT
_SUFFIX_LENGTH = ITEM_SUFFIX_LENGTH_AT
#: the multi-get lookup loop in C (L{memcachier.speedups})
_getManyLoop = None if accelerator is None else accelerator.get_many
_VALUE_AT = ITEM_PREFIX_SIZE
_ATIME_BITS = packAtimeAndBits



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

    @ivar _shards: dicts key -> packed item, each least recently linked
        first; a key lives in C{_shards[hash(key) & _mask]}.  Each is an
        LRU of its own: a store that needs room evicts from its key's
        dict first (keys hash evenly, so every dict holds about the same
        share of the cache and of its ages).
    @ivar _bytes: memcached's accounting of what C{_shards} hold.
    @ivar _untilTailCheck: inserts left before a new key next looks at the
        LRU tail for expired items.
    @ivar _room: for each dict, the inserts its table takes before CPython
        would grow it (new keys and second chances take a slot each;
        replacing a key's item does not); L{_fit} copies the dict instead
        when its items fit a table of the same size.
    @ivar _compactFrom: the items from which L{_fit} copies a dict, or
        L{None}: never (CPython grows it).
    """

    synchronous = True

    def __init__(self, clock, maxBytes, maxItemSize, casCounter, compactTables=False):
        """
        @param compactTables: copy full dicts into tables sized for what
            they hold instead of letting CPython grow them
            (L{COMPACT_FROM}).
        """
        self._clock = clock
        self._compactFrom = COMPACT_FROM if compactTables else None
        self.maxBytes = maxBytes
        self.maxItemSize = maxItemSize
        self._nextCas = casCounter.__next__
        self._shards = [{} for _ in range(shardCount(maxBytes))]
        self._mask = len(self._shards) - 1
        self._room = [0] * len(self._shards)
        self._bytes = 0
        self._untilTailCheck = 0
        self._tailInterval = 1
        self._nextTailTime = 0
        self._flushCall = None
        self._flushed = []
        self._freeing = None
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
        """
        Remove an item.

        @return: the bytes it was charged.
        """
        del self._shards[hash(key) & self._mask][key]
        size = len(key) + len(item) - _VALUE_AT - item[_SUFFIX_LENGTH] + ITEM_OVERHEAD
        self._bytes -= size
        return size

    def _expire(self, key, item):
        """
        Remove an item found expired.

        @return: the bytes it was charged.
        """
        self.reclaimed += 1
        if not item[_BITS] & ITEM_FETCHED:
            self.expired_unfetched += 1
        return self._unlink(key, item)

    def _live(self, key, now):
        """
        The item under C{key} if it has not expired, else L{None} (the
        expired item is removed).
        """
        item = self._shards[hash(key) & self._mask].get(key)
        if item is not None and item[_BITS] & ITEM_EXPIRES and _EXPTIME(item, _EXPTIME_AT)[0] <= now:
            self._expire(key, item)
            return None
        return item

    def _hit(self, key, item, now):
        """
        The slow half of a hit: check expiry, mark the item fetched and
        ACTIVE (once: memcached updates C{it->time} only then too).

        @return: the item as now stored, or L{None} if it had expired.
        """
        bits = item[_BITS]
        if bits & ITEM_EXPIRES and _EXPTIME(item, _EXPTIME_AT)[0] <= now:
            self._expire(key, item)
            self.get_expired += 1
            return None
        if bits & _HOT != _HOT:
            # atime and bits are adjacent: one small copy of the item
            item = self._shards[hash(key) & self._mask][key] = b"".join(
                (item[:ITEM_ATIME_AT], _ATIME_BITS(int(now), bits | _HOT), item[_SUFFIX_LENGTH:])
            )
        return item

    def _pullTail(self, need, now, first=0):
        """
        Free at least C{need} bytes from the LRU tails, the dict at index
        C{first} first (the one a new key goes to), then the others: first
        sparing ACTIVE items in every dict (a dict whose tail holds only
        hot items gives them their second chance and passes on, so a hot
        item is not evicted while another dict holds cold ones), then, if
        that was not enough, the oldest whatever their marks.
        """
        freed = 0
        shards = self._shards
        count = len(shards)
        for spare in (True, False):
            for i in range(count):
                if freed >= need:
                    break
                freed += self._pullShardTail((first + i) % count, need - freed, now, spare)
        self._noteTailLooked(now, bool(freed))
        return freed

    def _pullShardTail(self, index, need, now, spare=True):
        """
        Free at least C{need} bytes from the tail of one dict (oldest
        first), if it holds them: expired items in the window first, then
        ACTIVE items get a second chance (with C{spare}; a pass that then
        frees nothing ends the walk), then the oldest are evicted.
        Frees a little more than asked in large keyspaces (1/512 of the
        limit), so the walk over the front of the dict is paid once per
        many stores.
        """
        items = self._shards[index]
        target = need + (self.maxBytes >> EVICT_SLACK_SHIFT)
        freed = 0
        moves = 0
        # items per byte, over the whole keyspace
        perByte = sum(map(len, self._shards)) / max(self._bytes, 1)
        while freed < need and items:
            before = freed
            count = int(target * perByte) + TAIL_WINDOW
            live = []
            keep = live.append
            for key, item in list(islice(items.items(), count)):
                if item[_BITS] & ITEM_EXPIRES and _EXPTIME(item, _EXPTIME_AT)[0] <= now:
                    freed += self._expire(key, item)
                else:
                    keep((key, item))
            if freed >= need:
                break
            evictedBytes = evicted = unfetched = 0
            for key, item in live:
                if freed >= target:
                    break
                bits = item[_BITS]
                if spare and bits & ITEM_ACTIVE and moves < count * 4:
                    # second chance: to the head of the LRU, mark cleared
                    moves += 1
                    del items[key]
                    items[key] = repackItem(item, bits=bits & ~ITEM_ACTIVE)
                    continue
                del items[key]
                size = len(key) + len(item) - _VALUE_AT - item[_SUFFIX_LENGTH] + ITEM_OVERHEAD
                evictedBytes += size
                evicted += 1
                if not bits & ITEM_FETCHED:
                    unfetched += 1
                freed += size
            self._bytes -= evictedBytes
            self.evictions += evicted
            self.evicted_unfetched += unfetched
            if spare and freed == before:
                break
        self._room[index] -= moves
        return freed

    def _reclaimTail(self, now):
        """
        Reclaim the expired items among the oldest few of every dict, as
        memcached does before allocating, so storing over expired items
        does not grow the cache.
        """
        shards = self._shards
        window = 2 * min(TAIL_CHECK_EVERY, max(1, self._count() >> 6)) // len(shards) + TAIL_WINDOW
        expired = [
            (key, item)
            for items in shards
            for key, item in islice(items.items(), window)
            if item[_BITS] & ITEM_EXPIRES and _EXPTIME(item, _EXPTIME_AT)[0] <= now
        ]
        for key, item in expired:
            self._expire(key, item)
        self._noteTailLooked(now, bool(expired))

    def _noteTailLooked(self, now, found):
        """
        Schedule the next look at the tail: soon if this one found expired
        items, else after twice as many inserts as last time (up to
        L{TAIL_CHECK_MAX}) or a second, whichever comes first.  A cache
        without expiring items then hardly pays for the looks, whose walk
        from the front of the dict grows with the holes removals leave.
        """
        if found:
            self._tailInterval = min(TAIL_CHECK_EVERY, max(1, self._count() >> 6))
        else:
            self._tailInterval = min(self._tailInterval * 2, TAIL_CHECK_MAX)
        self._untilTailCheck = self._tailInterval
        self._nextTailTime = now + 1

    def _link(self, key, item, size, now):
        """
        Insert a new key at the head of the LRU, reclaiming or evicting
        from the tail until it fits.
        """
        if size > self.maxBytes:
            return False
        index = hash(key) & self._mask
        items = self._shards[index]
        self._untilTailCheck -= 1
        if self._untilTailCheck <= 0 or now >= self._nextTailTime:
            self._reclaimTail(now)
        if self._bytes + size > self.maxBytes:
            self._pullTail(self._bytes + size - self.maxBytes, now, index)
        room = self._room
        if room[index] <= 0:
            items = self._fit(index)
        items[key] = item
        room[index] -= 1
        self._bytes += size
        self.total_items += 1
        return True

    def _fit(self, index):
        """
        The dict at C{index} is about to grow its table: with
        C{compactTables}, copy it into one
        sized for what it holds if that leaves room for a quarter as many
        inserts again (what churn has deleted leaves holes that a copy
        drops), else let CPython grow it.  The copy pauses as long as
        CPython's growth would (both copy every entry), and keeps the
        dict's order.

        @return: the dict to insert into.
        """
        items = self._shards[index]
        used = len(items)
        room = copiedRoom(used)
        compactFrom = self._compactFrom
        if compactFrom is not None and used >= compactFrom and room >= used >> 2:
            items = self._shards[index] = dict(items)
        else:
            room = grownRoom(used)
        self._room[index] = room
        return items

    # -- IKeyspace ---------------------------------------------------------

    def _count(self):
        """
        How many items the keyspace holds.
        """
        return sum(map(len, self._shards))

    def get(self, key):
        item = self._shards[hash(key) & self._mask].get(key)
        if item is None or item[_BITS] == _HOT:
            return item
        return self._hit(key, item, self._clock.seconds())

    def getManyPython(self, keys):
        """
        L{getMany} in Python: what the C loop (L{memcachier.speedups}) does,
        and what runs without it.
        """
        # the multi-get hot loop: locals only, at most one clock read
        shards = self._shards
        mask = self._mask
        now = None
        found = []
        append = found.append
        for key in keys:
            item = shards[hash(key) & mask].get(key)
            if item is not None and item[_BITS] != _HOT:
                if now is None:
                    now = self._clock.seconds()
                item = self._hit(key, item, now)
            append(item)
        return found

    if accelerator is None:  # pragma: no cover (installed without a C compiler)
        getMany = getManyPython
    else:
        def getMany(self, keys):
            return _getManyLoop(self._shards, self._mask, keys, _HOT, self._slowHit)

    def _slowHit(self, key, item):
        """
        The C multi-get's way into L{_hit}, for items a hit must rewrite or
        check the expiry of.
        """
        return self._hit(key, item, self._clock.seconds())

    def peek(self, key):
        return self._live(key, self._clock.seconds())

    def touch(self, key, exptime):
        item = self.get(key)
        if item is not None:
            item = self._shards[hash(key) & self._mask][key] = repackItem(item, exptime=exptime)
        return item

    def store(self, mode, key, value, flags, exptime, cas):
        now = self._clock.seconds()
        items = self._shards[hash(key) & self._mask]
        old = items.get(key)
        if old is not None and old[_BITS] & ITEM_EXPIRES and _EXPTIME(old, _EXPTIME_AT)[0] <= now:
            self._expire(key, old)
            old = None
        if mode == _SET:
            if cas:
                if old is None:
                    return (_NOT_FOUND, 0)
                if itemCas(old) != cas:
                    return (_EXISTS, 0)
        elif mode == _ADD:
            if old is not None:
                # memcached bumps the existing item on a failed add
                if not old[_BITS] & ITEM_ACTIVE:
                    items[key] = repackItem(old, atime=now, bits=old[_BITS] | ITEM_ACTIVE)
                return (_NOT_STORED, 0)
        elif mode == _CAS:
            if old is None:
                return (_NOT_FOUND, 0)
            if itemCas(old) != cas:
                return (_EXISTS, 0)
        else:
            if old is None:
                return (_NOT_STORED, 0)
            if cas and itemCas(old) != cas:
                return (_EXISTS, 0)
            if mode == _APPEND:
                value = itemValue(old) + value
                flags, exptime = itemFlags(old), itemExptime(old)
            elif mode == _PREPEND:
                value = value + itemValue(old)
                flags, exptime = itemFlags(old), itemExptime(old)
            if len(key) + len(value) > self.maxItemSize:
                # memcached cannot allocate the grown item: not stored
                return (_NOT_STORED, 0)
        newCas = self._nextCas()
        if exptime and exptime <= now:
            # stored and immediately expired, as memcached does
            if old is not None:
                self._unlink(key, old)
            return (_STORED, newCas)
        size = len(key) + len(value) + ITEM_OVERHEAD
        if old is not None:
            # (itemValueLength, inline)
            oldSize = len(key) + len(old) - _VALUE_AT - old[_SUFFIX_LENGTH] + ITEM_OVERHEAD
            if self._bytes - oldSize + size <= self.maxBytes:
                # replaced in its slot (no dict growth, flat memory under
                # a replace-heavy load), ACTIVE so the tail spares it once
                items[key] = packItem(value, flags, exptime, newCas, now, ITEM_ACTIVE)
                self._bytes += size - oldSize
                self.total_items += 1
                return (_STORED, newCas)
            self._unlink(key, old)
        if not self._link(key, packItem(value, flags, exptime, newCas, now), size, now):
            return (StoreResult.NO_MEMORY, 0)
        return (_STORED, newCas)

    def delete(self, key, cas):
        item = self._live(key, self._clock.seconds())
        if item is None:
            return DeleteResult.NOT_FOUND
        if cas and itemCas(item) != cas:
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
        if cas and itemCas(item) != cas:
            return (DeltaResult.EXISTS, 0, 0)
        old = itemValue(item)
        number = _parseCounter(old)
        if number is None:
            return (DeltaResult.NON_NUMERIC, 0, 0)
        if incr:
            number = (number + delta) % U64
        else:
            number = number - delta if delta < number else 0
        value = b"%d" % number
        if len(value) < len(old):
            # memcached rewrites in place and pads with spaces
            value = value.ljust(len(old))
        newCas = self._nextCas()
        self._bytes += len(value) - len(old)
        self._shards[hash(key) & self._mask][key] = packItem(
            value, itemFlags(item), itemExptime(item), newCas, now, _HOT
        )
        return (DeltaResult.OK, number, newCas)

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
        old = self._shards
        self._shards = [{} for _ in old]
        self._room = [0] * len(old)
        self._bytes = 0
        if sum(map(len, old)) > FREE_SLICE:
            # the old items are freed a slice per reactor turn, not in one
            # pause (a small keyspace's go at once, with C{old})
            self._flushed.extend(items for items in old if items)
            if self._freeing is None:
                self._freeing = self._clock.callLater(0, self._freeSlice)

    def _freeSlice(self):
        """
        Free up to L{FREE_SLICE} items of flushed dicts, and come back on
        the next turn while some are left.
        """
        self._freeing = None
        flushed = self._flushed
        budget = FREE_SLICE
        while flushed and budget:
            items = flushed[-1]
            take = min(budget, len(items))
            popitem = items.popitem
            for _ in range(take):
                popitem()
            budget -= take
            if not items:
                flushed.pop()
        if flushed:
            self._freeing = self._clock.callLater(0, self._freeSlice)

    def stats(self):
        return {
            "curr_items": self._count(),
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
        if shardCount(maxBytes) != len(self._shards):
            # a plan change across SHARD_FROM: the items move, each dict's
            # order kept (the dicts' orders interleave)
            old = self._shards
            self._shards = [{} for _ in range(shardCount(maxBytes))]
            self._mask = len(self._shards) - 1
            self._room = [0] * len(self._shards)
            for items in old:
                for key, item in items.items():
                    self._shards[hash(key) & self._mask][key] = item
        if self._bytes > maxBytes:
            self._pullTail(self._bytes - maxBytes, self._clock.seconds())

    # -- warm restart (L{MemoryStore}'s L{ISnapshottableStore}) ------------

    def snapshotItems(self):
        """
        The live items as C{(key, item)}, least recently used first: each
        dict's in its order, the dicts of a sharded keyspace taken
        L{SNAPSHOT_RUN} items at a time in turn (keys hash evenly, so every
        dict holds the same spread of ages).
        """
        now = self._clock.seconds()
        if len(self._shards) == 1:
            runs = [iter(self._shards[0].items())]
        else:
            runs = [iter(items.items()) for items in self._shards]
        expires = ITEM_EXPIRES
        while runs:
            left = []
            for run in runs:
                taken = 0
                for key, item in run:
                    if not item[_BITS] & expires or _EXPTIME(item, _EXPTIME_AT)[0] > now:
                        yield key, item
                    taken += 1
                    if taken == SNAPSHOT_RUN and len(runs) > 1:
                        left.append(run)
                        break
            runs = left

    def pendingFlush(self):
        """
        When a delayed flush falls due (clock seconds), or L{None}.
        """
        if self._flushCall is not None and self._flushCall.active():
            return self._flushCall.getTime()
        return None

    def restoreItems(self, items):
        """
        Link restored items at the head of the LRU, oldest first, as they
        are; the expired ones and those over the item size limit are
        skipped, and the tail is evicted as a store would when the limit is
        reached (a plan that shrank keeps the most recently used).

        @return: how many were linked.
        """
        now = self._clock.seconds()
        shards = self._shards
        mask = self._mask
        maxItemSize = self.maxItemSize
        maxBytes = self.maxBytes
        expires = ITEM_EXPIRES
        bitsAt, exptimeAt, suffixAt = _BITS, _EXPTIME_AT, _SUFFIX_LENGTH
        exptimeOf = _EXPTIME
        fixed = ITEM_OVERHEAD - _VALUE_AT
        used = self._bytes
        linked = 0
        for key, item in items:
            if item[bitsAt] & expires and exptimeOf(item, exptimeAt)[0] <= now:
                continue
            size = len(key) + len(item) - item[suffixAt] + fixed
            if size - ITEM_OVERHEAD > maxItemSize:
                continue
            index = hash(key) & mask
            shard = shards[index]
            if key in shard:
                self._bytes = used
                self._unlink(key, shard[key])
                used = self._bytes
            if used + size > maxBytes:
                if size > maxBytes:
                    continue
                self._bytes = used
                self._pullTail(used + size - maxBytes, now, index)
                used = self._bytes
            shard[key] = item
            used += size
            linked += 1
        self._bytes = used
        # the next insert into each dict decides (L{_fit})
        self._room = [0] * len(shards)
        return linked

    def useCasCounter(self, casCounter):
        """
        Take CAS uniques from C{casCounter} from now on (the store resumes
        its counter above a restored snapshot's).
        """
        self._nextCas = casCounter.__next__

    def keys(self):
        now = self._clock.seconds()
        return [
            key for items in self._shards for key, item in list(items.items())
            if not item[_BITS] & ITEM_EXPIRES or _EXPTIME(item, _EXPTIME_AT)[0] > now
        ]


@implementer(IStore, ISnapshottableStore)
class MemoryStore:
    """
    Keyspaces of many caches in this process's memory.  CAS uniques come
    from one counter for the whole store, as in memcached.  Its items
    survive a graceful restart (L{ISnapshottableStore}).
    """

    def __init__(self, reactor, compactTables=False):
        """
        @param compactTables: see L{MemoryKeyspace}.
        """
        self._reactor = reactor
        self._compactTables = compactTables
        self._keyspaces = {}
        self._cas = count(1)

    def keyspace(self, cacheId, maxBytes, maxItemSize):
        keyspace = self._keyspaces.get(cacheId)
        if keyspace is None:
            keyspace = MemoryKeyspace(self._reactor, maxBytes, maxItemSize, self._cas,
                                      self._compactTables)
            self._keyspaces[cacheId] = keyspace
        return keyspace

    def dropKeyspace(self, cacheId):
        keyspace = self._keyspaces.pop(cacheId, None)
        if keyspace is not None:
            keyspace.flush(0)

    def close(self):
        self._keyspaces.clear()

    # -- ISnapshottableStore -------------------------------------------------

    def snapshotCaches(self):
        return list(self._keyspaces)

    def snapshotItems(self, cacheId):
        return self._keyspaces[cacheId].snapshotItems()

    def pendingFlush(self, cacheId):
        return self._keyspaces[cacheId].pendingFlush()

    def casFloor(self):
        # the counter's next value (taking it leaves a gap, which is harmless)
        return next(self._cas)

    def restoreItems(self, cacheId, maxBytes, maxItemSize, items):
        return self.keyspace(cacheId, maxBytes, maxItemSize).restoreItems(items)

    def resumeCas(self, floor):
        self._cas = count(max(next(self._cas), floor + 1))
        for keyspace in self._keyspaces.values():
            keyspace.useCasCounter(self._cas)
