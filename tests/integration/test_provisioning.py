"""
Provisioning over real HTTP against the server started as a user starts
it: Heroku's partner API in the order Heroku sends the calls, with a real
HTTP server standing in for Heroku's id service and Platform API; the
checks of Heroku's old C{kensa test}; our own provisioning API; and the
curl examples of docs/provisioning.md.
"""

import json
import re
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import pylibmc
import pytest
import requests
import sqlalchemy as sa

from tests.integration.herokustandin import HerokuStandIn

ROOT = Path(__file__).resolve().parents[2]

HEROKU_PASSWORD = "heroku-api-password"
CLIENT_SECRET = "oauth-client-secret"
GRANT = "01234567-89ab-cdef-0123-456789abcdef"
V3 = {"Accept": "application/vnd.heroku-addons+json; version=3"}


def herokuConfig(standIn, extra=""):
    """
    Two clusters (one of each kind) on the one node, a second development
    plan, and the Heroku routes on, talking to the stand-in.
    """
    return (
        '[clusters.prod]\nservers = ["127.0.0.1:{memcache_port}"]\nkind = "production"\n'
        '[clusters.devs]\nservers = ["127.0.0.1:{memcache_port}"]\nkind = "development"\n'
        '[caches]\ndefault_cluster = "prod"\n'
        '[plans.dev2]\nmemory = "50MiB"\nconnections = 20\ndevelopment = true\n'
        "[heroku]\n"
        f'password = "{HEROKU_PASSWORD}"\nsso_salt = "salty"\n'
        f'api_url = "{standIn.url}"\nid_url = "{standIn.url}"\n'
        f'client_secret = "{CLIENT_SECRET}"\n' + extra
    )


def startServer(factory, standIn, extra=""):
    """
    A server with L{herokuConfig}, without a cache.
    """
    return factory(config=herokuConfig(standIn, extra), create_cache=False)


@pytest.fixture
def standIn():
    server = HerokuStandIn(CLIENT_SECRET, GRANT).start()
    yield server
    server.stop()


def heroku(server, method, path="", auth=("memcachier", HEROKU_PASSWORD), **kwargs):
    url = f"http://127.0.0.1:{server.web_port}/heroku/resources{path}"
    return requests.request(method, url, auth=auth, headers=V3, timeout=10, **kwargs)


def provisionBody(uuid, plan="dev"):
    """
    What Heroku sends (v3), with a field we do not know about.
    """
    return {
        "callback_url": f"https://api.heroku.com/addons/{uuid}",
        "name": "acme-inc-primary-database",
        "oauth_grant": {
            "code": GRANT,
            "expires_at": "2099-03-03T18:01:31-0800",
            "type": "authorization_code",
        },
        "options": {},
        "plan": plan,
        "region": "amazon-web-services::us-east-1",
        "uuid": uuid,
        "log_input_url": "https://token:t.01234567@1.us.logplex.io/logs",
        "log_drain_token": "d.01234567",
        "a_field_heroku_adds_later": {"x": 1},
    }


def client(config):
    return pylibmc.Client(
        config["MEMCACHIER_SERVERS"].split(","),
        binary=True,
        username=config["MEMCACHIER_USERNAME"],
        password=config["MEMCACHIER_PASSWORD"],
    )


def waitFor(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def cacheOf(server, cacheId):
    return server.admin("cache", "show", str(cacheId))


def pushesOf(server, uuid):
    engine = sa.create_engine(f"sqlite:///{server.directory / 'memcachier.sqlite'}")
    try:
        with engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    sa.text(
                        "SELECT p.* FROM heroku_config_pushes p JOIN heroku_resources r "
                        "ON r.id = p.resource_id WHERE r.uuid = :u ORDER BY p.id"
                    ),
                    {"u": uuid},
                )
            ]
    finally:
        engine.dispose()


def resourceCacheId(server, uuid):
    engine = sa.create_engine(f"sqlite:///{server.directory / 'memcachier.sqlite'}")
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT cache_id FROM heroku_resources WHERE uuid = :u"), {"u": uuid}
            ).scalar()
    finally:
        engine.dispose()


