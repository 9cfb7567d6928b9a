# -*- test-case-name: tests.unit.test_ascii -*-
"""
The ASCII codec: memcached's text protocol (classic commands here, meta
commands in L{memcachier.protocols.meta}) and MemCachier's ASCII
authentication (C{set <username> 0 0 <len>} with the password as the
value, as the first command).

Parsing is done by hand over the bytes of one C{dataReceived} call: every
complete request is answered into one output list, emitted once at the
end, or, when the keyspace answers later, in its slot of the ordered-reply
pipeline (L{memcachier.protocols.base}).  A value body is waited for
without re-parsing its command line, and a value too large for the cache
is swallowed without being buffered, so no request makes a connection hold
more than L{MAX_LINE_GET} bytes plus one item.
"""

import ipaddress
from functools import partial

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred

from memcachier.commands import (
    KEY_MAX_LENGTH,
    VERSION,
    DeleteResult,
    DeltaResult,
    Refused,
    StoreMode,
    validKey,
)
from memcachier.protocols.base import FLUSH_AT, CodecProtocol, renderDetailDump
from memcachier.protocols.meta import MetaCommands
from memcachier.protocols.session import AuthResult
from memcachier.protocols.text import (  # noqa: F401 (re-exported wire strings)
    AUTH_FAILURE,
    BAD_CHUNK,
    BAD_DELTA,
    BAD_EXPTIME,
    BAD_FORMAT,
    CACHE_DISABLED,
    CRLF,
    DELETE_USAGE,
    DELETED,
    DETAIL_USAGE,
    END,
    ERROR,
    EXISTS,
    FLUSH_NOT_ALLOWED,
    LINE_TOO_LONG,
    MAX_VALUE_LENGTH,
    NO_DETAIL,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    STORE_REPLIES as _STORE_REPLIES,
    STORED,
    TOO_LARGE,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_KEYS,
    TOUCHED,
    UNAUTHENTICATED,
    parseInt as _int,
    parseUint as _uint,
    renderHit,
    renderStream,
    renderValues,
    serverError as _serverError,
)
from memcachier.speedups import accelerator

#: a line without C{\n} longer than this closes the connection (memcached)
MAX_LINE = 2048
#: retrieval lines may be longer (many keys), up to this
MAX_LINE_GET = 256 * 1024
#: longest password accepted in ASCII auth
MAX_AUTH_VALUE = 1024
#: a multi-get of more keys is sent as it is rendered (L{AsciiProtocol._stream})
STREAM_SLICE = 16
#: replies gathered before the codec checks its output size
CHECK_EVERY = 32

_STORAGE_MODES = {
    b"set": StoreMode.SET,
    b"add": StoreMode.ADD,
    b"replace": StoreMode.REPLACE,
    b"append": StoreMode.APPEND,
    b"prepend": StoreMode.PREPEND,
    b"cas": StoreMode.CAS,
}
_RETRIEVAL = frozenset((b"get", b"gets", b"gat", b"gats"))

# Enum members the handlers compare with, as module globals: reading one
# from its class goes through C{EnumType.__getattr__} (~0.1 us each).
_SET_MODE = StoreMode.SET
_CAS_MODE = StoreMode.CAS
_DELETED = DeleteResult.DELETED
_READ_ONLY = Refused.READ_ONLY

#: C{config get cluster} (ElastiCache auto discovery) answers before
#: authentication, as ElastiCache-aware clients ask first
_BEFORE_AUTH = frozenset((b"version", b"quit", b"mn", b"config"))


def longestKeyPython(keys):
    """
    The length of the longest of C{keys} (0 for none): the multi-get's
    key length check, and the twin of C{memcachier._speedups.longest},
    which runs it without a call to C{len} per key.
    """
    return max(map(len, keys), default=0)


if accelerator is None:  # pragma: no cover (installed without a C compiler)
    longestKey = longestKeyPython
    #: the run of one-key gets in C, or L{None}: the line loop answers them
    getRun = None
else:
    longestKey = accelerator.longest
    getRun = accelerator.get_run


#: returned by a handler: close once the replies so far are sent
_CLOSE = object()
#: returned by a handler: parsing holds (a barrier is pending, or the
#: client stopped reading in the middle of a long reply)
_HOLD = object()


