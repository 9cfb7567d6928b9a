/*
 * The segment store's keyspace in C (memcachier.stores.segment wraps it).
 *
 * A keyspace keeps its items outside Python objects: inline in large
 * segments (a header, the key, the value), found through an open-addressing
 * index of its own.  Segments are mapped from the OS (mmap) when large, so
 * a segment freed goes back to the OS whatever the allocator: the store's
 * memory is its segments and its index, not many small mallocs.
 *
 * Ages are the segments' order: new items are appended to the newest
 * segment; room is made by draining the oldest segment, a step of
 * DRAIN_STEP bytes a store (no store pays for a whole segment): its
 * expired items reclaimed, its live ACTIVE items copied to the newest
 * (second chance, the mark cleared: memcached's LRU in Segcache's shape),
 * the rest evicted; drained to its end, it is freed.  A segment whose
 * items have all expired is freed as a whole.  Overwritten and deleted
 * items are dead space until their segment is drained: past a bound, the
 * oldest segment's live items are moved on instead (compaction, a step a
 * store too).  The segments' total stays within the limit plus an eighth
 * plus two segments (segment_limit), and within what the live items take
 * plus an eighth plus a few segments (make_room_for_segment).
 *
 * Items are handed out as memcachier.commands.packItem builds them: the
 * 18-byte prefix (ITEM_FIELDS), the ASCII suffix, the value, built here in
 * one allocation per hit.  The prefix offsets are exported as module
 * constants and checked by tests/unit/test_segment_store.py.
 *
 * Behaviour is the memory store's (memcachier/stores/memory.py), which the
 * tests run side by side with this one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <sys/mman.h>

/* memcachier.commands: the packed item's prefix */
#define ITEM_CAS_AT 0
#define ITEM_EXPTIME_AT 8
#define ITEM_ATIME_AT 12
#define ITEM_BITS_AT 16
#define ITEM_SUFFIX_LENGTH_AT 17
#define ITEM_PREFIX_SIZE 18
#define ITEM_FETCHED 1
#define ITEM_ACTIVE 2
#define ITEM_EXPIRES 4
#define HOT (ITEM_FETCHED | ITEM_ACTIVE)
/* in a segment only: the item was overwritten, deleted or moved */
#define ITEM_DEAD 0x80
/* memcachier.stores.memory.ITEM_OVERHEAD: bytes charged per item */
#define ITEM_OVERHEAD 50

/* segments: the largest (and the size of a large keyspace's), the smallest */
#define SEGMENT_MAX (1u << 20)
#define SEGMENT_MIN (4u << 10)
/* a keyspace's segments are about 1/SEGMENTS_PER_LIMIT of its limit */
#define SEGMENTS_PER_LIMIT 16
/* segments this large or larger are mapped from the OS, smaller ones
 * malloc'd (a small cache's segments are not worth a mapping each) */
#define MAP_FROM (256u << 10)
/* second chances: each byte evicted lets this many bytes of ACTIVE items
 * be copied instead, up to COPY_CAP saved (two steps' worth, so that no
 * store copies more); past that, ACTIVE items are evicted */
#define COPIES_PER_EVICTED 2
#define COPY_CAP (2 * DRAIN_STEP)
/* bytes of the oldest segment drained a step (make_room, make_room_ahead) */
#define DRAIN_STEP (16u << 10)
/* whole segments compacted, at most, when one is added and the steps of
 * make_room_ahead have fallen behind the dead space */
#define COMPACT_SEGMENTS 2
/* the index: an empty slot */
#define SLOT_EMPTY 0u
#define OFF_BITS 17
#define OFF_MASK ((1u << OFF_BITS) - 1)
#define INDEX_MIN 4
/* the index is this many tables by the hash's top bits: one growing moves
 * a 256th of the entries (0.3 ms at 1.5M items of 100 B; with 16 tables
 * that read every key to hash it again, 7-12 ms); an empty keyspace's
 * index is INDEX_MIN slots a table (8 KiB) */
#define INDEX_SHARDS 256
/* keys (of a multi-get, or of a segment being evicted) whose index slots
 * are fetched into the cache together, before any of them is looked up */
#define PREFETCH_BLOCK 16
#define SHARD_SHIFT 40
#define POS_MASK ((1ULL << SHARD_SHIFT) - 1)

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

enum { MODE_SET = 1, MODE_ADD, MODE_REPLACE, MODE_APPEND, MODE_PREPEND, MODE_CAS };
enum { R_NOT_STORED = 0, R_STORED, R_EXISTS, R_NOT_FOUND, R_TOO_LARGE, R_NO_MEMORY };
enum { D_DELETED = 0, D_NOT_FOUND, D_EXISTS };
enum { DX_OK = 0, DX_NON_NUMERIC, DX_NO_MEMORY, DX_NOT_FOUND, DX_EXISTS };

/* the result enums' members, by value (bind_results) */
static PyObject *store_results;
static PyObject *delete_results;
static PyObject *delta_results;

typedef struct {
    uint64_t cas;
    uint32_t exptime;  /* whole store-clock seconds, 0 = never */
    uint32_t atime;
    uint32_t flags;
    uint32_t vlen;
    uint8_t klen;
    uint8_t bits;
    unsigned char data[];  /* key, then value */
} item_t;

#define ITEM_HEADER (offsetof(item_t, data))

typedef struct segment {
    size_t cap;     /* bytes for items */
    size_t used;    /* bytes written */
    size_t mapped;  /* bytes allocated, header included */
    size_t live_span;
    size_t drained; /* bytes drained so far: every item before is dead */
    uint32_t id;    /* its slot in the keyspace's table */
    uint32_t older, newer;
    uint32_t live;
    uint32_t max_exptime;
    int forever;    /* holds an item that never expires */
} segment_t;

#define SEGMENT_HEADER ALIGN8(sizeof(segment_t))
#define SEGMENT_DATA(s) ((unsigned char *)(s) + SEGMENT_HEADER)

/* An index entry keeps FP_BITS of its key's hash (bits 32 and up): their
 * low bits are its home slot (a table is at most 2^FP_BITS slots), so a
 * table grows and shifts entries back without reading any key, and all of
 * them filter out other keys before their items are read.  TAG_BITS of
 * them sit above the offset, the rest above the segment's slot. */
typedef struct {
    uint32_t seg;  /* fingerprint >> TAG_BITS << SEG_BITS | slot of the
                    * segment (never 0); 0 (SLOT_EMPTY): an empty slot */
    uint32_t loc;  /* fingerprint's low TAG_BITS << OFF_BITS | offset / 8 */
} entry_t;

#define TAG_BITS (32 - OFF_BITS)
#define SEG_BITS 24
#define SEG_MASK ((1u << SEG_BITS) - 1)
#define FP_BITS (TAG_BITS + 32 - SEG_BITS)

typedef struct {
    PyObject_HEAD
    uint64_t next;
} CounterObject;

typedef struct {
    PyObject_HEAD
    PyObject *seconds;
    CounterObject *counter;
    int ready;
    uint64_t seed;
    Py_ssize_t max_bytes;
    Py_ssize_t max_item_size;
    size_t bytes;
    size_t items;
    /* segments by slot (slot 0 unused), and the free slots */
    segment_t **slots;
    uint32_t nslots;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t oldest, newest, write;
    size_t segments;
    size_t segment_bytes;
    size_t live_span;  /* what the live items take in the segments */
    size_t written;    /* what the segments were written with, dead items included */
    uint64_t epoch;    /* segments freed so far (walks that call Python check it) */
    size_t copy_budget;  /* second chances saved up (COPIES_PER_EVICTED) */
    int evicting;
    double next_scan;
    /* the index: INDEX_SHARDS tables; a position is shard << SHARD_SHIFT | slot */
    struct {
        entry_t *table;
        size_t cap;
        size_t used;
    } index[INDEX_SHARDS];
    /* counters */
    unsigned long long total_items, evictions, evicted_unfetched, expired_unfetched;
    unsigned long long reclaimed, get_expired, get_flushed;
    unsigned long long whole_drains;
} KeyspaceObject;

/* -- memory ------------------------------------------------------------ */

#if defined(__SANITIZE_ADDRESS__)
#define NO_MAPPING 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NO_MAPPING 1
#endif
#endif

/* under AddressSanitizer, what a segment has not handed out yet (and the
 * padding after each item) is poisoned: a read past an item's value is
 * caught even though the next bytes are in the same allocation */
#ifdef NO_MAPPING
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* zeroed memory; large blocks are mapped (given back on free, whatever
 * malloc's thresholds), except under AddressSanitizer, which checks only
 * what malloc hands out */
static void *
big_alloc(size_t n)
{
#ifndef NO_MAPPING
    if (n >= MAP_FROM) {
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
#endif
    return calloc(1, n);
}

static void
big_free(void *p, size_t n)
{
    if (p == NULL)
        return;
#ifndef NO_MAPPING
    if (n >= MAP_FROM) {
        munmap(p, n);
        return;
    }
#endif
    free(p);
}

/* -- hashing ----------------------------------------------------------- */

static inline uint64_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t
hash_key(uint64_t seed, const unsigned char *p, size_t n)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ mix64(w + seed)) * 0x9E3779B97F4A7C15ULL;
        h = (h << 29) | (h >> 35);
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h ^= mix64(w ^ seed ^ n);
    return mix64(h);
}

