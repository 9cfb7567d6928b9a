# -*- test-case-name: tests.unit.test_analytics_introspection -*-
"""
Introspection: recent commands, popular keys and prefixes, per-key counts
and watched prefixes, in memory that stays bounded whatever the key space.

The hot path pays for one thing only: the session appends one small tuple
per command to its cache's L{Introspector.events} list (a C-level
C{list.append} through a bound method it looked up at authentication).
Everything else runs in batches from a timer (L{IntrospectionService}):

  - the last 100 commands go to a ring (C{deque(maxlen=100)}), exactly;
  - hits, misses, mutations and prefixes go to Apache DataSketches
    C{frequent_strings_sketch}es (heavy hitters) and a C{count_min_sketch}
    (per-key counts), one set per time slice, a fixed number of slices;
  - counts of watched prefixes go to plain integers, which the sampler
    takes every sampling period.

A batch larger than C{batchLimit} events is sampled systematically (every
k-th event, each weighted k), so the batch work per second is bounded too;
smaller batches are counted exactly.  Error bounds: C{docs/analytics.md}.

Event tuples are built by L{memcachier.protocols.session.Session}; their
shapes (ints and bytes only, so the garbage collector leaves them alone)
are listed in L{memcachier.analytics.events}.
"""

import base64
import collections

from datasketches import count_min_sketch, frequent_items_error_type, frequent_strings_sketch
from twisted.logger import Logger

from memcachier.analytics.events import (  # noqa: F401 (re-exported)
    DECR, DELETE, FLUSH, GAT, GET, GET_MANY, INCR, STATS, TOUCH, discard,
)
from memcachier.analytics.series import formatTime
from memcachier.commands import (
    DeleteResult, DeltaResult, StoreMode, StoreResult, itemValueLength,
)
from memcachier.tx.periodic import PeriodicService

#: The delimiter between a key's prefix and the rest (memcached's default).
DELIMITER = ":"
_DELIMITER_BYTE = DELIMITER.encode("ascii")

#: keys listed per field of C{popular_items}
POPULAR_LIMIT = 10

#: most prefixes C{stats detail} counts per cache (memcached has no bound;
#: a tenant must not grow our memory without one)
MAX_DETAIL_PREFIXES = 10_000

_NO_FALSE_POSITIVES = frequent_items_error_type.NO_FALSE_POSITIVES

_STORE_NAMES = {int(m): m.name for m in StoreMode}
_STORE_RESULTS = {int(r): r.name for r in StoreResult}
_DELETE_RESULTS = {int(r): r.name for r in DeleteResult}
_DELTA_RESULTS = {int(r): r.name for r in DeltaResult}


def keyName(key):
    """
    A key as the API shows it: UTF-8, with undecodable bytes escaped.
    """
    return key.decode("utf-8", "backslashreplace")


def prefixOf(name, within=""):
    """
    The popular-prefix bucket of a key: the key up to (not including) the
    first delimiter that follows at least one character after C{within}.

    >>> prefixOf("user:42:name")
    'user'
    >>> prefixOf("user:42:name", "user:")
    'user:42'

    @return: the prefix, or L{None} if the key has no delimiter there.
    """
    i = name.find(DELIMITER, len(within) + 1)
    return name[:i] if i > 0 else None


class PrefixIndex:
    """
    Watched prefixes as a trie over the bytes of their names: finding the
    prefixes a key starts with costs one dictionary lookup per byte of
    the key (down to the deepest watched prefix), however many prefixes
    are watched.

    @ivar root: the trie: each node is a mapping of a byte value to the
        next node, and of C{-1} to the entries of the prefixes ending
        there.
    """

    __slots__ = ("root", "_node")

    def __init__(self, entries=(), node=dict):
        """
        @param entries: (name L{bytes}, entry) pairs.
        @param node: the mapping type of nodes (tests count its lookups).
        """
        self._node = node
        self.root = node()
        for raw, entry in entries:
            self.add(raw, entry)

    def add(self, raw, entry):
        node = self.root
        for byte in raw:
            child = node.get(byte)
            if child is None:
                child = node[byte] = self._node()
            node = child
        node.setdefault(-1, []).append(entry)

    def match(self, key):
        """
        @return: the entries of every watched prefix of C{key}, shortest
            first (an empty list if none).
        """
        found = []
        node = self.root
        for byte in key:
            node = node.get(byte)
            if node is None:
                break
            entries = node.get(-1)
            if entries is not None:
                found += entries
        return found


