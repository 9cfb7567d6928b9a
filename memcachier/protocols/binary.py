# -*- test-case-name: tests.unit.test_binary -*-
"""
The memcached binary protocol, with SASL PLAIN authentication.

Like memcached's C{proto_bin.c} this codec only frames requests, checks
them and renders results: every operation goes to the connection's
L{memcachier.protocols.session.Session}, which never sees wire bytes.

Hot path.  One C{dataReceived} call parses every complete frame in the
data with a precompiled L{struct.Struct} at an offset, dispatches through a
list indexed by opcode, collects every response piece in one list and
sends them joined once.  A synchronous keyspace never makes a L{Deferred}.

Asynchronous results.  When an operation returns a L{Deferred}, parsing
stops there: what was rendered so far is sent, reading pauses, the rest of
the data is kept, and when the Deferred fires its reply is sent and parsing
resumes.  Responses therefore leave in request order (memcached's
C{conn_resp_suspend}).

Choices where memcached gave no single answer (see also the tests):
  - a frame whose key and extras do not fit its body gets 0x81 and the
    connection closes, as memcached 1.6 does;
  - a frame whose extras, key or value do not fit its opcode, or whose key
    is longer than 250 bytes, gets 0x04 "Invalid arguments" and the
    connection closes;
  - a body larger than the plan's item size plus L{BODY_SLACK} (or
    L{PREAUTH_BODY_MAX} before authentication) gets 0x03 "Too large." as
    soon as its key has arrived and is swallowed without being buffered;
    the connection stays open; a SET (without CAS) also unlinks the old
    item, as memcached does;
  - before authentication only SASL, VERSION, NOOP and QUIT work; anything
    else (unknown opcodes too) gets 0x20 and the connection closes;
  - SASL_AUTH answers a full connection limit with 0x20 "Too many
    connections" and keeps the connection open;
  - a read-only credential's mutations all get 0x05 "Not stored.";
  - a credential without the flush capability gets 0x20 "Auth failure."
    for FLUSH, as memcached does when started with C{-F}.
"""

import struct

from twisted.internet.defer import Deferred

from memcachier.commands import (
    KEY_MAX_LENGTH,
    VERSION,
    DeleteResult,
    DeltaResult,
    Refused,
    StoreMode,
    StoreResult,
    itemAtime,
    itemBits,
    itemCas,
    itemExptime,
    itemFields,
    itemFlags,
)
from memcachier.protocols.base import FLUSH_AT, CodecProtocol, renderDetailDump
from memcachier.protocols.sasl import MECHANISMS, parsePlain
from memcachier.protocols.session import AuthResult
from memcachier.speedups import accelerator


REQUEST_MAGIC = 0x80
RESPONSE_MAGIC = 0x81
HEADER_LENGTH = 24

#: bytes a body may exceed the plan's item size by (key and extras)
BODY_SLACK = 512
#: largest body accepted before authentication (a SASL PLAIN message)
PREAUTH_BODY_MAX = 4096
#: bodies up to this size are never too large, so most frames skip the check
_SMALL_BODY = 1024

#: the run of one-key get frames in C, or L{None}: the frame loop answers them
getRun = None if accelerator is None else accelerator.binary_get_run

# opcodes (protocol_binary.h)
GET = 0x00
SET = 0x01
ADD = 0x02
REPLACE = 0x03
DELETE = 0x04
INCREMENT = 0x05
DECREMENT = 0x06
QUIT = 0x07
FLUSH = 0x08
GETQ = 0x09
NOOP = 0x0A
VERSION_OP = 0x0B
GETK = 0x0C
GETKQ = 0x0D
APPEND = 0x0E
PREPEND = 0x0F
STAT = 0x10
SETQ = 0x11
ADDQ = 0x12
REPLACEQ = 0x13
DELETEQ = 0x14
INCREMENTQ = 0x15
DECREMENTQ = 0x16
QUITQ = 0x17
FLUSHQ = 0x18
APPENDQ = 0x19
PREPENDQ = 0x1A
#: defined by the protocol but not implemented by memcached 1.6 (0x81)
VERBOSITY = 0x1B
TOUCH = 0x1C
GAT = 0x1D
GATQ = 0x1E
SASL_LIST_MECHS = 0x20
SASL_AUTH = 0x21
SASL_STEP = 0x22
GATK = 0x23
GATKQ = 0x24
#: Peer-only opcodes (L{memcachier.cluster.peer}): a get, a peek and a
#: get-and-touch whose answer carries the whole item state (flags, time to
#: live, idle time, fetched/active bits), so that a forwarded C{mg ... t}
#: or C{me} reports what the owner would.  Only connections authenticated
#: with the cluster secret have them; for clients they are unknown (0x81).
PEER_GET = 0xE0
PEER_PEEK = 0xE1
PEER_GAT = 0xE2
#: Peer-only: an item a draining node hands to its new owner, laid out as
#: an C{ADD}; the owner refuses it for a key deleted there meanwhile
#: (L{memcachier.cluster.keyspace.ClusterKeyspace.acceptHandOff}).
PEER_HANDOFF = 0xE3

