# -*- test-case-name: tests.unit.test_ascii -*-
"""
What the classic ASCII commands (L{memcachier.protocols.ascii}) and the
meta commands (L{memcachier.protocols.meta}) share: memcached's reply
strings, its token parsing, and the few functions that read an item's
fields to render it.

Reading items happens only in the C{render*} functions here and in the
meta module's reply renderers, so that a change of how stores hand out
items is a small edit.
"""

from memcachier.commands import (
    ITEM_PREFIX_SIZE,
    ITEM_SUFFIX_LENGTH_AT,
    U64,
    Refused,
    StoreResult,
    itemCas,
)
from memcachier.speedups import accelerator

#: values longer than this are sent as a view on the item, not copied
_VIEW_FROM = 16384

#: longest value a storage command may declare (memcached: C{INT_MAX - 2});
#: beyond, or negative, is a bad command line before any value is read
MAX_VALUE_LENGTH = (1 << 31) - 3

STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
EXISTS = b"EXISTS\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
DELETED = b"DELETED\r\n"
TOUCHED = b"TOUCHED\r\n"
END = b"END\r\n"
CRLF = b"\r\n"
OK = b"OK\r\n"
ERROR = b"ERROR\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
UNAUTHENTICATED = b"CLIENT_ERROR unauthenticated\r\n"
AUTH_FAILURE = b"CLIENT_ERROR authentication failure\r\n"
FLUSH_NOT_ALLOWED = b"CLIENT_ERROR flush_all not allowed\r\n"
DELETE_USAGE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
DETAIL_USAGE = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
NO_DETAIL = b"CLIENT_ERROR stats detail needs introspection, which is off\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
TOO_MANY_CONNECTIONS = b"SERVER_ERROR too many connections for this cache\r\n"
CACHE_DISABLED = b"SERVER_ERROR cache disabled\r\n"
LINE_TOO_LONG = b"CLIENT_ERROR line too long\r\n"
TOO_MANY_KEYS = b"CLIENT_ERROR too many keys\r\n"

STORE_REPLIES = {
    StoreResult.STORED: STORED,
    StoreResult.NOT_STORED: NOT_STORED,
    StoreResult.EXISTS: EXISTS,
    StoreResult.NOT_FOUND: NOT_FOUND,
    StoreResult.TOO_LARGE: TOO_LARGE,
    StoreResult.NO_MEMORY: NO_MEMORY,
    Refused.READ_ONLY: NOT_STORED,
}


def serverError(reason):
    """
    The reply to a request whose keyspace call failed: C{SERVER_ERROR}
    and the short reason (L{memcachier.protocols.base.failureReason}).
    """
    return b"SERVER_ERROR %b\r\n" % reason


def parseUint(token, limit=U64):
    """
    Parse an unsigned decimal below C{limit}, or return L{None}.
    """
    if not token.isdigit() or len(token) > 20:
        return None
    value = int(token)
    return value if value < limit else None


def parseInt(token):
    """
    Parse a signed 32-bit decimal (memcached's C{safe_strtol}), or L{None}.
    """
    try:
        value = int(token)
    except ValueError:
        return None
    if not -(1 << 31) <= value < (1 << 31) or not token.lstrip(b"-").isdigit():
        return None
    return value


# -- reading items -------------------------------------------------------------


# Items are packed bytes (L{memcachier.commands.packItem}) whose tail is
# C{b" <flags> <bytes>\r\n"} and the value: a hit is C{VALUE}, the key and
# that tail, rendered once at store time (memcached keeps this suffix in the
# item too).


def renderHit(key, item):
    """
    The whole reply to a one-key C{get} that hit: the C{VALUE <key>
    <flags> <bytes>} block and C{END}.
    """
    if len(item) > _VIEW_FROM:
        return b"".join((b"VALUE ", key, memoryview(item)[ITEM_PREFIX_SIZE:], b"\r\nEND\r\n"))
    return b"VALUE %b%b\r\nEND\r\n" % (key, item[ITEM_PREFIX_SIZE:])


