# -*- test-case-name: tests.unit.test_ascii -*-
"""
memcached's meta commands (C{mg ms md ma mn me}) for the ASCII codec.

L{MetaCommands} is mixed into L{memcachier.protocols.ascii.AsciiProtocol}:
it parses meta flags, calls the session and renders meta replies; the
codec's framing (value bodies, the reply pipeline) does the rest.  Every
read of an item's fields is in the C{_meta*Reply} renderers and
L{_history}.
"""

import base64

from twisted.internet.defer import Deferred

from memcachier.commands import (
    DeleteResult,
    DeltaResult,
    Refused,
    StoreMode,
    StoreResult,
    itemAtime,
    itemCas,
    itemExptime,
    itemFetched,
    itemFlags,
    itemValue,
    itemValueLength,
    validKey,
)
from memcachier.protocols.text import (
    BAD_FORMAT,
    ERROR,
    MAX_VALUE_LENGTH,
    NO_MEMORY,
    NON_NUMERIC,
    TOO_LARGE,
    parseInt,
    parseUint,
    serverError,
)

#: longest opaque token of meta commands
MAX_OPAQUE = 32

_META_STORE_REPLIES = {
    StoreResult.STORED: b"HD",
    StoreResult.NOT_STORED: b"NS",
    StoreResult.EXISTS: b"EX",
    StoreResult.NOT_FOUND: b"NF",
    Refused.READ_ONLY: b"NS",
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


class _Malformed(Exception):
    """
    A meta command's flags could not be parsed; carries the reply.
    """


def _then(result, f, *args):
    """
    Apply C{f} to a session result now, or once its L{Deferred} fires.
    """
    if result.__class__ is Deferred:
        return result.addCallback(f, *args)
    return f(result, *args)


def _same(reply):
    return reply


def _history(before, now):
    """
    What C{mg}'s C{h} and C{l} flags report of an item as it was before
    the fetch: (fetched since stored, seconds since last access).
    """
    if before is None:
        return (False, 0)
    return (itemFetched(before), int(now - itemAtime(before)))


class MetaCommands:
    """
    The meta commands of the ASCII codec (a mixin of
    L{memcachier.protocols.ascii.AsciiProtocol}, whose C{cmd_*} dispatch,
    C{_answer}, C{_refuse}, C{_body} and pipeline they use).
    """

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
        value = parseInt(token) if signed else parseUint(token)
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
                ret.append(b"c%d" % itemCas(item))
        return ret

    def _metaDo(self, parts, out, body):
        """
        Run a meta command body, turning L{_Malformed} into its reply.
        """
        self.session.countMeta()
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
        ttl = self._metaNumber(flags, b"T", None, signed=True)
        vivify = self._metaNumber(flags, b"N", 0, signed=True) if b"N" in flags else None
        # h and l report the item as it was before this fetch
        before = session.peek(key) if (b"h" in flags or b"l" in flags) else None
        reply = _then(before, self._metaFetch, key, flags, ttl, vivify)
        if reply.__class__ is Deferred:
            self.later(reply, _same, serverError, out)
        else:
            out.append(reply)
        return None

    def _metaFetch(self, before, key, flags, ttl, vivify):
        session = self.session
        now = session.reactor.seconds()
        history = _history(before, now)
        if ttl is not None:
            item = session.gat(key, ttl)
        elif b"u" in flags and b"v" not in flags:
            item = session.peek(key)
        else:
            item = session.get(key)
        return _then(item, self._metaVivify, key, flags, vivify, history, now)

    def _metaVivify(self, item, key, flags, vivify, history, now):
        if item is None and vivify is not None:
            return _then(
                self.session.vivify(key, vivify), self._metaVivified, key, flags, history, now
            )
        return self._metaGetReply(key, flags, item, False, history, now)

    def _metaVivified(self, result, key, flags, history, now):
        item, won = result
        return self._metaGetReply(key, flags, item, won, history, now)

    def _metaGetReply(self, key, flags, item, won, history, now):
        hitBefore, lastAccess = history
        if item is None:
            if b"q" in flags:
                return b""
            echo = self._metaEcho(flags, key)
            return b"EN" + b"".join(b" " + e for e in echo) + b"\r\n"
        ret = []
        for flag in flags:
            if flag == b"f":
                ret.append(b"f%d" % itemFlags(item))
            elif flag == b"s":
                ret.append(b"s%d" % itemValueLength(item))
            elif flag == b"t":
                exptime = itemExptime(item)
                ret.append(b"t%d" % (int(exptime - now) if exptime else -1))
            elif flag == b"c":
                ret.append(b"c%d" % itemCas(item))
            elif flag == b"h":
                ret.append(b"h%d" % hitBefore)
            elif flag == b"l":
                ret.append(b"l%d" % lastAccess)
        ret.extend(self._metaEcho({f: t for f, t in flags.items() if f != b"c"}, key))
        if won:
            ret.append(b"W")
        suffix = b"".join(b" " + r for r in ret)
        if b"v" in flags:
            return b"VA %d%b\r\n%b\r\n" % (itemValueLength(item), suffix, itemValue(item))
        return b"HD" + suffix + b"\r\n"

    def _metaSet(self, parts, data, pos, out):
        """
        C{ms <key> <datalen> <flags>*}: like a storage command, the value
        follows the line.
        """
        session = self.session
        session.countMeta()
        if len(parts) < 3:
            out.append(BAD_FORMAT)
            return pos
        length = parseInt(parts[2])
        badLength = length is None or not 0 <= length <= MAX_VALUE_LENGTH
        try:
            flags = self._metaFlags(parts[3:])
            key = self._metaKey(parts[1], flags)
            if badLength:
                raise _Malformed(BAD_FORMAT)
            mode = _META_MODES.get(flags.get(b"M", b"S"))
            if mode is None:
                raise _Malformed(b"CLIENT_ERROR invalid mode for ms M token\r\n")
            itemFlags = self._metaNumber(flags, b"F", 0)
            ttl = self._metaNumber(flags, b"T", 0, signed=True)
            cas = self._metaNumber(flags, b"C", 0)
        except _Malformed as e:
            out.append(e.args[0])
            if badLength:
                # memcached answers before reading any value
                return pos
            return self._refuse(b"", length, data, pos, out)
        if mode == StoreMode.SET and cas:
            mode = StoreMode.CAS
        if not session.fits(key, length):
            session.refuseTooLarge(mode, key, cas, length, meta=True)
            return self._refuse(TOO_LARGE, length, data, pos, out)
        args = (mode, key, itemFlags, ttl, cas, flags)
        return self._body(self._metaStore, args, length, data, pos, out)

    def _metaStore(self, args, value, out):
        mode, key, itemFlags, ttl, cas, flags = args
        result = self.session.store(mode, key, value, itemFlags, ttl, cas)
        if result.__class__ is Deferred:
            self.later(result, lambda r: self._metaStoreReply(key, flags, r), serverError, out)
            return None
        out.append(self._metaStoreReply(key, flags, result))
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
            self.later(item, lambda i: self._metaDebugReply(key, i), serverError, out)
            return None
        out.append(self._metaDebugReply(key, item))
        return None

    def _metaDebugReply(self, key, item):
        if item is None:
            return b"EN\r\n"
        now = self.session.reactor.seconds()
        exptime = itemExptime(item)
        exp = int(exptime - now) if exptime else -1
        return b"ME %b exp=%d la=%d cas=%d fetch=%b cls=1 size=%d\r\n" % (
            key, exp, int(now - itemAtime(item)), itemCas(item),
            b"yes" if itemFetched(item) else b"no", len(key) + itemValueLength(item) + 50,
        )