class _Sketches:
    """
    Heavy hitters of one time slice: most hit, missed and mutated keys and
    popular prefixes.
    """

    __slots__ = ("hits", "misses", "mutations", "prefixes")

    def __init__(self, lgMapSize):
        self.hits = frequent_strings_sketch(lgMapSize)
        self.misses = frequent_strings_sketch(lgMapSize)
        self.mutations = frequent_strings_sketch(lgMapSize)
        self.prefixes = frequent_strings_sketch(lgMapSize)


class _Slice:
    """
    One time slice: its start, the cache's sketches, per-key counts (one
    count-min sketch; the key is tagged C{h}, C{m} or C{u} for hits,
    misses, mutations) and the sketches of each watched prefix.
    """

    __slots__ = ("start", "sketches", "counts", "watched")

    def __init__(self, start, lgMapSize, cmDepth, cmWidth):
        self.start = start
        self.sketches = _Sketches(lgMapSize)
        self.counts = count_min_sketch(cmDepth, cmWidth)
        self.watched = {}


#: the heavy-hitter sketches of a slice, and the C{popular_items} field
#: each one answers
POPULAR_FIELDS = (
    ("hits", "most_hit_keys"),
    ("misses", "most_missed_keys"),
    ("mutations", "most_mutated_keys"),
    ("prefixes", "popular_prefixes"),
)


def _copy(sketch):
    """
    A sketch of the same kind holding the same counts (merging into it
    leaves the original alone).
    """
    return type(sketch).deserialize(sketch.serialize())


def _merged(sketches):
    """
    One sketch holding the counts of every non-empty sketch of
    C{sketches} (a new one when there are several), or L{None}.
    """
    merged = None
    copied = False
    for sketch in sketches:
        if sketch is None or sketch.is_empty():
            continue
        if merged is None:
            merged = sketch
        else:
            if not copied:
                merged = _copy(merged)
                copied = True
            merged.merge(sketch)
    return merged


def _ranked(sketch, limit):
    if sketch is None:
        return []
    items = sketch.get_frequent_items(_NO_FALSE_POSITIVES, 0)
    items.sort(key=lambda item: (-item[1], item[0]))
    return [{"name": name, "popularity": int(estimate)} for name, estimate, _, _ in items[:limit]]


def mergePopular(now, parts, limit):
    """
    The C{popular_items} answer of the heavy hitters of one or several
    nodes (L{Introspector.popularSketches} of each).

    @param parts: L{list} of (oldest slice start, L{dict} of sketch name
        to C{frequent_strings_sketch} or L{None}).
    @return: the contract's C{popular_items} object; C{time_slice} is the
        nanoseconds from the oldest slice's start to C{now}.
    """
    answer = {"time_slice": int((now - min(start for start, _ in parts)) * 1e9) if parts else 0}
    for name, field in POPULAR_FIELDS:
        answer[field] = _ranked(_merged([sketches.get(name) for _, sketches in parts]), limit)
    return answer


def _encode(sketch):
    return base64.b64encode(sketch.serialize()).decode("ascii")


def encodePopular(part):
    """
    L{Introspector.popularSketches} as C{stats} lines (a peer's answer to
    another node asking for them): C{start} and one base64 serialized
    sketch per non-empty kind.

    @return: L{list} of (name, value) L{str} pairs.
    """
    start, sketches = part
    pairs = [("start", repr(start))]
    pairs.extend((name, _encode(sketch)) for name, sketch in sketches.items() if sketch is not None)
    return pairs


def decodePopular(lines):
    """
    The inverse of L{encodePopular}.

    @param lines: L{dict} of name to value (L{str}).
    @raise ValueError: not what L{encodePopular} makes.
    """
    sketches = {}
    for name, _ in POPULAR_FIELDS:
        if name in lines:
            sketches[name] = frequent_strings_sketch.deserialize(base64.b64decode(lines[name]))
    return float(lines["start"]), sketches


def encodeKeyCounts(slices):
    """
    L{Introspector.keyCounts} as C{stats} lines: each non-empty slice's
    count-min sketch, base64, under its start time.
    """
    return [(repr(start), _encode(counts)) for start, counts in slices if not counts.is_empty()]


