"""
The packed item format of L{memcachier.commands}: what stores hand out and
codecs read.
"""

import gc

import pytest

from memcachier.commands import (
    ITEM_ACTIVE,
    ITEM_FETCHED,
    itemAsciiSuffix,
    itemAtime,
    itemCas,
    itemExptime,
    itemFetched,
    itemFields,
    itemFlags,
    itemValue,
    itemValueLength,
    packItem,
    repackItem,
)


@pytest.mark.parametrize("flags", [0, 1, 10, 2**32 - 1])
@pytest.mark.parametrize("value", [b"", b"v", b"0 1\r\n", b"x" * 100_000])
def test_roundTrip(flags, value):
    """
    Every field comes back as packed, whatever the value holds, and the
    ASCII suffix is the tail of memcached's C{VALUE} line plus the value.
    """
    item = packItem(value, flags, 1_000_000, 2**63 + 5, atime=999_999)
    assert type(item) is bytes and not gc.is_tracked(item)
    assert itemValue(item) == value
    assert itemValueLength(item) == len(value)
    assert itemFlags(item) == flags
    assert itemCas(item) == 2**63 + 5
    assert (itemExptime(item), itemAtime(item)) == (1_000_000, 999_999)
    assert not itemFetched(item)
    assert bytes(itemAsciiSuffix(item)) == b" %d %d\r\n%b" % (flags, len(value), value)


def test_largeValuesAreNotCopiedForAscii():
    """
    A large value's ASCII suffix is a view on the item, not a copy.
    """
    item = packItem(b"x" * 100_000, 0, 0, 1)
    suffix = itemAsciiSuffix(item)
    assert isinstance(suffix, memoryview) and suffix.obj is item


def test_exptimeWholeSeconds():
    """
    Expiry times are kept in whole seconds rounded up (never early), a
    past time stays in the past and a far future one is clamped.
    """
    assert itemExptime(packItem(b"v", 0, 10.2, 1)) == 11
    assert itemExptime(packItem(b"v", 0, 0, 1)) == 0
    assert itemExptime(packItem(b"v", 0, -1, 1)) == 1
    assert itemExptime(packItem(b"v", 0, 2**40, 1)) == 2**32 - 1


def test_repackKeepsValue():
    """
    Repacking changes prefix fields only.
    """
    item = packItem(b"value", 7, 100, 3)
    again = repackItem(item, exptime=0, atime=50, bits=ITEM_FETCHED | ITEM_ACTIVE, cas=4)
    assert (itemValue(again), itemFlags(again), itemCas(again)) == (b"value", 7, 4)
    assert (itemExptime(again), itemAtime(again), itemFetched(again)) == (0, 50, True)
    assert itemExptime(repackItem(item)) == 100


@pytest.mark.parametrize("flags", [0, 7, 2**32 - 1])
def test_fields(flags):
    """
    L{itemFields} gives a binary reply's value, flags and CAS at once.
    """
    assert itemFields(packItem(b"val", flags, 0, 99)) == (b"val", flags, 99)