def test_herokuLifecycle(memcachier_server_factory, standIn):
    """
    Provision (twice with one uuid), use the cache with a real client,
    change plans (data kept; development to production: moved, emptied
    and its config vars pushed to Heroku), promote credentials through
    the API and the CLI (Heroku's Platform API stand-in gets the new
    values with its bearer token, after answering 500 twice), deprovision
    (the client is refused; a second DELETE is 410).
    """
    s = startServer(memcachier_server_factory, standIn)
    uuid = str(uuidlib.uuid4())
    before = {c["id"] for c in s.admin("cache", "list")}  # the first start's

    first = heroku(s, "POST", json=provisionBody(uuid))
    assert first.status_code == 200, first.text
    answer = first.json()
    assert set(answer) == {"id", "config", "message"}
    assert answer["id"] == uuid
    config = answer["config"]
    assert set(config) == {"MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD"}
    assert config["MEMCACHIER_SERVERS"] == f"127.0.0.1:{s.port}"
    again = heroku(s, "POST", json=provisionBody(uuid))
    assert (again.status_code, again.json()) == (200, answer)

    cacheId = resourceCacheId(s, uuid)
    cache = cacheOf(s, cacheId)
    assert (cache["plan"], cache["cluster"]) == ("dev", "devs")
    assert {c["id"] for c in s.admin("cache", "list")} == before | {cacheId}

    mc = client(config)
    assert mc.set("greeting", b"hello")
    assert mc.get("greeting") == b"hello"

    # The grant is exchanged in the background, then refreshed (the
    # stand-in's first token expires within the refresh margin).
    waitFor(lambda: standIn.tokensIssued >= 2, what="grant exchange and refresh")
    exchange = [
        r for r in standIn.seen("POST", "/oauth/token") if b"authorization_code" in r[3]
    ]
    assert exchange and exchange[0][4] == 200

    # development -> development: kept.
    kept = heroku(s, "PUT", f"/{uuid}", json={"plan": "dev2", "heroku_id": "app123@heroku.com"})
    assert kept.status_code == 200, kept.text
    assert kept.json()["config"] == config
    assert mc.get("greeting") == b"hello"
    assert cacheOf(s, cacheId)["plan"] == "dev2"

    # development -> production: moved to the production cluster, emptied.
    moved = heroku(s, "PUT", f"/{uuid}", json={"plan": "100"})
    assert moved.status_code == 200, moved.text
    assert set(moved.json()) == {"config", "message"}
    cache = cacheOf(s, cacheId)
    assert (cache["plan"], cache["cluster"]) == ("100", "prod")
    assert mc.get("greeting") is None
    assert mc.set("greeting", b"again")
    # The move is pushed to Heroku like a promotion (the servers follow).
    moveConfigs = waitFor(lambda: standIn.configs.get(uuid), what="the move's config PATCH")
    assert moveConfigs[-1] == config
    waitFor(lambda: [p["state"] for p in pushesOf(s, uuid)] == ["done"], what="the move's record")
    sentBefore = len(standIn.seen("PATCH", f"/addons/{uuid}/config"))

    # production -> production: kept.
    assert heroku(s, "PUT", f"/{uuid}", json={"plan": "250"}).status_code == 200
    assert mc.get("greeting") == b"again"

    assert heroku(s, "PUT", f"/{uuid}", json={"plan": "nope"}).status_code == 422

    # A promotion through the API reaches Heroku, after two 500s; the
    # promotion answers while Heroku holds the first PATCH unanswered.
    standIn.failConfigPatches = 2
    standIn.patchesArrived.clear()
    standIn.answerPatches.clear()
    api = requests.Session()
    api.auth = (config["MEMCACHIER_USERNAME"], config["MEMCACHIER_PASSWORD"])
    base = f"http://127.0.0.1:{s.web_port}/api/v2/caches/{cacheId}"
    fresh = api.post(f"{base}/credentials", timeout=10).json()
    promoted = api.post(f"{base}/credentials/primary/{fresh['sasl_username']}", timeout=10)
    assert promoted.status_code == 200
    assert standIn.patchesArrived.wait(30)
    assert api.get(f"{base}/info", timeout=10).status_code == 200  # the server is not stuck
    assert len(standIn.seen("PATCH", f"/addons/{uuid}/config")) == sentBefore  # still held
    standIn.answerPatches.set()
    configs = waitFor(lambda: len(standIn.configs[uuid]) == 2 and standIn.configs[uuid],
                      what="the config PATCH")
    assert configs[-1]["MEMCACHIER_USERNAME"] == fresh["sasl_username"]
    assert configs[-1]["MEMCACHIER_PASSWORD"] == fresh["sasl_password"]
    patches = standIn.seen("PATCH", f"/addons/{uuid}/config")[sentBefore:]
    assert [p[4] for p in patches] == [500, 500, 200]
    assert all(p[2]["Authorization"] == f"Bearer {standIn.accessToken}" for p in patches)
    push = waitFor(
        lambda: [p for p in pushesOf(s, uuid)
                 if p["state"] == "done" and p["username"] == fresh["sasl_username"]],
        what="record",
    )
    assert (push[-1]["username"], push[-1]["attempts"], push[-1]["last_status"]) == (
        fresh["sasl_username"], 3, 200,
    )

    # A promotion through memcachier-admin (another process) too.
    s.admin("credential", "promote", config["MEMCACHIER_USERNAME"])
    waitFor(lambda: len(standIn.configs[uuid]) == 3, what="the second promotion's PATCH")
    assert standIn.configs[uuid][-1]["MEMCACHIER_USERNAME"] == config["MEMCACHIER_USERNAME"]

    # Deprovision: the cache and credentials are gone at once, for a new
    # client and for the one connected all along.
    assert mc.get("greeting") == b"again"
    gone = heroku(s, "DELETE", f"/{uuid}")
    assert (gone.status_code, gone.content) == (204, b"")
    with pytest.raises(pylibmc.Error):
        client(config).get("greeting")
    with pytest.raises(pylibmc.Error):
        mc.get("greeting")
    assert {c["id"] for c in s.admin("cache", "list")} == before
    assert heroku(s, "DELETE", f"/{uuid}").status_code == 410
    assert heroku(s, "PUT", f"/{uuid}", json={"plan": "100"}).status_code == 410
    assert heroku(s, "POST", json=provisionBody(uuid)).status_code == 410