/* the hash bits an index entry keeps (below the shard's) */
static inline uint32_t
fp_of(uint64_t h)
{
    return (uint32_t)(h >> 32) & ((1u << FP_BITS) - 1);
}

static inline unsigned
shard_of(uint64_t h)
{
    return (unsigned)(h >> 56) & (INDEX_SHARDS - 1);
}

/* -- items -------------------------------------------------------------- */

static inline size_t
item_span(const item_t *it)
{
    return ALIGN8(ITEM_HEADER + (size_t)it->klen + (size_t)it->vlen);
}

static inline size_t
item_charge(const item_t *it)
{
    return (size_t)it->klen + (size_t)it->vlen + ITEM_OVERHEAD;
}

static inline int
item_expired(const item_t *it, double now)
{
    return it->exptime != 0 && (double)it->exptime <= now;
}

/* packItem's whole seconds: rounded up, anything not positive as 1 */
static uint32_t
whole_seconds(double exptime)
{
    if (exptime == 0)
        return 0;
    if (!(exptime > 1))  /* negative, tiny or NaN: already expired */
        return 1;
    if (exptime >= 4294967295.0)
        return 0xFFFFFFFFu;
    double whole = floor(exptime);
    uint32_t seconds = (uint32_t)whole;
    if (whole < exptime)
        seconds++;
    return seconds;
}

static inline uint32_t
clock_seconds(double now)
{
    if (!(now > 0))
        return 0;
    if (now >= 4294967295.0)
        return 0xFFFFFFFFu;
    return (uint32_t)now;
}

static inline segment_t *
segment_at(KeyspaceObject *ks, uint32_t slot)
{
    return ks->slots[slot];
}

static inline uint32_t
entry_fp(const entry_t *e)
{
    return (e->loc >> OFF_BITS) | ((e->seg >> SEG_BITS) << TAG_BITS);
}

static inline uint32_t
entry_seg(const entry_t *e)
{
    return e->seg & SEG_MASK;
}

static inline void
entry_set(entry_t *e, uint32_t fp, uint32_t seg, size_t off)
{
    e->seg = seg | ((fp >> TAG_BITS) << SEG_BITS);
    e->loc = ((fp & ((1u << TAG_BITS) - 1)) << OFF_BITS) | (uint32_t)(off >> 3);
}

static inline item_t *
entry_item(KeyspaceObject *ks, const entry_t *e)
{
    segment_t *s = ks->slots[entry_seg(e)];
    return (item_t *)(SEGMENT_DATA(s) + ((size_t)(e->loc & OFF_MASK) << 3));
}

static inline void
write_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* `v` in decimal at `p` (snprintf's cost showed in a hit's profile);
 * returns the digits written, at most 10 */
