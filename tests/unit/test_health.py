"""
Tests for L{memcachier.web.health}: C{/healthz} and C{/readyz} through the
node's site (no credential, no access log line), what readiness names when
a check fails, and the control-plane check's bounds (one query at a time,
answers reused briefly, a timeout).
"""

import json
from types import SimpleNamespace

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from memcachier.node.settings import Settings
from memcachier.web.health import (
    CONTROL_PLANE, LISTENERS, MEMBERSHIP, ControlPlaneCheck, Health, membershipJoined,
)
from memcachier.web.site import makeSite
from tests.unit.test_api import World, result


class Checks:
    """
    What a L{Health} reads, as switches a test flips.
    """

    def __init__(self, clustered=False):
        self.listening = True
        self.answers = True
        self.joinedNow = True
        self.health = Health(
            lambda: self.listening,
            lambda: succeed(self.answers),
            (lambda: self.joinedNow) if clustered else None,
        )


class Probed:
    """
    The node's site (API v2, no dashboard) with the probes mounted.
    """

    def __init__(self, clustered=False):
        self.world = World()
        self.checks = Checks(clustered)
        self.site = makeSite(
            self.world.api, Settings(), self.world.reactor, health=self.checks.health
        )
        self.treq = StubTreq(self.site.resource)

    def get(self, path, method="GET"):
        response = result(self.treq.request(method, "http://node.test" + path))
        body = result(self.treq.content(response))
        return response.code, response.headers, body


@pytest.fixture
def probed():
    return Probed()


def test_healthzAnswersWithoutCredential(probed):
    code, headers, body = probed.get("/healthz")
    assert (code, json.loads(body)) == (200, {"alive": True})
    assert headers.getRawHeaders(b"Content-Type") == [b"application/json"]
    assert headers.getRawHeaders(b"Cache-Control") == [b"no-store"]
    assert probed.get("/healthz", "HEAD")[0] == 200


def test_healthzStaysUpWhenNotReady(probed):
    probed.checks.listening = probed.checks.answers = False
    assert probed.get("/healthz")[0] == 200


def test_readyWhenEveryCheckPasses(probed):
    code, _, body = probed.get("/readyz")
    assert (code, json.loads(body)) == (200, {"ready": True, "missing": []})
    assert probed.get("/readyz", "HEAD")[0] == 200


@pytest.mark.parametrize("listening,answers,joined,missing", [
    (False, True, True, [LISTENERS]),
    (True, False, True, [CONTROL_PLANE]),
    (True, True, False, [MEMBERSHIP]),
    (False, False, False, [LISTENERS, CONTROL_PLANE, MEMBERSHIP]),
])
def test_notReadyNamesWhatIsMissing(listening, answers, joined, missing):
    probed = Probed(clustered=True)
    probed.checks.listening, probed.checks.answers = listening, answers
    probed.checks.joinedNow = joined
    code, _, body = probed.get("/readyz")
    assert (code, json.loads(body)) == (503, {"ready": False, "missing": missing})
    probed.checks.listening = probed.checks.answers = probed.checks.joinedNow = True
    assert probed.get("/readyz")[0] == 200


def test_aNodeAloneHasNoMembershipCheck(probed):
    probed.checks.joinedNow = False  # not consulted without a cluster
    assert probed.get("/readyz")[0] == 200


def test_otherMethodsAndPaths(probed):
    code, _, body = probed.get("/readyz", "POST")
    assert code == 405 and set(json.loads(body)) == {"error"}
    assert probed.get("/healthz/x")[0] == 404


def test_probesWriteNoAccessLogLine(probed):
    """
    Through a real connection of the site, a probe writes no access log
    line; another request does (so this test can fail).
    """
    lines = []
    globalLogPublisher.addObserver(lines.append)
    probed.site.doStart()
    try:
        for path in (b"/healthz", b"/readyz", b"/api/v2/nowhere"):
            connection = probed.site.buildProtocol(None)
            transport = StringTransport()
            connection.makeConnection(transport)
            connection.dataReceived(b"GET %s HTTP/1.1\r\nHost: node.test\r\n\r\n" % (path,))
            assert transport.value().startswith(b"HTTP/1.1 "), path
            connection.connectionLost(None)
    finally:
        probed.site.doStop()
        globalLogPublisher.removeObserver(lines.append)
    logged = " ".join(str(event.get("log_io", event.get("message", ""))) for event in lines)
    assert "/api/v2/nowhere" in logged
    assert "/healthz" not in logged and "/readyz" not in logged


# -- the control-plane check


class Query:
    """
    A control-plane query whose answers the test gives.
    """

    def __init__(self):
        self.calls = []

    def __call__(self):
        d = Deferred()
        self.calls.append(d)
        return d


def test_controlPlaneCheckSharesOneQuery():
    """
    A burst of checks runs one query; its answer is reused for C{fresh}
    seconds, then asked again.
    """
    world = World()
    query = Query()
    check = ControlPlaneCheck(query, world.reactor, timeout=2.0, fresh=1.0)
    first, second = check(), check()
    assert len(query.calls) == 1
    query.calls[0].callback(7)
    assert (result(first), result(second)) == (True, True)
    world.reactor.advance(0.5)
    assert result(check()) is True and len(query.calls) == 1
    world.reactor.advance(0.5)
    later = check()
    assert len(query.calls) == 2
    query.calls[1].errback(RuntimeError("connection refused"))
    assert result(later) is False
    assert not world.reactor.getDelayedCalls()


def test_controlPlaneCheckTimesOut():
    """
    A query that hangs is no answer after C{timeout}; the checks after it
    wait for the same query instead of starting more.
    """
    world = World()
    query = Query()
    check = ControlPlaneCheck(query, world.reactor, timeout=2.0, fresh=1.0)
    first = check()
    world.reactor.advance(1.9)
    assert not first.called
    world.reactor.advance(0.1)
    assert result(first) is False
    second = check()
    world.reactor.advance(2)
    assert result(second) is False
    assert len(query.calls) == 1
    third = check()
    query.calls[0].callback(1)
    assert result(third) is True
    assert not world.reactor.getDelayedCalls()


def test_controlPlaneCheckOfAnAnswerAtOnce():
    world = World()
    check = ControlPlaneCheck(lambda: succeed(1), world.reactor)
    assert result(check()) is True
    world.reactor.advance(5)
    failing = ControlPlaneCheck(lambda: fail(RuntimeError("down")), world.reactor)
    assert result(failing()) is False


# -- cluster membership


def test_membershipJoined():
    """
    Joined: this node's own heartbeat, in its cluster, is in the view it
    last read and within the heartbeat timeout.
    """
    now = [1000.0]
    membership = SimpleNamespace(
        name="n1:11211", cluster="default", timeout=2.0, records=[],
        wallClock=lambda: now[0],
    )
    joined = membershipJoined(membership)
    assert not joined()  # no view yet
    beat = lambda name, cluster, at: SimpleNamespace(  # noqa: E731
        name=name, cluster=cluster, heartbeat_at=at)
    membership.records = [beat("n2:11211", "default", 1000.0)]
    assert not joined()  # others only
    membership.records.append(beat("n1:11211", "other", 1000.0))
    assert not joined()  # another cluster's row of that name
    membership.records.append(beat("n1:11211", "default", 999.0))
    assert joined()
    now[0] = 1001.5
    assert not joined()  # heartbeats stopped landing
