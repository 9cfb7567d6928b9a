# -*- test-case-name: tests.unit.test_ascii -*-
"""
The ASCII codec: memcached's text protocol, classic and meta commands, and
MemCachier's ASCII authentication (C{set <username> 0 0 <len>} with the
password as the value, as the first command).

Parsing is done by hand over the bytes of one C{dataReceived} call: every
complete request is answered into one output list, sent once at the end.
A value body is waited for without re-parsing its command line, and a value
too large for the cache is swallowed without being buffered, so no request
makes a connection hold more than L{MAX_LINE_GET} bytes plus one item.
"""

import base64

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred

from memcachier.commands import (
    KEY_MAX_LENGTH,
    U64,
    VERSION,
    DeleteResult,
    DeltaResult,
    Refused,
    StoreMode,
    StoreResult,
    validKey,
)
from memcachier.protocols.base import FLUSH_AT, CodecProtocol
from memcachier.protocols.session import AuthResult

#: a line without C{\n} longer than this closes the connection (memcached)
MAX_LINE = 2048
#: retrieval lines may be longer (many keys), up to this
MAX_LINE_GET = 256 * 1024
#: longest password accepted in ASCII auth
MAX_AUTH_VALUE = 1024
#: longest opaque token of meta commands
MAX_OPAQUE = 32
#: a multi-get of more keys is rendered this many keys at a time (fewer
#: once values prove large), so that a huge one is sent as it goes and can
#: wait for a slow reader
STREAM_SLICE = 16
#: replies gathered before the codec checks its output size
CHECK_EVERY = 32

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
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
TOO_MANY_CONNECTIONS = b"SERVER_ERROR too many connections for this cache\r\n"
CACHE_DISABLED = b"SERVER_ERROR cache disabled\r\n"
LINE_TOO_LONG = b"CLIENT_ERROR line too long\r\n"

_STORE_REPLIES = {
    StoreResult.STORED: STORED,
    StoreResult.NOT_STORED: NOT_STORED,
    StoreResult.EXISTS: EXISTS,
    StoreResult.NOT_FOUND: NOT_FOUND,
    StoreResult.TOO_LARGE: TOO_LARGE,
    StoreResult.NO_MEMORY: NO_MEMORY,
}
_META_STORE_REPLIES = {
    StoreResult.STORED: b"HD",
    StoreResult.NOT_STORED: b"NS",
    StoreResult.EXISTS: b"EX",
    StoreResult.NOT_FOUND: b"NF",
}
_STORAGE_MODES = {
    b"set": StoreMode.SET,
    b"add": StoreMode.ADD,
    b"replace": StoreMode.REPLACE,
    b"append": StoreMode.APPEND,
    b"prepend": StoreMode.PREPEND,
    b"cas": StoreMode.CAS,
}
_META_MODES = {
    b"E": StoreMode.ADD, b"e": StoreMode.ADD,
    b"A": StoreMode.APPEND, b"a": StoreMode.APPEND,
    b"P": StoreMode.PREPEND, b"p": StoreMode.PREPEND,
    b"R": StoreMode.REPLACE, b"r": StoreMode.REPLACE,
    b"S": StoreMode.SET, b"s": StoreMode.SET,
}
#: every flag letter some meta command takes (memcached's
#: C{_meta_flag_preparse}); anything else is an invalid flag
_META_FLAGS = frozenset(bytes([c]) for c in b"bcfhklOPLqstuvENRTIMDJFSCx")
_RETRIEVAL = frozenset((b"get", b"gets", b"gat", b"gats"))
_BEFORE_AUTH = frozenset((b"version", b"quit", b"mn"))


class _Malformed(Exception):
    """
    A meta command's flags could not be parsed; carries the reply.
    """


def _uint(token, limit=U64):
    """
    Parse an unsigned decimal below C{limit}, or return L{None}.
    """
    if not token.isdigit() or len(token) > 20:
        return None
    value = int(token)
    return value if value < limit else None