def test_kensaChecks(memcachier_server_factory, standIn):
    """
    What Heroku's C{kensa test} checked: 401 on bad auth, provision
    answers the manifest's config vars and only those, named
    C{^[A-Z][0-9A-Z_]+$} with the C{MEMCACHIER_} prefix, deprovision
    works.  (Its SSO check, a 6-minute-old token refused, belongs to the
    dashboard's SSO login.)
    """
    s = startServer(memcachier_server_factory, standIn)
    uuid = str(uuidlib.uuid4())
    for auth in (None, ("memcachier", "wrong"), ("other", HEROKU_PASSWORD)):
        refused = heroku(s, "POST", auth=auth, json=provisionBody(uuid))
        assert refused.status_code == 401
        assert set(refused.json()) == {"message"}
    assert heroku(s, "DELETE", f"/{uuid}", auth=("memcachier", "wrong")).status_code == 401
    assert heroku(s, "PUT", f"/{uuid}", auth=None, json={"plan": "100"}).status_code == 401

    declared = ["MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD"]
    answer = heroku(s, "POST", json=provisionBody(uuid, plan="100"))
    assert answer.status_code == 200
    config = answer.json()["config"]
    assert sorted(config) == sorted(declared)
    for name in config:
        assert re.fullmatch(r"[A-Z][0-9A-Z_]+", name)
        assert name.startswith("MEMCACHIER_")
    assert heroku(s, "POST", json=provisionBody(str(uuidlib.uuid4()), plan="gold")).status_code == 422
    assert heroku(s, "POST", json={"plan": "100"}).status_code == 400
    assert heroku(s, "POST", data=b"{not json").status_code == 400
    assert heroku(s, "DELETE", f"/{uuid}").status_code == 204
    assert heroku(s, "DELETE", f"/{uuidlib.uuid4()}").status_code == 404


def test_herokuRoutesOffWithoutPassword(memcachier_server):
    """
    Without C{[heroku] password} the partner API does not exist (404).
    """
    response = heroku(memcachier_server, "POST", json=provisionBody(str(uuidlib.uuid4())))
    assert response.status_code == 404


