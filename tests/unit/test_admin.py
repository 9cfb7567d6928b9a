"""
Tests for L{memcachier.admin}, the C{memcachier-admin} console script,
called as C{main([...])} against SQLite files in a temporary directory.
"""

import io
import json

import pytest

from memcachier.admin import main
from memcachier.control.migrations import currentRevision
from memcachier.control.repository import ControlPlane
from memcachier.control.schema import makeEngine
from memcachier.control.model import DEFAULT_PLANS


class Run:
    """
    Runs C{memcachier-admin} with captured output against one database.
    """

    def __init__(self, url, config=None):
        self.url = url
        self.config = config

    def __call__(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        prefix = ["--database", self.url]
        if self.config is not None:
            prefix = ["--config", self.config] + prefix
        code = main(prefix + list(argv), stdout=out, stderr=err)
        self.out, self.err = out.getvalue(), err.getvalue()
        return code

    def json(self, *argv):
        code = self(*argv, "--json")
        assert code == 0, self.err
        return json.loads(self.out)


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path}/control.sqlite"


@pytest.fixture
def run(url):
    return Run(url)


@pytest.fixture
def configured(tmp_path):
    """
    C{memcachier-admin} with a configuration file naming two clusters and
    an extra plan, and a database URL in the file only.
    """
    config = tmp_path / "memcachier.toml"
    config.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path}/from-config.sqlite"

[clusters.default]
servers = ["mc1.example.com:11211", "mc2.example.com:11211"]

[clusters.eu]
servers = ["eu1.example.com:11211"]

[caches]
default_plan = "100"