static inline int
put_decimal(char *p, uint32_t v)
{
    char backwards[10];
    int n = 0;
    do {
        backwards[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        p[i] = backwards[n - 1 - i];
    return n;
}

/* the item as packItem lays it out */
static PyObject *
pack_item(const item_t *it)
{
    /* " FLAGS LENGTH\r\n": at most 24 bytes */
    char suffix[32];
    int sl = 0;
    suffix[sl++] = ' ';
    sl += put_decimal(suffix + sl, it->flags);
    suffix[sl++] = ' ';
    sl += put_decimal(suffix + sl, it->vlen);
    suffix[sl++] = '\r';
    suffix[sl++] = '\n';
    Py_ssize_t n = ITEM_PREFIX_SIZE + sl + (Py_ssize_t)it->vlen;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    uint64_t cas = it->cas;
    for (int i = 0; i < 8; i++)
        p[ITEM_CAS_AT + i] = (unsigned char)(cas >> (8 * i));
    write_u32(p + ITEM_EXPTIME_AT, it->exptime);
    write_u32(p + ITEM_ATIME_AT, it->atime);
    p[ITEM_BITS_AT] = (unsigned char)((it->bits & HOT) | (it->exptime ? ITEM_EXPIRES : 0));
    p[ITEM_SUFFIX_LENGTH_AT] = (unsigned char)sl;
    memcpy(p + ITEM_PREFIX_SIZE, suffix, (size_t)sl);
    memcpy(p + ITEM_PREFIX_SIZE + sl, it->data + it->klen, it->vlen);
    return out;
}

/* -- the index ---------------------------------------------------------- */

/* the index position of `key`, its item in *out; -1 if missing */
static Py_ssize_t
index_find(KeyspaceObject *ks, const unsigned char *key, size_t klen, uint64_t h, item_t **out)
{
    unsigned shard = shard_of(h);
    entry_t *table = ks->index[shard].table;
    if (ks->index[shard].cap == 0)
        return -1;
    size_t mask = ks->index[shard].cap - 1;
    uint32_t fp = fp_of(h);
    size_t i = fp & mask;
    for (;;) {
        entry_t *e = &table[i];
        if (e->seg == SLOT_EMPTY)
            return -1;
        if (entry_fp(e) == fp) {
            item_t *it = entry_item(ks, e);
            if (it->klen == klen && memcmp(it->data, key, klen) == 0) {
                *out = it;
                return (Py_ssize_t)(((uint64_t)shard << SHARD_SHIFT) | i);
            }
        }
        i = (i + 1) & mask;
    }
}

/* the index position of the entry pointing at (seg, off) */
static Py_ssize_t
index_find_at(KeyspaceObject *ks, uint64_t h, uint32_t seg, size_t off)
{
    unsigned shard = shard_of(h);
    entry_t *table = ks->index[shard].table;
    if (ks->index[shard].cap == 0)
        return -1;
    size_t mask = ks->index[shard].cap - 1;
    uint32_t fp = fp_of(h);
    entry_t want;
    entry_set(&want, fp, seg, off);
    size_t i = fp & mask;
    for (;;) {
        entry_t *e = &table[i];
        if (e->seg == SLOT_EMPTY)
            return -1;
        if (e->seg == want.seg && e->loc == want.loc)
            return (Py_ssize_t)(((uint64_t)shard << SHARD_SHIFT) | i);
        i = (i + 1) & mask;
    }
}

/* put `e` in the first empty slot from its home on */
static void
index_place(entry_t *table, size_t cap, const entry_t *e)
{
    size_t mask = cap - 1;
    size_t i = entry_fp(e) & mask;
    while (table[i].seg != SLOT_EMPTY)
        i = (i + 1) & mask;
    table[i] = *e;
}

/* the entry at a position index_find gave */
static inline entry_t *
entry_at(KeyspaceObject *ks, Py_ssize_t pos)
{
    return &ks->index[(uint64_t)pos >> SHARD_SHIFT].table[(uint64_t)pos & POS_MASK];
}

/* a table of one shard for `live` entries at most half full, rehashing
 * every entry */
static int
index_rebuild(KeyspaceObject *ks, unsigned shard, size_t live)
{
    size_t cap = INDEX_MIN;
    while (cap < live * 2) {
        if (cap >= ((size_t)1 << FP_BITS) || cap > ((size_t)-1) / 4 / sizeof(entry_t)) {
            PyErr_NoMemory();
            return -1;
        }
        cap <<= 1;
    }
    entry_t *table = big_alloc(cap * sizeof(entry_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t used = 0;
    entry_t *old = ks->index[shard].table;
    size_t oldCap = ks->index[shard].cap;
    if (old != NULL) {
        for (size_t i = 0; i < oldCap; i++) {
            if (old[i].seg == SLOT_EMPTY)
                continue;
            index_place(table, cap, &old[i]);
            used++;
        }
        big_free(old, oldCap * sizeof(entry_t));
    }
    ks->index[shard].table = table;
    ks->index[shard].cap = cap;
    ks->index[shard].used = used;
    return 0;
}

/* every shard's table empty and small */
static int
index_reset(KeyspaceObject *ks)
{
    for (unsigned shard = 0; shard < INDEX_SHARDS; shard++) {
        big_free(ks->index[shard].table, ks->index[shard].cap * sizeof(entry_t));
        ks->index[shard].table = NULL;
        ks->index[shard].cap = ks->index[shard].used = 0;
    }
    for (unsigned shard = 0; shard < INDEX_SHARDS; shard++) {
        if (index_rebuild(ks, shard, 0) < 0)
            return -1;
    }
    return 0;
}

/* room for one more entry of hash `h` (at most 3/4 of its shard's slots
 * used); a shard under 1/8 used shrinks */
static int
index_reserve(KeyspaceObject *ks, uint64_t h)
{
    unsigned shard = shard_of(h);
    size_t used = ks->index[shard].used + 1;
    size_t cap = ks->index[shard].cap;
    if (used * 4 > cap * 3 || (used * 8 < cap && cap > INDEX_MIN))
        return index_rebuild(ks, shard, used);
    return 0;
}

/* remove the entry at `pos`, shifting back the entries after it that
 * would no longer be found (no tombstones: a table under churn never
 * needs rebuilding, only growing) */
static void
index_remove(KeyspaceObject *ks, Py_ssize_t pos)
{
    unsigned shard = (unsigned)((uint64_t)pos >> SHARD_SHIFT);
    entry_t *table = ks->index[shard].table;
    size_t mask = ks->index[shard].cap - 1;
    size_t hole = (size_t)((uint64_t)pos & POS_MASK);
    size_t j = hole;
    for (;;) {
        table[hole].seg = SLOT_EMPTY;
        table[hole].loc = 0;
        for (;;) {
            j = (j + 1) & mask;
            entry_t *e = &table[j];
            if (e->seg == SLOT_EMPTY) {
                ks->index[shard].used--;
                return;
            }
            size_t home = entry_fp(e) & mask;
            /* stays if its home is cyclically in (hole, j] */
            int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (!stays) {
                table[hole] = *e;
                hole = j;
                break;
            }
        }
    }
}

/* -- segments ----------------------------------------------------------- */

static size_t
segment_size(KeyspaceObject *ks)
{
    size_t want = (size_t)ks->max_bytes / SEGMENTS_PER_LIMIT;
    size_t size = SEGMENT_MIN;
    while (size < SEGMENT_MAX && size * 2 <= want)
        size *= 2;
    return size;
}

/* the most the segments may hold: the limit, an eighth of it for dead
 * space, and two segments (the one being written, the one being freed) */
static size_t
segment_limit(KeyspaceObject *ks)
{
    size_t limit = (size_t)ks->max_bytes;
    return limit + limit / 8 + 2 * segment_size(ks);
}

static void
segment_unlink(KeyspaceObject *ks, segment_t *s)
{
    if (s->older)
        segment_at(ks, s->older)->newer = s->newer;
    else
        ks->oldest = s->newer;
    if (s->newer)
        segment_at(ks, s->newer)->older = s->older;
    else
        ks->newest = s->older;
    s->older = s->newer = 0;
    if (ks->write == s->id)
        ks->write = 0;
}

static void
segment_free(KeyspaceObject *ks, segment_t *s)
{
    ks->epoch++;
    ks->slots[s->id] = NULL;
    ks->free_slots[ks->nfree++] = s->id;
    ks->segments--;
    ks->segment_bytes -= s->mapped;
    ks->written -= s->used;
    UNPOISON(s, s->mapped);
    big_free(s, s->mapped);
}

/* a new segment of `cap` bytes, the newest */
static segment_t *
segment_new(KeyspaceObject *ks, size_t cap)
{
    if (ks->nfree == 0) {
        /* a slot must fit an index entry's SEG_BITS */
        if (ks->nslots > SEG_MASK) {
            PyErr_SetString(PyExc_MemoryError, "segments: too many segments");
            return NULL;
        }
        uint32_t grown = ks->nslots < 16 ? 16 : ks->nslots * 2;
        segment_t **slots = PyMem_Realloc(ks->slots, (size_t)grown * sizeof(segment_t *));
        if (slots == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        ks->slots = slots;
        uint32_t *free_slots = PyMem_Realloc(ks->free_slots, (size_t)grown * sizeof(uint32_t));
        if (free_slots == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        ks->free_slots = free_slots;
        uint32_t first = ks->nslots == 0 ? 1 : ks->nslots;
        if (ks->nslots == 0)
            ks->slots[0] = NULL;
        for (uint32_t i = grown; i > first; i--) {
            ks->slots[i - 1] = NULL;
            ks->free_slots[ks->nfree++] = i - 1;
        }
        ks->nslots = grown;
    }
    if (cap > ((size_t)-1) / 2) {
        PyErr_NoMemory();
        return NULL;
    }
    size_t mapped = SEGMENT_HEADER + cap;
    segment_t *s = big_alloc(mapped);
    if (s == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    uint32_t id = ks->free_slots[--ks->nfree];
    s->cap = cap;
    s->used = 0;
    s->mapped = mapped;
    s->live_span = 0;
    s->drained = 0;
    s->id = id;
    s->live = 0;
    s->max_exptime = 0;
    s->forever = 0;
    s->newer = 0;
    s->older = ks->newest;
    if (ks->newest)
        segment_at(ks, ks->newest)->newer = id;
    else
        ks->oldest = id;
    ks->newest = id;
    ks->slots[id] = s;
    POISON(SEGMENT_DATA(s), cap);
    ks->segments++;
    ks->segment_bytes += mapped;
    return s;
}

static inline void
segment_note_exptime(segment_t *s, uint32_t exptime)
{
    if (exptime == 0)
        s->forever = 1;
    else if (exptime > s->max_exptime)
        s->max_exptime = exptime;
}

/* an item leaves its segment: dead space from now on */
static inline void
segment_drop(KeyspaceObject *ks, segment_t *s, item_t *it)
{
    size_t span = item_span(it);
    it->bits |= ITEM_DEAD;
    s->live--;
    s->live_span -= span;
    ks->live_span -= span;
}

/* an item placed in a segment */
static inline void
segment_add(KeyspaceObject *ks, segment_t *s, item_t *it)
{
    size_t span = item_span(it);
    s->live++;
    s->live_span += span;
    ks->live_span += span;
    segment_note_exptime(s, it->exptime);
}

/* forget an item: index entry, segment, accounting */
static void
item_unlink(KeyspaceObject *ks, Py_ssize_t pos, item_t *it)
{
    segment_t *s = ks->slots[entry_seg(entry_at(ks, pos))];
    index_remove(ks, pos);
    ks->bytes -= item_charge(it);
    ks->items--;
    segment_drop(ks, s, it);
}

static void
item_reclaim(KeyspaceObject *ks, Py_ssize_t pos, item_t *it)
{
    ks->reclaimed++;
    if (!(it->bits & ITEM_FETCHED))
        ks->expired_unfetched++;
    item_unlink(ks, pos, it);
}

static int make_room_for_segment(KeyspaceObject *ks, size_t cap, double now);

/* `exact` bytes (aligned up) at the end of the segment being written, or of a new one
 * (of its own if larger than a segment); the segment in *where, the
 * offset in *offset */
static item_t *
item_alloc(KeyspaceObject *ks, size_t exact, double now, segment_t **where, size_t *offset)
{
    size_t span = ALIGN8(exact);
    segment_t *s = ks->write ? segment_at(ks, ks->write) : NULL;
    if (s == NULL || s->cap - s->used < span) {
        size_t size = segment_size(ks);
        size_t cap = span > size ? span : size;
        if (!ks->evicting && make_room_for_segment(ks, cap, now) < 0)
            return NULL;
        /* compacting may have started a segment with room */
        s = ks->write ? segment_at(ks, ks->write) : NULL;
        if (s == NULL || s->cap - s->used < span) {
            s = segment_new(ks, cap);
            if (s == NULL)
                return NULL;
            /* a segment of its own is not written to again */
            if (cap == size)
                ks->write = s->id;
        }
    }
    size_t off = s->used;
    if (off >= SEGMENT_MAX && off != 0) {
        PyErr_SetString(PyExc_SystemError, "segments: offset beyond a segment");
        return NULL;
    }
    s->used += span;
    ks->written += span;
    UNPOISON(SEGMENT_DATA(s) + off, exact);
    *where = s;
    *offset = off;
    return (item_t *)(SEGMENT_DATA(s) + off);
}

/* the slot where the index starts looking for hash `h` (NULL: an empty
 * shard) */
static inline const entry_t *
home_slot(KeyspaceObject *ks, uint64_t h)
{
    unsigned shard = shard_of(h);
    size_t cap = ks->index[shard].cap;
    return cap ? &ks->index[shard].table[fp_of(h) & (cap - 1)] : NULL;
}

/* Ask for the home index slots of the next PREFETCH_BLOCK live items of
 * segment `s` from `off` on, so that the lookups of drain_oldest find them
 * in the cache; returns the offset after the last item looked at */
static size_t
prefetch_slots(KeyspaceObject *ks, segment_t *s, size_t off)
{
    for (int n = 0; off < s->used && n < PREFETCH_BLOCK;) {
        item_t *it = (item_t *)(SEGMENT_DATA(s) + off);
        off += item_span(it);
        if (it->bits & ITEM_DEAD)
            continue;
        const entry_t *slot = home_slot(ks, hash_key(ks->seed, it->data, it->klen));
        if (slot != NULL)
            __builtin_prefetch(slot);
        n++;
    }
    return off;
}

/* Drain the oldest segment from where its last drain stopped, until
 * `budget` bytes of it are done or it ends (then it is freed): its expired
 * items reclaimed, its ACTIVE ones (all live ones when compacting) copied
 * to the newest segment while the copy budget lasts, the rest evicted.
 * Drained a step a store, no store pays for a whole segment; the segment
 * being written is taken out whole (its copies could not go to itself). */
static int
drain_oldest(KeyspaceObject *ks, double now, int compact, size_t budget)
{
    segment_t *s = segment_at(ks, ks->oldest);
    int whole = s->id == ks->write;
    if (whole)
        segment_unlink(ks, s);
    ks->evicting++;
    int rc = 0;
    size_t off = s->drained;
    size_t end = whole || s->used - off <= budget ? s->used : off + budget;
    size_t prefetched = off;
    while (off < end) {
        if (off >= prefetched)
            prefetched = prefetch_slots(ks, s, off);
        item_t *it = (item_t *)(SEGMENT_DATA(s) + off);
        size_t span = item_span(it);
        if (!(it->bits & ITEM_DEAD)) {
            uint64_t h = hash_key(ks->seed, it->data, it->klen);
            Py_ssize_t pos = index_find_at(ks, h, s->id, off);
            if (pos < 0) {
                /* cannot happen: a live item is indexed */
                segment_drop(ks, s, it);
            }
            else if (item_expired(it, now)) {
                item_reclaim(ks, pos, it);
            }
            else if (rc == 0 && (compact || ((it->bits & ITEM_ACTIVE) && ks->copy_budget >= span))) {
                segment_t *to;
                size_t toOff;
                size_t exact = ITEM_HEADER + (size_t)it->klen + (size_t)it->vlen;
                item_t *copy = item_alloc(ks, exact, now, &to, &toOff);
                if (copy == NULL) {
                    rc = -1;
                    /* evicted below on the next pass of this loop */
                    continue;
                }
                memcpy(copy, it, exact);
                if (!compact) {
                    copy->bits &= (uint8_t)~ITEM_ACTIVE;
                    ks->copy_budget -= span;
                }
                segment_add(ks, to, copy);
                entry_set(entry_at(ks, pos), fp_of(h), to->id, toOff);
                segment_drop(ks, s, it);
            }
            else {
                ks->evictions++;
                if (!(it->bits & ITEM_FETCHED))
                    ks->evicted_unfetched++;
                item_unlink(ks, pos, it);
                /* what an eviction frees buys a second chance later */
                ks->copy_budget += COPIES_PER_EVICTED * span;
                if (ks->copy_budget > COPY_CAP)
                    ks->copy_budget = COPY_CAP;
            }
        }
        off += span;
    }
    s->drained = off;
    ks->evicting--;
    if (off >= s->used) {
        if (!whole)
            segment_unlink(ks, s);
        segment_free(ks, s);
    }
    return rc;
}

/* free every segment whose items have all expired or died */
static void
reclaim_expired_segments(KeyspaceObject *ks, double now)
{
    uint32_t id = ks->oldest;
    while (id) {
        segment_t *s = segment_at(ks, id);
        id = s->newer;
        int empty = s->live == 0 && s->id != ks->write;
        int expired = s->live > 0 && !s->forever && (double)s->max_exptime <= now;
        if (!empty && !expired)
            continue;
        for (size_t off = 0; off < s->used;) {
            item_t *it = (item_t *)(SEGMENT_DATA(s) + off);
            size_t span = item_span(it);
            if (!(it->bits & ITEM_DEAD)) {
                uint64_t h = hash_key(ks->seed, it->data, it->klen);
                Py_ssize_t pos = index_find_at(ks, h, s->id, off);
                if (pos >= 0)
                    item_reclaim(ks, pos, it);
                else
                    segment_drop(ks, s, it);
            }
            off += span;
        }
        segment_unlink(ks, s);
        segment_free(ks, s);
    }
}

/* dead space (what overwritten and deleted items left, not the unwritten
 * ends of segments, which compacting cannot shrink), less the part of the
 * oldest segment already drained: that part is on its way out */
static size_t
dead_space(KeyspaceObject *ks)
{
    size_t dead = ks->written - ks->live_span;
    size_t drained = ks->oldest ? segment_at(ks, ks->oldest)->drained : 0;
    return dead > drained ? dead - drained : 0;
}

/* whether the oldest segment's live items should move on rather than be
 * evicted: what is left of it to drain is mostly dead space */
static int
mostly_dead(KeyspaceObject *ks, segment_t *s)
{
    return s->live_span * 2 <= s->cap - s->drained && s->id != ks->write;
}

/* Keep the segments within segment_limit before adding one of `cap`, and
 * the dead space within an eighth of what the live items take plus two
 * segments.  make_room_ahead keeps both a segment short of these bounds,
 * a step a store; what it could not keep up with is drained here, whole
 * segments (a few a call for the dead space, so no call pays for many). */
static int
make_room_for_segment(KeyspaceObject *ks, size_t cap, double now)
{
    size_t limit = segment_limit(ks);
    while (ks->oldest && ks->segment_bytes + SEGMENT_HEADER + cap > limit) {
        ks->whole_drains++;
        if (drain_oldest(ks, now, mostly_dead(ks, segment_at(ks, ks->oldest)), SIZE_MAX) < 0)
            return -1;
    }
    size_t size = segment_size(ks);
    for (int turns = 0; turns < COMPACT_SEGMENTS; turns++) {
        if (!ks->oldest || ks->oldest == ks->write)
            break;
        if (dead_space(ks) <= ks->live_span / 8 + 2 * size)
            break;
        ks->whole_drains++;
        if (drain_oldest(ks, now, 1, SIZE_MAX) < 0)
            return -1;
    }
    return 0;
}

/* one step of draining the oldest segment while the dead space or the
 * segments are within a segment of make_room_for_segment's bounds: the
 * room the next segment needs, made ahead in steps of DRAIN_STEP bytes */
static int
make_room_ahead(KeyspaceObject *ks, double now)
{
    if (!ks->oldest || ks->oldest == ks->write)
        return 0;
    size_t size = segment_size(ks);
    if (dead_space(ks) > ks->live_span / 8 + size)
        return drain_oldest(ks, now, 1, DRAIN_STEP);
    if (ks->segment_bytes + 2 * (SEGMENT_HEADER + size) > segment_limit(ks))
        return drain_oldest(ks, now, mostly_dead(ks, segment_at(ks, ks->oldest)), DRAIN_STEP);
    return 0;
}

/* room for an item charged `charge` bytes: expired segments first, then
 * the oldest segments' items, a step at a time; then a step ahead */
static int
make_room(KeyspaceObject *ks, size_t charge, double now)
{
    if (now >= ks->next_scan) {
        reclaim_expired_segments(ks, now);
        ks->next_scan = now + 1;
    }
    while (ks->oldest && ks->bytes + charge > (size_t)ks->max_bytes) {
        if (drain_oldest(ks, now, 0, DRAIN_STEP) < 0)
            return -1;
    }
    return make_room_ahead(ks, now);
}

/* store a new item (the key is not in the index); 0, or -1 with an error */
static int
item_link(KeyspaceObject *ks, const unsigned char *key, size_t klen, uint64_t h,
          const unsigned char *value, size_t vlen, uint32_t flags, uint32_t exptime,
          uint64_t cas, uint32_t atime, uint8_t bits, double now)
{
    size_t charge = klen + vlen + ITEM_OVERHEAD;
    if (vlen > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_ValueError, "segments: value too large");
        return -1;
    }
    if (make_room(ks, charge, now) < 0)
        return -1;
    if (index_reserve(ks, h) < 0)
        return -1;
    size_t exact = ITEM_HEADER + klen + vlen;
    segment_t *s;
    size_t off;
    item_t *it = item_alloc(ks, exact, now, &s, &off);
    if (it == NULL)
        return -1;
    it->cas = cas;
    it->exptime = exptime;
    it->atime = atime;
    it->flags = flags;
    it->vlen = (uint32_t)vlen;
    it->klen = (uint8_t)klen;
    it->bits = bits & HOT;
    memcpy(it->data, key, klen);
    if (vlen)
        memcpy(it->data + klen, value, vlen);
    segment_add(ks, s, it);
    /* item_alloc's evictions only removed entries: the room reserved
     * above is still there */
    unsigned shard = shard_of(h);
    entry_t e;
    entry_set(&e, fp_of(h), s->id, off);
    index_place(ks->index[shard].table, ks->index[shard].cap, &e);
    ks->index[shard].used++;
    ks->bytes += charge;
    ks->items++;
    return 0;
}

static void
free_everything(KeyspaceObject *ks)
{
    while (ks->oldest) {
        segment_t *s = segment_at(ks, ks->oldest);
        segment_unlink(ks, s);
        segment_free(ks, s);
    }
    ks->write = 0;
    for (unsigned shard = 0; shard < INDEX_SHARDS; shard++) {
        big_free(ks->index[shard].table, ks->index[shard].cap * sizeof(entry_t));
        ks->index[shard].table = NULL;
        ks->index[shard].cap = ks->index[shard].used = 0;
    }
    ks->bytes = 0;
    ks->items = 0;
    ks->live_span = 0;
    ks->written = 0;
}

/* -- the Python type ------------------------------------------------------ */

static int
now_of(KeyspaceObject *ks, double *now)
{
    PyObject *t = PyObject_CallNoArgs(ks->seconds);
    if (t == NULL)
        return -1;
    double v = PyFloat_AsDouble(t);
    Py_DECREF(t);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *now = v;
    return 0;
}

static int
ready(KeyspaceObject *ks)
{
    if (!ks->ready) {
        PyErr_SetString(PyExc_RuntimeError, "segments: keyspace not initialised");
        return 0;
    }
    return 1;
}

/* a key argument as a buffer of 1 to 255 bytes */
static int
key_of(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len < 1 || view->len > 255) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "segments: a key is 1 to 255 bytes");
        return -1;
    }
    return 0;
}

static int
u64_of(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int
u32_of(PyObject *obj, uint32_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (v > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_OverflowError, "segments: flags beyond 32 bits");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static uint64_t
next_cas(KeyspaceObject *ks)
{
    uint64_t cas = ks->counter->next;
    ks->counter->next = cas + 1 ? cas + 1 : 1;
    return cas;
}

static PyObject *
result_of(PyObject *table, int value)
{
    if (table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "segments: bind_results was not called");
        return NULL;
    }
    PyObject *r = PyTuple_GET_ITEM(table, value);
    Py_INCREF(r);
    return r;
}

/* the hit: the key found, its expiry checked, FETCHED and ACTIVE marked;
 * NULL on a miss, or if `now` could not be read (*failed).  The clock is
 * read at most once per call, and only for an item that needs it; it is
 * Python code, so the key is looked up again after it */
static item_t *
find_hit(KeyspaceObject *ks, const unsigned char *key, size_t klen, double *now, int *have,
         int *failed, Py_ssize_t *where)
{
    uint64_t h = hash_key(ks->seed, key, klen);
    item_t *it;
    Py_ssize_t pos = index_find(ks, key, klen, h, &it);
    if (pos < 0)
        return NULL;
    if ((it->bits & HOT) == HOT && it->exptime == 0) {
        *where = pos;
        return it;
    }
    if (!*have) {
        if (now_of(ks, now) < 0) {
            *failed = 1;
            return NULL;
        }
        *have = 1;
        pos = index_find(ks, key, klen, h, &it);
        if (pos < 0)
            return NULL;
    }
    if (item_expired(it, *now)) {
        ks->get_expired++;
        item_reclaim(ks, pos, it);
        return NULL;
    }
    if ((it->bits & HOT) != HOT) {
        it->bits |= HOT;
        it->atime = clock_seconds(*now);
    }
    *where = pos;
    return it;
}

static PyObject *
ks_get(KeyspaceObject *ks, PyObject *key)
{
    if (!ready(ks))
        return NULL;
    Py_buffer k;
    if (key_of(key, &k) < 0)
        return NULL;
    double now = 0;
    int have = 0, failed = 0;
    Py_ssize_t pos;
    item_t *it = find_hit(ks, k.buf, (size_t)k.len, &now, &have, &failed, &pos);
    PyBuffer_Release(&k);
    if (failed)
        return NULL;
    if (it == NULL)
        Py_RETURN_NONE;
    return pack_item(it);
}

/* a multi-get's hits of at least this many value bytes are copied once
 * per request, however often it names their key */
#define SHARED_HIT 1024


/* Ask for the home index slot of each of `count` keys, then for the item
 * of each slot whose tag matches: the lookups that follow find them in
 * the cache, instead of waiting on memory one key after the other.  Only
 * hints: what they read is checked by the lookup itself. */
static void
prefetch_hits(KeyspaceObject *ks, PyObject **keys, Py_ssize_t count)
{
    const entry_t *slots[PREFETCH_BLOCK];
    uint32_t fps[PREFETCH_BLOCK];
    for (Py_ssize_t j = 0; j < count; j++) {
        slots[j] = NULL;
        PyObject *key = keys[j];
        if (!PyBytes_CheckExact(key))
            continue;
        uint64_t h = hash_key(ks->seed, (const unsigned char *)PyBytes_AS_STRING(key),
                              (size_t)PyBytes_GET_SIZE(key));
        slots[j] = home_slot(ks, h);
        if (slots[j] == NULL)
            continue;
        fps[j] = fp_of(h);
        __builtin_prefetch(slots[j]);
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        const entry_t *e = slots[j];
        if (e == NULL || e->seg == SLOT_EMPTY || entry_fp(e) != fps[j])
            continue;
        const unsigned char *it = (const unsigned char *)entry_item(ks, e);
        __builtin_prefetch(it);
        __builtin_prefetch(it + 64);
    }
}

static PyObject *
ks_getMany(KeyspaceObject *ks, PyObject *keys)
{
    if (!ready(ks))
        return NULL;
    PyObject *seq = PySequence_Fast(keys, "getMany: keys must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *found = PyList_New(n);
    if (found == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    double now = 0;
    int have = 0, failed = 0;
    /* A hit is a copy (pack_item), so a key named again would be copied
     * again: one get line naming a 1 MiB key 65,000 times would make 65 GB.
     * Big hits are kept by key and named again by reference. */
    PyObject *big = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i % PREFETCH_BLOCK == 0)
            prefetch_hits(ks, PySequence_Fast_ITEMS(seq) + i,
                          n - i < PREFETCH_BLOCK ? n - i : PREFETCH_BLOCK);
        PyObject *key = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *value = NULL;
        if (big != NULL && PyBytes_CheckExact(key)) {
            value = PyDict_GetItemWithError(big, key);
            if (value == NULL && PyErr_Occurred())
                goto error;
        }
        if (value != NULL) {
            Py_INCREF(value);
            PyList_SET_ITEM(found, i, value);
            continue;
        }
        Py_buffer k;
        if (key_of(key, &k) < 0)
            goto error;
        Py_ssize_t pos;
        item_t *it = find_hit(ks, k.buf, (size_t)k.len, &now, &have, &failed, &pos);
        PyBuffer_Release(&k);
        if (failed)
            goto error;
        if (it == NULL) {
            value = Py_None;
            Py_INCREF(value);
        }
        else if ((value = pack_item(it)) == NULL)
            goto error;
        PyList_SET_ITEM(found, i, value);
        if (it != NULL && it->vlen >= SHARED_HIT && PyBytes_CheckExact(key)) {
            if (big == NULL && (big = PyDict_New()) == NULL)
                goto error;
            if (PyDict_SetItem(big, key, value) < 0)
                goto error;
        }
    }
    Py_XDECREF(big);
    Py_DECREF(seq);
    return found;
error:
    Py_XDECREF(big);
    Py_DECREF(found);
    Py_DECREF(seq);
    return NULL;
}

/* the live item under `key` (an expired one reclaimed), -1 if none */
static Py_ssize_t
live(KeyspaceObject *ks, const unsigned char *key, size_t klen, uint64_t h, double now, item_t **out)
{
    item_t *it;
    Py_ssize_t pos = index_find(ks, key, klen, h, &it);
    if (pos < 0)
        return -1;
    if (item_expired(it, now)) {
        item_reclaim(ks, pos, it);
        return -1;
    }
    *out = it;
    return pos;
}

static PyObject *
ks_peek(KeyspaceObject *ks, PyObject *key)
{
    if (!ready(ks))
        return NULL;
    double now;
    if (now_of(ks, &now) < 0)
        return NULL;
    Py_buffer k;
    if (key_of(key, &k) < 0)
        return NULL;
    uint64_t h = hash_key(ks->seed, k.buf, (size_t)k.len);
    item_t *it;
    Py_ssize_t pos = live(ks, k.buf, (size_t)k.len, h, now, &it);
    PyBuffer_Release(&k);
    if (pos < 0)
        Py_RETURN_NONE;
    return pack_item(it);
}

static PyObject *
ks_touch(KeyspaceObject *ks, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready(ks))
        return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "touch(key, exptime)");
        return NULL;
    }
    double exptime = PyFloat_AsDouble(args[1]);
    if (exptime == -1.0 && PyErr_Occurred())
        return NULL;
    Py_buffer k;
    if (key_of(args[0], &k) < 0)
        return NULL;
    double now = 0;
    int have = 0, failed = 0;
    Py_ssize_t pos;
    item_t *it = find_hit(ks, k.buf, (size_t)k.len, &now, &have, &failed, &pos);
    PyBuffer_Release(&k);
    if (failed)
        return NULL;
    if (it == NULL)
        Py_RETURN_NONE;
    it->exptime = whole_seconds(exptime);
    segment_note_exptime(ks->slots[entry_seg(entry_at(ks, pos))], it->exptime);
    return pack_item(it);
}

/* the store itself (store() and delta()'s creation); the result code, or
 * -1 with an error set */
static int
do_store(KeyspaceObject *ks, int mode, const unsigned char *key, size_t klen,
         const unsigned char *value, size_t vlen, uint32_t flags, double exptime,
         uint64_t cas, double now, uint64_t *newCas)
{
    uint64_t h = hash_key(ks->seed, key, klen);
    item_t *old = NULL;
    Py_ssize_t pos = live(ks, key, klen, h, now, &old);
    unsigned char *joined = NULL;
    uint32_t wholeExptime;
    int rc;
    *newCas = 0;
    if (mode == MODE_SET) {
        if (cas) {
            if (pos < 0)
                return R_NOT_FOUND;
            if (old->cas != cas)
                return R_EXISTS;
        }
    }
    else if (mode == MODE_ADD) {
        if (pos >= 0) {
            /* memcached bumps the existing item on a failed add */
            if (!(old->bits & ITEM_ACTIVE)) {
                old->bits |= ITEM_ACTIVE;
                old->atime = clock_seconds(now);
            }
            return R_NOT_STORED;
        }
    }
    else if (mode == MODE_CAS) {
        if (pos < 0)
            return R_NOT_FOUND;
        if (old->cas != cas)
            return R_EXISTS;
    }
    else if (mode == MODE_REPLACE || mode == MODE_APPEND || mode == MODE_PREPEND) {
        if (pos < 0)
            return R_NOT_STORED;
        if (cas && old->cas != cas)
            return R_EXISTS;
        if (mode != MODE_REPLACE) {
            size_t oldLen = old->vlen;
            if (vlen > (size_t)PY_SSIZE_T_MAX - oldLen - klen)
                return R_NOT_STORED;
            size_t total = oldLen + vlen;
            if (klen + total > (size_t)ks->max_item_size)
                /* memcached cannot allocate the grown item: not stored */
                return R_NOT_STORED;
            joined = PyMem_Malloc(total ? total : 1);
            if (joined == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            const unsigned char *oldValue = old->data + old->klen;
            if (mode == MODE_APPEND) {
                memcpy(joined, oldValue, oldLen);
                if (vlen)
                    memcpy(joined + oldLen, value, vlen);
            }
            else {
                if (vlen)
                    memcpy(joined, value, vlen);
                memcpy(joined + vlen, oldValue, oldLen);
            }
            value = joined;
            vlen = total;
            flags = old->flags;
            exptime = old->exptime;
        }
        else if (klen + vlen > (size_t)ks->max_item_size) {
            return R_NOT_STORED;
        }
    }
    else {
        PyErr_SetString(PyExc_ValueError, "segments: unknown store mode");
        return -1;
    }
    *newCas = next_cas(ks);
    if (exptime != 0 && exptime <= now) {
        /* stored and immediately expired, as memcached does */
        if (pos >= 0)
            item_unlink(ks, pos, old);
        PyMem_Free(joined);
        return R_STORED;
    }
    wholeExptime = whole_seconds(exptime);
    size_t charge = klen + vlen + ITEM_OVERHEAD;
    uint8_t bits = 0;
    if (pos >= 0) {
        /* replaced where it fits: ACTIVE, so the tail spares it once */
        if (ks->bytes - item_charge(old) + charge <= (size_t)ks->max_bytes)
            bits = ITEM_ACTIVE;
        item_unlink(ks, pos, old);
    }
    if (charge > (size_t)ks->max_bytes) {
        PyMem_Free(joined);
        *newCas = 0;
        return R_NO_MEMORY;
    }
    rc = item_link(ks, key, klen, h, value, vlen, flags, wholeExptime, *newCas,
                   clock_seconds(now), bits, now);
    PyMem_Free(joined);
    if (rc < 0)
        return -1;
    ks->total_items++;
    return R_STORED;
}

static PyObject *
ks_store(KeyspaceObject *ks, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready(ks))
        return NULL;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "store(mode, key, value, flags, exptime, cas)");
        return NULL;
    }
    long mode = PyLong_AsLong(args[0]);
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    uint32_t flags;
    uint64_t cas;
    if (u32_of(args[3], &flags) < 0 || u64_of(args[5], &cas) < 0)
        return NULL;
    double exptime = PyFloat_AsDouble(args[4]);
    if (exptime == -1.0 && PyErr_Occurred())
        return NULL;
    double now;
    if (now_of(ks, &now) < 0)
        return NULL;
    Py_buffer k, v;
    if (key_of(args[1], &k) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &v, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&k);
        return NULL;
    }
    uint64_t newCas;
    int rc = do_store(ks, (int)mode, k.buf, (size_t)k.len, v.buf, (size_t)v.len, flags,
                      exptime, cas, now, &newCas);
    PyBuffer_Release(&v);
    PyBuffer_Release(&k);
    if (rc < 0)
        return NULL;
    PyObject *result = result_of(store_results, rc);
    if (result == NULL)
        return NULL;
    PyObject *c = PyLong_FromUnsignedLongLong(newCas);
    if (c == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    PyObject *out = PyTuple_Pack(2, result, c);
    Py_DECREF(result);
    Py_DECREF(c);
    return out;
}