def _int(token):
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




class AsciiProtocol(CodecProtocol):
    """
    memcached's text protocol over a L{memcachier.protocols.session.Session}.

    @ivar _buffer: bytes received but not yet parsed.
    @ivar _value: while waiting for a value body: C{[handler, args,
        needed, chunks, received]}.
    @ivar _swallow: value bytes still to discard (refused storage command).
    @ivar _waiting: the L{Deferred} of an asynchronous answer in progress;
        nothing further is parsed until it fires.
    """

    def __init__(self, session):
        CodecProtocol.__init__(self, session)
        self._buffer = b""
        self._value = None
        self._swallow = 0
        self._waiting = None
        self._closing = False
        self._blocked = False
        self._streaming = None
        handlers = {}
        for name in dir(self):
            if name.startswith("cmd_"):
                handlers[name[4:].encode("ascii")] = getattr(self, name)
        self._handlers = handlers

    # -- framing -----------------------------------------------------------

    def dataReceived(self, data):
        session = self.session
        session.stats.bytes_read += len(data)
        runtime = session.runtime
        if runtime is not None and runtime.gone:
            self._abort(CACHE_DISABLED)
            return
        if self._waiting is not None or self._closing or self._blocked:
            self._buffer += data
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
        authenticated = self.session.authenticated
        pos = 0
        end = len(data)
        while pos < end:
            eol = data.find(b"\n", pos)
            if eol < 0:
                pending = end - pos
                if pending > MAX_LINE:
                    head = data[pos:pos + 5]
                    if not (head.startswith(b"get") or head.startswith(b"gat")):
                        self._closing = True
                        break
                    if pending > MAX_LINE_GET:
                        out.append(LINE_TOO_LONG)
                        self._closing = True
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
                    break
                pos = consumed
                authenticated = self.session.authenticated
                continue
            handler = handlers.get(command)
            if not authenticated and command not in _BEFORE_AUTH:
                if handler is None and parts[-1].startswith(b"HTTP/"):
                    self._closing = True
                    break
                out.append(UNAUTHENTICATED)
                continue
            if handler is None:
                if parts[-1].startswith(b"HTTP/"):
                    self._closing = True
                    break
                if command == b"ms":
                    consumed = self._metaSet(parts, data, pos, out)
                    if consumed is None:
                        break
                    pos = consumed
                    continue
                out.append(ERROR)
                continue
            waiting = handler(parts, out)
            if waiting is not None:
                if waiting is _CLOSE:
                    self._closing = True
                    break
                if waiting is _BLOCKED:
                    self._block(data[pos:], out)
                    return
                self._wait(waiting, data[pos:], out)
                return
            if len(out) >= CHECK_EVERY or (out and len(out[-1]) > FLUSH_AT):
                # bound what one read can make us hold for a slow reader
                self._flushOut(out)
                if self.backlogged:
                    self._block(data[pos:], out)
                    return
            authenticated = self.session.authenticated
        if out:
            self.send(b"".join(out))
        if self._closing:
            self.transport.loseConnection()

    def _flushOut(self, out):
        """
        Send the replies gathered so far and empty C{out}.
        """
        if out:
            self.send(b"".join(out))
            del out[:]

    def _abort(self, reply):
        self._closing = True
        self.send(reply)
        self.transport.loseConnection()

    def _block(self, rest, out):
        """
        The client is not reading its answers: keep C{rest} unparsed until
        the transport has drained (L{drained}).
        """
        self._flushOut(out)
        self._buffer = rest
        self._blocked = True

    def drained(self):
        if not self._blocked:
            return
        self._blocked = False
        if self._streaming is not None:
            items, start, withCas = self._streaming
            self._streaming = None
            out = []
            blocked = self._stream(items, start, withCas, out)
            self._flushOut(out)
            if blocked is _BLOCKED:
                self._blocked = True
                return
        rest, self._buffer = self._buffer, b""
        if self._swallow or self._value is not None:
            self.dataReceived(rest)
        elif rest:
            self._process(rest)

    def _wait(self, deferred, rest, out):
        """
        An answer is asynchronous: send what is ready, stop reading, and
        go on with C{rest} once C{deferred} fires with the reply bytes.
        """
        self._flushOut(out)
        self._buffer = rest
        self._waiting = deferred
        self.pauseReading()
        deferred.addCallback(self._resume)

    def _resume(self, reply):
        self._waiting = None
        if reply:
            self.send(reply)
        if self._closing or not self.transport.connected:
            return
        self.resumeReading()
        rest, self._buffer = self._buffer, b""
        if self._swallow or self._value is not None:
            self.dataReceived(rest)
        elif rest:
            self._process(rest)

    # -- storage -----------------------------------------------------------

    def _storage(self, mode, parts, data, pos, out):
        """
        Parse a storage command line and its value body.

        @return: the position after the request, or L{None} when the body
            is incomplete (the rest is collected by L{_collectValue}).
        """
        session = self.session
        nparts = len(parts)
        isCas = mode == StoreMode.CAS
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
        if flags is None or exptime is None or length is None or length < 0 or cas is None:
            out.append(BAD_FORMAT)
            return pos
        if not validKey(key):
            out.append(BAD_FORMAT)
            return pos
        # a last extra token other than "noreply" is ignored, as memcached does
        noreply = nparts > base and parts[-1] == b"noreply"
        if not session.authenticated:
            if mode != StoreMode.SET or length > MAX_AUTH_VALUE:
                return self._refuse(UNAUTHENTICATED if mode != StoreMode.SET else AUTH_FAILURE,
                                    length, data, pos, out)
            handler, args = self._auth, (key,)
        elif len(key) + length > session.itemSizeLimit:
            session.stats.cmd_set += 1
            session.stats.store_too_large += 1
            if mode == StoreMode.SET and session.canWrite:
                session.keyspace.delete(key, 0)
            return self._refuse(TOO_LARGE, length, data, pos, out)
        else:
            handler, args = self._store, (mode, key, flags, exptime, cas, noreply)
        needed = length + 2
        if len(data) - pos < needed:
            self._value = [handler, args, needed, [data[pos:]], len(data) - pos]
            self._flushOut(out)
            return None
        stop = pos + needed
        if data[stop - 2:stop] != b"\r\n":
            out.append(BAD_CHUNK)
            return stop
        waiting = handler(args, data[pos:stop - 2], out)
        if waiting is not None:
            if waiting is _CLOSE:
                self._closing = True
            else:
                self._wait(waiting, data[stop:], out)
            return None
        return stop

    def _refuse(self, reply, length, data, pos, out):
        """
        Answer C{reply} and discard a value body of C{length} bytes without
        buffering it.
        """
        out.append(reply)
        stop = pos + length + 2
        if stop <= len(data):
            return stop
        self._swallow = stop - len(data)
        self._flushOut(out)
        return None

    def _collectValue(self, data):
        """
        Add C{data} to a value body being received.

        @return: the bytes after the completed request, or L{None} if more
            is needed or an asynchronous answer started.
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
        else:
            waiting = handler(args, whole[:needed - 2], out)
            if waiting is _CLOSE:
                self._abort(b"".join(out))
                return None
            if waiting is not None:
                self._wait(waiting, whole[needed:], out)
                return None
        if out:
            self.send(b"".join(out))
        return whole[needed:]

    def _store(self, args, value, out):
        mode, key, flags, exptime, cas, noreply = args
        result = self.session.store(mode, key, value, flags, exptime, cas)
        if result.__class__ is Deferred:
            return result.addCallback(lambda r: b"" if noreply else _STORE_REPLIES[r[0]])
        if not noreply:
            out.append(_STORE_REPLIES[result[0]])
        return None

    def _auth(self, args, password, out):
        (username,) = args
        result = self.session.authenticate(username, password)
        if result.__class__ is Deferred:
            return result.addCallback(self._authReply)
        out.append(self._authReply(result))
        if result == AuthResult.TOO_MANY_CONNECTIONS or result == AuthResult.THROTTLED:
            return _CLOSE
        return None

    def _authReply(self, result):
        if result == AuthResult.OK:
            return STORED
        if result == AuthResult.TOO_MANY_CONNECTIONS:
            return TOO_MANY_CONNECTIONS
        return AUTH_FAILURE

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
                return item.addCallback(lambda i: self._renderValues((i,), False))
            else:
                header = item.header
                if header is None:
                    header = item.header = b"VALUE %b %d %d\r\n" % (
                        key, item.flags, len(item.value)
                    )
                out.append(b"%b%b\r\nEND\r\n" % (header, item.value))
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
        for key in keys:
            if len(key) > KEY_MAX_LENGTH:
                out.append(BAD_FORMAT)
                return None
        if exptime is None:
            items = session.getMany(keys)
        else:
            items = [session.gat(key, exptime) for key in keys]
            if any(i.__class__ is Deferred for i in items):
                items = gatherResults([maybeDeferred(lambda i=i: i) for i in items])
        if items.__class__ is Deferred:
            return items.addCallback(self._renderValues, withCas)
        if len(items) <= STREAM_SLICE:
            out.append(self._renderValues(items, withCas))
            return None
        return self._stream(items, 0, withCas, out)

    def _stream(self, items, start, withCas, out):
        """
        Render a long multi-get a slice at a time, sending as it goes.

        @return: L{_BLOCKED} if the client stopped reading (the rest is
            kept in C{_streaming} for L{drained}), else L{None}.
        """
        size = 0
        count = len(items)
        step = STREAM_SLICE
        while start < count:
            piece = self._renderItems(items[start:start + step], withCas)
            start += step
            out.append(piece)
            size += len(piece)
            if len(piece) > FLUSH_AT:
                step = max(1, step * FLUSH_AT // len(piece))
            if size > FLUSH_AT and start < count:
                self._flushOut(out)
                size = 0
                if self.backlogged:
                    self._streaming = (items, start, withCas)
                    return _BLOCKED
        out.append(END)
        return None

    @classmethod
    def _renderValues(cls, items, withCas):
        return cls._renderItems(items, withCas) + END

    @staticmethod
    def _renderItems(items, withCas):
        """
        The C{VALUE} blocks of the hits among C{items}.
        """
        chunks = []
        add = chunks.extend
        for item in items:
            if item is not None:
                if withCas:
                    header = b"VALUE %b %d %d %d\r\n" % (
                        item.key, item.flags, len(item.value), item.cas
                    )
                else:
                    header = item.header
                    if header is None:
                        header = item.header = b"VALUE %b %d %d\r\n" % (
                            item.key, item.flags, len(item.value)
                        )
                add((header, item.value, CRLF))
        return b"".join(chunks)

    # -- other classic commands --------------------------------------------

    def cmd_delete(self, parts, out):
        nparts = len(parts)
        if nparts < 2:
            out.append(ERROR)
            return None
        key = parts[1]
        noreply = parts[-1] == b"noreply" and nparts > 2
        if nparts > 2 and not noreply and not (nparts == 3 and parts[2] == b"0"):
            out.append(b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n")
            return None
        if len(key) > KEY_MAX_LENGTH:
            out.append(BAD_FORMAT)
            return None
        return self._answer(self.session.delete(key, 0), self._deleteReply, noreply, out)

    @staticmethod
    def _deleteReply(result):
        if result is Refused.READ_ONLY:
            return NOT_STORED
        return DELETED if result == DeleteResult.DELETED else NOT_FOUND

    def _answer(self, result, render, noreply, out):
        """
        Render a session result now, or once its Deferred fires.
        """
        if result.__class__ is Deferred:
            return result.addCallback(lambda r: b"" if noreply else render(r))
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
        if item is Refused.READ_ONLY:
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

    def cmd_quit(self, parts, out):
        return _CLOSE

    def cmd_stats(self, parts, out):
        group = parts[1] if len(parts) > 1 else b""
        if group == b"reset" and len(parts) == 2:
            self.session.resetStats()
            out.append(b"RESET\r\n")
            return None
        if group in (b"detail", b"cachedump", b"conns"):
            out.append(b"CLIENT_ERROR stats %b not allowed\r\n" % group)
            return None
        lines = self.session.statsGroup(group.decode("ascii", "replace")) if len(parts) <= 2 else None
        if lines is None:
            out.append(ERROR)
            return None
        out.append(
            b"".join(b"STAT %s %s\r\n" % (n.encode(), v.encode()) for n, v in lines) + END
        )

    # -- meta commands -----------------------------------------------------

    def _metaFlags(self, tokens):
        """
        Parse meta flags into a dict of flag byte -> token (C{b""} for
        flags without a token), keeping their order for return flags.
        """
        flags = {}
        for token in tokens:
            flag = token[:1]
            if flag not in _META_FLAGS:
                raise _Malformed(b"CLIENT_ERROR invalid flag\r\n")
            if flag in flags:
                raise _Malformed(b"CLIENT_ERROR duplicate flag\r\n")
            flags[flag] = token[1:]
        opaque = flags.get(b"O")
        if opaque is not None and len(opaque) > MAX_OPAQUE:
            raise _Malformed(b"CLIENT_ERROR opaque token too long\r\n")
        return flags

    def _metaKey(self, key, flags):
        if b"b" in flags:
            try:
                key = base64.b64decode(key, validate=True)
            except ValueError:
                raise _Malformed(b"CLIENT_ERROR error decoding key\r\n")
        if not validKey(key):
            raise _Malformed(BAD_FORMAT)
        return key

    @staticmethod
    def _metaNumber(flags, flag, default, signed=False):
        token = flags.get(flag)
        if token is None:
            return default
        value = _int(token) if signed else _uint(token)
        if value is None:
            raise _Malformed(b"CLIENT_ERROR bad token in command line format\r\n")
        return value

    @staticmethod
    def _metaEcho(flags, key, item=None):
        """
        The return flags every meta reply echoes: O(paque), k(ey), b.
        """
        ret = []
        for flag, token in flags.items():
            if flag == b"O":
                ret.append(b"O" + token)
            elif flag == b"k":
                ret.append(b"k" + (base64.b64encode(key) if b"b" in flags else key))
            elif flag == b"b" and b"k" in flags:
                ret.append(b"b")
            elif item is not None and flag == b"c":
                ret.append(b"c%d" % item.cas)
        return ret

    def _metaDo(self, parts, out, body):
        """
        Run a meta command body, turning L{_Malformed} into its reply.
        """
        self.session.stats.cmd_meta += 1
        if len(parts) < 2:
            out.append(ERROR)
            return None
        try:
            flags = self._metaFlags(parts[2:])
            key = self._metaKey(parts[1], flags)
            return body(key, flags, out)
        except _Malformed as e:
            out.append(e.args[0])
            return None

    def cmd_mn(self, parts, out):
        out.append(b"MN\r\n")

    def cmd_mg(self, parts, out):
        return self._metaDo(parts, out, self._metaGet)

    def _metaGet(self, key, flags, out):
        session = self.session
        now = session.reactor.seconds()
        before = session.peek(key) if (b"h" in flags or b"l" in flags) else None
        hitBefore = bool(before is not None and before.fetched)
        lastAccess = int(now - before.atime) if before is not None else 0
        ttl = self._metaNumber(flags, b"T", None, signed=True)
        won = False
        if ttl is not None:
            item = session.gat(key, ttl)
        elif b"u" in flags and b"v" not in flags:
            item = session.peek(key)
        else:
            item = session.get(key)
        if item.__class__ is Deferred:
            # meta commands over asynchronous stores: answered in order
            return item.addCallback(lambda i: self._metaGetReply(key, flags, i, False, 0, 0, now))
        if item is None and b"N" in flags:
            vivify = self._metaNumber(flags, b"N", 0, signed=True)
            result = session.store(StoreMode.ADD, key, b"", 0, vivify, 0)
            if result[0] == StoreResult.STORED:
                item = session.peek(key)
                won = True
        out.append(self._metaGetReply(key, flags, item, won, hitBefore, lastAccess, now))
        return None

    def _metaGetReply(self, key, flags, item, won, hitBefore, lastAccess, now):
        if item is None:
            if b"q" in flags:
                return b""
            echo = self._metaEcho(flags, key)
            return b"EN" + b"".join(b" " + e for e in echo) + b"\r\n"
        ret = []
        for flag in flags:
            if flag == b"f":
                ret.append(b"f%d" % item.flags)
            elif flag == b"s":
                ret.append(b"s%d" % len(item.value))
            elif flag == b"t":
                ret.append(b"t%d" % (int(item.exptime - now) if item.exptime else -1))
            elif flag == b"c":
                ret.append(b"c%d" % item.cas)
            elif flag == b"h":
                ret.append(b"h%d" % hitBefore)
            elif flag == b"l":
                ret.append(b"l%d" % lastAccess)
        ret.extend(self._metaEcho({f: t for f, t in flags.items() if f != b"c"}, key))
        if won:
            ret.append(b"W")
        suffix = b"".join(b" " + r for r in ret)
        if b"v" in flags:
            return b"VA %d%b\r\n%b\r\n" % (len(item.value), suffix, item.value)
        return b"HD" + suffix + b"\r\n"

    def _metaSet(self, parts, data, pos, out):
        """
        C{ms <key> <datalen> <flags>*}: like a storage command, the value
        follows the line.
        """
        self.session.stats.cmd_meta += 1
        if len(parts) < 3:
            out.append(BAD_FORMAT)
            return pos
        length = _int(parts[2])
        try:
            flags = self._metaFlags(parts[3:])
            key = self._metaKey(parts[1], flags)
            if length is None or length < 0:
                raise _Malformed(BAD_FORMAT)
            mode = _META_MODES.get(flags.get(b"M", b"S"))
            if mode is None:
                raise _Malformed(b"CLIENT_ERROR invalid mode for ms M token\r\n")
            itemFlags = self._metaNumber(flags, b"F", 0)
            ttl = self._metaNumber(flags, b"T", 0, signed=True)
            cas = self._metaNumber(flags, b"C", 0)
        except _Malformed as e:
            out.append(e.args[0])
            if length is None or length < 0:
                return pos
            return self._refuse(b"", length, data, pos, out)
        session = self.session
        if len(key) + length > session.itemSizeLimit:
            session.stats.store_too_large += 1
            return self._refuse(TOO_LARGE, length, data, pos, out)
        if mode == StoreMode.SET and cas:
            mode = StoreMode.CAS
        needed = length + 2
        args = (mode, key, itemFlags, ttl, cas, flags)
        if len(data) - pos < needed:
            self._value = [self._metaStore, args, needed, [data[pos:]], len(data) - pos]
            self._flushOut(out)
            return None
        stop = pos + needed
        if data[stop - 2:stop] != b"\r\n":
            out.append(BAD_CHUNK)
            return stop
        waiting = self._metaStore(args, data[pos:stop - 2], out)
        if waiting is not None:
            self._wait(waiting, data[stop:], out)
            return None
        return stop

    def _metaStore(self, args, value, out):
        mode, key, itemFlags, ttl, cas, flags = args
        result = self.session.store(mode, key, value, itemFlags, ttl, cas)
        render = lambda r: self._metaStoreReply(key, flags, r)
        if result.__class__ is Deferred:
            return result.addCallback(render)
        out.append(render(result))
        return None

    def _metaStoreReply(self, key, flags, result):
        code, cas = result
        if code == StoreResult.TOO_LARGE:
            return TOO_LARGE
        if code == StoreResult.NO_MEMORY:
            return NO_MEMORY
        if code == StoreResult.STORED and b"q" in flags:
            return b""
        ret = []
        for flag, token in flags.items():
            if flag == b"c":
                ret.append(b"c%d" % cas)
        ret.extend(self._metaEcho({f: t for f, t in flags.items() if f != b"c"}, key))
        return _META_STORE_REPLIES[code] + b"".join(b" " + r for r in ret) + b"\r\n"

    def cmd_md(self, parts, out):
        return self._metaDo(parts, out, self._metaDelete)

    def _metaDelete(self, key, flags, out):
        cas = self._metaNumber(flags, b"C", 0)
        result = self.session.delete(key, cas)

        def render(r):
            if r is Refused.READ_ONLY:
                code = b"NS"
            elif r == DeleteResult.DELETED:
                if b"q" in flags:
                    return b""
                code = b"HD"
            elif r == DeleteResult.EXISTS:
                code = b"EX"
            else:
                code = b"NF"
            return code + b"".join(b" " + e for e in self._metaEcho(flags, key)) + b"\r\n"

        return self._answer(result, render, False, out)

    def cmd_ma(self, parts, out):
        return self._metaDo(parts, out, self._metaArithmetic)

    def _metaArithmetic(self, key, flags, out):
        mode = flags.get(b"M", b"I")
        if mode in (b"I", b"i", b"+"):
            incr = True
        elif mode in (b"D", b"d", b"-"):
            incr = False
        else:
            raise _Malformed(b"CLIENT_ERROR invalid mode for ma M token\r\n")
        delta = self._metaNumber(flags, b"D", 1)
        initial = self._metaNumber(flags, b"J", 0) if b"N" in flags else None
        ttl = self._metaNumber(flags, b"N", 0, signed=True)
        cas = self._metaNumber(flags, b"C", 0)
        result = self.session.delta(key, incr, delta, initial, ttl, cas)

        def render(r):
            code, value, newCas = r
            if code == DeltaResult.OK:
                ret = []
                for flag in flags:
                    if flag == b"c":
                        ret.append(b"c%d" % newCas)
                    elif flag == b"t":
                        ret.append(b"t-1")
                ret.extend(self._metaEcho({f: t for f, t in flags.items() if f != b"c"}, key))
                suffix = b"".join(b" " + x for x in ret)
                if b"v" in flags:
                    number = b"%d" % value
                    return b"VA %d%b\r\n%b\r\n" % (len(number), suffix, number)
                if b"q" in flags:
                    return b""
                return b"HD" + suffix + b"\r\n"
            if code == DeltaResult.NON_NUMERIC:
                return NON_NUMERIC
            reply = {
                DeltaResult.NOT_FOUND: b"NF",
                DeltaResult.EXISTS: b"EX",
                Refused.READ_ONLY: b"NS",
            }.get(code, b"NS")
            return reply + b"".join(b" " + e for e in self._metaEcho(flags, key)) + b"\r\n"

        return self._answer(result, render, False, out)

    def cmd_me(self, parts, out):
        return self._metaDo(parts, out, self._metaDebug)

    def _metaDebug(self, key, flags, out):
        item = self.session.peek(key)
        if item.__class__ is Deferred:
            return item.addCallback(lambda i: self._metaDebugReply(key, i))
        out.append(self._metaDebugReply(key, item))
        return None

    def _metaDebugReply(self, key, item):
        if item is None:
            return b"EN\r\n"
        now = self.session.reactor.seconds()
        exp = int(item.exptime - now) if item.exptime else -1
        return b"ME %b exp=%d la=%d cas=%d fetch=%b cls=1 size=%d\r\n" % (
            key, exp, int(now - item.atime), item.cas,
            b"yes" if item.fetched else b"no", len(key) + len(item.value) + 50,
        )


#: returned by a handler to close the connection after the replies so far
_CLOSE = object()
#: returned by a handler that stopped because the client is not reading
_BLOCKED = object()
