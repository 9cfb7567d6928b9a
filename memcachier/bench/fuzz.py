# -*- test-case-name: tests.unit.test_fuzz -*-
"""
Fuzzing both codecs against a real server: the long campaign.

    .venv/bin/python -m memcachier.bench.fuzz --inputs 1000000
    .venv/bin/python -m memcachier.bench.fuzz --inputs 100000 --store segment

starts C{twistd -n memcachier} in a temporary directory (SQLite control
plane, two caches), then sends mutated requests over real sockets in four
campaigns: C{ascii} and C{binary} (authenticated connections, every
command), C{ascii-auth} and C{sasl} (unauthenticated connections, login
requests).  Each connection gets a batch of inputs pipelined without
waiting, then half-closes and reads every reply until the server closes.
Between batches a I{bystander} connection, logged in to the other cache,
sets and reads back a fresh value.  The report lists, per campaign: inputs
sent, replies that are not well-formed, bystander answers that were wrong,
whether the server died, and at the end the log lines that are tracebacks
or errors, and the server's RSS growth.  C{--store segment} runs the node
on the segment store (C{[store] plugin}), whose keyspaces are C code.

The generators and reply checkers are shared with the unit tier
(C{tests/unit/test_fuzz.py}), which fuzzes the codecs in memory with
Hypothesis on every run.
"""

import argparse
import os
import random
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time

from memcachier.bench.process import TwistdNode, cacheStats, freePort

#: a binary request or response header (memcached's protocol_binary.h)
HEADER = struct.Struct(">BBHBBHIIQ")

ASCII_COMMANDS = (
    b"get", b"gets", b"gat", b"gats", b"set", b"add", b"replace", b"append", b"prepend",
    b"cas", b"delete", b"incr", b"decr", b"touch", b"flush_all", b"version", b"verbosity",
    b"stats", b"mg", b"ms", b"md", b"ma", b"mn", b"me",
)
_STORAGE = (b"set", b"add", b"replace", b"append", b"prepend", b"cas", b"ms")
#: C{quit} closes the connection, so it is drawn rarely (else most of a
#: batch would never be parsed)
_QUIT_RATE = 0.002
BINARY_OPCODES = tuple(op for op in range(0x00, 0x25) if op not in (0x07, 0x17))
SASL_OPCODES = (0x20, 0x21, 0x22)

_SIMPLE_REPLIES = frozenset((
    b"END", b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED",
    b"OK", b"ERROR", b"RESET", b"HD", b"NS", b"EX", b"NF", b"EN", b"MN",
))
_PREFIXED_REPLIES = (
    b"CLIENT_ERROR ", b"SERVER_ERROR ", b"VERSION ", b"STAT ", b"PREFIX ", b"ERROR ",
    b"HD ", b"NS ", b"EX ", b"NF ", b"EN ", b"ME ",
)
_NUMBER = re.compile(rb"^[0-9]+$")


class MalformedReply(Exception):
    """
    The server's output is not a sequence of replies of its protocol.
    """


def checkAsciiReplies(data):
    """
    Check that C{data} is a sequence of memcached text-protocol replies:
    known lines, and C{VALUE}/C{VA} blocks whose data is as long as their
    header says.

    @return: the bytes of an incomplete last reply (C{b""} if none).
    @raise MalformedReply: with the offending line.
    """
    pos = 0
    end = len(data)
    while pos < end:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return data[pos:]
        line = data[pos:eol]
        after = eol + 2
        size = None
        if line.startswith(b"VALUE "):
            parts = line.split(b" ")
            if len(parts) not in (4, 5) or not all(_NUMBER.match(p) for p in parts[2:]):
                raise MalformedReply(line[:200])
            size = int(parts[3])
        elif line.startswith(b"VA "):
            parts = line.split(b" ")
            if not _NUMBER.match(parts[1]):
                raise MalformedReply(line[:200])
            size = int(parts[1])
        elif not (
            line in _SIMPLE_REPLIES or line.startswith(_PREFIXED_REPLIES) or _NUMBER.match(line)
        ):
            raise MalformedReply(line[:200])
        if size is not None:
            if after + size + 2 > end:
                return data[pos:]
            if data[after + size:after + size + 2] != b"\r\n":
                raise MalformedReply(line[:200] + b" (data not followed by CRLF)")
            after += size + 2
        pos = after
    return b""