static PyObject *
ks_delete(KeyspaceObject *ks, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready(ks))
        return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "delete(key, cas)");
        return NULL;
    }
    uint64_t cas;
    if (u64_of(args[1], &cas) < 0)
        return NULL;
    double now;
    if (now_of(ks, &now) < 0)
        return NULL;
    Py_buffer k;
    if (key_of(args[0], &k) < 0)
        return NULL;
    uint64_t h = hash_key(ks->seed, k.buf, (size_t)k.len);
    item_t *it;
    Py_ssize_t pos = live(ks, k.buf, (size_t)k.len, h, now, &it);
    PyBuffer_Release(&k);
    int rc;
    if (pos < 0)
        rc = D_NOT_FOUND;
    else if (cas && it->cas != cas)
        rc = D_EXISTS;
    else {
        item_unlink(ks, pos, it);
        rc = D_DELETED;
    }
    return result_of(delete_results, rc);
}

/* _parseCounter: digits, then the spaces a shrinking decr leaves; -1 if
 * not a number below 2**64 */
static int
parse_counter(const unsigned char *p, size_t n, uint64_t *out)
{
    while (n > 0 && p[n - 1] == ' ')
        n--;
    if (n == 0 || n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static PyObject *
delta_answer(int rc, uint64_t number, uint64_t cas)
{
    PyObject *result = result_of(delta_results, rc);
    if (result == NULL)
        return NULL;
    PyObject *n = PyLong_FromUnsignedLongLong(number);
    PyObject *c = PyLong_FromUnsignedLongLong(cas);
    PyObject *out = NULL;
    if (n != NULL && c != NULL)
        out = PyTuple_Pack(3, result, n, c);
    Py_DECREF(result);
    Py_XDECREF(n);
    Py_XDECREF(c);
    return out;
}

static PyObject *
ks_delta(KeyspaceObject *ks, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready(ks))
        return NULL;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "delta(key, incr, delta, initial, exptime, cas)");
        return NULL;
    }
    int incr = PyObject_IsTrue(args[1]);
    if (incr < 0)
        return NULL;
    /* a decrement larger than any value floors at 0; an increment wraps */
    uint64_t delta;
    int huge = 0;
    if (incr) {
        if (!PyLong_Check(args[2])) {
            PyErr_SetString(PyExc_TypeError, "delta: an int");
            return NULL;
        }
        delta = (uint64_t)PyLong_AsUnsignedLongLongMask(args[2]);
        if (delta == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    else if (u64_of(args[2], &delta) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        PyObject *zero = PyLong_FromLong(0);
        int negative = zero == NULL ? -1 : PyObject_RichCompareBool(args[2], zero, Py_LT);
        Py_XDECREF(zero);
        if (negative != 0) {
            if (negative < 0)
                return NULL;
            PyErr_SetString(PyExc_ValueError, "delta: not negative");
            return NULL;
        }
        huge = 1;
        delta = 0;
    }
    int create = args[3] != Py_None;
    uint64_t initial = 0;
    if (create && u64_of(args[3], &initial) < 0)
        return NULL;
    double exptime = PyFloat_AsDouble(args[4]);
    if (exptime == -1.0 && PyErr_Occurred())
        return NULL;
    uint64_t cas;
    if (u64_of(args[5], &cas) < 0)
        return NULL;
    double now;
    if (now_of(ks, &now) < 0)
        return NULL;
    Py_buffer k;
    if (key_of(args[0], &k) < 0)
        return NULL;
    const unsigned char *key = k.buf;
    size_t klen = (size_t)k.len;
    uint64_t h = hash_key(ks->seed, key, klen);
    item_t *it;
    PyObject *out = NULL;
    Py_ssize_t pos = live(ks, key, klen, h, now, &it);
    if (pos < 0) {
        if (!create) {
            out = delta_answer(DX_NOT_FOUND, 0, 0);
            goto done;
        }
        char digits[24];
        int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)initial);
        uint64_t newCas;
        int rc = do_store(ks, MODE_ADD, key, klen, (const unsigned char *)digits, (size_t)n, 0,
                          exptime, 0, now, &newCas);
        if (rc < 0)
            goto done;
        if (rc != R_STORED)
            out = delta_answer(DX_NO_MEMORY, 0, 0);
        else
            out = delta_answer(DX_OK, initial, newCas);
        goto done;
    }
    if (cas && it->cas != cas) {
        out = delta_answer(DX_EXISTS, 0, 0);
        goto done;
    }
    uint64_t number;
    if (parse_counter(it->data + it->klen, it->vlen, &number) < 0) {
        out = delta_answer(DX_NON_NUMERIC, 0, 0);
        goto done;
    }
    if (incr)
        number += delta;  /* wraps at 2**64 */
    else
        number = (!huge && delta < number) ? number - delta : 0;
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)number);
    size_t len = (size_t)n;
    if (len < it->vlen) {
        /* memcached rewrites in place and pads with spaces */
        memset(it->data + it->klen + len, ' ', it->vlen - len);
        len = it->vlen;
    }
    uint64_t newCas = next_cas(ks);
    if (len == it->vlen) {
        memcpy(it->data + it->klen, digits, (size_t)n);
        it->cas = newCas;
        it->bits |= HOT;
        it->atime = clock_seconds(now);
    }
    else {
        /* grown: a new item, the old one's flags and expiry */
        uint32_t flags = it->flags, oldExptime = it->exptime;
        item_unlink(ks, pos, it);
        if (item_link(ks, key, klen, h, (const unsigned char *)digits, len, flags, oldExptime,
                      newCas, clock_seconds(now), HOT, now) < 0)
            goto done;
    }
    out = delta_answer(DX_OK, number, newCas);
