"""
The fuzz tier: both codecs, ASCII auth and SASL fed generated and mutated
input with Hypothesis, in memory, on every run.

Each example builds a fresh node (L{World}), connects a I{bystander} logged
in to the other cache, feeds the fuzzed bytes to a new connection in
arbitrary pieces (so partial reads are covered), and checks that no
exception escaped the codec, nothing was logged (an auth flood line is an
operator event the input may legitimately cause), every reply is
well-formed, and the bystander still reads back what it wrote and can
write again.

The budget is fixed and derandomized (no example database), so a CI run is
the same every time and takes a few seconds; the long campaign against a
real server is C{python -m memcachier.bench.fuzz} (C{docs/security.md}).
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from memcachier.bench.fuzz import (
    MalformedReply,
    asciiAuthInput,
    asciiInput,
    binaryFrame,
    binaryInput,
    checkAsciiReplies,
    checkBinaryReplies,
    saslInput,
)

from tests.unit.helpers import STORES, World

FUZZ = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: log events an input may cause on purpose (operator events, not faults)
EXPECTED_EVENTS = frozenset(("auth_flood_throttled",))

ASCII_LOGIN = b"set rw 0 0 6\r\nsecret\r\n"
SASL_LOGIN = binaryFrame(0x21, b"PLAIN", value=b"\0rw\0secret")


def _inputs(generate, **kwargs):
    """
    A list of fuzzed inputs: the project's generators seeded by Hypothesis
    (its own C{randoms()} draw near-minimal values, which would make
    every input the generators' first choice), mixed with raw bytes.
    """
    seeded = st.integers(min_value=0, max_value=2**64).map(
        lambda seed: generate(random.Random(seed), **kwargs)
    )
    one = st.one_of(seeded, seeded, st.binary(max_size=64))
    return st.lists(one, min_size=1, max_size=12)


def _cuts():
    return st.lists(st.integers(min_value=0, max_value=4096), max_size=6)


class Harness:
    """
    A fresh node, a bystander on cache 2, and the log events seen.
    """

    def __init__(self, store="memory"):
        self.world = World(store=STORES[store])
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.bystander, self.bystanderTransport = self.world.connect()
        self._ask(b"set other 0 0 6\r\nsecret\r\nset kept 0 0 5\r\nvalue\r\n", b"STORED\r\nSTORED\r\n")

    def close(self):
        globalLogPublisher.removeObserver(self.events.append)

    def _ask(self, request, expected):
        self.bystanderTransport.clear()
        self.bystander.dataReceived(request)
        self.world.clock.advance(0)
        assert self.bystanderTransport.value() == expected

    def feed(self, data, cuts):
        """
        Feed C{data} to a new connection in pieces cut at C{cuts}; stop
        once the server closed it.

        @return: the bytes the server wrote.
        """
        proto, transport = self.world.connect()
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        for start, stop in zip(points, points[1:]):
            if not transport.connected:
                break
            proto.dataReceived(data[start:stop])
            self.world.clock.advance(0)
        # let timers (auth deadline, late answers) run
        self.world.clock.advance(10)
        return transport.value()

    def check(self, data, output):
        unexpected = [e for e in self.events if e.get("event") not in EXPECTED_EVENTS]
        assert unexpected == [], unexpected
        checker = checkBinaryReplies if data[:1] == b"\x80" else checkAsciiReplies
        try:
            tail = checker(output)
        except MalformedReply as e:
            pytest.fail(f"malformed reply {e.args[0]!r} to {data[:300]!r}")
        assert tail == b"", (tail[:200], data[:300])
        # the bystander's cache is untouched and its connection still works
        self._ask(b"get kept\r\n", b"VALUE kept 0 5\r\nvalue\r\nEND\r\n")
        self._ask(b"set new 0 0 3\r\nabc\r\nget new\r\n",
                  b"STORED\r\nVALUE new 0 3\r\nabc\r\nEND\r\n")


def _run(prefix, inputs, cuts, store="memory"):
    harness = Harness(store)
    try:
        data = prefix + b"".join(inputs)
        output = harness.feed(data, cuts)
        harness.check(data, output)
    finally:
        harness.close()


@FUZZ
@given(_inputs(asciiInput), _cuts())
def test_fuzzAscii(inputs, cuts):
    """
    Fuzzed text-protocol commands on an authenticated connection.
    """
    _run(ASCII_LOGIN, inputs, cuts)


@FUZZ
@given(_inputs(asciiInput), _cuts())
def test_fuzzAsciiAsyncStore(inputs, cuts):
    """
    The same over a store answering through Deferreds (the ordered-reply
    pipeline).
    """
    _run(ASCII_LOGIN, inputs, cuts, "async")


@FUZZ
@given(_inputs(binaryInput), _cuts())
def test_fuzzBinary(inputs, cuts):
    """
    Fuzzed binary requests on a connection logged in with SASL.
    """
    _run(SASL_LOGIN, inputs, cuts)


@FUZZ
@given(_inputs(binaryInput), _cuts())
def test_fuzzBinaryAsyncStore(inputs, cuts):
    """
    The same over a store answering through Deferreds.
    """
    _run(SASL_LOGIN, inputs, cuts, "async")


#: the login paths are narrower: fewer examples keep the tier to a few seconds
FUZZ_AUTH = settings(FUZZ, max_examples=40)


@FUZZ_AUTH
@given(_inputs(asciiAuthInput, username=b"rw", password=b"secret"), _cuts())
def test_fuzzAsciiAuth(inputs, cuts):
    """
    Fuzzed ASCII-auth requests (right and wrong credentials, bad lengths)
    on a fresh connection.
    """
    _run(b"", inputs, cuts)


@FUZZ_AUTH
@given(_inputs(saslInput, username=b"rw", password=b"secret"), _cuts())
def test_fuzzSasl(inputs, cuts):
    """
    Fuzzed SASL requests (mechanism lists, PLAIN payloads, steps) on a
    fresh connection.
    """
    _run(b"", inputs, cuts)


def test_checkersRejectMalformedReplies():
    """
    The checkers the fuzz tier relies on do fail on bad output.
    """
    assert checkAsciiReplies(b"STORED\r\nVALUE k 0 3\r\nabc\r\nEND\r\n") == b""
    assert checkAsciiReplies(b"VALUE k 0 3\r\nab") == b"VALUE k 0 3\r\nab"
    with pytest.raises(MalformedReply):
        checkAsciiReplies(b"Traceback (most recent call last):\r\n")
    with pytest.raises(MalformedReply):
        checkAsciiReplies(b"VALUE k 0 3\r\nabcd\r\nEND\r\n")
    with pytest.raises(MalformedReply):
        checkBinaryReplies(b"\x80" + b"\0" * 23)