def decodeKeyCounts(lines):
    """
    The inverse of L{encodeKeyCounts}.

    @raise ValueError: not what L{encodeKeyCounts} makes.
    """
    return [
        (float(start), count_min_sketch.deserialize(base64.b64decode(value)))
        for start, value in lines.items()
    ]


def keyStatsRows(name, nodes, size, inCache, slices):
    """
    The C{key_stats} rows of a key from the per-slice counts of one or
    several nodes: the count-min sketches of slices starting at the same
    time are merged (their estimate is that of one sketch that saw every
    node's commands).

    @param nodes: L{list} (one per node) of L{list}s of (slice start,
        C{count_min_sketch}).
    @param slices: how many of the newest slice starts to answer.
    @return: one row per slice start, oldest first.
    """
    byStart = {}
    for counts in nodes:
        for start, sketch in counts:
            byStart.setdefault(start, []).append(sketch)
    rows = []
    for start in sorted(byStart)[-slices:]:
        merged = _merged(byStart[start])
        rows.append({
            "timestamp": formatTime(start),
            "name": name,
            "size": size,
            "hit_count": 0 if merged is None else int(merged.get_estimate("h" + name)),
            "miss_count": 0 if merged is None else int(merged.get_estimate("m" + name)),
            "mutation_count": 0 if merged is None else int(merged.get_estimate("u" + name)),
            "in_cache": inCache,
        })
    return rows