# response statuses and memcached's texts for them
SUCCESS = 0x00
KEY_ENOENT = 0x01
KEY_EEXISTS = 0x02
E2BIG = 0x03
EINVAL = 0x04
NOT_STORED = 0x05
DELTA_BADVAL = 0x06
AUTH_ERROR = 0x20
UNKNOWN_COMMAND = 0x81
ENOMEM = 0x82
EINTERNAL = 0x84

_MESSAGES = {
    KEY_ENOENT: b"Not found",
    KEY_EEXISTS: b"Data exists for key.",
    E2BIG: b"Too large.",
    EINVAL: b"Invalid arguments",
    NOT_STORED: b"Not stored.",
    DELTA_BADVAL: b"Non-numeric server-side value for incr or decr",
    AUTH_ERROR: b"Auth failure.",
    UNKNOWN_COMMAND: b"Unknown command",
    ENOMEM: b"Out of memory",
    EINTERNAL: b"Internal error",
}

_AUTHENTICATED = b"Authenticated"
_NO_DETAIL = b"stats detail needs introspection, which is off"
_TOO_MANY_CONNECTIONS = b"Too many connections"

#: magic, opcode, keylen, extlen, datatype, vbucket/status, bodylen, opaque, cas
_HEADER = struct.Struct(">BBHBBHIIQ")
_unpackHeader = _HEADER.unpack_from
_pack = _HEADER.pack
#: a response header followed by 4 bytes of flags (get, touch)
_packWithFlags = struct.Struct(">BBHBBHIIQI").pack
#: a response header followed by a peer item's state (see L{PEER_ITEM})
_packPeerItem = struct.Struct(">BBHBBHIIQIIIB").pack
_packU64 = struct.Struct(">Q").pack
_unpackU32 = struct.Struct(">I").unpack_from
_unpackStoreExtras = struct.Struct(">II").unpack_from
_unpackDeltaExtras = struct.Struct(">QQI").unpack_from

#: incr/decr exptime meaning "do not create a missing key"
_NO_CREATE = 0xFFFFFFFF

#: The layouts this codec parses, for the cluster's peer client, which
#: builds its requests with them (memcachier.cluster.peer).
FRAME_HEADER = _HEADER
STORE_EXTRAS = _unpackStoreExtras.__self__
DELTA_EXTRAS = _unpackDeltaExtras.__self__
NO_CREATE = _NO_CREATE
#: The extras of a peer item answer: flags, seconds to live (0: never
#: expires), seconds since last stored or bumped, and the item's bits.
PEER_ITEM = struct.Struct(">IIIB")


def _error(opcode, status, opaque, message=None):
    """
    An error response: CAS 0 and memcached's text as the body.
    """
    if message is None:
        message = _MESSAGES[status]
    return _pack(RESPONSE_MAGIC, opcode, 0, 0, 0, status, len(message), opaque, 0) + message


def _empty(opcode, opaque, cas=0):
    return _pack(RESPONSE_MAGIC, opcode, 0, 0, 0, SUCCESS, 0, opaque, cas)


#: the gets the C run answers (L{getRun})
_RUN_GETS = frozenset((GET, GETQ, GETK, GETKQ))
#: quiet gets suppress misses
_QUIET_GETS = frozenset((GETQ, GETKQ, GATQ, GATKQ))
#: gets whose response carries the key
_KEYED_GETS = frozenset((GETK, GETKQ, GATK, GATKQ))
#: quiet mutations suppress success
_QUIET = frozenset(range(SETQ, PREPENDQ + 1))
#: opcodes counted as storage commands when their body is too large
_STORAGE = frozenset((SET, ADD, REPLACE, APPEND, PREPEND, SETQ, ADDQ, REPLACEQ, APPENDQ, PREPENDQ))