[plans.tiny]
memory = "1MiB"
connections = 2
"""
    )

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        code = main(["--config", str(config)] + list(argv), stdout=out, stderr=err)
        run.out, run.err = out.getvalue(), err.getvalue()
        return code

    run.database = f"sqlite:///{tmp_path}/from-config.sqlite"
    return run


def controlPlane(url):
    class Clock:
        def seconds(self):
            return 1.0

    return ControlPlane(makeEngine(url), Clock(), {p.slug: p for p in DEFAULT_PLANS})


def test_cacheCreateJSON(run, url):
    """
    C{cache create --json} prints one JSON object with exactly the keys a
    provisioning script needs, and the cache exists in the database
    (migrated to the newest revision first).
    """
    created = run.json("cache", "create", "--name", "shop", "--plan", "100")
    assert set(created) == {"id", "uuid", "name", "plan", "servers", "username", "password"}
    assert created["name"] == "shop"
    assert created["plan"] == "100"
    assert created["servers"] == ["127.0.0.1:11211"]
    assert currentRevision(makeEngine(url)) == _headRevision()
    assert controlPlane(url).getCache(created["id"]).uuid == created["uuid"]
    credential = controlPlane(url).getCredential(created["username"])
    assert credential.password == created["password"]
    assert credential.cache_id == created["id"]
    assert credential.primary


def test_cacheCreateEnvironmentLines(run):
    """
    Without C{--json}, C{cache create} prints the environment variables
    ready to paste.
    """
    assert run("cache", "create") == 0
    lines = [l for l in run.out.splitlines() if not l.startswith("#")]
    names = [l.split("=", 1)[0] for l in lines]
    assert names == ["MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD"]
    assert lines[0] == "MEMCACHIER_SERVERS=127.0.0.1:11211"
    assert run.err == ""


def test_cacheCreateUnknownPlan(run):
    """
    An unknown plan is an error on stderr with exit status 1.
    """
    assert run("cache", "create", "--plan", "99g") == 1
    assert "unknown plan '99g'" in run.err
    assert run.out == ""
    assert run.json("cache", "list") == []


def test_cacheCreateDuplicateName(run):
    """
    A name already taken is an error.
    """
    run.json("cache", "create", "--name", "shop")
    assert run("cache", "create", "--name", "shop") == 1
    assert "already exists" in run.err


def test_cacheLifecycle(run):
    """
    Caches can be listed, shown, disabled, enabled, moved to another plan
    and deleted.
    """
    a = run.json("cache", "create")
    b = run.json("cache", "create", "--name", "b")
    listed = run.json("cache", "list")
    assert [c["id"] for c in listed] == [a["id"], b["id"]]
    assert listed[0]["enabled"] is True

    shown = run.json("cache", "show", str(a["id"]))
    assert shown["name"] == a["name"]
    assert [c["username"] for c in shown["credentials"]] == [a["username"]]

    assert run.json("cache", "disable", str(a["id"]))["enabled"] is False
    assert run.json("cache", "show", str(a["id"]))["enabled"] is False
    assert run.json("cache", "enable", str(a["id"]))["enabled"] is True
    assert run.json("cache", "set-plan", str(a["id"]), "1g")["plan"] == "1g"

    assert run("cache", "delete", str(a["id"])) == 0
    assert [c["id"] for c in run.json("cache", "list")] == [b["id"]]

    assert run("cache", "list") == 0
    assert "b" in run.out
    assert run("cache", "show", str(b["id"])) == 0
    assert b["username"] in run.out


def test_unknownCache(run):
    """
    Every command naming a missing cache fails with status 1 and a clear
    message.
    """
    for argv in [
        ("cache", "show", "42"),
        ("cache", "delete", "42"),
        ("cache", "enable", "42"),
        ("cache", "disable", "42"),
        ("cache", "set-plan", "42", "dev"),
        ("credential", "create", "42"),
        ("credential", "list", "42"),
    ]:
        assert run(*argv) == 1, argv
        assert "no cache with id 42" in run.err


def test_setPlanUnknown(run):
    """
    C{set-plan} refuses an unknown plan.
    """
    cache = run.json("cache", "create")
    assert run("cache", "set-plan", str(cache["id"]), "nope") == 1
    assert "unknown plan 'nope'" in run.err


def test_credentials(run):
    """
    Credentials can be created with capabilities, listed, updated,
    promoted and deleted, but not the primary.
    """
    cache = run.json("cache", "create")
    cacheId = str(cache["id"])
    reader = run.json("credential", "create", cacheId, "--read-only", "--no-flush")
    assert set(reader) >= {
        "id",
        "username",
        "password",
        "write_capability",
        "flush_capability",
        "api_capability",
        "primary",
    }
    assert (
        reader["write_capability"],
        reader["flush_capability"],
        reader["api_capability"],
        reader["primary"],
    ) == (False, False, True, False)

    listed = run.json("credential", "list", cacheId)
    assert [c["username"] for c in listed] == [cache["username"], reader["username"]]

    assert run("credential", "delete", cache["username"]) == 1
    assert "primary" in run.err

    updated = run.json("credential", "update", reader["username"], "--write", "--no-api")
    assert (
        updated["write_capability"],
        updated["flush_capability"],
        updated["api_capability"],
    ) == (True, False, False)

    promoted = run.json("credential", "promote", reader["username"])
    assert promoted["primary"] is True
    assert run("credential", "delete", cache["username"]) == 0
    assert [c["username"] for c in run.json("credential", "list", cacheId)] == [
        reader["username"]
    ]

    assert run("credential", "delete", "NOSUCH") == 1
    assert "no credential with username 'NOSUCH'" in run.err


def test_credentialCreateHuman(run):
    """
    Without C{--json}, C{credential create} prints username and password
    lines.
    """
    cache = run.json("cache", "create")
    assert run("credential", "create", str(cache["id"]), "--no-api") == 0
    assert "MEMCACHIER_USERNAME=" in run.out
    assert "MEMCACHIER_PASSWORD=" in run.out


def test_planList(run):
    """
    C{plan list} shows the configured plans.
    """
    plans = run.json("plan", "list")
    assert [p["slug"] for p in plans] == [p.slug for p in DEFAULT_PLANS]
    assert plans[0] == {
        "slug": "dev",
        "memory": 25 * 1024 * 1024,
        "connections": 10,
        "item_size": 1024 * 1024,
        "development": True,
        "requests_per_second": None,
        "bytes_per_second": None,
    }
    assert run("plan", "list") == 0
    assert "(default)" in run.out
    # budgets no plan sets are the node's default, scaled by plan memory
    assert "REQUESTS/S" in run.out and " scaled " in run.out


def test_configFile(configured, tmp_path):
    """
    The configuration file gives the database, the clusters (a created
    cache prints its cluster's servers), the default plan and extra plans;
    C{--database} overrides the file's database.
    """
    assert configured("cache", "create", "--json") == 0
    created = json.loads(configured.out)
    assert created["plan"] == "100"
    assert created["servers"] == ["mc1.example.com:11211", "mc2.example.com:11211"]
    assert configured("cache", "create", "--json", "--plan", "tiny", "--cluster", "eu") == 0
    assert json.loads(configured.out)["servers"] == ["eu1.example.com:11211"]
    assert configured("cache", "create", "--cluster", "mars") == 1
    assert "unknown cluster 'mars'" in configured.err
    assert len(controlPlane(configured.database).listCaches()) == 2

    other = f"sqlite:///{tmp_path}/override.sqlite"
    assert configured("--database", other, "cache", "list", "--json") == 0
    assert json.loads(configured.out) == []


def test_badConfig(tmp_path):
    """
    A configuration error is reported on stderr with status 1.
    """
    config = tmp_path / "bad.toml"
    config.write_text('[caches]\ndefault_plan = "nope"\n')
    err = io.StringIO()
    assert main(["--config", str(config), "plan", "list"], stdout=io.StringIO(), stderr=err) == 1
    assert "nope" in err.getvalue()
    err = io.StringIO()
    code = main(
        ["--config", str(tmp_path / "missing.toml"), "plan", "list"],
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 1
    assert "missing.toml" in err.getvalue()


def test_usageErrors(run, capsys):
    """
    Usage mistakes exit with status 2, as argparse does.
    """
    assert run("cache", "frobnicate") == 2
    assert run("cache", "show", "abc") == 2
    assert run() == 2
    assert run("credential", "update", "X", "--write", "--no-write") == 2


def test_databaseDriverMissing(capsys):
    """
    A URL whose driver is not installed is an error, not a traceback, and
    the password in the URL is not shown.
    """
    err = io.StringIO()
    code = main(
        ["--database", "mysql+nosuchdriver://u:s3cret@localhost/db", "cache", "list"],
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 1
    assert "s3cret" not in err.getvalue()
    assert err.getvalue().startswith("memcachier-admin: error:")


def test_runningServerSeesChangesWithinOnePoll(run, url):
    """
    A change made with C{memcachier-admin} reaches a running server's
    in-memory index at its next poll (one second by default, within the
    two seconds the issue asks for).
    """
    from tests.unit.test_control import SynchronousReactor, SynchronousThreadPool, PLANS
    from memcachier.control.index import ControlIndex
    from memcachier.control.migrations import upgrade
    from memcachier.control.repository import AsyncControlPlane

    reactor = SynchronousReactor()
    engine = makeEngine(url)
    upgrade(engine)
    server = ControlPlane(engine, reactor, PLANS)
    index = ControlIndex(
        AsyncControlPlane(server, SynchronousThreadPool(), reactor), PLANS, reactor, 1.0
    )
    index.startService()
    created = run.json("cache", "create", "--plan", "100")
    reactor.advance(1.0)
    credential = index.authenticate(created["username"].encode(), created["password"].encode())
    assert credential is not None and credential.cache_id == created["id"]
    run.json("cache", "disable", str(created["id"]))
    reactor.advance(1.0)
    assert index.authenticate(created["username"].encode(), created["password"].encode()) is None
    index.stopService()


def test_nodeListAndLiveServers(run, url):
    """
    C{node list} shows what the nodes registered (in or out by their last
    heartbeat); a cache's servers are the live nodes of its cluster once
    any registered, the configured list before.
    """
    import time

    from memcachier.cluster.membership import NodeRecord, heartbeat

    created = run.json("cache", "create")
    assert created["servers"] == ["127.0.0.1:11211"]
    engine = makeEngine(url)
    now = time.time()
    heartbeat(engine, NodeRecord("10.0.0.2:11211", "default", now, now, 4, 2048, '{"1": 4}'), 5.0)
    heartbeat(engine, NodeRecord(
        "10.0.0.1:11211", "default", now, now - 60, 0, 0,
        suspicions='{"v": 1, "suspects": {"10.0.0.2:11211": [1.0, 2.0]}, "dropped": {}}',
    ), 5.0)
    engine.dispose()
    nodes = run.json("node", "list")
    assert [(n["name"], n["live"], n["connections"], n["cache_connections"]) for n in nodes] == [
        ("10.0.0.1:11211", False, 0, {}),
        ("10.0.0.2:11211", True, 4, {"1": 4}),
    ]
    assert [n["suspicions"] for n in nodes] == [
        {"suspects": ["10.0.0.2:11211"], "dropped_for": []},
        {"suspects": [], "dropped_for": []},
    ]
    assert run("node", "list") == 0
    lines = run.out.splitlines()
    assert lines[0].split() == [
        "NAME", "CLUSTER", "LIVE", "STATE", "WARMUP", "HEARTBEAT", "CONNECTIONS", "MEMORY",
        "RESTORED", "TAKEN", "HANDED",
    ]
    assert lines[1].split()[:4] == ["10.0.0.1:11211", "default", "out", "serving"]
    assert lines[2].split()[:5] == ["10.0.0.2:11211", "default", "in", "serving", "100%"]
    assert lines[2].split()[-5:] == ["4", "2048", "0", "0", "0"]
    shown = run.json("cache", "show", str(created["cache"]["id"] if "cache" in created else created["id"]))
    assert shown["servers"] == ["10.0.0.2:11211"]


def _headRevision():
    """
    The newest Alembic revision shipped (branches add theirs).
    """
    from alembic.script import ScriptDirectory

    from memcachier.control.migrations import alembicConfig

    return ScriptDirectory.from_config(alembicConfig()).get_current_head()


def test_herokuManifest(tmp_path, url):
    """
    C{heroku manifest} prints the add-on manifest from the configuration,
    and refuses without an https C{[web] public_url} or the secrets.
    """
    config = tmp_path / "heroku.toml"
    config.write_text(
        '[web]\npublic_url = "https://cache.example.com/"\nlisten = "tcp:9000"\n'
        '[heroku]\nid = "mycache"\npassword = "pw"\nsso_salt = "salt"\n'
    )
    run = Run(url, str(config))
    assert run("heroku", "manifest") == 0, run.err
    manifest = json.loads(run.out)
    assert manifest["id"] == "mycache"
    assert manifest["api"]["config_vars"] == [
        "MEMCACHIER_SERVERS", "MEMCACHIER_USERNAME", "MEMCACHIER_PASSWORD",
    ]
    assert manifest["api"]["production"] == {
        "base_url": "https://cache.example.com/heroku/resources",
        "sso_url": "https://cache.example.com/sso/login",
    }
    assert manifest["api"]["test"]["base_url"] == "http://localhost:9000/heroku/resources"
    for text, message in [
        # the default public_url (from the web listener) is http
        ('[heroku]\npassword = "pw"\nsso_salt = "s"\n', "must be https"),
        ('[web]\npublic_url = "http://x.example"\n[heroku]\npassword = "pw"\nsso_salt = "s"\n', "must be https"),
        ('[web]\npublic_url = "https://x.example"\n[heroku]\nsso_salt = "s"\n', "password and sso_salt"),
    ]:
        config.write_text(text)
        assert run("heroku", "manifest") == 1
        assert message in run.err


def test_herokuShow(run, url):
    """
    C{heroku show UUID} tells an operator where a resource's tokens and
    config var pushes stand, without the secrets.
    """
    from twisted.internet.task import Clock

    from memcachier.control.migrations import upgrade
    from memcachier.heroku.records import HerokuRecords

    engine = makeEngine(url)
    upgrade(engine)
    cp = ControlPlane(engine, Clock(), {p.slug: p for p in DEFAULT_PLANS})
    records = HerokuRecords(cp, Clock())
    resource, _ = records.herokuProvision("u-1", "100", "default", "app", "us", "grant", None)
    records.recordPromotion(resource.id, "NEWONE")
    records.pushFailed(records.duePushes()[0][0].id, 500, "HTTP 500: try again", 10.0)
    shown = run.json("heroku", "show", "u-1")
    assert shown["cache_id"] == resource.cache_id
    assert (shown["grant_pending"], shown["has_access_token"]) == (True, False)
    assert "grant" not in json.dumps(shown).replace("grant_pending", "")
    assert shown["config_pushes"] == [{
        "username": "NEWONE", "state": "pending", "attempts": 1, "last_status": 500,
        "last_error": "HTTP 500: try again", "created_at": 0.0, "finished_at": None,
    }]
    assert run("heroku", "show", "u-1") == 0
    assert "NEWONE   pending    attempts=1 status=500 HTTP 500: try again" in run.out
    assert run("heroku", "show", "nope") == 1
    assert "no resource 'nope'" in run.err
    engine.dispose()
# -- the dashboard


def test_cacheShowJSONHasUuid(run):
    created = run.json("cache", "create")
    shown = run.json("cache", "show", str(created["id"]))
    assert shown["uuid"] == created["uuid"]
    assert len(shown["uuid"]) == 36


def test_dashboardURL(run, url):
    """
    C{cache dashboard-url ID} prints just a signed link on the public URL
    (the default one, from the web listener), valid for C{--ttl}.
    """
    from urllib.parse import parse_qs, urlsplit

    created = run.json("cache", "create")
    assert run("cache", "dashboard-url", str(created["id"]), "--ttl", "2h") == 0
    lines = run.out.splitlines()
    assert len(lines) == 1
    link = urlsplit(lines[0])
    assert (link.scheme, link.netloc, link.path) == ("http", "127.0.0.1:8080", "/sso/link")
    query = parse_qs(link.query)
    assert query["cache"] == [str(created["id"])]
    assert abs(int(query["expires"][0]) - (_now() + 7200)) < 60


def _now():
    import time

    return int(time.time())


@pytest.mark.parametrize("ttl", ["0", "25h", "ten"])
def test_dashboardURLBadTTL(run, ttl):
    created = run.json("cache", "create")
    assert run("cache", "dashboard-url", str(created["id"]), "--ttl", ttl) == 2


def test_dashboardURLUnknownCache(run):
    assert run("cache", "dashboard-url", "99") == 1
    assert "99" in run.err


def test_operatorHashPassword():
    from memcachier.web.sso import checkPassword

    out, err = io.StringIO(), io.StringIO()
    assert main(["operator", "hash-password"], stdout=out, stderr=err,
                stdin=io.StringIO("s3cret\n")) == 0
    assert checkPassword(out.getvalue().strip(), "s3cret")
    assert main(["operator", "hash-password"], stdout=out, stderr=err, stdin=io.StringIO("")) == 1
    assert "no password" in err.getvalue()
