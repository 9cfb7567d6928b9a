# -*- test-case-name: tests.unit.test_session -*-
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


class Item:
    """
    One cached value as a keyspace hands it to the session.

    Stores keep their own representation; the memory store keeps these
    objects themselves, so codecs must treat an L{Item} as read-only.

    @ivar key: the key (L{bytes}).
    @ivar value: the value (L{bytes}).
    @ivar flags: client flags, an unsigned 32-bit L{int}.
    @ivar exptime: absolute expiry in seconds of the store's clock, C{0} for never.
    @ivar cas: the item's CAS unique, a positive L{int}.
    @ivar atime: when the item was last stored or fetched (store clock seconds).
    @ivar fetched: whether the item has been fetched since it was stored.
    @ivar header: the ASCII C{VALUE <key> <flags> <bytes>} line, cached by
        the ASCII codec on first fetch (memcached keeps this suffix in the
        item too).  A store that changes C{value} or C{flags} in place must
        reset it to L{None}.
    """

    __slots__ = ("key", "value", "flags", "exptime", "cas", "atime", "fetched", "header")

    def __init__(self, key, value, flags, exptime, cas, atime, fetched=False):
        self.header = None
        self.key = key
        self.value = value
        self.flags = flags
        self.exptime = exptime
        self.cas = cas
        self.atime = atime
        self.fetched = fetched

    def __repr__(self):
        return (
            f"<Item key={self.key!r} flags={self.flags} exptime={self.exptime}"
            f" cas={self.cas} size={len(self.value)}>"
        )


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