_STORE_MODES = {
    SET: StoreMode.SET, SETQ: StoreMode.SET,
    ADD: StoreMode.ADD, ADDQ: StoreMode.ADD, PEER_HANDOFF: StoreMode.ADD,
    REPLACE: StoreMode.REPLACE, REPLACEQ: StoreMode.REPLACE,
    APPEND: StoreMode.APPEND, APPENDQ: StoreMode.APPEND,
    PREPEND: StoreMode.PREPEND, PREPENDQ: StoreMode.PREPEND,
}

_STORE_STATUS = {
    StoreResult.EXISTS: KEY_EEXISTS,
    StoreResult.NOT_FOUND: KEY_ENOENT,
    StoreResult.TOO_LARGE: E2BIG,
    StoreResult.NO_MEMORY: ENOMEM,
}

#: memcached's binary mapping of a refused (NOT_STORED) store by command
_NOT_STORED_STATUS = {
    StoreMode.ADD: KEY_EEXISTS,
    StoreMode.REPLACE: KEY_ENOENT,
}

_DELTA_STATUS = {
    DeltaResult.NON_NUMERIC: DELTA_BADVAL,
    DeltaResult.NO_MEMORY: ENOMEM,
    DeltaResult.NOT_FOUND: KEY_ENOENT,
    DeltaResult.EXISTS: KEY_EEXISTS,
}

_DELETE_STATUS = {
    DeleteResult.NOT_FOUND: KEY_ENOENT,
    DeleteResult.EXISTS: KEY_EEXISTS,
}

# Enum members the handlers compare with, as module globals: reading one
# from its class goes through C{EnumType.__getattr__} (~0.1 us each).
_STORED = StoreResult.STORED
_NOT_STORED_RESULT = StoreResult.NOT_STORED
_CAS_MODE = StoreMode.CAS
_DELETED = DeleteResult.DELETED
_DELTA_OK = DeltaResult.OK
_READ_ONLY = Refused.READ_ONLY
_FLUSH_NOT_ALLOWED = Refused.FLUSH_NOT_ALLOWED


# What each opcode's frame must look like (memcached's dispatch_bin_command):
# (extras length or None for "0 or 4", smallest key, largest key, value allowed)
_KEY = (1, KEY_MAX_LENGTH)
_NOKEY = (0, 0)
_ANYKEY = (0, KEY_MAX_LENGTH)

_SPECS = [None] * 256
for _ops, _ext, _keys, _value in (
    ((GET, GETQ, GETK, GETKQ), 0, _KEY, False),
    ((SET, SETQ, ADD, ADDQ, REPLACE, REPLACEQ, PEER_HANDOFF), 8, _KEY, True),
    ((APPEND, APPENDQ, PREPEND, PREPENDQ), 0, _KEY, True),
    ((DELETE, DELETEQ), 0, _KEY, False),
    ((INCREMENT, INCREMENTQ, DECREMENT, DECREMENTQ), 20, _KEY, False),
    ((QUIT, QUITQ, NOOP, VERSION_OP, SASL_LIST_MECHS), 0, _NOKEY, False),
    ((FLUSH, FLUSHQ), None, _NOKEY, False),
    ((STAT,), 0, _ANYKEY, False),
    ((TOUCH, GAT, GATQ, GATK, GATKQ, PEER_GAT), 4, _KEY, False),
    ((PEER_GET, PEER_PEEK), 0, _KEY, False),
    ((SASL_AUTH, SASL_STEP), 0, _KEY, True),
):
    for _op in _ops:
        _SPECS[_op] = (_ext,) + _keys + (_value,)
del _ops, _ext, _keys, _value, _op