class Introspector:
    """
    The introspection state of one cache on this node.

    @ivar events: the list sessions append event tuples to; drained by
        L{drain}.
    @ivar logs: the last C{logSize} commands, oldest first, as
        (time, key name, command, status, size).
    """

    def __init__(
        self, clock, keyspace, sliceSeconds=60, slices=10, lgMapSize=8,
        cmDepth=3, cmWidth=512, batchLimit=100, logSize=100, popularLimit=POPULAR_LIMIT,
    ):
        self._clock = clock
        self.keyspace = keyspace
        self.sliceSeconds = sliceSeconds
        self.slices = slices
        self.lgMapSize = lgMapSize
        self.cmDepth = cmDepth
        self.cmWidth = cmWidth
        self.batchLimit = batchLimit
        self.popularLimit = popularLimit
        self.events = []
        self.logs = collections.deque(maxlen=logSize)
        self._slices = collections.deque(maxlen=slices)
        self._watched = ()
        self._index = PrefixIndex()
        self._prefixCounts = {}
        self.sampledEvents = 0
        self.detail = False
        self._detail = {}
        self._newSlice(clock.seconds())

    # -- configuration

    def setPrefixes(self, prefixes):
        """
        The watched prefixes of this cache.

        @param prefixes: L{list} of (id, name) pairs.
        """
        self._watched = tuple((pid, name, name.encode("utf-8")) for pid, name in prefixes)
        self._index = PrefixIndex((raw, (pid, name)) for pid, name, raw in self._watched)
        known = {pid for pid, _ in prefixes}
        for pid in list(self._prefixCounts):
            if pid not in known:
                del self._prefixCounts[pid]
        for pid in known:
            self._prefixCounts.setdefault(pid, [0, 0, 0])
        for s in self._slices:
            for pid in list(s.watched):
                if pid not in known:
                    del s.watched[pid]

    # -- batch processing

    def _newSlice(self, now):
        start = now - (now % self.sliceSeconds)
        self._slices.append(_Slice(start, self.lgMapSize, self.cmDepth, self.cmWidth))

    def _current(self, now):
        current = self._slices[-1]
        if now >= current.start + self.sliceSeconds:
            self._newSlice(now)
            current = self._slices[-1]
        return current

    def drain(self):
        """
        Process the events appended since the last drain.

        @return: how many events were processed.
        """
        events = self.events
        if not events:
            self._current(self._clock.seconds())
            return 0
        batch = events[:]
        del events[:]
        now = self._clock.seconds()
        current = self._current(now)
        self._log(now, batch)
        if self.detail:
            # exact, before any sampling, as memcached's counts are
            self._countDetail(batch)
        n = len(batch)
        limit = self.batchLimit
        # first every k-th event (C speed), then, since a multi-get is many
        # keys, every j-th key of those: at most about C{limit} keys are
        # counted per drain, each weighted k * j
        eventStep = -(-n // limit) if n > limit else 1
        if eventStep > 1:
            batch = batch[::eventStep]
            self.sampledEvents += n
        keys = 0
        for ev in batch:
            keys += len(ev[1]) if ev[0] == GET_MANY else 1
        keyStep = -(-keys // limit) if keys > limit else 1
        self._count(current, batch, keyStep, eventStep)
        return n

    def _log(self, now, events):
        """
        Keep the last commands of C{events} in the ring: walk back from
        the newest until the ring would be full, so a burst of multi-gets
        costs one ring's worth of work.
        """
        wanted = self.logs.maxlen or 0
        lines = []
        for ev in reversed(events):
            if len(lines) >= wanted:
                break
            op = ev[0]
            if op == GET_MANY:
                for key, item in zip(reversed(ev[1]), reversed(ev[2])):
                    lines.append((now, key, "GET", "MISS" if item is None else "HIT",
                                  0 if item is None else itemValueLength(item)))
                continue
            key = ev[1]
            result = ev[2]
            if op < GET:
                lines.append((now, key, _STORE_NAMES[op], _STORE_RESULTS.get(result, str(result)), ev[3]))
            elif op == GET or op == GAT:
                lines.append((now, key, "GET" if op == GET else "GAT",
                              "MISS" if result < 0 else "HIT", max(result, 0)))
            elif op == TOUCH:
                lines.append((now, key, "TOUCH", "NOT_FOUND" if result < 0 else "TOUCHED", 0))
            elif op == DELETE:
                lines.append((now, key, "DELETE", _DELETE_RESULTS.get(result, str(result)), 0))
            elif op == INCR or op == DECR:
                lines.append((now, key, "INCR" if op == INCR else "DECR",
                              _DELTA_RESULTS.get(result, str(result)), 0))
            elif op == FLUSH:
                lines.append((now, key, "FLUSH_ALL", "OK", 0))
            elif op == STATS:
                lines.append((now, key, "STATS", "OK", 0))
        self.logs.extend(reversed(lines[:wanted]))

    def _count(self, current, batch, step, scale=1):
        """
        Count every C{step}-th key of C{batch} in the current slice's
        sketches, each as C{step * scale} commands.
        """
        weight = step * scale
        sk = current.sketches
        hits, misses, mutations, prefixes = sk.hits, sk.misses, sk.mutations, sk.prefixes
        counts = current.counts
        index = self._index
        watched = index.root
        # systematic sampling over the keys of the batch: C{skip} carries
        # the position across events so multi-gets are sampled like the rest
        skip = 0
        for ev in batch:
            op = ev[0]
            if op == GET_MANY:
                keys = ev[1]
                # items become sizes, as single-key events carry them
                if step == 1:
                    pairs = zip(keys, [-1 if i is None else 0 for i in ev[2]])
                else:
                    pairs = zip(keys[skip::step], [-1 if i is None else 0 for i in ev[2][skip::step]])
                    skip = (skip - len(keys)) % step
            elif op == FLUSH or op == STATS:
                # no key: nothing to count
                continue
            elif step == 1:
                pairs = ((ev[1], ev[2]),)
            else:
                picked = skip == 0
                skip = (skip - 1) % step
                if not picked:
                    continue
                pairs = ((ev[1], ev[2]),)
            for key, result in pairs:
                name = keyName(key)
                if op == GET or op == GET_MANY or op == GAT:
                    kind = 0 if result >= 0 else 1
                else:
                    kind = 2
                if kind == 0:
                    hits.update(name, weight)
                    counts.update("h" + name, weight)
                elif kind == 1:
                    misses.update(name, weight)
                    counts.update("m" + name, weight)
                if kind == 2 or op == GAT:
                    mutations.update(name, weight)
                    counts.update("u" + name, weight)
                i = name.find(DELIMITER, 1)
                if i > 0:
                    prefixes.update(name[:i], weight)
                if watched:
                    matched = index.match(key)
                    if matched:
                        self._countWatched(current, op, matched, name, kind, weight)

    def _countWatched(self, current, op, matched, name, kind, weight):
        for pid, prefix in matched:
            totals = self._prefixCounts.setdefault(pid, [0, 0, 0])
            sk = current.watched.get(pid)
            if sk is None:
                sk = current.watched[pid] = _Sketches(self.lgMapSize)
            if kind == 0:
                totals[0] += weight
                sk.hits.update(name, weight)
            elif kind == 1:
                totals[1] += weight
                sk.misses.update(name, weight)
            if kind == 2 or op == GAT:
                totals[2] += weight
                sk.mutations.update(name, weight)
            sub = prefixOf(name, prefix)
            if sub is not None:
                sk.prefixes.update(sub, weight)

    # -- memcached's stats detail

    def setDetail(self, on):
        """
        Start or stop counting C{stats detail} (the counts are kept).
        """
        if on and not self.detail:
            # what was tapped while off is not counted
            self.drain()
        self.detail = bool(on)

    def clearDetail(self):
        """
        Forget the C{stats detail} counts (C{stats reset}).
        """
        self.drain()
        self._detail = {}

    def detailDump(self):
        """
        The C{stats detail dump} rows, in the order prefixes were first
        seen.

        @return: L{list} of (prefix L{bytes}, get, hit, set, del).
        """
        self.drain()
        return [(prefix,) + tuple(counts) for prefix, counts in self._detail.items()]

    def _countDetail(self, batch):
        """
        Count gets, hits, sets and deletes per key prefix (the key up to
        the first delimiter; keys without one are not counted), as
        memcached's C{stats_prefix_record_*}.
        """
        detail = self._detail
        delimiter = _DELIMITER_BYTE
        limit = MAX_DETAIL_PREFIXES

        def counts(key):
            i = key.find(delimiter)
            if i < 0:
                return None
            prefix = key[:i]
            c = detail.get(prefix)
            if c is None:
                if len(detail) >= limit:
                    return None
                c = detail[prefix] = [0, 0, 0, 0]
            return c

        for ev in batch:
            op = ev[0]
            if op == GET_MANY:
                for key, item in zip(ev[1], ev[2]):
                    c = counts(key)
                    if c is not None:
                        c[0] += 1
                        if item is not None:
                            c[1] += 1
            elif op == GET or op == GAT:
                c = counts(ev[1])
                if c is not None:
                    c[0] += 1
                    if ev[2] >= 0:
                        c[1] += 1
            elif op < GET:
                c = counts(ev[1])
                if c is not None:
                    c[2] += 1
            elif op == DELETE:
                c = counts(ev[1])
                if c is not None:
                    c[3] += 1

    # -- reading

    def recentLogs(self):
        """
        @return: the last commands, oldest first, as the API shows them.
        """
        self.drain()
        return [
            {"timestamp": formatTime(t), "key": keyName(key), "command": command,
             "status": status, "size": size}
            for t, key, command, status, size in self.logs
        ]

    def popularItems(self, prefixId=None):
        """
        The most hit, missed and mutated keys and the popular prefixes over
        the retained time slices.

        @param prefixId: restrict to the keys of a watched prefix.
        @return: the contract's C{popular_items} object; C{time_slice} is
            the nanoseconds the slices cover.
        """
        now = self._clock.seconds()
        return mergePopular(now, [self.popularSketches(prefixId)], self.popularLimit)

    def popularSketches(self, prefixId=None):
        """
        This node's heavy hitters over the retained slices, each kind's
        slices merged into one sketch: what L{mergePopular} merges with
        other nodes'.

        @param prefixId: restrict to the keys of a watched prefix.
        @return: a 2-tuple: the oldest slice's start, and a L{dict} of
            sketch name (C{hits}, C{misses}, C{mutations}, C{prefixes}) to
            a C{frequent_strings_sketch} or L{None} (nothing counted).
        """
        self.drain()
        slices = list(self._slices)
        if prefixId is None:
            sketches = [s.sketches for s in slices]
        else:
            sketches = [s.watched[prefixId] for s in slices if prefixId in s.watched]
        return slices[0].start, {
            name: _merged([getattr(s, name) for s in sketches]) for name, _ in POPULAR_FIELDS
        }

    def keyCounts(self):
        """
        The per-key counts of each retained slice, oldest first: what
        L{keyStatsRows} merges with other nodes'.

        @return: L{list} of (slice start, C{count_min_sketch}).
        """
        self.drain()
        return [(s.start, s.counts) for s in self._slices]

    def keyStats(self, name):
        """
        Hit, miss and mutation counts of one key per retained time slice
        (oldest first), with its size and presence now.

        @type name: L{str}
        """
        counts = self.keyCounts()
        item = self.keyspace.peek(name.encode("utf-8"))
        inCache = item is not None and not hasattr(item, "addCallback")
        size = itemValueLength(item) if inCache else 0
        return keyStatsRows(name, [counts], size, inCache, self.slices)

    def takePrefixCounts(self):
        """
        The hits, misses and mutations of each watched prefix since the
        last call (for the sampler), resetting them.

        @return: L{dict} of prefix id to a 3-list.
        """
        self.drain()
        taken = self._prefixCounts
        self._prefixCounts = {pid: [0, 0, 0] for pid in taken}
        return taken

    def prefixFootprint(self):
        """
        Keys and bytes under each watched prefix now, by scanning the
        keyspace (only called once per sampling period, and only for
        caches with watched prefixes).

        @return: L{dict} of prefix id to (num_keys, total_size).
        """
        out = {pid: [0, 0] for pid, _, _ in self._watched}
        if not self._watched:
            return out
        match = self._index.match
        peek = self.keyspace.peek
        for key in self.keyspace.keys():
            matched = match(key)
            if not matched:
                continue
            item = peek(key)
            if item is None or hasattr(item, "addCallback"):
                continue
            for pid, _ in matched:
                out[pid][0] += 1
                out[pid][1] += len(key) + itemValueLength(item)
        return out


class IntrospectionService(PeriodicService):
    """
    Creates the L{Introspector} of each cache on first use and drains them
    all every C{interval} seconds.

    Sessions call L{tapFor} at authentication and keep the returned bound
    C{append}.

    @ivar enabled: whether introspection is on; off, L{tapFor} returns
        L{discard} and nothing else runs.
    """

    _log = Logger()

    def __init__(self, reactor, enabled=True, interval=0.02, **introspectorArgs):
        PeriodicService.__init__(self, interval, self.drainAll, reactor, "introspection drain",
                                 now=False)
        self._reactor = reactor
        self.enabled = enabled
        self._args = introspectorArgs
        self._introspectors = {}
        self._runtimes = {}
        self._prefixes = {}

    def tapFor(self, runtime):
        """
        The tap a session of C{runtime}'s cache appends events to.
        """
        if not self.enabled:
            return discard
        return self.introspector(runtime).events.append

    def introspector(self, runtime):
        """
        The L{Introspector} of a cache runtime, created if needed (a new
        runtime of the same cache, after a deletion, gets a new one).
        """
        cacheId = runtime.cacheId
        intro = self._introspectors.get(cacheId)
        if intro is None or self._runtimes.get(cacheId) is not runtime:
            intro = Introspector(self._reactor, runtime.keyspace, **self._args)
            intro.setPrefixes(self._prefixes.get(cacheId, ()))
            self._introspectors[cacheId] = intro
            self._runtimes[cacheId] = runtime
        return intro

    def existing(self, cacheId):
        """
        @return: the cache's L{Introspector} on this node, or L{None}.
        """
        return self._introspectors.get(cacheId)

    def introspectors(self):
        return dict(self._introspectors)

    def setPrefixes(self, prefixes):
        """
        Every watched prefix (from the control plane).

        @param prefixes: L{list} of dicts with C{id}, C{cache_id}, C{name}.
        """
        byCache = {}
        for p in prefixes:
            byCache.setdefault(p["cache_id"], []).append((p["id"], p["name"]))
        self._prefixes = byCache
        for cacheId, intro in self._introspectors.items():
            intro.setPrefixes(byCache.get(cacheId, ()))

    def drainAll(self):
        for cacheId, intro in list(self._introspectors.items()):
            runtime = self._runtimes.get(cacheId)
            if runtime is not None and runtime.gone and intro is not None:
                # deleted or disabled: forget it once its sessions are gone
                if not runtime.stats.curr_connections:
                    del self._introspectors[cacheId]
                    del self._runtimes[cacheId]
                    continue
            try:
                intro.drain()
            except Exception:
                self._log.failure("introspection of cache {cacheId} failed", cacheId=cacheId)
                del intro.events[:]

    def startService(self):
        """
        Drain every C{interval} seconds; off, nothing runs.
        """
        if self.enabled:
            super().startService()

    def stopService(self):
        stopped = super().stopService()
        self.release()
        return stopped

    def release(self) -> None:
        """
        Drop every introspector, and with them their DataSketches objects.

        Called at stop: a sketch still alive when the interpreter exits is
        reported by nanobind (the C++ binding under C{datasketches}) as a
        leaked instance, with every type and function of its module after
        it, some 600 lines on each stop of a node.  A cache used after
        this gets a fresh introspector, as after a deletion.
        """
        self._introspectors.clear()
        self._runtimes.clear()
