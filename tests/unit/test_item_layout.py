"""
The packed item's layout, stated once in L{memcachier.commands}
(C{ITEM_FIELDS} and the offsets derived from it), against everything that
reads it: the accessor functions and the C loops of
L{memcachier._speedups}, which keep their own copy of the offsets.
"""

import struct

import pytest

from memcachier import commands, speedups
from memcachier.commands import (
    ITEM_ACTIVE,
    ITEM_ATIME_AT,
    ITEM_BITS_AT,
    ITEM_CAS_AT,
    ITEM_EXPIRES,
    ITEM_EXPTIME_AT,
    ITEM_FETCHED,
    ITEM_FLAGS_AT,
    ITEM_PREFIX_SIZE,
    ITEM_SUFFIX_LENGTH_AT,
    packItem,
)
from memcachier.protocols import text

#: items at the edges of every field: empty and large values, flags 0 and
#: the largest, no expiry and the largest, every combination of bits
EDGES = [
    (b"", 0, 0, 1, 0, 0),
    (b"v", 1, 0, 2**64 - 1, 2**32 - 1, ITEM_FETCHED),
    (b"x" * 300, 2**32 - 1, 2**32 - 1, 7, 5, ITEM_FETCHED | ITEM_ACTIVE),
    (b"\r\n\x00", 10, 12.5, 3, 9, ITEM_ACTIVE),
    (b"y" * 70000, 123456, 1, 2**63, 1, 0),
]


def test_offsetsFollowTheFields():
    """
    The offsets are those of the fields packed in order without padding,
    and the fields read or written together are adjacent.
    """
    prefix = struct.Struct(commands.ITEM_PREFIX_FORMAT)
    assert prefix.size == ITEM_PREFIX_SIZE == 18
    assert [name for name, _code in commands.ITEM_FIELDS] == [
        "cas", "exptime", "atime", "bits", "suffixLength",
    ]
    assert (ITEM_CAS_AT, ITEM_EXPTIME_AT, ITEM_ATIME_AT, ITEM_BITS_AT, ITEM_SUFFIX_LENGTH_AT) == (
        0, 8, 12, 16, 17,
    )
    # itemExptime/itemAtime read both u32s at once; a bump rewrites atime
    # and bits together, keeping everything from the suffix length on
    assert ITEM_ATIME_AT == ITEM_EXPTIME_AT + 4
    assert ITEM_BITS_AT == ITEM_ATIME_AT + 4
    assert ITEM_SUFFIX_LENGTH_AT == ITEM_BITS_AT + 1 == ITEM_PREFIX_SIZE - 1
    assert ITEM_FLAGS_AT == ITEM_PREFIX_SIZE + 1


@pytest.mark.parametrize("value,flags,exptime,cas,atime,bits", EDGES)
def test_accessorsReadWhatWasPacked(value, flags, exptime, cas, atime, bits):
    """
    Every field packed by L{packItem} reads back through the accessors
    and through a plain C{struct} unpack of the stated format.
    """
    item = packItem(value, flags, exptime, cas, atime, bits)
    fields = dict(zip(
        [name for name, _code in commands.ITEM_FIELDS],
        struct.unpack_from(commands.ITEM_PREFIX_FORMAT, item),
    ))
    expires = ITEM_EXPIRES if exptime else 0
    assert fields["cas"] == commands.itemCas(item) == cas
    assert fields["exptime"] == commands.itemExptime(item)
    assert (fields["exptime"] >= exptime) if exptime else (fields["exptime"] == 0)
    assert fields["atime"] == commands.itemAtime(item) == int(atime)
    assert fields["bits"] == commands.itemBits(item) == bits | expires
    suffix = b" %d %d\r\n" % (flags, len(value))
    assert fields["suffixLength"] == len(suffix)
    assert item[ITEM_PREFIX_SIZE:ITEM_PREFIX_SIZE + len(suffix)] == suffix
    assert commands.itemValue(item) == value
    assert commands.itemValueLength(item) == len(value)
    assert commands.itemFlags(item) == flags
    assert commands.itemFields(item) == (value, flags, cas)
    assert bytes(commands.itemAsciiSuffix(item)) == suffix + value
    bumpedBits = fields["bits"] | ITEM_ACTIVE
    bumped = item[:ITEM_ATIME_AT] + commands.packAtimeAndBits(99, bumpedBits) + item[
        ITEM_SUFFIX_LENGTH_AT:]
    assert bumped == commands.repackItem(item, atime=99, bits=bumpedBits)


needsC = pytest.mark.skipif(speedups.accelerator is None, reason="the C module is not built")


@needsC
def test_cOffsetsAreThePythonOnes():
    """
    The offsets C{memcachier/_speedups.c} reads are the ones
    L{memcachier.commands} states.
    """
    c = speedups.accelerator
    assert (c.ITEM_BITS_AT, c.ITEM_SUFFIX_LENGTH_AT, c.ITEM_PREFIX_SIZE) == (
        ITEM_BITS_AT, ITEM_SUFFIX_LENGTH_AT, ITEM_PREFIX_SIZE,
    )


@needsC
def test_cLoopsReadPackedItems():
    """
    The C loops read items packed by L{packItem}, at every edge, as their
    Python twins do: C{get_many} takes an item as it is exactly when its
    bits byte is the hot value, and C{render_run} renders the same bytes
    as L{text.renderValuesPython}.
    """
    c = speedups.accelerator
    keys = [b"k%d" % i for i in range(len(EDGES))]
    items = [packItem(*edge) for edge in EDGES]
    hot = ITEM_FETCHED | ITEM_ACTIVE
    shards = [dict(zip(keys, items))]
    slowed = []

    def slow(key, item):
        slowed.append(key)
        return item

    assert c.get_many(shards, 0, keys + [b"missing"], hot, slow) == items + [None]
    assert slowed == [k for k, item in zip(keys, items) if item[ITEM_BITS_AT] != hot]
    withMiss = items[:2] + [None] + items[2:]
    withMissKeys = keys[:2] + [b"gone"] + keys[2:]
    rendered, stop = c.render_run(
        withMissKeys, withMiss, 0, ITEM_PREFIX_SIZE, 1 << 30, 1 << 30, b"END\r\n"
    )
    assert stop == len(withMiss)
    assert rendered == text.renderValuesPython(withMissKeys, withMiss, False, b"END\r\n")
    # the size check stops at the first value of `big` bytes or more,
    # found through the suffix length byte
    rendered, stop = c.render_run(keys, items, 0, ITEM_PREFIX_SIZE, 1 << 30, 300, b"")
    assert stop == 2
