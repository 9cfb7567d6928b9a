# -*- test-case-name: tests.unit.test_session,tests.unit.test_item_layout -*-
"""
The command model shared by both codecs.

The ASCII and binary codecs parse bytes into calls of L{Session} operations
(one method per memcached operation, the way memcached's C{proto_text.c} and
C{proto_bin.c} both call C{process_get_cmd}, C{do_store_item}, ...) and
render the results below.  A result is a small enum, never wire bytes: each
codec owns the mapping to its own status lines or codes.

We do not allocate a C{Command} object per request: the operation name and
its arguments travel as method arguments.  That keeps the per-request cost
of the hot path at one call (see C{docs/performance.md}).
"""

import enum
import re
import struct


# memcached limits (protocol.txt "Keys", memcached.h)
KEY_MAX_LENGTH = 250
#: exptimes up to this many seconds are relative, beyond it absolute unix time
REALTIME_MAXDELTA = 60 * 60 * 24 * 30
#: incr/decr work on unsigned 64-bit integers and wrap at 2**64
U64 = 1 << 64
#: the version string reported by C{version}
VERSION = "1.6.21"


class StoreMode(enum.IntEnum):
    """
    How a storage command treats an existing item (memcached's
    C{NREAD_*}).
    """

    SET = 1
    ADD = 2
    REPLACE = 3
    APPEND = 4
    PREPEND = 5
    CAS = 6


class StoreResult(enum.IntEnum):
    """
    Outcome of a storage command (memcached's C{store_item_type}).
    """

    NOT_STORED = 0
    STORED = 1
    EXISTS = 2
    NOT_FOUND = 3
    TOO_LARGE = 4
    NO_MEMORY = 5


class DeltaResult(enum.IntEnum):
    """
    Outcome of incr/decr (memcached's C{delta_result_type}).
    """

    OK = 0
    NON_NUMERIC = 1
    NO_MEMORY = 2
    NOT_FOUND = 3
    EXISTS = 4


class DeleteResult(enum.IntEnum):
    """
    Outcome of delete.
    """

    DELETED = 0
    NOT_FOUND = 1
    EXISTS = 2


class Refused(enum.IntEnum):
    """
    Why the session refused a command before it reached the keyspace.
    Codecs render these with memcached's own error strings.
    """

    # Values apart from every result enum's, so that a refusal never
    # compares equal to (or looks up the reply of) a result.

    #: not authenticated yet (ASCII C{CLIENT_ERROR unauthenticated}, binary 0x20 + close)
    UNAUTHENTICATED = 101
    #: credential lacks the flush capability (C{CLIENT_ERROR flush_all not allowed}, binary 0x20)
    FLUSH_NOT_ALLOWED = 102
    #: a mutation by a read-only credential (ASCII C{NOT_STORED}, binary 0x05:
    #: clients report "not stored")
    READ_ONLY = 104


# -- items -----------------------------------------------------------------
#
# A stored item is ONE immutable bytes object, laid out as memcached lays out
# its item struct: a fixed prefix, the ASCII reply suffix pre-rendered, then
# the value.  Bytes are never tracked by the garbage collector, and a dict
# holding only bytes is not either, so a cache of millions of items costs a
# full collection nothing, and each item costs two allocations (its key and
# this blob) instead of a tracked object and its attributes
# (docs/performance.md, "A store without collector pauses").
#
#   offset 0   cas        u64
#          8   exptime    u32  absolute store-clock seconds, 0 = never
#         12   atime      u32  when last stored or bumped (store-clock seconds)
#         16   bits       u8   ITEM_FETCHED | ITEM_ACTIVE | ITEM_EXPIRES
#         17   suffixlen  u8   length of the suffix below
#         18   suffix     b" <flags> <bytes>\r\n"  (the ASCII VALUE line after the key)
#         18+suffixlen    the value
#
# Codecs read items only through the functions below.  The constants below
# are the one statement of this layout: the store, the codecs and the C
# loops (memcachier/_speedups.c, checked against them by
# tests/unit/test_item_layout.py) use them instead of numbers of their own.