def checkBinaryReplies(data):
    """
    Check that C{data} is a sequence of binary-protocol responses: magic
    0x81 and key and extras lengths within the body.

    @return: the bytes of an incomplete last response.
    @raise MalformedReply: describing the bad header.
    """
    pos = 0
    end = len(data)
    while end - pos >= 24:
        magic, _, keylen, extlen, _, _, bodylen, _, _ = HEADER.unpack_from(data, pos)
        if magic != 0x81 or keylen + extlen > bodylen:
            raise MalformedReply(data[pos:pos + 24].hex())
        if end - pos < 24 + bodylen:
            break
        pos += 24 + bodylen
    return data[pos:]


# -- generators ----------------------------------------------------------------

def _key(rng):
    choice = rng.random()
    if choice < 0.7:
        return b"k%d" % rng.randrange(20)
    if choice < 0.8:
        return bytes(rng.randrange(33, 127) for _ in range(rng.choice((1, 250, 251, 300))))
    return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 8)))


def _number(rng):
    return rng.choice((
        b"0", b"1", b"-1", b"100", b"4294967295", b"4294967296", b"18446744073709551615",
        b"18446744073709551616", b"2147483647", b"-2147483649", b"1e3", b"", b"x", b"99999999999999999999999",
    ))


def _asciiRequest(rng):
    """
    One plausible text-protocol request: a command with keys, numbers and
    flags, a value body for storage commands (its declared length right
    most of the time).
    """
    if rng.random() < _QUIT_RATE:
        return b"quit\r\n"
    command = rng.choice(ASCII_COMMANDS)
    tokens = [command]
    if command in _STORAGE and command != b"ms":
        value = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 10, 100))))
        length = str(len(value)).encode() if rng.random() < 0.8 else _number(rng)
        tokens += [_key(rng), _number(rng) if rng.random() < 0.2 else b"0",
                   _number(rng) if rng.random() < 0.2 else b"0", length]
        if command == b"cas":
            tokens.append(_number(rng))
        if rng.random() < 0.2:
            tokens.append(b"noreply")
        return b" ".join(tokens) + b"\r\n" + value + b"\r\n"
    if command == b"ms":
        value = bytes(rng.randrange(256) for _ in range(rng.choice((0, 3, 50))))
        flags = [rng.choice((b"T0", b"F1", b"I", b"q", b"O123", b"MA", b"ME", b"MS", b"C1", b"k", b"b", b"Zz"))
                 for _ in range(rng.randrange(4))]
        length = str(len(value)).encode() if rng.random() < 0.8 else _number(rng)
        return b" ".join([b"ms", _key(rng), length] + flags) + b"\r\n" + value + b"\r\n"
    if command in (b"mg", b"md", b"ma", b"me"):
        flags = [rng.choice((b"v", b"k", b"c", b"f", b"s", b"t", b"T30", b"N10", b"q", b"O1",
                             b"MI", b"MD", b"D5", b"J3", b"b", b"h", b"l", b"E5", b"R1", b"u"))
                 for _ in range(rng.randrange(5))]
        return b" ".join([command, _key(rng)] + flags) + b"\r\n"
    for _ in range(rng.randrange(4)):
        tokens.append(_key(rng) if rng.random() < 0.6 else _number(rng))
    if command == b"stats" and rng.random() < 0.5:
        tokens = [b"stats", rng.choice((b"detail", b"items", b"slabs", b"settings", b"reset",
                                        b"cachedump", b"conns", b"sizes")),
                  rng.choice((b"on", b"off", b"dump", b""))]
    return b" ".join(tokens) + b"\r\n"


