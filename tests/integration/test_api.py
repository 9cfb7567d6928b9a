"""
The analytics API v2 over real HTTP, against the server started as a user
starts it (C{twistd -n memcachier --config=...}), with real memcache
clients (pylibmc over SASL) observing that changes take effect on the
memcache port at once; and schemathesis fuzzing the live API with its
OpenAPI document.
"""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pylibmc
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = pytest.mark.memcachier(config='[caches]\ndefault_plan = "100"\n')

TWO_CLUSTERS = pytest.mark.memcachier(
    config=(
        '[clusters.alpha]\nservers = ["127.0.0.1:1"]\n'
        '[clusters.beta]\nservers = ["127.0.0.1:2", "127.0.0.1:3"]\n'
        '[caches]\ndefault_plan = "100"\ndefault_cluster = "alpha"\n'
    )
)


class Api:
    """
    A requests session on one cache's API.
    """

    def __init__(self, server, username=None, password=None):
        self.server = server
        self.base = f"http://127.0.0.1:{server.web_port}/api/v2/caches/{server.cache_id}"
        self.session = requests.Session()
        self.session.auth = (username or server.username, password or server.password)

    def __call__(self, method, path, **kwargs):
        url = path if path.startswith("http") else self.base + path
        return self.session.request(method, url, timeout=10, **kwargs)


def libmc(server, username=None, password=None):
    return pylibmc.Client(
        [server.servers],
        binary=True,
        username=username or server.username,
        password=password or server.password,
    )


@PRODUCTION
def test_info(memcachier_server):
    """
    GET info describes the cache and its primary credential.
    """
    s = memcachier_server
    response = Api(s)("GET", "/info")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    info = response.json()
    assert info["id"] == s.cache_id
    assert info["plan"] == 100 * 1024 * 1024
    assert info["servers"] == [s.servers]
    assert info["credentials"][0]["sasl_username"] == s.username
    assert info["credentials"][0]["primary"] is True
    assert (info["can_switch"], info["can_manage_credentials"]) == (False, True)