class BinaryProtocol(CodecProtocol):
    """
    One binary-protocol connection.

    @ivar _handlers: the dispatch list for the authentication state: a
        function per opcode, or L{None} for opcodes refused in that state.
    @ivar _pending: received data not parsed yet (a partial frame).
    @ivar _pendingLength: total length of C{_pending}.
    @ivar _need: how many bytes the partial frame in C{_pending} needs.
    @ivar _skip: body bytes still to swallow (too large or unknown frame).
    """

    def __init__(self, session, close=None, directSend=None) -> None:
        CodecProtocol.__init__(self, session, close, directSend)
        self._handlers = _PREAUTH_HANDLERS
        self._pending = []
        self._pendingLength = 0
        self._need = 0
        self._skip = 0

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data):
        self.session.stats.bytes_read += len(data)
        if self._held is None and not (self._pending or self._skip or self._closing):
            # the common case (whole frames, nothing held): what
            # resumeParsing would do, one call shorter
            self._process(data)
        else:
            self.resumeParsing(data)
        if self._draining:
            self.checkDrained()

    def partialRequest(self):
        return bool(self._pending or self._skip or CodecProtocol.partialRequest(self))

    def resumeParsing(self, data):
        if self._closing:
            return
        if self._held is not None:
            self._held.append(data)
            return
        if self._skip:
            skip = self._skip
            if len(data) <= skip:
                self._skip = skip - len(data)
                return
            self._skip = 0
            data = data[skip:]
        pending = self._pending
        if pending:
            pending.append(data)
            self._pendingLength += len(data)
            if self._pendingLength < self._need:
                return
            data = b"".join(pending)
            self._pending = []
            self._pendingLength = 0
        self._process(data)

    def _process(self, data):
        """
        Answer every complete frame in C{data} and keep the rest.
        """
        out = []
        session = self.session
        n = len(data)
        offset = 0
        closing = held = False
        run = getRun
        while n - offset >= HEADER_LENGTH:
            if (
                run is not None and data[offset + 1] in _RUN_GETS and session.synchronous
                and session.authenticated and not session.runtime.gone
            ):
                # one-key gets (a multi-get is quiet ones and a NOOP), the
                # most common frames of all, in C; it stops at the first
                # frame it does not answer as below would
                start = offset
                offset, reply = session.getRun(run, data, offset, FLUSH_AT)
                if reply:
                    out.append(reply)
                    if len(reply) >= FLUSH_AT:
                        self.emit(b"".join(out))
                        del out[:]
                        if self.waitForDrain():
                            held = True
                            break
                if offset != start:
                    continue
            (magic, opcode, keylen, extlen, _, _, bodylen, opaque, cas) = _unpackHeader(
                data, offset
            )
            if magic != REQUEST_MAGIC:
                closing = True
                break
            if keylen + extlen > bodylen:
                out.append(_error(opcode, UNKNOWN_COMMAND, opaque))
                closing = True
                break
            handler = self._handlers[opcode]
            # session.gone, without a property call per frame
            runtime = session.runtime
            if handler is None or (runtime is not None and runtime.gone):
                if not session.authenticated or session.gone:
                    out.append(_error(opcode, AUTH_ERROR, opaque))
                    closing = True
                    break
                out.append(_error(opcode, UNKNOWN_COMMAND, opaque))
                end = offset + HEADER_LENGTH + bodylen
                if end > n:
                    self._skip = end - n
                    offset = n
                    break
                offset = end
                continue
            ext, keyMin, keyMax, valueAllowed = _SPECS[opcode]
            if (
                (extlen != ext and (ext is not None or (extlen != 0 and extlen != 4)))
                or keylen < keyMin
                or keylen > keyMax
                or (not valueAllowed and bodylen != keylen + extlen)
            ):
                out.append(_error(opcode, EINVAL, opaque))
                closing = True
                break
            if bodylen > _SMALL_BODY and bodylen > self._bodyLimit():
                keyEnd = offset + HEADER_LENGTH + extlen + keylen
                if keyEnd > n:
                    # wait for the key (a few hundred bytes), not the body
                    break
                out.append(_error(opcode, E2BIG, opaque))
                if session.authenticated and opcode in _STORAGE:
                    session.refuseTooLarge(
                        _STORE_MODES[opcode], data[keyEnd - keylen:keyEnd], cas,
                        bodylen - extlen - keylen,
                    )
                end = offset + HEADER_LENGTH + bodylen
                if end > n:
                    self._skip = end - n
                    offset = n
                    break
                offset = end
                continue
            end = offset + HEADER_LENGTH + bodylen
            if end > n:
                break
            try:
                result = handler(
                    self, out, data, offset + HEADER_LENGTH, opcode, keylen, extlen, bodylen,
                    opaque, cas,
                )
            except Exception:
                out.append(self.failedNow(_internalError(opcode, opaque)))
                result = None
            offset = end
            if result is not None:
                if result is _CLOSE:
                    closing = True
                else:
                    held = True
                break
            if len(out) >= 96 or (out and len(out[-1]) > FLUSH_AT):
                # bound what one read can make us hold for a slow reader
                self.emit(b"".join(out))
                del out[:]
                if self.waitForDrain():
                    held = True
                    break

        if out:
            if self._slots:
                self.emit(b"".join(out))
            else:
                # what emit does when nothing is pending, one call shorter
                self.send(b"".join(out))
        if closing:
            self.closeAfterReplies()
        elif held:
            self.hold(data[offset:] if offset < n else b"")
        elif offset < n:
            rest = data[offset:] if offset else data
            self._pending = [rest]
            self._pendingLength = len(rest)
            if len(rest) < HEADER_LENGTH:
                self._need = HEADER_LENGTH
            else:
                header = _unpackHeader(rest)
                bodylen = header[6]
                if bodylen > _SMALL_BODY and bodylen > self._bodyLimit():
                    # too large: only its extras and key are needed
                    self._need = HEADER_LENGTH + header[3] + header[2]
                else:
                    self._need = HEADER_LENGTH + bodylen

    def _bodyLimit(self):
        session = self.session
        if session.authenticated:
            return session.itemSizeLimit + BODY_SLACK
        return PREAUTH_BODY_MAX

    # -- late answers --------------------------------------------------------

    def _late(self, deferred, render, out, opcode, opaque, extra, barrier=False):
        """
        Give a Deferred answer its place in the pipeline: rendered by
        C{render} when it fires, status 0x84 if it fails.

        @return: L{_HOLD} when parsing must wait for it, else L{None}.
        """
        def rendered(result):
            pieces = []
            render(self, pieces, result, opcode, opaque, extra)
            return b"".join(pieces)

        if self.later(deferred, rendered, _internalError(opcode, opaque), out, barrier):
            return _HOLD
        return None

    # -- handlers --------------------------------------------------------------
    # Each takes (out, data, start, opcode, keylen, extlen, bodylen, opaque,
    # cas), where data[start:start + bodylen] is the body, appends its
    # response pieces to out, and returns None, or a Deferred firing with a
    # list of response pieces.

    def _get(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        key = data[start:start + keylen]
        item = self.session.get(key)
        if opcode == GET and item.__class__ is bytes:
            # a plain GET's hit, the most common frame: _renderGet inline
            value, flags, cas = itemFields(item)
            out.append(
                _packWithFlags(
                    RESPONSE_MAGIC, GET, 0, 4, 0, SUCCESS, 4 + len(value), opaque, cas, flags,
                )
            )
            out.append(value)
            return None
        if item.__class__ is Deferred:
            return self._late(item, BinaryProtocol._renderGet, out, opcode, opaque, key)
        self._renderGet(out, item, opcode, opaque, key)

    def _gat(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        (exptime,) = _unpackU32(data, start)
        key = data[start + 4:start + 4 + keylen]
        item = self.session.gat(key, exptime)
        if item.__class__ is Deferred:
            return self._late(item, BinaryProtocol._renderGet, out, opcode, opaque, key)
        self._renderGet(out, item, opcode, opaque, key)

    def _renderGet(self, out, item, opcode, opaque, key):
        if item is None:
            if opcode in _QUIET_GETS:
                return
            if opcode in _KEYED_GETS:
                # memcached answers a keyed miss with the key, not a text
                out.append(
                    _pack(RESPONSE_MAGIC, opcode, len(key), 0, 0, KEY_ENOENT, len(key), opaque, 0)
                    + key
                )
            else:
                out.append(_error(opcode, KEY_ENOENT, opaque))
            return
        value, flags, cas = itemFields(item)
        if opcode in _KEYED_GETS:
            out.append(
                _packWithFlags(
                    RESPONSE_MAGIC, opcode, len(key), 4, 0, SUCCESS,
                    4 + len(key) + len(value), opaque, cas, flags,
                )
                + key
            )
        else:
            out.append(
                _packWithFlags(
                    RESPONSE_MAGIC, opcode, 0, 4, 0, SUCCESS, 4 + len(value), opaque, cas, flags,
                )
            )
        out.append(value)

    # -- peer-only item answers (L{PEER_GET}) ----------------------------------------

    def _peerGet(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        key = data[start:start + keylen]
        if opcode == PEER_PEEK:
            item = self.session.peek(key)
        else:
            item = self.session.get(key)
        if item.__class__ is Deferred:
            return self._late(item, BinaryProtocol._renderPeerItem, out, opcode, opaque, key)
        self._renderPeerItem(out, item, opcode, opaque, key)

    def _peerGat(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        (exptime,) = _unpackU32(data, start)
        key = data[start + 4:start + 4 + keylen]
        item = self.session.gat(key, exptime)
        if item.__class__ is Deferred:
            return self._late(item, BinaryProtocol._renderPeerItem, out, opcode, opaque, key)
        self._renderPeerItem(out, item, opcode, opaque, key)

    def _peerHandOff(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        flags, exptime = _unpackStoreExtras(data, start)
        keyEnd = start + 8 + keylen
        result = self.session.handOff(
            data[start + 8:keyEnd], data[keyEnd:start + bodylen], flags, exptime
        )
        if result.__class__ is Deferred:
            return self._late(result, BinaryProtocol._renderStore, out, opcode, opaque, None)
        self._renderStore(out, result, opcode, opaque, None)

    def _renderPeerItem(self, out, item, opcode, opaque, key):
        if item is None:
            out.append(_error(opcode, KEY_ENOENT, opaque))
            return
        value, flags, cas = itemFields(item)
        now = self.session.reactor.seconds()
        exptime = itemExptime(item)
        # relative times, whole seconds as meta's C{t} reports them: the two
        # nodes' clocks need not agree
        ttl = max(1, int(exptime - now)) if exptime else 0
        idle = max(0, int(now - itemAtime(item)))
        out.append(
            _packPeerItem(
                RESPONSE_MAGIC, opcode, 0, 13, 0, SUCCESS, 13 + len(value), opaque, cas,
                flags, ttl, idle, itemBits(item),
            )
        )
        out.append(value)

    def _touch(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        (exptime,) = _unpackU32(data, start)
        key = data[start + 4:start + 4 + keylen]
        item = self.session.touch(key, exptime)
        if item.__class__ is Deferred:
            return self._late(item, BinaryProtocol._renderTouch, out, opcode, opaque, key)
        self._renderTouch(out, item, opcode, opaque, key)

    def _renderTouch(self, out, item, opcode, opaque, key):
        if item is None:
            out.append(_error(opcode, KEY_ENOENT, opaque))
        elif item is _READ_ONLY:
            out.append(_error(opcode, NOT_STORED, opaque))
        else:
            # memcached answers a touch with the item's flags as extras
            out.append(
                _packWithFlags(
                    RESPONSE_MAGIC, opcode, 0, 4, 0, SUCCESS, 4, opaque, itemCas(item), itemFlags(item)
                )
            )

    def _store(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        flags, exptime = _unpackStoreExtras(data, start)
        keyEnd = start + 8 + keylen
        key = data[start + 8:keyEnd]
        value = data[keyEnd:start + bodylen]
        mode = _STORE_MODES[opcode]
        if cas:
            # memcached turns any set/add/replace with a CAS into a cas
            mode = _CAS_MODE
        result = self.session.store(mode, key, value, flags, exptime, cas)
        if result.__class__ is Deferred:
            return self._late(result, BinaryProtocol._renderStore, out, opcode, opaque, None)
        self._renderStore(out, result, opcode, opaque, None)

    def _concat(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        keyEnd = start + keylen
        key = data[start:keyEnd]
        value = data[keyEnd:start + bodylen]
        result = self.session.store(_STORE_MODES[opcode], key, value, 0, 0, cas)
        if result.__class__ is Deferred:
            return self._late(result, BinaryProtocol._renderStore, out, opcode, opaque, None)
        self._renderStore(out, result, opcode, opaque, None)

    def _renderStore(self, out, result, opcode, opaque, extra):
        code, newCas = result
        if code == _STORED:
            if opcode not in _QUIET:
                out.append(_pack(RESPONSE_MAGIC, opcode, 0, 0, 0, SUCCESS, 0, opaque, newCas))
            return
        if code == _NOT_STORED_RESULT:
            status = _NOT_STORED_STATUS.get(_STORE_MODES[opcode], NOT_STORED)
        elif code is _READ_ONLY:
            status = NOT_STORED
        else:
            status = _STORE_STATUS[code]
        out.append(_error(opcode, status, opaque))

    def _delete(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        result = self.session.delete(data[start:start + keylen], cas)
        if result.__class__ is Deferred:
            return self._late(result, BinaryProtocol._renderDelete, out, opcode, opaque, None)
        self._renderDelete(out, result, opcode, opaque, None)

    def _renderDelete(self, out, result, opcode, opaque, extra):
        if result == _DELETED:
            if opcode != DELETEQ:
                out.append(_pack(RESPONSE_MAGIC, opcode, 0, 0, 0, SUCCESS, 0, opaque, 0))
        elif result is _READ_ONLY:
            out.append(_error(opcode, NOT_STORED, opaque))
        else:
            out.append(_error(opcode, _DELETE_STATUS[result], opaque))

    def _delta(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        delta, initial, exptime = _unpackDeltaExtras(data, start)
        key = data[start + 20:start + 20 + keylen]
        if exptime == _NO_CREATE:
            initial = None
            exptime = 0
        result = self.session.delta(
            key, opcode == INCREMENT or opcode == INCREMENTQ, delta, initial, exptime, cas
        )
        if result.__class__ is Deferred:
            return self._late(result, BinaryProtocol._renderDelta, out, opcode, opaque, None)
        self._renderDelta(out, result, opcode, opaque, None)

    def _renderDelta(self, out, result, opcode, opaque, extra):
        code, value, newCas = result
        if code == _DELTA_OK:
            if opcode in _QUIET:
                return
            out.append(
                _pack(RESPONSE_MAGIC, opcode, 0, 0, 0, SUCCESS, 8, opaque, newCas)
                + _packU64(value)
            )
        elif code is _READ_ONLY:
            out.append(_error(opcode, NOT_STORED, opaque))
        else:
            out.append(_error(opcode, _DELTA_STATUS[code], opaque))

    def _quit(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        if opcode == QUIT:
            out.append(_empty(opcode, opaque))
        return _CLOSE

    def _flush(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        delay = _unpackU32(data, start)[0] if extlen else 0
        result = self.session.flush(delay)
        if result.__class__ is Deferred:
            return self._late(result, BinaryProtocol._renderFlush, out, opcode, opaque, None)
        self._renderFlush(out, result, opcode, opaque, None)

    def _renderFlush(self, out, result, opcode, opaque, extra):
        if result is _FLUSH_NOT_ALLOWED:
            out.append(_error(opcode, AUTH_ERROR, opaque))
        elif opcode != FLUSHQ:
            out.append(_empty(opcode, opaque))

    def _noop(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        out.append(_empty(opcode, opaque))

    def _version(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        out.append(
            _pack(RESPONSE_MAGIC, opcode, 0, 0, 0, SUCCESS, len(_VERSION), opaque, 0) + _VERSION
        )

    def _stat(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        group = data[start:start + keylen].decode("latin-1")
        if group == "reset":
            self.session.resetStats()
            out.append(_empty(opcode, opaque))
            return
        if group.startswith("detail") and (len(group) == 6 or group[6] == " "):
            self._statDetail(out, group[7:], opcode, opaque)
            return
        pairs = self.session.statsGroup(group)
        if pairs is None:
            out.append(_error(opcode, KEY_ENOENT, opaque))
            return
        for name, value in pairs:
            name = name.encode("ascii")
            value = value.encode("ascii")
            out.append(
                _pack(
                    RESPONSE_MAGIC, opcode, len(name), 0, 0, SUCCESS,
                    len(name) + len(value), opaque, 0,
                )
                + name
                + value
            )
        out.append(_empty(opcode, opaque))

    def _statDetail(self, out, subcommand, opcode, opaque):
        """
        STAT C{detail on|off|dump}, as memcached 1.6 answers it: C{dump} is
        one stat named C{detailed} holding the ASCII dump; C{detail} alone
        is an empty success; any other subcommand is 0x01.
        """
        if subcommand not in ("", "on", "off", "dump"):
            out.append(_error(opcode, KEY_ENOENT, opaque))
            return
        if subcommand:
            result = self.session.statsDetail(subcommand)
            if result is None:
                out.append(_error(opcode, EINTERNAL, opaque, _NO_DETAIL))
                return
            if subcommand == "dump":
                dump = renderDetailDump(result)
                out.append(
                    _pack(RESPONSE_MAGIC, opcode, 8, 0, 0, SUCCESS, 8 + len(dump), opaque, 0)
                    + b"detailed" + dump
                )
        out.append(_empty(opcode, opaque))

    def _saslListMechs(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        body = b" ".join(MECHANISMS)
        out.append(_pack(RESPONSE_MAGIC, opcode, 0, 0, 0, SUCCESS, len(body), opaque, 0) + body)

    def _saslAuth(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        mechanism = data[start:start + keylen]
        if mechanism not in MECHANISMS:
            out.append(_error(opcode, AUTH_ERROR, opaque))
            return
        try:
            authzid, user, password = parsePlain(data[start + keylen:start + bodylen])
        except ValueError:
            out.append(_error(opcode, AUTH_ERROR, opaque))
            return
        if authzid and authzid != user:
            # we cannot act on behalf of another user
            out.append(_error(opcode, AUTH_ERROR, opaque))
            return
        result = self.session.authenticate(user, password)
        if result.__class__ is Deferred:
            # what follows may depend on the outcome: parse it afterwards
            return self._late(result, BinaryProtocol._renderLateAuth, out, opcode, opaque, None,
                              barrier=True)
        self._renderAuth(out, result, opcode, opaque, None)
        if result is AuthResult.THROTTLED:
            return _CLOSE
        return None

    def _renderLateAuth(self, out, result, opcode, opaque, extra):
        self._renderAuth(out, result, opcode, opaque, extra)
        if result is AuthResult.THROTTLED:
            # our slot is still pending: the close waits for this reply
            self.closeAfterReplies()

    def _renderAuth(self, out, result, opcode, opaque, extra):
        session = self.session
        if session.authenticated:
            self._handlers = _PEER_HANDLERS if session.runtime.peer else _AUTHED_HANDLERS
        if result is AuthResult.OK:
            out.append(
                _pack(RESPONSE_MAGIC, opcode, 0, 0, 0, SUCCESS, len(_AUTHENTICATED), opaque, 0)
                + _AUTHENTICATED
            )
        elif result is AuthResult.TOO_MANY_CONNECTIONS:
            out.append(_error(opcode, AUTH_ERROR, opaque, _TOO_MANY_CONNECTIONS))
        else:
            out.append(_error(opcode, AUTH_ERROR, opaque))

    def _saslStep(self, out, data, start, opcode, keylen, extlen, bodylen, opaque, cas):
        # PLAIN has a single step: there is never anything to continue
        out.append(_error(opcode, AUTH_ERROR, opaque))


_VERSION = VERSION.encode("ascii")

#: returned by a handler: close once the replies so far are sent
_CLOSE = object()
#: returned by a handler: parsing waits for a late answer (a barrier)
_HOLD = object()


def _internalError(opcode, opaque):
    """
    The renderer of a failed answer: status 0x84 for that request alone.
    """
    return lambda reason: _error(opcode, EINTERNAL, opaque)


_P = BinaryProtocol
_AUTHED_HANDLERS = [None] * 256
for _ops, _handler in (
    ((GET, GETQ, GETK, GETKQ), _P._get),
    ((GAT, GATQ, GATK, GATKQ), _P._gat),
    ((TOUCH,), _P._touch),
    ((SET, SETQ, ADD, ADDQ, REPLACE, REPLACEQ), _P._store),
    ((APPEND, APPENDQ, PREPEND, PREPENDQ), _P._concat),
    ((DELETE, DELETEQ), _P._delete),
    ((INCREMENT, INCREMENTQ, DECREMENT, DECREMENTQ), _P._delta),
    ((QUIT, QUITQ), _P._quit),
    ((FLUSH, FLUSHQ), _P._flush),
    ((NOOP,), _P._noop),
    ((VERSION_OP,), _P._version),
    ((STAT,), _P._stat),
    ((SASL_LIST_MECHS,), _P._saslListMechs),
    ((SASL_AUTH,), _P._saslAuth),
    ((SASL_STEP,), _P._saslStep),
):
    for _op in _ops:
        _AUTHED_HANDLERS[_op] = _handler

#: a peer node's connection (cluster secret) also has the peer opcodes
_PEER_HANDLERS = list(_AUTHED_HANDLERS)
_PEER_HANDLERS[PEER_GET] = _PEER_HANDLERS[PEER_PEEK] = _P._peerGet
_PEER_HANDLERS[PEER_GAT] = _P._peerGat
_PEER_HANDLERS[PEER_HANDOFF] = _P._peerHandOff

#: before authentication only these work (memcached's C{authenticated(c)}
#: lets SASL and VERSION through; NOOP and QUIT are harmless)
_PREAUTH_HANDLERS = [None] * 256
for _op in (SASL_LIST_MECHS, SASL_AUTH, SASL_STEP, VERSION_OP, NOOP, QUIT, QUITQ):
    _PREAUTH_HANDLERS[_op] = _AUTHED_HANDLERS[_op]
del _P, _ops, _handler, _op