def _mutate(rng, data, keep=0):
    """
    Damage C{data} the ways a fuzzer would: flip, insert, delete or
    duplicate bytes, truncate, splice in CR/LF/space/NUL; the first
    C{keep} bytes are left alone most of the time.
    """
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        what = rng.random()
        if not data:
            data += bytes((rng.randrange(256),))
            continue
        at = rng.randrange(len(data))
        if at < keep and rng.random() < 0.95:
            at = min(keep, len(data) - 1)
        if what < 0.25:
            data[at] ^= 1 << rng.randrange(8)
        elif what < 0.45:
            data[at:at] = rng.choice((b"\r\n", b"\n", b" ", b"\0", b"\r", b"\xff", b"noreply "))
        elif what < 0.6:
            del data[at:at + rng.randrange(1, 8)]
        elif what < 0.7:
            data = data[:at]
        elif what < 0.85:
            data[at:at] = data[at:at + rng.randrange(1, 16)]
        else:
            data[at] = rng.randrange(256)
    return bytes(data)


def asciiInput(rng):
    """
    One fuzzed text-protocol input: mostly a plausible request, often
    mutated, now and then random bytes.
    """
    roll = rng.random()
    if roll < 0.05:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    request = _asciiRequest(rng)
    return _mutate(rng, request) if roll < 0.5 else request


def asciiAuthInput(rng, username=b"user", password=b"secret"):
    """
    One fuzzed ASCII-auth input (C{set <username> 0 0 <len>} then the
    password): right and wrong credentials, bad lengths, mutations.
    """
    user = rng.choice((username, _key(rng), b""))
    secret = rng.choice((password, b"", bytes(rng.randrange(256) for _ in range(rng.randrange(40)))))
    length = str(len(secret)).encode() if rng.random() < 0.8 else _number(rng)
    request = b"set " + user + b" 0 0 " + length + b"\r\n" + secret + b"\r\n"
    return _mutate(rng, request) if rng.random() < 0.5 else request


def binaryFrame(opcode, key=b"", extras=b"", value=b"", opaque=0, cas=0, bodylen=None, magic=0x80):
    """
    A binary request frame (the body length computed unless given).
    """
    if bodylen is None:
        bodylen = len(key) + len(extras) + len(value)
    return HEADER.pack(magic, opcode, len(key), len(extras), 0, 0, bodylen, opaque, cas) + extras + key + value


#: the extras length of each request that has extras
_EXTRAS = {
    0x01: 8, 0x02: 8, 0x03: 8, 0x11: 8, 0x12: 8, 0x13: 8,
    0x05: 20, 0x06: 20, 0x15: 20, 0x16: 20,
    0x1B: 4, 0x1C: 4, 0x1D: 4, 0x1E: 4, 0x23: 4, 0x24: 4,
}


#: the requests that carry a value
_WITH_VALUE = frozenset((0x01, 0x02, 0x03, 0x0E, 0x0F, 0x11, 0x12, 0x13, 0x19, 0x1A))


def binaryInput(rng, opcodes=BINARY_OPCODES):
    """
    One fuzzed binary request: a random opcode with random key, extras and
    value, lengths right most of the time, sometimes mutated.
    """
    roll = rng.random()
    if roll < _QUIT_RATE:
        opcode = rng.choice((0x07, 0x17))
    else:
        opcode = rng.choice(opcodes) if roll < 0.95 else rng.randrange(256)
    key = _key(rng) if rng.random() < 0.9 else b""
    if rng.random() < 0.85:
        extras = bytes(rng.randrange(256) for _ in range(_EXTRAS.get(opcode, 0)))
    else:
        # wrong extras are a protocol error: memcached answers and closes
        extras = bytes(rng.randrange(256) for _ in range(rng.choice((0, 3, 4, 8, 20))))
    if opcode in SASL_OPCODES:
        key = rng.choice((b"PLAIN", b"plain", b"CRAM-MD5", b"", key))
        extras = b""
        value = rng.choice((
            b"\0user\0secret", b"user\0secret", b"\0\0", b"", b"\0" * 3,
            bytes(rng.randrange(256) for _ in range(rng.randrange(300))),
        ))
    elif opcode in _WITH_VALUE or rng.random() < 0.05:
        value = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 16, 100))))
    else:
        value = b""
    bodylen = None
    if rng.random() < 0.05:
        bodylen = rng.choice((0, 1, len(key) + len(extras) + len(value) + rng.randrange(-3, 4) % 50))
    data = binaryFrame(opcode, key, extras, value, rng.randrange(1 << 32), rng.choice((0, 0, 1, 1 << 63)),
                       bodylen)
    # a bad magic byte closes the connection (as in memcached): rarely
    return _mutate(rng, data, keep=1) if rng.random() < 0.1 else data