@PRODUCTION
def test_authenticationErrors(memcachier_server):
    """
    401 without or with wrong credentials, 400 for a non-numeric id, 403
    for another cache, JSON 404/405 for unknown paths and methods.
    """
    s = memcachier_server
    api = Api(s)
    base = f"http://127.0.0.1:{s.web_port}/api/v2/caches"
    anonymous = requests.get(f"{base}/{s.cache_id}/info", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="memcachier"'
    assert Api(s, password="wrong")("GET", "/info").status_code == 401
    assert api("GET", f"{base}/abc/info").status_code == 400
    other = s.admin("cache", "create")
    assert api("GET", f"{base}/{other['id'] if 'id' in other else other['cache']['id']}/info").status_code == 403
    assert api("GET", f"{base}/999999/stats").status_code == 404
    missing = api("GET", "/nothing")
    assert (missing.status_code, set(missing.json())) == (404, {"error"})
    assert api("GET", "/flush").status_code == 405


@PRODUCTION
def test_flushEmptiesTheCache(memcachier_server):
    """
    POST flush (204) empties the cache for pylibmc at once.
    """
    s = memcachier_server
    mc = libmc(s)
    assert mc.set("k", b"v")
    response = Api(s)("POST", "/flush")
    assert (response.status_code, response.content) == (204, b"")
    assert mc.get("k") is None


@PRODUCTION
def test_flushKeepsTheCapabilityRules(memcachier_server):
    """
    The API's flush asks for the flush capability as C{flush_all} does: a
    credential without it gets 403 with the API's error body and nothing
    is flushed; a flush through the API counts in C{cmd_flush} and is a
    line of C{introspection/recent_logs}, and so are the memcache port's
    C{stats} commands.
    """
    s = memcachier_server
    api = Api(s)
    created = api("POST", "/credentials", json={"flush_capability": False})
    assert created.status_code == 201, created.text
    username = created.json()["sasl_username"]
    password = created.json()["sasl_password"]
    mc = libmc(s)
    assert mc.set("k", b"v")

    refused = Api(s, username, password)("POST", "/flush")
    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.json() == {"error": "this credential does not have the flush capability"}
    assert mc.get("k") == b"v"
    assert api("GET", "/stats").json()["cmd_flush"] == 0
    # the memcache port refuses the same credential's flush_all
    conn = s.ascii(username, password)
    assert conn.call("flush_all") == b"CLIENT_ERROR flush_all not allowed"
    assert mc.get("k") == b"v"
    conn.close()

    assert api("POST", "/flush").status_code == 204
    assert mc.get("k") is None
    stats = api("GET", "/stats").json()
    # memcached counts the refused flush_all too; the API's 403 is no flush
    assert stats["cmd_flush"] == 2

    conn = s.ascii()
    assert conn.stats()["cmd_flush"] == "2"
    conn.close()
    node = f"127.0.0.1:{s.port}"
    deadline = time.monotonic() + 30
    while True:
        logs = api("GET", "/introspection/recent_logs").json()[node]
        commands = [(l["command"], l["key"], l["status"]) for l in logs]
        if ("STATS", "", "OK") in commands or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ("FLUSH_ALL", "", "OK") in commands, commands
    assert commands[-1] == ("STATS", "", "OK"), commands
    flushes = [c for c in commands if c[0] == "FLUSH_ALL"]
    assert len(flushes) == 1, commands


def signedIn(server, username, password):
    """
    A requests session signed in to the dashboard with a credential (the
    form at C{/}), and the CSRF token its page carries.
    """
    browser = requests.Session()
    base = f"http://127.0.0.1:{server.web_port}"
    form = browser.get(base + "/", timeout=10).text
    loginToken = re.search(r'name="login_token" value="([^"]+)"', form).group(1)
    page = browser.post(base + "/login", timeout=10, data={
        "username": username, "password": password, "login_token": loginToken})
    assert page.status_code == 200, page.text
    token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
    return browser, token


@PRODUCTION
def test_dashboardFlushKeepsTheCredentialsCapability(memcachier_server):
    """
    Signed in to the dashboard with a credential without the flush
    capability, its flush is refused (403) as its own API call is; the
    primary credential's session flushes.
    """
    s = memcachier_server
    created = Api(s)("POST", "/credentials", json={"flush_capability": False}).json()
    mc = libmc(s)
    assert mc.set("k", b"v")
    flush = f"http://127.0.0.1:{s.web_port}/api/v2/caches/{s.cache_id}/flush"
    headers = {"X-Requested-With": "memcachier-dashboard"}

    browser, token = signedIn(s, created["sasl_username"], created["sasl_password"])
    refused = browser.post(flush, headers={**headers, "X-CSRF-Token": token}, timeout=10)
    assert refused.status_code == 403
    assert "flush capability" in refused.json()["error"]
    assert mc.get("k") == b"v"

    browser, token = signedIn(s, s.username, s.password)
    assert browser.post(flush, headers={**headers, "X-CSRF-Token": token},
                        timeout=10).status_code == 204
    assert mc.get("k") is None


@PRODUCTION
def test_statsAndResetStats(memcachier_server):
    """
    GET stats counts what pylibmc did; POST reset_stats (204) zeroes it.
    """
    s = memcachier_server
    mc = libmc(s)
    mc.set("k", b"v")
    mc.get("k")
    mc.get("missing")
    api = Api(s)
    stats = api("GET", "/stats").json()
    assert (stats["cmd_set"], stats["get_hits"], stats["get_misses"]) == (1, 1, 1)
    assert stats["curr_items"] == 1
    assert stats["limit_maxbytes"] == 100 * 1024 * 1024
    assert abs(stats["time"] - time.time()) < 60
    assert api("POST", "/reset_stats").status_code == 204
    stats = api("GET", "/stats").json()
    assert (stats["cmd_set"], stats["get_hits"], stats["curr_items"]) == (0, 0, 1)


@PRODUCTION
def test_credentialLifecycle(memcachier_server):
    """
    A credential created through the API authenticates over SASL at once;
    PATCHed read-only it cannot set on a new connection; promoted it is
    the primary; deleted it fails SASL.
    """
    s = memcachier_server
    api = Api(s)
    created = api("POST", "/credentials")
    assert created.status_code == 201
    credential = created.json()
    username, password = credential["sasl_username"], credential["sasl_password"]
    assert libmc(s, username, password).set("a", b"1")

    patched = api("PATCH", f"/credentials/{username}", json={"api_capability": True})
    assert patched.status_code == 200
    assert patched.json() == {"write_capability": False, "flush_capability": False, "api_capability": True}
    readOnly = libmc(s, username, password)
    assert readOnly.get("a") == b"1"
    assert readOnly.set("a", b"2") is False

    listed = api("GET", "/credentials").json()
    assert [c["sasl_username"] for c in listed] == [s.username, username]

    promoted = api("POST", f"/credentials/primary/{username}")
    assert (promoted.status_code, promoted.json()["primary"]) == (200, True)
    assert api("GET", "/credentials").json()[0]["sasl_username"] == username
    assert api("DELETE", f"/credentials/{username}").status_code == 409
    assert api("POST", f"/credentials/primary/{s.username}").status_code == 200

    deleted = api("DELETE", f"/credentials/{username}")
    assert deleted.status_code == 200
    with pytest.raises(pylibmc.Error):
        libmc(s, username, password).set("b", b"1")
    assert api("DELETE", f"/credentials/{username}").status_code == 404


@PRODUCTION
def test_badInputChangesNothing(memcachier_server):
    """
    Malformed JSON, wrong types, unknown fields and huge bodies are 4xx
    with a JSON message; the credential keeps its capabilities.
    """
    s = memcachier_server
    api = Api(s)
    username = api("POST", "/credentials").json()["sasl_username"]
    for body, code in (
        (b"{", 400),
        (b'{"write_capability": "no"}', 400),
        (b'{"admin": true}', 400),
        (b"[]", 400),
        (b'{"write_capability": false, "x": "' + b"y" * 200_000 + b'"}', 413),
    ):
        response = api("PATCH", f"/credentials/{username}", data=body,
                       headers={"Content-Type": "application/json"})
        assert response.status_code == code, response.text
        assert set(response.json()) == {"error"}
    after = {c["sasl_username"]: c for c in api("GET", "/credentials").json()}[username]
    assert (after["write_capability"], after["flush_capability"]) == (True, True)


def test_developmentCacheCannotManageCredentials(memcachier_server):
    """
    On the default development plan, creating credentials is a 403.
    """
    api = Api(memcachier_server)
    assert api("GET", "/info").json()["can_manage_credentials"] is False
    response = api("POST", "/credentials")
    assert response.status_code == 403
    assert "development" in response.json()["error"]


@PRODUCTION
def test_rotateSsoAndEnableCache(memcachier_server):
    """
    rotate_sso answers a new secret each time; enable_cache enables a
    cache disabled from the admin CLI, and pylibmc can use it again.
    """
    s = memcachier_server
    api = Api(s)
    first = api("POST", "/rotate_sso")
    second = api("POST", "/rotate_sso")
    assert first.status_code == second.status_code == 200
    assert isinstance(first.json(), str) and first.json() != second.json()

    s.admin("cache", "disable", str(s.cache_id))
    # The server sees the CLI's change at its next poll (0.2 s).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            libmc(s).set("probe", b"x")
        except pylibmc.Error:
            break
        time.sleep(0.2)
    with pytest.raises(pylibmc.Error):
        libmc(s).get("probe")
    assert api("GET", "/info").json()["enabled"] is False
    assert api("POST", "/enable_cache").status_code == 200
    assert libmc(s).set("k", b"v")


@PRODUCTION
def test_switchClusterWithOneCluster(memcachier_server):
    """
    With one cluster the answer says it cannot switch.
    """
    response = Api(memcachier_server)("POST", "/switch_cluster")
    assert response.status_code == 409
    assert "cannot switch" in response.json()["error"]


@TWO_CLUSTERS
def test_switchCluster(memcachier_server):
    """
    switch_cluster moves the cache to the other cluster: its servers
    change and its data does not follow.
    """
    s = memcachier_server
    api = Api(s)
    info = api("GET", "/info").json()
    assert (info["cluster_name"], info["servers"], info["can_switch"]) == ("alpha", ["127.0.0.1:1"], True)
    assert libmc(s).set("k", b"v")
    response = api("POST", "/switch_cluster")
    assert (response.status_code, response.json()) == (200, "beta")
    info = api("GET", "/info").json()
    assert (info["cluster_name"], info["servers"]) == ("beta", ["127.0.0.1:2", "127.0.0.1:3"])
    assert libmc(s).get("k") is None


def test_openapiDocumentServed(memcachier_server):
    """
    The OpenAPI document is served without credentials.
    """
    response = requests.get(
        f"http://127.0.0.1:{memcachier_server.web_port}/api/v2/openapi.json", timeout=10
    )
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


# -- schemathesis

SCHEMATHESIS_CONFIG = """
# Identifiers come only from the document's explicit links (a created
# credential): values taken from other responses let the fuzzer PATCH
# away its own credential's API capability, after which it tests nothing.
[phases.examples.extra-data-sources]
responses = false
[phases.coverage.extra-data-sources]
responses = false
[phases.fuzzing.extra-data-sources]
responses = false
[phases.stateful.inference]
algorithms = []
"""

# A JSON schema cannot relate two parameters, nor state a bound that moves
# with the clock: the document says in prose that an endTime before
# startTime (now, if left out) and a startTime older than retention (also
# one implied by an old endTime alone) are 400s, and only those refusals
# of schema-valid data are let through; the server still answers them and every other check still runs on the answer.
SCHEMATHESIS_HOOKS = """
import datetime
import time

import schemathesis


def _seconds(value):
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


#: What the alerts routes answer, in a 400, to a body of the document's
#: shape that refers to something unusable; their descriptions say so in
#: prose (a schema cannot know the cache's delivery configs, nor relate
#: trigger_type to the threshold's range, nor check an address).
ALERT_REFUSALS = (
    "no alert delivery config", "percentage from 0 to 100", "https://", "not a URL",
    "not an email address", "does not apply", "slack_channel", "is required",
    "the body's id", "is used by alert",
)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if (failure.code == "ST202" and response.status_code == 400 and "/alerts" in case.path
            and any(text in response.text for text in ALERT_REFUSALS)):
        return False
    query = case.query or {}
    if (failure.code != "ST202" or response.status_code != 400
            or not ("startTime" in query or "endTime" in query)):
        return True
    if "startTime" not in query:
        # Only an endTime: a start before retention is implied by it.
        return not ("endTime" in query and "data is kept for" in response.text)
    try:
        start = _seconds(query["startTime"]) if "startTime" in query else None
        end = _seconds(query["endTime"]) if "endTime" in query else time.time()
    except (TypeError, ValueError):
        return True
    if start is not None and end < start and "endTime is before startTime" in response.text:
        return False
    # an endTime alone so old that the window before it is past retention
    return "data is kept for" not in response.text
"""


@PRODUCTION
def test_schemathesis(memcachier_server, tmp_path):
    """
    schemathesis, with every check, against the live API and the whole of
    its own document (insight and introspection included): no 5xx, no
    response contradicting the schema, no schema-valid request refused
    (but an endTime before startTime, a time range older than the data
    kept, and the alerts routes' documented refusals, see
    L{SCHEMATHESIS_HOOKS}), auth
    enforced, 405 for unsupported methods.

    C{ensure_resource_availability} is left out: it reports a credential
    deleted earlier in the same stateful chain as "created resource not
    found".  One worker: hypothesis' lambda reflection is not thread-safe
    on Python 3.11 (an C{ast} SystemError inside schemathesis).
    """
    s = memcachier_server
    paths = requests.get(f"http://127.0.0.1:{s.web_port}/api/v2/openapi.json", timeout=10).json()["paths"]
    # The whole document is fuzzed: insight, introspection and alerts included.
    assert any("/insight/" in p for p in paths) and any("/introspection/" in p for p in paths)
    assert any("/alerts" in p for p in paths)
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if executable is None:
        pytest.fail("schemathesis is not installed (pip install -e .[test])")
    hooks = tmp_path / "hooks.py"
    hooks.write_text(SCHEMATHESIS_HOOKS)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"hooks = {json.dumps(str(hooks))}\n" + SCHEMATHESIS_CONFIG)
    command = [
        executable,
        "--config-file", str(config),
        "run", f"http://127.0.0.1:{s.web_port}/api/v2/openapi.json",
        "--auth", f"{s.username}:{s.password}",
        "--checks", "all",
        "--exclude-checks", "ensure_resource_availability",
        "--max-examples", "50",
        "--workers", "1",
        "--seed", "1",
        "--request-timeout", "10",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    output = result.stdout + result.stderr
    print(output[-6000:])
    assert result.returncode == 0, output[-20000:]
    assert re.search(r"\d+ generated, \d+ passed", output), output[-5000:]
    # No 5xx reached the server's access log either.
    assert not re.search(r'" 5\d\d ', s.log()), s.log()[-5000:]


# -- docs/api.md

def docCurls():
    """
    The curl commands of docs/api.md, in order.
    """
    text = (ROOT / "docs" / "api.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in re.split(r"\n(?=curl )", block.replace("\\\n", " ")):
            command = command.strip()
            if command.startswith("curl "):
                commands.append(command)
    return commands


@PRODUCTION
def test_docsCurlExamples(memcachier_server):
    """
    Every curl example of docs/api.md works against a running server (the
    embedded default's address and cache swapped for the test server's).
    """
    s = memcachier_server
    api = Api(s)
    spare = api("POST", "/credentials").json()["sasl_username"]
    commands = docCurls()
    assert len(commands) >= 13
    for command in commands:
        command = (
            command.replace("127.0.0.1:8080", f"127.0.0.1:{s.web_port}")
            .replace("$CACHE_ID", str(s.cache_id))
            .replace("$MEMCACHIER_USERNAME", s.username)
            .replace("$MEMCACHIER_PASSWORD", s.password)
            .replace("$CREDENTIAL", spare)
        )
        if "switch_cluster" in command:
            expected = "409"
        else:
            expected = "2"
        result = subprocess.run(
            ["bash", "-c", command + " -s -o /dev/null -w '%{http_code}'"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.stdout.startswith(expected), (command, result.stdout, result.stderr)