def renderValuesPython(keys, items, withCas, end=b""):
    """
    The C{VALUE} blocks of the hits among C{items} (fetched for C{keys},
    L{None} for misses), then C{end}.
    """
    chunks = []
    add = chunks.extend
    prefix = ITEM_PREFIX_SIZE
    for key, item in zip(keys, items):
        if item is not None:
            if withCas:
                # the stored suffix with the CAS before its CRLF
                valueAt = prefix + item[ITEM_SUFFIX_LENGTH_AT]
                add((
                    b"VALUE %b%b %d\r\n" % (key, item[prefix:valueAt - 2], itemCas(item)),
                    item[valueAt:],
                    CRLF,
                ))
            elif len(item) > _VIEW_FROM:
                add((b"VALUE ", key, memoryview(item)[prefix:], CRLF))
            else:
                add((b"VALUE ", key, item[prefix:], CRLF))
    chunks.append(end)
    return b"".join(chunks)


def renderStreamPython(keys, items, start, withCas, budget):
    """
    The C{VALUE} blocks of C{items[start:]} (fetched for C{keys}, L{None}
    for misses) until they reach C{budget} bytes, for a long multi-get sent
    as it goes.  A value of C{budget} bytes or more is its own piece: a
    view on the item, referenced, not copied into a reply (a client that
    does not read then holds one value, not a copy of each).

    @return: (the pieces to send in order, the index after the last item
        rendered).
    """
    pieces = []
    small = []
    size = 0
    count = len(items)
    prefix = ITEM_PREFIX_SIZE
    while start < count and size < budget:
        item = items[start]
        key = keys[start]
        start += 1
        if item is None:
            continue
        valueAt = prefix + item[ITEM_SUFFIX_LENGTH_AT]
        if withCas:
            # the stored suffix with the CAS before its CRLF
            header = b"VALUE %b%b %d\r\n" % (key, item[prefix:valueAt - 2], itemCas(item))
        else:
            header = b"VALUE %b%b" % (key, item[prefix:valueAt])
        value = memoryview(item)[valueAt:]
        size += len(header) + len(value) + 2
        if len(value) >= budget:
            if small:
                pieces.append(b"".join(small))
                small = []
            pieces += (header, value, CRLF)
        else:
            small += (header, value, CRLF)
    if small:
        pieces.append(b"".join(small))
    return pieces, start


# -- the same in C -------------------------------------------------------------
#
# memcachier._speedups renders a run of hits in one allocation; the Python
# twins above define the output (tests/unit/test_speedups.py compares them).

if accelerator is None:  # pragma: no cover (installed without a C compiler)
    renderValues = renderValuesPython
    renderStream = renderStreamPython
else:
    _renderRun = accelerator.render_run
    _EVERYTHING = 1 << 62

    def renderValues(keys, items, withCas, end=b""):
        """
        The C{VALUE} blocks of the hits among C{items} (fetched for
        C{keys}, L{None} for misses), then C{end}.
        """
        if withCas:
            return renderValuesPython(keys, items, True, end)
        return _renderRun(keys, items, 0, ITEM_PREFIX_SIZE, _EVERYTHING, _EVERYTHING, end)[0]

    def renderStream(keys, items, start, withCas, budget):
        """
        L{renderStreamPython}'s pieces, the small values rendered in C.
        """
        if withCas:
            return renderStreamPython(keys, items, start, withCas, budget)
        run, start = _renderRun(keys, items, start, ITEM_PREFIX_SIZE, budget, budget, b"")
        pieces = [run] if run else []
        if len(run) < budget and start < len(items):
            # the C loop stopped before a value of C{budget} bytes or more:
            # it goes by reference, as in L{renderStreamPython}
            item = items[start]
            valueAt = ITEM_PREFIX_SIZE + item[ITEM_SUFFIX_LENGTH_AT]
            pieces += (
                b"VALUE %b%b" % (keys[start], item[ITEM_PREFIX_SIZE:valueAt]),
                memoryview(item)[valueAt:],
                CRLF,
            )
            start += 1
        return pieces, start