def test_manifest(tmp_path):
    """
    C{memcachier-admin heroku manifest} prints a manifest kensa would
    accept: the declared config vars, https production URLs, regions
    with C{us}.
    """
    from tests.integration.conftest import _bin

    config = tmp_path / "memcachier.toml"
    config.write_text(
        '[web]\npublic_url = "https://cache.example.com"\n'
        '[heroku]\npassword = "pw"\nsso_salt = "salt"\n'
    )
    result = subprocess.run(
        [_bin("memcachier-admin"), f"--config={config}", "heroku", "manifest"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["id"] == "memcachier"
    api = manifest["api"]
    assert (api["version"], api["password"], api["sso_salt"]) == ("3", "pw", "salt")
    assert "us" in api["regions"]
    assert api["production"] == {
        "base_url": "https://cache.example.com/heroku/resources",
        "sso_url": "https://cache.example.com/sso/login",
    }
    for name in api["config_vars"]:
        assert re.fullmatch(r"[A-Z][0-9A-Z_]+", name) and name.startswith("MEMCACHIER_")
    config.write_text('[heroku]\npassword = "pw"\nsso_salt = "salt"\n')
    refused = subprocess.run(
        [_bin("memcachier-admin"), f"--config={config}", "heroku", "manifest"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 1 and "public_url" in refused.stderr


# -- our own provisioning API

OPERATOR = "operator-token"


@pytest.mark.memcachier(
    create_cache=False,
    config=f'[provisioning]\ntoken = "{OPERATOR}"\n[caches]\ndefault_plan = "100"\n',
)
def test_ownProvisioningAPI(memcachier_server):
    """
    POST /api/v2/caches makes a cache a real client uses at once; PUT
    plan keeps the data between production plans and empties it to the
    development plan; DELETE (204) refuses the client at once, then 404.
    """
    s = memcachier_server
    base = f"http://127.0.0.1:{s.web_port}/api/v2/caches"
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    assert requests.post(base, timeout=10).status_code == 401
    assert requests.post(base, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    created = requests.post(base, headers=bearer, json={"label": "shop"}, timeout=10)
    assert created.status_code == 201, created.text
    cache = created.json()
    assert (cache["plan"], cache["label"]) == ("100", "shop")
    mc = client(cache["config"])
    assert mc.set("k", b"v")
    kept = requests.put(f"{base}/{cache['id']}/plan", headers=bearer, json={"plan": "250"}, timeout=10)
    assert kept.status_code == 200 and kept.json()["data_kept"] is True
    assert mc.get("k") == b"v"
    emptied = requests.put(f"{base}/{cache['id']}/plan", headers=bearer, json={"plan": "dev"}, timeout=10)
    assert emptied.status_code == 200 and emptied.json()["data_kept"] is False
    assert mc.get("k") is None
    unknown = requests.put(f"{base}/{cache['id']}/plan", headers=bearer, json={"plan": "x"}, timeout=10)
    assert unknown.status_code == 422
    deleted = requests.delete(f"{base}/{cache['id']}", headers=bearer, timeout=10)
    assert deleted.status_code == 204
    with pytest.raises(pylibmc.Error):
        client(cache["config"]).get("k")
    assert requests.delete(f"{base}/{cache['id']}", headers=bearer, timeout=10).status_code == 404
    document = requests.get(f"{base[:-len('/caches')]}/openapi.json", timeout=10).json()
    assert {"post"} <= set(document["paths"]["/api/v2/caches"])
    assert "delete" in document["paths"]["/api/v2/caches/{cacheId}"]
    assert "put" in document["paths"]["/api/v2/caches/{cacheId}/plan"]


def test_ownProvisioningAPIOff(memcachier_server):
    """
    With no C{[provisioning] token} no token opens the provisioning API
    (401).
    """
    s = memcachier_server
    base = f"http://127.0.0.1:{s.web_port}/api/v2/caches"
    response = requests.post(base, headers={"Authorization": "Bearer x"}, timeout=10)
    assert response.status_code == 401
    assert "off" in response.json()["error"]


# -- docs/provisioning.md


def docCurls(name):
    """
    The curl commands of a page of docs/, in order.
    """
    text = (ROOT / "docs" / name).read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in re.split(r"\n(?=curl )", block.replace("\\\n", " ")):
            command = command.strip()
            if command.startswith("curl "):
                commands.append(command)
    return commands


def runCurl(command):
    result = subprocess.run(
        ["bash", "-c", command + " -s -w '\\n%{http_code}'"],
        capture_output=True, text=True, timeout=30,
    )
    body, _, code = result.stdout.rpartition("\n")
    return code, body


def test_docsProvisioningCurlExamples(memcachier_server_factory, standIn):
    """
    Every curl example of docs/provisioning.md works against a running
    server, in order (the page's addresses and secrets swapped for the
    test server's).
    """
    s = startServer(memcachier_server_factory, standIn, extra=f'[provisioning]\ntoken = "{OPERATOR}"\n')
    commands = docCurls("provisioning.md")
    assert len(commands) >= 6
    uuid = "01234567-89ab-cdef-0123-456789abcdef"
    cacheId = None
    for command in commands:
        command = (
            command.replace("127.0.0.1:8080", f"127.0.0.1:{s.web_port}")
            .replace("$HEROKU_PASSWORD", HEROKU_PASSWORD)
            .replace("$PROVISIONING_TOKEN", OPERATOR)
            .replace("$UUID", uuid)
        )
        if "$CACHE_ID" in command:
            command = command.replace("$CACHE_ID", str(cacheId))
        code, body = runCurl(command)
        assert code.startswith("2"), (command, code, body)
        if "/api/v2/caches" in command and "-X POST" in command:
            cacheId = json.loads(body)["id"]


def test_herokuOnPostgreSQL(memcachier_server_factory, postgresql_url, standIn):
    """
    On a PostgreSQL control plane (as several nodes share it): provision
    is idempotent on the uuid, the grant is exchanged, deprovision is a
    204 then a 410.
    """
    s = memcachier_server_factory(
        database=postgresql_url, config=herokuConfig(standIn), create_cache=False
    )
    uuid = str(uuidlib.uuid4())
    first = heroku(s, "POST", json=provisionBody(uuid, plan="100"))
    assert first.status_code == 200, first.text
    assert heroku(s, "POST", json=provisionBody(uuid, plan="100")).json() == first.json()
    mc = client(first.json()["config"])
    assert mc.set("k", b"on postgres") and mc.get("k") == b"on postgres"
    waitFor(lambda: standIn.tokensIssued >= 1, what="the grant exchange")
    assert heroku(s, "DELETE", f"/{uuid}").status_code == 204
    assert heroku(s, "DELETE", f"/{uuid}").status_code == 410


@pytest.mark.memcachier(create_cache=False, config=f'[provisioning]\ntoken = "{OPERATOR}"\n')
def test_schemathesisProvisioningAPI(memcachier_server, tmp_path):
    """
    schemathesis, with every check and the operator's token, against the
    provisioning API's part of the document: no 5xx, no answer the
    schema contradicts, no schema-valid request refused.
    """
    import shutil
    import sys

    from tests.integration.test_api import SCHEMATHESIS_CONFIG

    s = memcachier_server
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail("schemathesis is not installed (pip install -e .[test])")
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        executable,
        "--config-file", str(config),
        "run", f"http://127.0.0.1:{s.web_port}/api/v2/openapi.json",
        "--header", f"Authorization: Bearer {OPERATOR}",
        "--include-path-regex", r"^/api/v2/caches(/\{cacheId\}(/plan)?)?$",
        "--checks", "all",
        "--exclude-checks", "ensure_resource_availability",
        "--max-examples", "30",
        "--workers", "1",
        "--seed", "1",
        "--request-timeout", "10",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    output = result.stdout + result.stderr
    print(output[-6000:])
    assert result.returncode == 0, output[-20000:]
    assert re.search(r"3 selected", output), output[-3000:]
    assert not re.search(r'" 5\d\d ', s.log()), s.log()[-5000:]


def herokuSSO(server, uuid, timestamp):
    """
    Post Heroku's SSO form (the user-scoped token) for C{uuid}, signed
    with the salt of L{herokuConfig}, without following the redirect.
    """
    import hashlib

    fields = {"resource_id": uuid, "timestamp": str(timestamp), "user_id": "u-1",
              "email": "dev@example.com", "app": "myapp"}
    text = f"{uuid}:salty:{timestamp}:u-1:dev@example.com"
    fields["user_scoped_resource_token"] = hashlib.sha256(text.encode()).hexdigest()
    return requests.post(
        f"http://127.0.0.1:{server.web_port}/sso/login", data=fields,
        allow_redirects=False, timeout=10,
    )


def test_herokuSSOWithAProvisionedUuid(memcachier_server_factory, standIn):
    """
    A cache Heroku provisioned is opened from Heroku with its uuid
    (C{heroku addons:open}): the SSO form post signs in to that cache's
    dashboard; kensa's check, a 6-minute-old token, is refused; after
    deprovisioning the uuid signs in nowhere.
    """
    s = startServer(memcachier_server_factory, standIn)
    uuid = str(uuidlib.uuid4())
    assert heroku(s, "POST", json=provisionBody(uuid, plan="100")).status_code == 200
    cacheId = resourceCacheId(s, uuid)

    def signIn():
        answer = herokuSSO(s, uuid, int(time.time()))
        return answer if answer.status_code in (302, 303) else None

    # the index learns the uuid within its poll interval
    answer = waitFor(signIn, what="SSO sign-in with the provisioned uuid")
    assert answer.headers["Location"].endswith(f"/caches/{cacheId}/")
    page = requests.get(
        f"http://127.0.0.1:{s.web_port}/caches/{cacheId}/", cookies=answer.cookies, timeout=10,
    )
    assert page.status_code == 200
    assert herokuSSO(s, uuid, int(time.time()) - 360).status_code == 403

    assert heroku(s, "DELETE", f"/{uuid}").status_code == 204
    waitFor(lambda: herokuSSO(s, uuid, int(time.time())).status_code == 403,
            what="SSO refused after deprovisioning")