def saslInput(rng, username=b"user", password=b"secret"):
    """
    One fuzzed SASL request: list mechanisms, PLAIN with right and wrong
    credentials and broken payloads, steps.
    """
    if rng.random() < 0.3:
        return binaryInput(rng, SASL_OPCODES)
    payload = rng.choice((b"", b"authz", username)) + b"\0" + rng.choice((username, _key(rng))) + b"\0" + \
        rng.choice((password, b"", _key(rng)))
    return binaryFrame(0x21, rng.choice((b"PLAIN", b"PLAIN", b"LOGIN")), value=payload,
                       opaque=rng.randrange(1 << 32))


# -- the campaign against a real server -------------------------------------------

CAMPAIGNS = ("ascii", "binary", "ascii-auth", "sasl")
#: inputs per connection: the binary protocol closes on a protocol error
#: (as memcached does) and a failed login closes too, so batches there are
#: short, or most inputs would never be parsed
BATCHES = {"ascii": 100, "binary": 4, "ascii-auth": 10, "sasl": 3}


def rss(pid):
    """
    C{VmRSS} of process C{pid} in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Server(TwistdNode):
    """
    A C{twistd -n memcachier} in a temporary directory with two caches
    (also used by L{memcachier.bench.soak}).
    """

    def __init__(self, directory, extraMemcache="", plan=None, store=None):
        TwistdNode.__init__(self, directory, os.path.join(directory, "memcachier.toml"), freePort())
        self.plan = plan
        self.webPort = freePort()
        with open(self.config, "w") as f:
            f.write(
                "[memcache]\n"
                f'listen = ["tcp:{self.port}:interface=127.0.0.1"]\n'
                f"{extraMemcache}\n"
                "[web]\n"
                f'listen = "tcp:{self.webPort}:interface=127.0.0.1"\n'
                "[database]\n"
                f'url = "sqlite:///{directory}/memcachier.sqlite"\n'
                + (f'[store]\nplugin = "{store}"\n' if store else "")
            )

    def createCache(self):
        """
        A new cache's (username, password), as bytes.
        """
        create = ("cache", "create") + (("--plan", self.plan) if self.plan else ())
        created = self.admin(*create)
        credential = (created.get("credentials") or [created.get("credential") or created])[0]
        return credential["username"].encode(), credential["password"].encode()

    def start(self):
        self.fuzzed = self.createCache()
        self.bystander = self.createCache()
        TwistdNode.start(self)


def _recvAll(sock, timeout):
    """
    Read until the server closes (or C{timeout} seconds pass quietly).
    """
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            break
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class Bystander:
    """
    A connection logged in to the other cache that checks its own writes
    read back intact, and times them.
    """

    def __init__(self, port, username, password):
        self.port = port
        self.username = username
        self.password = password
        self.wrong = []
        self.worst = 0.0
        self.checks = 0
        self.sock = None
        self.counter = 0
        self.last = 0.0

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self._call(b"set %b 0 0 %d\r\n%b\r\n" % (self.username, len(self.password), self.password),
                   b"STORED\r\n")

    def _call(self, request, expected):
        self.sock.sendall(request)
        data = b""
        while len(data) < len(expected):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if data != expected:
            self.wrong.append((request[:80], data[:200]))
        return data

    def check(self):
        started = time.monotonic()
        try:
            if self.sock is None:
                self._connect()
            self.counter += 1
            value = os.urandom(16).hex().encode() * (1 + self.counter % 5)
            key = b"bystander%d" % (self.counter % 100)
            self._call(b"set %b 0 0 %d\r\n%b\r\n" % (key, len(value), value), b"STORED\r\n")
            self._call(b"get %b\r\n" % key, b"VALUE %b 0 %d\r\n%b\r\nEND\r\n" % (key, len(value), value))
        except OSError as e:
            self.wrong.append((b"(connection)", str(e).encode()))
            self.sock = None
        self.checks += 1
        self.last = time.monotonic()
        self.worst = max(self.worst, self.last - started)


_SENTINEL = 0xFEEDFACE
_SENTINEL_REPLY = HEADER.pack(0x81, 0x0A, 0, 0, 0, 0, 0, _SENTINEL, 0)


def _fuzzBatch(server, campaign, rng, batch):
    """
    One connection: log in (campaigns over authenticated connections),
    send C{batch} fuzzed inputs pipelined, half-close, read every reply.

    A sentinel ends the batch (C{mn}, a binary C{NOOP} with its own
    opaque): when its reply comes back, every input before it was parsed;
    when the server closed a binary connection on a protocol error, the
    inputs up to the last one answered were.

    @return: (inputs sent, how many of them were surely parsed, the
        malformed reply or L{None}).
    """
    user, password = server.fuzzed
    binary = campaign in ("binary", "sasl")
    if campaign == "ascii":
        inputs = [asciiInput(rng) for _ in range(batch)]
        login = b"set %b 0 0 %d\r\n%b\r\n" % (user, len(password), password)
    elif campaign == "ascii-auth":
        inputs = [asciiAuthInput(rng, user, password) for _ in range(batch)]
        login = b""
    elif campaign == "binary":
        inputs = [binaryInput(rng) for _ in range(batch)]
        login = binaryFrame(0x21, b"PLAIN", value=b"\0" + user + b"\0" + password)
    else:
        inputs = [saslInput(rng, user, password) for _ in range(batch)]
        login = b""
    if binary:
        sentinel, answer = binaryFrame(0x0A, opaque=_SENTINEL), _SENTINEL_REPLY
    else:
        sentinel, answer = b"\r\nmn\r\n", b"MN\r\n"
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    except OSError as e:
        return 0, 0, f"connect failed: {e}"
    try:
        sock.sendall(login + b"".join(inputs) + sentinel)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server closed on a bad input: what it said is checked below
    data = _recvAll(sock, 5.0)
    sock.close()
    # the server picks the protocol from the first byte, as the checker must
    # (a fuzzed first request of the sasl campaign may not start with 0x80)
    first = (login + b"".join(inputs) + sentinel)[:1]
    try:
        (checkBinaryReplies if first == b"\x80" else checkAsciiReplies)(data)
    except MalformedReply as e:
        return batch, 0, f"malformed reply: {e.args[0]!r}"
    # the sentinel is answered only in the protocol the server picked
    if (first == b"\x80") == binary and data.endswith(answer):
        return batch, batch, None
    if binary and first == b"\x80":
        # the server closed on a protocol error (as memcached does): every
        # input up to the last one answered was parsed
        return batch, _answeredUpTo(inputs, data), None
    return batch, 0, None


def _answeredUpTo(inputs, data):
    """
    How many of the binary C{inputs} were parsed, judging by the opaque
    values of the responses in C{data} (inputs carry random opaques).
    """
    where = {}
    for i, request in enumerate(inputs):
        if len(request) >= 24:
            where.setdefault(request[12:16], i)
    last = -1
    pos = 0
    while len(data) - pos >= 24:
        bodylen = int.from_bytes(data[pos + 8:pos + 12], "big")
        last = max(last, where.get(data[pos + 12:pos + 16], -1))
        pos += 24 + bodylen
    return last + 1


_BAD_LOG = re.compile(r"Traceback|Unhandled|#critical|#error|\[-\] .*Error")


def _cacheBytes(server):
    """
    The fuzzed cache's C{bytes} and C{curr_items} stats, as text.
    """
    stats = cacheStats(server.port, [c.decode() for c in server.fuzzed])
    return f"{int(stats.get(b'bytes', 0)) / 2**20:.1f} MiB in {int(stats.get(b'curr_items', 0))} items"


def campaign(inputs, batch=None, seed=1, out=sys.stdout, campaigns=CAMPAIGNS, store=None):
    """
    Run C{inputs} fuzzed inputs per campaign against a fresh server (on
    the store plugin C{store}, by default the configuration's default)
    and print the report.

    @return: whether nothing went wrong.
    """
    directory = tempfile.mkdtemp(prefix="memcachier-fuzz-")
    # the login budget would otherwise refuse the auth campaigns' guesses
    # before their parsing is reached
    server = Server(directory, "auth_failure_rate = 1000000.0\nauth_failure_burst = 1000000000\n",
                    store=store)
    ok = True
    try:
        server.start()
        bystander = Bystander(server.port, *server.bystander)
        bystander.check()
        startRss = rss(server.process.pid)
        startLines = len(server.log().splitlines())
        rng = random.Random(seed)
        print(f"fuzz: server pid {server.process.pid}, port {server.port}, seed {seed}, "
              f"RSS {startRss / 2**20:.1f} MiB", file=out, flush=True)
        for name in campaigns:
            sent = parsed = 0
            problems = []
            started = time.monotonic()
            lastReport = started
            while sent < inputs and server.alive():
                size = batch or BATCHES[name]
                n, done, problem = _fuzzBatch(server, name, rng, min(size, inputs - sent))
                sent += n
                parsed += done
                if problem is not None:
                    problems.append(problem)
                if time.monotonic() - bystander.last > 0.05:
                    bystander.check()
                if time.monotonic() - lastReport > 60:
                    lastReport = time.monotonic()
                    print(f"  {name}: {sent} inputs, RSS {rss(server.process.pid) / 2**20:.1f} MiB",
                          file=out, flush=True)
            elapsed = time.monotonic() - started
            alive = server.alive()
            print(
                f"{name}: {sent} inputs in {elapsed:.0f} s ({sent / max(elapsed, 1e-9):.0f}/s), "
                f"{parsed} of them surely parsed, "
                f"{len(problems)} bad replies, server {'alive' if alive else 'DEAD'}, "
                f"RSS {rss(server.process.pid) / 2**20 if alive else 0:.1f} MiB",
                file=out, flush=True,
            )
            for problem in problems[:10]:
                print(f"  {problem}", file=out)
            ok = ok and alive and not problems
            if not alive:
                break
        endRss = rss(server.process.pid) if server.alive() else 0
        cached = _cacheBytes(server) if server.alive() else "?"
        lines = server.log().splitlines()
        bad = [line for line in lines if _BAD_LOG.search(line)]
        # what the fuzzing made the server log at all (after it started)
        during = lines[startLines:]
        print(
            f"bystander: {bystander.checks} checks, {len(bystander.wrong)} wrong answers, "
            f"slowest {bystander.worst * 1000:.0f} ms", file=out,
        )
        for request, answer in bystander.wrong[:10]:
            print(f"  {request!r} -> {answer!r}", file=out)
        print(f"log: {len(bad)} traceback/error lines; {len(during)} lines logged while fuzzing",
              file=out)
        for line in during[:5]:
            print(f"  {line[:200]}", file=out)
        for line in bad[:20]:
            print(f"  {line}", file=out)
        print(f"RSS: {startRss / 2**20:.1f} -> {endRss / 2**20:.1f} MiB "
              f"({(endRss - startRss) / 2**20:+.1f}); the fuzzed cache now holds {cached} "
              "(what the fuzzed sets stored, bounded by its plan)", file=out, flush=True)
        ok = ok and not bystander.wrong and not bad
    finally:
        server.stop()
        if ok:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"kept {directory} (log: {server.logPath})", file=out)
    print("fuzz: " + ("no crash, no traceback, no wrong answer" if ok else "PROBLEMS FOUND"), file=out)
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m memcachier.bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per campaign")
    parser.add_argument("--batch", type=int, default=None,
                        help="inputs per connection (default: per campaign, see BATCHES)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--campaign", action="append", choices=CAMPAIGNS,
                        help="run only these (repeatable; default: all)")
    parser.add_argument("--store", choices=("memory", "segment"), default=None,
                        help="the node's store plugin (default: the configuration's default, memory)")
    args = parser.parse_args(argv)
    # a SIGTERM stops the server too (the finally clause of campaign)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    ok = campaign(args.inputs, args.batch, args.seed, campaigns=args.campaign or CAMPAIGNS,
                  store=args.store)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