#: the fixed prefix, field by field: (name, struct code), in order
ITEM_FIELDS = (
    ("cas", "Q"),
    ("exptime", "I"),
    ("atime", "I"),
    ("bits", "B"),
    ("suffixLength", "B"),
)
#: the struct format of the fixed prefix (little-endian, no padding)
ITEM_PREFIX_FORMAT = "<" + "".join(code for _name, code in ITEM_FIELDS)
_PREFIX = struct.Struct(ITEM_PREFIX_FORMAT)
_pack = _PREFIX.pack
#: bytes before the suffix
ITEM_PREFIX_SIZE = _PREFIX.size
#: field name to its offset in the prefix
ITEM_OFFSETS = {
    name: struct.calcsize("<" + "".join(code for _n, code in ITEM_FIELDS[:i]))
    for i, (name, _code) in enumerate(ITEM_FIELDS)
}
#: offset of the CAS unique (u64)
ITEM_CAS_AT = ITEM_OFFSETS["cas"]
#: offset of the expiry (u32 store-clock seconds, 0 = never)
ITEM_EXPTIME_AT = ITEM_OFFSETS["exptime"]
#: offset of the atime (u32 store-clock seconds)
ITEM_ATIME_AT = ITEM_OFFSETS["atime"]
#: offset of the bits byte (L{ITEM_FETCHED}, L{ITEM_ACTIVE}, L{ITEM_EXPIRES})
ITEM_BITS_AT = ITEM_OFFSETS["bits"]
#: offset of the suffix length byte
ITEM_SUFFIX_LENGTH_AT = ITEM_OFFSETS["suffixLength"]
#: offset of the client flags' first digit (the suffix starts with a space)
ITEM_FLAGS_AT = ITEM_PREFIX_SIZE + 1
_FLAGS_END = ITEM_FLAGS_AT + 1
#: reads the expiry: C{unpackU32(item, ITEM_EXPTIME_AT)[0]}
unpackU32 = struct.Struct("<" + dict(ITEM_FIELDS)["exptime"]).unpack_from
_CAS = struct.Struct("<" + dict(ITEM_FIELDS)["cas"]).unpack_from
_TIMES = struct.Struct("<" + dict(ITEM_FIELDS)["exptime"] + dict(ITEM_FIELDS)["atime"]).unpack_from
#: packs the atime and the bits, which are adjacent: a bump rewrites them
#: as C{item[:ITEM_ATIME_AT] + packAtimeAndBits(atime, bits) +
#: item[ITEM_SUFFIX_LENGTH_AT:]}
packAtimeAndBits = struct.Struct("<" + dict(ITEM_FIELDS)["atime"] + dict(ITEM_FIELDS)["bits"]).pack
_U32_MAX = 0xFFFFFFFF

#: fetched since it was stored (memcached's ITEM_FETCHED)
ITEM_FETCHED = 1
#: used since it last reached the LRU tail: the tail gives it a second
#: chance instead of evicting it (memcached's ITEM_ACTIVE)
ITEM_ACTIVE = 2
#: has a non-zero exptime, so readers must check it
ITEM_EXPIRES = 4


def _wholeSeconds(exptime):
    """
    A non-zero expiry as the u32 the prefix holds: rounded up, a time in
    the past (negative: "already expired") as 1.
    """
    whole = int(exptime)
    return max(1, min(whole + (whole < exptime), _U32_MAX))


def packItem(value, flags, exptime, cas, atime=0, bits=0):
    """
    Build the stored form of an item (see the layout above).

    @param exptime: absolute store-clock seconds, C{0} for never; kept in
        whole seconds, rounded up so an item never expires early.
    @param atime: store-clock seconds of the last store or bump.
    @param bits: L{ITEM_FETCHED} and L{ITEM_ACTIVE}; L{ITEM_EXPIRES} is
        derived from C{exptime}.
    @rtype: L{bytes}
    """
    suffix = b" %d %d\r\n" % (flags, len(value))
    if exptime:
        return _pack(
            cas, _wholeSeconds(exptime), int(atime), bits | ITEM_EXPIRES, len(suffix)
        ) + suffix + value
    return _pack(cas, 0, int(atime), bits & ~ITEM_EXPIRES, len(suffix)) + suffix + value