def _isAddress(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _noReply(result):
    return b""


def _storeReply(result):
    return _STORE_REPLIES[result[0]]


def _authReply(result):
    if result == AuthResult.OK:
        return STORED
    if result == AuthResult.TOO_MANY_CONNECTIONS:
        return TOO_MANY_CONNECTIONS
    return AUTH_FAILURE


def _renderOne(key, item):
    return END if item is None else renderHit(key, item)


def _renderMany(keys, items):
    return renderValues(keys, items, False, END)


def _renderManyWithCas(keys, items):
    return renderValues(keys, items, True, END)


def commandTable(cls):
    """
    The command handlers of a protocol class: each C{cmd_NAME} function by
    the command C{NAME}, as bytes.
    """
    return {
        name[4:].encode("ascii"): getattr(cls, name)
        for name in dir(cls) if name.startswith("cmd_")
    }


#: L{commandTable} of each protocol class, made once: a login storm of
#: thousands of connections must not walk C{dir()} once per connection
_COMMAND_TABLES = {}


class AsciiProtocol(MetaCommands, CodecProtocol):
    """
    memcached's text protocol over a L{memcachier.protocols.session.Session}.

    Replies go through the ordered-reply pipeline of L{CodecProtocol}:
    gathered in a list and emitted once per read when the keyspace answers
    at once, given a slot (L{CodecProtocol.later}) when it answers with a
    L{Deferred}.

    @ivar _buffer: bytes received but not yet parsed (a partial line).
    @ivar _value: while waiting for a value body: C{[handler, args,
        needed, chunks, received]}.
    @ivar _swallow: value bytes still to discard (refused storage command).
    @ivar _streaming: a long multi-get stopped because the client is not
        reading: C{(items, next index, withCas)}.
    @ivar maxKeys: keys a retrieval command may name (C{limits.multiget_keys}),
        C{0} for no count: the line length (L{MAX_LINE_GET}) bounds it.
    """

    maxKeys = 0

    def __init__(self, session, close=None, directSend=None, maxKeys: int = 0) -> None:
        """
        @param maxKeys: see L{maxKeys}; the rest as for L{CodecProtocol}.
        """
        CodecProtocol.__init__(self, session, close, directSend)
        self.maxKeys = maxKeys
        self._buffer = b""
        self._value = None
        self._swallow = 0
        self._streaming = None
        cls = type(self)
        handlers = _COMMAND_TABLES.get(cls)
        if handlers is None:
            handlers = _COMMAND_TABLES[cls] = commandTable(cls)
        self._handlers = handlers

    # -- framing -----------------------------------------------------------

    def dataReceived(self, data):
        session = self.session
        session.stats.bytes_read += len(data)
        runtime = session.runtime
        if runtime is not None and runtime.gone and not self._closing:
            self.emit(CACHE_DISABLED)
            self.closeAfterReplies()
            return
        self.resumeParsing(data)
        if self._draining:
            self.checkDrained()

    def partialRequest(self):
        return bool(
            self._buffer or self._value is not None or self._swallow
            or self._streaming is not None or CodecProtocol.partialRequest(self)
        )

    def resumeParsing(self, data):
        if self._closing:
            return
        if self._held is not None:
            self._held.append(data)
            return
        if self._swallow:
            if len(data) <= self._swallow:
                self._swallow -= len(data)
                return
            data = data[self._swallow:]
            self._swallow = 0
        if self._value is not None:
            data = self._collectValue(data)
            if data is None:
                return
        elif self._buffer:
            data = self._buffer + data
            self._buffer = b""
        self._process(data)

    def _process(self, data):
        """
        Answer every complete request in C{data}.
        """
        out = []
        handlers = self._handlers
        session = self.session
        authenticated = session.authenticated
        run = getRun
        closing = False
        pos = 0
        end = len(data)
        while pos < end:
            if (
                run is not None and authenticated and session.synchronous
                and data.startswith(b"get ", pos)
            ):
                # one-key gets, the most common request of all, in C; it
                # stops at the first line it does not answer as below would
                start = pos
                pos, reply = session.getRun(run, data, pos, FLUSH_AT)
                if reply:
                    out.append(reply)
                    if len(reply) >= FLUSH_AT:
                        self._emitOut(out)
                        if self.waitForDrain():
                            self.hold(data[pos:])
                            return
                if pos != start:
                    continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                pending = end - pos
                if pending > MAX_LINE:
                    head = data[pos:pos + 5]
                    if not (head.startswith(b"get") or head.startswith(b"gat")):
                        closing = True
                        break
                    if pending > MAX_LINE_GET:
                        out.append(LINE_TOO_LONG)
                        closing = True
                        break
                self._buffer = data[pos:]
                break
            line = data[pos:eol - 1] if eol > pos and data[eol - 1] == 13 else data[pos:eol]
            pos = eol + 1
            parts = line.split()
            if not parts:
                out.append(ERROR)
                continue
            command = parts[0]
            mode = _STORAGE_MODES.get(command)
            if mode is not None:
                # storage commands read a value body after the line
                consumed = self._storage(mode, parts, data, pos, out)
                if consumed is None:
                    return
                pos = consumed
                authenticated = session.authenticated
                continue
            handler = handlers.get(command)
            if not authenticated and command not in _BEFORE_AUTH:
                if handler is None and parts[-1].startswith(b"HTTP/"):
                    closing = True
                    break
                out.append(UNAUTHENTICATED)
                continue
            if handler is None:
                if parts[-1].startswith(b"HTTP/"):
                    closing = True
                    break
                if command == b"ms":
                    consumed = self._metaSet(parts, data, pos, out)
                    if consumed is None:
                        return
                    pos = consumed
                    continue
                out.append(ERROR)
                continue
            try:
                result = handler(self, parts, out)
            except Exception:
                out.append(self.failedNow(_serverError))
                result = None
            if result is not None:
                if result is _CLOSE:
                    closing = True
                    break
                # _HOLD: a barrier is pending, or the client stopped reading
                self._emitOut(out)
                self.hold(data[pos:])
                return
            if len(out) >= CHECK_EVERY or (out and len(out[-1]) > FLUSH_AT):
                # bound what one read can make us hold for a slow reader
                self._emitOut(out)
                if self.waitForDrain():
                    self.hold(data[pos:])
                    return
            authenticated = session.authenticated
        if out:
            self.emit(b"".join(out))
        if closing:
            self.closeAfterReplies()

    def _emitOut(self, out):
        """
        Emit the replies gathered so far and empty C{out}.
        """
        if out:
            self.emit(b"".join(out))
            del out[:]

    def drained(self):
        streaming = self._streaming
        if streaming is not None:
            self._streaming = None
            keys, items, start, withCas = streaming
            out = []
            self._stream(keys, items, start, withCas, out)
            self._emitOut(out)

    # -- storage -----------------------------------------------------------

    def _storage(self, mode, parts, data, pos, out):
        """
        Parse a storage command line and its value body.

        @return: the position after the request, or L{None} when parsing
            of C{data} stops here (the body is incomplete and collected by
            L{_collectValue}, or a barrier holds the rest); C{out} has then
            been emitted.
        """
        session = self.session
        nparts = len(parts)
        isCas = mode == _CAS_MODE
        base = 6 if isCas else 5
        if nparts != base and nparts != base + 1:
            # memcached: wrong token count is ERROR, and no body is swallowed
            out.append(ERROR)
            return pos
        key = parts[1]
        flags = _uint(parts[2], 1 << 32)
        exptime = _int(parts[3])
        length = _int(parts[4])
        cas = _uint(parts[5]) if isCas else 0
        if (
            flags is None or exptime is None or length is None or cas is None
            or not 0 <= length <= MAX_VALUE_LENGTH
        ):
            # memcached answers before reading any value: the next line is
            # parsed as a command
            out.append(BAD_FORMAT)
            return pos
        if not validKey(key):
            out.append(BAD_FORMAT)
            return pos
        # a last extra token other than "noreply" is ignored, as memcached does
        noreply = nparts > base and parts[-1] == b"noreply"
        if not session.authenticated:
            if mode != _SET_MODE or length > MAX_AUTH_VALUE:
                return self._refuse(UNAUTHENTICATED if mode != _SET_MODE else AUTH_FAILURE,
                                    length, data, pos, out)
            handler, args = self._auth, (key,)
        elif not session.fits(key, length):
            session.refuseTooLarge(mode, key, cas, length)
            return self._refuse(TOO_LARGE, length, data, pos, out)
        else:
            handler, args = self._store, (mode, key, flags, exptime, cas, noreply)
        return self._body(handler, args, length, data, pos, out)

    def _body(self, handler, args, length, data, pos, out):
        """
        Hand a value body of C{length} bytes at C{pos} to C{handler}, or
        start collecting it if incomplete.
        """
        needed = length + 2
        if len(data) - pos < needed:
            self._value = [handler, args, needed, [data[pos:]], len(data) - pos]
            self._emitOut(out)
            return None
        stop = pos + needed
        if data[stop - 2:stop] != b"\r\n":
            out.append(BAD_CHUNK)
            return stop
        return self._complete(handler, args, data[pos:stop - 2], data, stop, out)

    def _complete(self, handler, args, value, data, stop, out):
        """
        Run a storage handler on its complete value.

        @return: C{stop}, or L{None} if parsing must stop (see L{_storage}).
        """
        try:
            result = handler(args, value, out)
        except Exception:
            out.append(self.failedNow(_serverError))
            result = None
        if result is None:
            return stop
        self._emitOut(out)
        if result is _CLOSE:
            self.closeAfterReplies()
        else:
            self.hold(data[stop:])
        return None

    def _refuse(self, reply, length, data, pos, out):
        """
        Answer C{reply} and discard a value body of C{length} bytes without
        buffering it.
        """
        if reply:
            out.append(reply)
        stop = pos + length + 2
        if stop <= len(data):
            return stop
        self._swallow = stop - len(data)
        self._emitOut(out)
        return None

    def _collectValue(self, data):
        """
        Add C{data} to a value body being received.

        @return: the bytes after the completed request, or L{None} if more
            is needed or parsing stopped.
        """
        state = self._value
        handler, args, needed, chunks, received = state
        chunks.append(data)
        received += len(data)
        if received < needed:
            state[4] = received
            return None
        self._value = None
        whole = b"".join(chunks)
        out = []
        if whole[needed - 2:needed] != b"\r\n":
            out.append(BAD_CHUNK)
        elif self._complete(handler, args, whole[:needed - 2], whole, needed, out) is None:
            return None
        self._emitOut(out)
        return whole[needed:]

    def _store(self, args, value, out):
        mode, key, flags, exptime, cas, noreply = args
        result = self.session.store(mode, key, value, flags, exptime, cas)
        if result.__class__ is Deferred:
            self.later(result, _noReply if noreply else _storeReply, _serverError, out)
            return None
        if not noreply:
            out.append(_STORE_REPLIES[result[0]])
        return None

    def _auth(self, args, password, out):
        (username,) = args
        result = self.session.authenticate(username, password)
        if result.__class__ is Deferred:
            # what follows depends on the outcome: parse it afterwards
            if self.later(result, self._lateAuthReply, _serverError, out, barrier=True):
                return _HOLD
            return None
        out.append(_authReply(result))
        if result == AuthResult.TOO_MANY_CONNECTIONS or result == AuthResult.THROTTLED:
            return _CLOSE
        return None

    def _lateAuthReply(self, result):
        if result == AuthResult.TOO_MANY_CONNECTIONS or result == AuthResult.THROTTLED:
            # our slot is still pending: the close waits for this reply
            self.closeAfterReplies()
        return _authReply(result)

    # -- retrieval ---------------------------------------------------------

    def cmd_get(self, parts, out):
        if len(parts) == 2:
            # the most common request of all: one key
            key = parts[1]
            if len(key) > KEY_MAX_LENGTH:
                out.append(BAD_FORMAT)
                return None
            item = self.session.get(key)
            if item is None:
                out.append(END)
            elif item.__class__ is Deferred:
                self.later(item, partial(_renderOne, key), _serverError, out)
            else:
                out.append(renderHit(key, item))
            return None
        if len(parts) < 2:
            out.append(ERROR)
            return None
        return self._retrieve(parts, 1, None, False, out)

    def cmd_gets(self, parts, out):
        if len(parts) < 2:
            out.append(ERROR)
            return None
        return self._retrieve(parts, 1, None, True, out)

    def cmd_gat(self, parts, out):
        return self._gat(parts, False, out)

    def cmd_gats(self, parts, out):
        return self._gat(parts, True, out)

    def _gat(self, parts, withCas, out):
        if len(parts) < 3:
            out.append(ERROR)
            return None
        exptime = _int(parts[1])
        if exptime is None:
            out.append(BAD_EXPTIME)
            return None
        return self._retrieve(parts, 2, exptime, withCas, out)

    def _retrieve(self, parts, first, exptime, withCas, out):
        session = self.session
        keys = parts[first:]
        if self.maxKeys and len(keys) > self.maxKeys:
            out.append(TOO_MANY_KEYS)
            return None
        if longestKey(keys) > KEY_MAX_LENGTH:
            out.append(BAD_FORMAT)
            return None
        if exptime is None:
            items = session.getMany(keys)
        else:
            items = [session.gat(key, exptime) for key in keys]
            if any(i.__class__ is Deferred for i in items):
                items = gatherResults(
                    [maybeDeferred(lambda i=i: i) for i in items], consumeErrors=True
                )
        if isinstance(items, Deferred):
            self.later(
                items,
                partial(_renderManyWithCas if withCas else _renderMany, keys),
                _serverError,
                out,
            )
            return None
        if len(items) <= STREAM_SLICE:
            out.append(renderValues(keys, items, withCas, END))
            return None
        return self._stream(keys, items, 0, withCas, out)

    def _stream(self, keys, items, start, withCas, out):
        """
        Send a long multi-get as it is rendered, L{FLUSH_AT} bytes at a
        time (big values by reference, see L{renderStream}); once output
        is queued at the transport (the client reads slower than we
        answer), the rest waits for it to drain, so a client that never
        reads holds about one value, not the whole reply.

        @return: L{_HOLD} if the rest waits (it is kept in C{_streaming}
            for L{drained}), else L{None}.
        """
        count = len(items)
        while start < count:
            pieces, start = renderStream(keys, items, start, withCas, FLUSH_AT)
            if start < count or len(pieces) > 1:
                self._emitOut(out)
                for piece in pieces:
                    self.emit(piece)
                if start < count and self.waitForDrain():
                    self._streaming = (keys, items, start, withCas)
                    return _HOLD
            else:
                out += pieces
        out.append(END)
        return None

    def _statsDetail(self, parts, out):
        subcommand = parts[2] if len(parts) > 2 else b""
        if subcommand not in (b"on", b"off", b"dump"):
            out.append(DETAIL_USAGE)
            return
        result = self.session.statsDetail(subcommand.decode("ascii"))
        if result is None:
            out.append(NO_DETAIL)
        elif subcommand == b"dump":
            out.append(renderDetailDump(result))
        else:
            out.append(OK)

    # -- other classic commands --------------------------------------------

    def cmd_delete(self, parts, out):
        nparts = len(parts)
        if nparts < 2 or nparts > 4:
            out.append(ERROR)
            return None
        key = parts[1]
        noreply = False
        if nparts > 2:
            # memcached 1.6 accepts only a hold time of 0, a relic of
            # memcached 1.2: "delete <key> <number>" deletes nothing
            holdIsZero = parts[2] == b"0"
            noreply = parts[-1] == b"noreply"
            if not (
                (nparts == 3 and (holdIsZero or noreply))
                or (nparts == 4 and holdIsZero and noreply)
            ):
                if not noreply:
                    out.append(DELETE_USAGE)
                return None
        if len(key) > KEY_MAX_LENGTH:
            out.append(BAD_FORMAT)
            return None
        return self._answer(self.session.delete(key, 0), self._deleteReply, noreply, out)

    @staticmethod
    def _deleteReply(result):
        if result is _READ_ONLY:
            return NOT_STORED
        return DELETED if result == _DELETED else NOT_FOUND

    def _answer(self, result, render, noreply, out):
        """
        Render a session result now, or once its Deferred fires.
        """
        if result.__class__ is Deferred:
            self.later(result, _noReply if noreply else render, _serverError, out)
            return None
        if not noreply:
            out.append(render(result))
        return None

    def cmd_incr(self, parts, out):
        return self._delta(parts, True, out)

    def cmd_decr(self, parts, out):
        return self._delta(parts, False, out)

    def _keyAndNumber(self, parts, parse, badNumber, out):
        """
        Parse C{<cmd> <key> <number> [noreply]} (incr, decr, touch).

        @return: (key, number, noreply), or L{None} after appending the
            error reply to C{out}.
        """
        nparts = len(parts)
        if nparts not in (3, 4) or (nparts == 4 and parts[3] != b"noreply"):
            out.append(ERROR if nparts < 3 else BAD_FORMAT)
            return None
        key = parts[1]
        if len(key) > KEY_MAX_LENGTH:
            out.append(BAD_FORMAT)
            return None
        number = parse(parts[2])
        if number is None:
            out.append(badNumber)
            return None
        return key, number, nparts == 4

    def _delta(self, parts, incr, out):
        parsed = self._keyAndNumber(parts, _uint, BAD_DELTA, out)
        if parsed is None:
            return None
        key, delta, noreply = parsed
        return self._answer(self.session.delta(key, incr, delta), self._deltaReply, noreply, out)

    @staticmethod
    def _deltaReply(result):
        code = result[0]
        if code == DeltaResult.OK:
            return b"%d\r\n" % result[1]
        if code == DeltaResult.NOT_FOUND:
            return NOT_FOUND
        if code == DeltaResult.NON_NUMERIC:
            return NON_NUMERIC
        if code is Refused.READ_ONLY:
            return NOT_STORED
        if code == DeltaResult.EXISTS:
            return EXISTS
        return b"SERVER_ERROR out of memory\r\n"

    def cmd_touch(self, parts, out):
        parsed = self._keyAndNumber(parts, _int, BAD_EXPTIME, out)
        if parsed is None:
            return None
        key, exptime, noreply = parsed
        return self._answer(self.session.touch(key, exptime), self._touchReply, noreply, out)

    @staticmethod
    def _touchReply(item):
        if item is _READ_ONLY:
            return NOT_STORED
        return NOT_FOUND if item is None else TOUCHED

    def cmd_flush_all(self, parts, out):
        args = parts[1:]
        noreply = bool(args) and args[-1] == b"noreply"
        if noreply:
            args = args[:-1]
        if len(args) > 1:
            out.append(ERROR)
            return None
        delay = 0
        if args:
            delay = _int(args[0])
            if delay is None:
                out.append(BAD_EXPTIME)
                return None
        result = self.session.flush(delay)
        if result is Refused.FLUSH_NOT_ALLOWED:
            out.append(FLUSH_NOT_ALLOWED)
            return None
        return self._answer(result, lambda r: OK, noreply, out)

    def cmd_version(self, parts, out):
        out.append(b"VERSION %b\r\n" % VERSION.encode("ascii"))

    def cmd_verbosity(self, parts, out):
        nparts = len(parts)
        noreply = parts[-1] == b"noreply"
        if nparts - noreply != 2 or _int(parts[1]) is None:
            out.append(ERROR if nparts < 2 else BAD_FORMAT)
            return None
        if not noreply:
            out.append(OK)

    def cmd_config(self, parts, out):
        """
        ElastiCache's auto discovery: C{config get cluster} lists the live
        nodes of the cluster with a version that rises on every change.
        """
        if len(parts) != 3 or parts[1] != b"get" or parts[2] != b"cluster":
            out.append(ERROR)
            return None
        version, servers = self.session.discovery()
        nodes = []
        for server in servers:
            host, _, port = server.rpartition(":")
            host = host.strip("[]")
            ip = host if _isAddress(host) else ""
            nodes.append(f"{host}|{ip}|{port}")
        body = f"{version}\n{' '.join(nodes)}\n".encode("ascii", "replace")
        out.append(b"CONFIG cluster 0 %d\r\n%b\r\nEND\r\n" % (len(body), body))
        return None

    def cmd_quit(self, parts, out):
        return _CLOSE

    def cmd_stats(self, parts, out):
        group = parts[1] if len(parts) > 1 else b""
        if group == b"reset" and len(parts) == 2:
            self.session.resetStats()
            out.append(b"RESET\r\n")
            return None
        if group == b"detail":
            self._statsDetail(parts, out)
            return None
        if group in (b"cachedump", b"conns"):
            out.append(b"CLIENT_ERROR stats %b not allowed\r\n" % group)
            return None
        lines = self.session.statsGroup(group.decode("ascii", "replace")) if len(parts) <= 2 else None
        if lines is None:
            out.append(ERROR)
            return None
        out.append(
            b"".join(b"STAT %s %s\r\n" % (n.encode(), v.encode()) for n, v in lines) + END
        )