done:
    PyBuffer_Release(&k);
    return out;
}

static PyObject *
ks_flushNow(KeyspaceObject *ks, PyObject *unused)
{
    if (!ready(ks))
        return NULL;
    free_everything(ks);
    if (index_reset(ks) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int
put_stat(PyObject *d, const char *name, unsigned long long value)
{
    PyObject *v = PyLong_FromUnsignedLongLong(value);
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, name, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *
ks_stats(KeyspaceObject *ks, PyObject *unused)
{
    if (!ready(ks))
        return NULL;
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    if (put_stat(d, "curr_items", ks->items) < 0
        || put_stat(d, "total_items", ks->total_items) < 0
        || put_stat(d, "bytes", ks->bytes) < 0
        || put_stat(d, "limit_maxbytes", (unsigned long long)ks->max_bytes) < 0
        || put_stat(d, "evictions", ks->evictions) < 0
        || put_stat(d, "evicted_unfetched", ks->evicted_unfetched) < 0
        || put_stat(d, "expired_unfetched", ks->expired_unfetched) < 0
        || put_stat(d, "reclaimed", ks->reclaimed) < 0
        || put_stat(d, "get_expired", ks->get_expired) < 0
        || put_stat(d, "get_flushed", ks->get_flushed) < 0
        || put_stat(d, "expired", ks->reclaimed) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *
ks_segmentStats(KeyspaceObject *ks, PyObject *unused)
{
    if (!ready(ks))
        return NULL;
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    size_t live = 0, used = 0, slots = 0;
    for (unsigned shard = 0; shard < INDEX_SHARDS; shard++)
        slots += ks->index[shard].cap;
    for (uint32_t id = ks->oldest; id; id = segment_at(ks, id)->newer) {
        live += segment_at(ks, id)->live_span;
        used += segment_at(ks, id)->used;
    }
    if (put_stat(d, "segments", ks->segments) < 0
        || put_stat(d, "segment_bytes", ks->segment_bytes) < 0
        || put_stat(d, "segment_size", segment_size(ks)) < 0
        || put_stat(d, "segment_limit", segment_limit(ks)) < 0
        || put_stat(d, "live_bytes", live) < 0
        || put_stat(d, "live_span", ks->live_span) < 0
        || put_stat(d, "written", ks->written) < 0
        || put_stat(d, "written_bytes", used) < 0
        || put_stat(d, "whole_drains", ks->whole_drains) < 0
        || put_stat(d, "index_slots", slots) < 0
        || put_stat(d, "index_bytes", slots * sizeof(entry_t)) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *
ks_resetStats(KeyspaceObject *ks, PyObject *unused)
{
    ks->total_items = ks->evictions = ks->evicted_unfetched = ks->expired_unfetched = 0;
    ks->reclaimed = ks->get_expired = ks->get_flushed = 0;
    Py_RETURN_NONE;
}

static PyObject *
ks_configure(KeyspaceObject *ks, PyObject *args)
{
    if (!ready(ks))
        return NULL;
    Py_ssize_t maxBytes, maxItemSize;
    if (!PyArg_ParseTuple(args, "nn:configure", &maxBytes, &maxItemSize))
        return NULL;
    if (maxBytes < 0 || maxItemSize < 0) {
        PyErr_SetString(PyExc_ValueError, "configure: limits are not negative");
        return NULL;
    }
    double now;
    if (now_of(ks, &now) < 0)
        return NULL;
    ks->max_bytes = maxBytes;
    ks->max_item_size = maxItemSize;
    if (make_room(ks, 0, now) < 0)
        return NULL;
    if (make_room_for_segment(ks, 0, now) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* whether segments were freed since `epoch` (Python code ran meanwhile
 * and changed the keyspace): an error then */
static int
changed(KeyspaceObject *ks, uint64_t epoch)
{
    if (ks->epoch == epoch)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "segments: the keyspace changed during the walk");
    return 1;
}

static PyObject *
ks_keys(KeyspaceObject *ks, PyObject *unused)
{
    if (!ready(ks))
        return NULL;
    double now;
    if (now_of(ks, &now) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    uint64_t epoch = ks->epoch;
    for (uint32_t id = ks->oldest; id; id = segment_at(ks, id)->newer) {
        segment_t *s = segment_at(ks, id);
        for (size_t off = 0; off < s->used;) {
            item_t *it = (item_t *)(SEGMENT_DATA(s) + off);
            off += item_span(it);
            if (it->bits & ITEM_DEAD || item_expired(it, now))
                continue;
            PyObject *key = PyBytes_FromStringAndSize((const char *)it->data, it->klen);
            if (key == NULL || PyList_Append(out, key) < 0) {
                Py_XDECREF(key);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(key);
            if (changed(ks, epoch)) {
                Py_DECREF(out);
                return NULL;
            }
        }
    }
    return out;
}

/*
 * snapshotBatch(segment, offset, count) -> (pairs, segment, offset)
 *
 * Up to `count` live items as (key, item), the oldest segment first, from
 * the cursor (segment 0: the start); the cursor of the rest (segment 0:
 * done).  The keyspace must not change between calls.
 */
static PyObject *
ks_snapshotBatch(KeyspaceObject *ks, PyObject *args)
{
    if (!ready(ks))
        return NULL;
    unsigned int slot;
    Py_ssize_t offset, count;
    if (!PyArg_ParseTuple(args, "Inn:snapshotBatch", &slot, &offset, &count))
        return NULL;
    double now;
    if (now_of(ks, &now) < 0)
        return NULL;
    segment_t *s;
    size_t off;
    if (slot == 0) {
        s = ks->oldest ? segment_at(ks, ks->oldest) : NULL;
        off = 0;
    }
    else {
        if (slot >= ks->nslots || ks->slots[slot] == NULL || offset < 0
            || (size_t)offset > ks->slots[slot]->used || offset % 8) {
            PyErr_SetString(PyExc_ValueError, "snapshotBatch: not a cursor of this keyspace");
            return NULL;
        }
        s = ks->slots[slot];
        off = (size_t)offset;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    uint64_t epoch = ks->epoch;
    while (s != NULL && PyList_GET_SIZE(out) < count) {
        if (off >= s->used) {
            s = s->newer ? segment_at(ks, s->newer) : NULL;
            off = 0;
            continue;
        }
        item_t *it = (item_t *)(SEGMENT_DATA(s) + off);
        off += item_span(it);
        if (it->bits & ITEM_DEAD || item_expired(it, now))
            continue;
        /* the segments are read before anything the collector tracks is
         * made (a collection runs finalizers, which may change the
         * keyspace: then the walk stops) */
        PyObject *key = PyBytes_FromStringAndSize((const char *)it->data, it->klen);
        PyObject *item = key == NULL ? NULL : pack_item(it);
        PyObject *pair = item == NULL ? NULL : PyTuple_Pack(2, key, item);
        Py_XDECREF(key);
        Py_XDECREF(item);
        if (pair == NULL || PyList_Append(out, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(pair);
        if (changed(ks, epoch)) {
            Py_DECREF(out);
            return NULL;
        }
    }
    if (s != NULL && off >= s->used) {
        s = s->newer ? segment_at(ks, s->newer) : NULL;
        off = 0;
    }
    return Py_BuildValue("(NIn)", out, s ? s->id : 0u, (Py_ssize_t)off);
}

/*
 * restoreItem(key, value, flags, exptime, cas, atime, bits) -> bool
 *
 * Link a restored item as the newest (memory store's restoreItems): the
 * expired and the too large skipped, the oldest evicted for room.
 */
static PyObject *
ks_restoreItem(KeyspaceObject *ks, PyObject *args)
{
    if (!ready(ks))
        return NULL;
    Py_buffer k, v;
    unsigned int flags, exptime, atime, bits;
    unsigned long long cas;
    if (!PyArg_ParseTuple(args, "y*y*IIKII:restoreItem", &k, &v, &flags, &exptime, &cas,
                          &atime, &bits))
        return NULL;
    PyObject *out = NULL;
    double now;
    if (k.len < 1 || k.len > 255) {
        PyErr_SetString(PyExc_ValueError, "segments: a key is 1 to 255 bytes");
        goto done;
    }
    if (now_of(ks, &now) < 0)
        goto done;
    size_t charge = (size_t)k.len + (size_t)v.len + ITEM_OVERHEAD;
    if ((exptime != 0 && (double)exptime <= now)
        || charge - ITEM_OVERHEAD > (size_t)ks->max_item_size
        || charge > (size_t)ks->max_bytes) {
        out = Py_False;
        Py_INCREF(out);
        goto done;
    }
    uint64_t h = hash_key(ks->seed, k.buf, (size_t)k.len);
    item_t *old;
    Py_ssize_t pos = index_find(ks, k.buf, (size_t)k.len, h, &old);
    if (pos >= 0)
        item_unlink(ks, pos, old);
    if (item_link(ks, k.buf, (size_t)k.len, h, v.buf, (size_t)v.len, flags, exptime, cas,
                  atime, (uint8_t)(bits & HOT), now) < 0)
        goto done;
    out = Py_True;
    Py_INCREF(out);
done:
    PyBuffer_Release(&k);
    PyBuffer_Release(&v);
    return out;
}

static PyObject *
ks_useCasCounter(KeyspaceObject *ks, PyObject *counter);

static PyTypeObject CounterType;

static PyObject *
ks_useCasCounter(KeyspaceObject *ks, PyObject *counter)
{
    if (!PyObject_TypeCheck(counter, &CounterType)) {
        PyErr_SetString(PyExc_TypeError, "useCasCounter: a CasCounter");
        return NULL;
    }
    Py_INCREF(counter);
    Py_XSETREF(ks->counter, (CounterObject *)counter);
    Py_RETURN_NONE;
}

static int
ks_init(KeyspaceObject *ks, PyObject *args, PyObject *kwds)
{
    PyObject *seconds, *counter;
    Py_ssize_t maxBytes, maxItemSize;
    unsigned long long seed;
    static char *names[] = {"seconds", "counter", "maxBytes", "maxItemSize", "seed", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!nnK:Keyspace", names, &seconds,
                                     &CounterType, &counter, &maxBytes, &maxItemSize, &seed))
        return -1;
    if (ks->ready) {
        PyErr_SetString(PyExc_RuntimeError, "segments: keyspace initialised twice");
        return -1;
    }
    if (!PyCallable_Check(seconds) || maxBytes < 0 || maxItemSize < 0) {
        PyErr_SetString(PyExc_ValueError, "Keyspace: a callable clock and limits not negative");
        return -1;
    }
    Py_INCREF(seconds);
    Py_XSETREF(ks->seconds, seconds);
    Py_INCREF(counter);
    Py_XSETREF(ks->counter, (CounterObject *)counter);
    ks->seed = (uint64_t)seed;
    ks->max_bytes = maxBytes;
    ks->max_item_size = maxItemSize;
    ks->copy_budget = COPY_CAP;
    if (index_reset(ks) < 0)
        return -1;
    ks->ready = 1;
    return 0;
}

static int
ks_traverse(KeyspaceObject *ks, visitproc visit, void *arg)
{
    Py_VISIT(ks->seconds);
    Py_VISIT(ks->counter);
    return 0;
}

static int
ks_clear(KeyspaceObject *ks)
{
    Py_CLEAR(ks->seconds);
    Py_CLEAR(ks->counter);
    return 0;
}

static void
ks_dealloc(KeyspaceObject *ks)
{
    PyTypeObject *tp = Py_TYPE(ks);
    PyObject_GC_UnTrack(ks);
    ks_clear(ks);
    free_everything(ks);
    PyMem_Free(ks->slots);
    PyMem_Free(ks->free_slots);
    ks->slots = NULL;
    ks->free_slots = NULL;
    /* a subclass's dealloc releases its (heap) type itself */
    tp->tp_free((PyObject *)ks);
}

static PyMethodDef ks_methods[] = {
    {"get", (PyCFunction)ks_get, METH_O, "get(key) -> item or None"},
    {"getMany", (PyCFunction)ks_getMany, METH_O, "getMany(keys) -> [item or None]"},
    {"peek", (PyCFunction)ks_peek, METH_O, "peek(key) -> item or None, not bumped"},
    {"touch", (PyCFunction)(void (*)(void))ks_touch, METH_FASTCALL, "touch(key, exptime)"},
    {"store", (PyCFunction)(void (*)(void))ks_store, METH_FASTCALL,
     "store(mode, key, value, flags, exptime, cas) -> (StoreResult, cas)"},
    {"delete", (PyCFunction)(void (*)(void))ks_delete, METH_FASTCALL, "delete(key, cas)"},
    {"delta", (PyCFunction)(void (*)(void))ks_delta, METH_FASTCALL,
     "delta(key, incr, delta, initial, exptime, cas) -> (DeltaResult, value, cas)"},
    {"flushNow", (PyCFunction)ks_flushNow, METH_NOARGS, "drop every item, free every segment"},
    {"stats", (PyCFunction)ks_stats, METH_NOARGS, "memcached's counters"},
    {"segmentStats", (PyCFunction)ks_segmentStats, METH_NOARGS, "the segments and the index"},
    {"resetStats", (PyCFunction)ks_resetStats, METH_NOARGS, "zero the cumulative counters"},
    {"configure", (PyCFunction)ks_configure, METH_VARARGS, "configure(maxBytes, maxItemSize)"},
    {"keys", (PyCFunction)ks_keys, METH_NOARGS, "the live keys"},
    {"snapshotBatch", (PyCFunction)ks_snapshotBatch, METH_VARARGS,
     "snapshotBatch(segment, offset, count) -> (pairs, segment, offset)"},
    {"restoreItem", (PyCFunction)ks_restoreItem, METH_VARARGS,
     "restoreItem(key, value, flags, exptime, cas, atime, bits) -> bool"},
    {"useCasCounter", (PyCFunction)ks_useCasCounter, METH_O, "take CAS uniques from a counter"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ks_members[] = {
    {"maxBytes", T_PYSSIZET, offsetof(KeyspaceObject, max_bytes), READONLY, "memory limit"},
    {"maxItemSize", T_PYSSIZET, offsetof(KeyspaceObject, max_item_size), READONLY,
     "key+value limit"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject KeyspaceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "memcachier._segments.Keyspace",
    .tp_basicsize = sizeof(KeyspaceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Keyspace(seconds, counter, maxBytes, maxItemSize, seed): one cache's items in segments",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ks_init,
    .tp_dealloc = (destructor)ks_dealloc,
    .tp_traverse = (traverseproc)ks_traverse,
    .tp_clear = (inquiry)ks_clear,
    .tp_methods = ks_methods,
    .tp_members = ks_members,
};

static int
counter_init(CounterObject *c, PyObject *args, PyObject *kwds)
{
    unsigned long long start = 1;
    static char *names[] = {"start", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|K:CasCounter", names, &start))
        return -1;
    c->next = start ? start : 1;
    return 0;
}

static PyMemberDef counter_members[] = {
    {"next", T_ULONGLONG, offsetof(CounterObject, next), 0, "the next CAS unique handed out"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "memcachier._segments.CasCounter",
    .tp_basicsize = sizeof(CounterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CasCounter(start=1): CAS uniques shared by a store's keyspaces",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)counter_init,
    .tp_members = counter_members,
};

/* bind_results(StoreResult members, DeleteResult members, DeltaResult
 * members), each a tuple indexed by value */
static PyObject *
bind_results(PyObject *self, PyObject *args)
{
    PyObject *s, *d, *x;
    if (!PyArg_ParseTuple(args, "O!O!O!:bind_results", &PyTuple_Type, &s, &PyTuple_Type, &d,
                          &PyTuple_Type, &x))
        return NULL;
    if (PyTuple_GET_SIZE(s) != R_NO_MEMORY + 1 || PyTuple_GET_SIZE(d) != D_EXISTS + 1
        || PyTuple_GET_SIZE(x) != DX_EXISTS + 1) {
        PyErr_SetString(PyExc_ValueError, "bind_results: every member of each enum, by value");
        return NULL;
    }
    Py_INCREF(s);
    Py_XSETREF(store_results, s);
    Py_INCREF(d);
    Py_XSETREF(delete_results, d);
    Py_INCREF(x);
    Py_XSETREF(delta_results, x);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"bind_results", bind_results, METH_VARARGS, "the result enums' members, by value"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "memcachier._segments",
    "One cache's items in segments, outside Python objects (memcachier.stores.segment).",
    -1, module_methods,
};

PyMODINIT_FUNC
PyInit__segments(void)
{
    _Static_assert(offsetof(item_t, data) == 26, "item header is 26 bytes");
    _Static_assert(SEGMENT_MAX >> 3 <= (1u << OFF_BITS), "offsets fit the index");
    if (PyType_Ready(&KeyspaceType) < 0 || PyType_Ready(&CounterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&KeyspaceType);
    if (PyModule_AddObject(m, "Keyspace", (PyObject *)&KeyspaceType) < 0) {
        Py_DECREF(&KeyspaceType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CounterType);
    if (PyModule_AddObject(m, "CasCounter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(&CounterType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ITEM_CAS_AT", ITEM_CAS_AT) < 0
        || PyModule_AddIntConstant(m, "ITEM_EXPTIME_AT", ITEM_EXPTIME_AT) < 0
        || PyModule_AddIntConstant(m, "ITEM_ATIME_AT", ITEM_ATIME_AT) < 0
        || PyModule_AddIntConstant(m, "ITEM_BITS_AT", ITEM_BITS_AT) < 0
        || PyModule_AddIntConstant(m, "ITEM_SUFFIX_LENGTH_AT", ITEM_SUFFIX_LENGTH_AT) < 0
        || PyModule_AddIntConstant(m, "ITEM_PREFIX_SIZE", ITEM_PREFIX_SIZE) < 0
        || PyModule_AddIntConstant(m, "ITEM_FETCHED", ITEM_FETCHED) < 0
        || PyModule_AddIntConstant(m, "ITEM_ACTIVE", ITEM_ACTIVE) < 0
        || PyModule_AddIntConstant(m, "ITEM_EXPIRES", ITEM_EXPIRES) < 0
        || PyModule_AddIntConstant(m, "ITEM_OVERHEAD", ITEM_OVERHEAD) < 0
        || PyModule_AddIntConstant(m, "SEGMENT_MAX", SEGMENT_MAX) < 0
        || PyModule_AddIntConstant(m, "DRAIN_STEP", DRAIN_STEP) < 0
        || PyModule_AddIntConstant(m, "INDEX_MIN_SLOTS", INDEX_MIN * INDEX_SHARDS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