def repackItem(item, exptime=None, atime=None, bits=None, cas=None):
    """
    A copy of C{item} with some prefix fields changed, the value and
    flags kept (bumps, touch).
    """
    oldCas, oldExptime, oldAtime, oldBits, suffixLength = _PREFIX.unpack_from(item)
    if exptime is None:
        exptime = oldExptime
    elif exptime:
        exptime = _wholeSeconds(exptime)
    if bits is None:
        bits = oldBits
    bits = (bits | ITEM_EXPIRES) if exptime else (bits & ~ITEM_EXPIRES)
    return _PREFIX.pack(
        oldCas if cas is None else cas,
        exptime,
        oldAtime if atime is None else int(atime),
        bits,
        suffixLength,
    ) + item[ITEM_PREFIX_SIZE:]


def itemValue(item):
    """
    @return: the value (L{bytes}).
    """
    return item[ITEM_PREFIX_SIZE + item[ITEM_SUFFIX_LENGTH_AT]:]


def itemValueLength(item):
    """
    @return: the length of the value, without copying it.
    """
    return len(item) - ITEM_PREFIX_SIZE - item[ITEM_SUFFIX_LENGTH_AT]


def itemFlags(item):
    """
    @return: the client flags (L{int}).
    """
    if item[ITEM_FLAGS_AT] == 48 and item[_FLAGS_END] == 32:
        # b" 0 ": the common case without parsing
        return 0
    return int(item[ITEM_FLAGS_AT:item.index(b" ", ITEM_FLAGS_AT)])


def itemFields(item):
    """
    What a binary reply needs, in one call (the hot path of binary gets).

    @return: (value, flags, cas)
    """
    if item[ITEM_FLAGS_AT] == 48 and item[_FLAGS_END] == 32:
        flags = 0
    else:
        flags = int(item[ITEM_FLAGS_AT:item.index(b" ", ITEM_FLAGS_AT)])
    return item[ITEM_PREFIX_SIZE + item[ITEM_SUFFIX_LENGTH_AT]:], flags, _CAS(item, ITEM_CAS_AT)[0]


def itemCas(item):
    """
    @return: the CAS unique (L{int}).
    """
    return _CAS(item, ITEM_CAS_AT)[0]


def itemExptime(item):
    """
    @return: absolute expiry in store-clock seconds, C{0} for never.
    """
    return _TIMES(item, ITEM_EXPTIME_AT)[0]


def itemAtime(item):
    """
    @return: store-clock seconds of the last store or LRU bump (memcached
        updates its C{it->time} only then too).
    """
    return _TIMES(item, ITEM_EXPTIME_AT)[1]


def itemBits(item):
    """
    @return: the item's L{ITEM_FETCHED}, L{ITEM_ACTIVE} and L{ITEM_EXPIRES}
        bits (a peer node hands them on with a forwarded item).
    """
    return item[ITEM_BITS_AT]


def itemFetched(item):
    """
    @return: whether the item was fetched since it was stored.
    """
    return bool(item[ITEM_BITS_AT] & ITEM_FETCHED)


def itemAsciiSuffix(item):
    """
    What follows C{VALUE <key>} in an ASCII reply: C{b" <flags> <bytes>\r\n"}
    and the value (the final C{\r\n} is the caller's).  Large values come
    as a L{memoryview} so a hit is not copied before the transport.
    """
    if len(item) > 16384:
        return memoryview(item)[ITEM_PREFIX_SIZE:]
    return item[ITEM_PREFIX_SIZE:]


class KeyspaceError(Exception):
    """
    A keyspace could not answer (its backend is down, a peer timed out).

    A keyspace may fail a call with this, its first argument a short
    reason the client is shown (C{SERVER_ERROR <reason>} in ASCII; binary
    answers status 0x84).  Any other exception is shown as
    C{backend failure}: internal details never reach clients.
    """


_CONTROL = re.compile(rb"[\x00-\x20\x7f]").search


def validKey(key):
    """
    Whether C{key} obeys memcached's key rules: 1 to 250 bytes, no
    whitespace or control characters.

    @type key: L{bytes}
    @rtype: L{bool}
    """
    return 0 < len(key) <= KEY_MAX_LENGTH and _CONTROL(key) is None
