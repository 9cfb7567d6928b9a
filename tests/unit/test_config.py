"""
Tests for L{memcachier.node.settings}.
"""

import pytest
from twisted.internet.ssl import TLSVersion

from memcachier.node.settings import ConfigError, Settings, loadSettings, parseSettings, parseSize
from memcachier.control.model import DEFAULT_PLANS, MiB, Plan


def errorsOf(text, overrides=None):
    with pytest.raises(ConfigError) as info:
        parseSettings(text, overrides)
    return info.value.errors


def test_embeddedDefaults():
    """
    Without a file, L{loadSettings} gives the embedded defaults: memcache on
    127.0.0.1:11211, the web on 127.0.0.1:8080, SQLite in the current
    directory, every default plan and one cluster made of this node.
    """
    settings = loadSettings(None, {})
    assert settings.memcache.listen == ("tcp:11211:interface=127.0.0.1",)
    assert settings.web.listen == "tcp:8080:interface=127.0.0.1"
    assert settings.database.url == "sqlite:///memcachier.sqlite"
    assert settings.node.name == "127.0.0.1:11211"
    assert settings.clusters == {"default": ("127.0.0.1:11211",)}
    assert settings.caches.default_cluster == "default"
    assert settings.store.plugin == "auto"
    assert settings.store.settings == {}
    assert settings.plans == {p.slug: p for p in DEFAULT_PLANS}
    assert settings.caches.default_plan == "dev"
    assert settings.memcache.auth_timeout == 5.0
    assert settings.caches.dev_inactivity_days == 30
    assert settings.database.poll_interval == 1.0
    assert settings.memcache.tls_min_version is TLSVersion.TLSv1_2
    assert settings == Settings()


def test_fullFile(tmp_path):
    """
    Every documented key is read from the file.
    """
    path = tmp_path / "m.toml"
    path.write_text(
        """
[memcache]
listen = ["tcp:11311:interface=10.0.0.5", "unix:/tmp/mc.sock"]
auth_timeout = 2
tls_min_version = "1.3"

[web]
listen = "tcp:9090"

[database]
url = "postgresql+psycopg://u:p@db/memcachier"
poll_interval = 0.5

[clusters.eu]
servers = ["10.0.0.5:11311", "10.0.0.6:11311"]

[caches]
default_cluster = "eu"
default_plan = "100"
dev_inactivity_days = 7

[store]
plugin = "memory"
shards = 4

[plans.dev]
memory = "50MiB"

[plans.tiny]
memory = 1048576
connections = 3
item_size = "64KiB"
development = true
"""
    )
    settings = loadSettings(str(path), {})
    assert settings.memcache.listen == ("tcp:11311:interface=10.0.0.5", "unix:/tmp/mc.sock")
    assert settings.memcache.auth_timeout == 2.0
    assert settings.memcache.tls_min_version is TLSVersion.TLSv1_3
    assert settings.web.listen == "tcp:9090"
    assert settings.database.url == "postgresql+psycopg://u:p@db/memcachier"
    assert settings.database.poll_interval == 0.5
    assert settings.node.name == "10.0.0.5:11311"
    assert settings.clusters == {"eu": ("10.0.0.5:11311", "10.0.0.6:11311")}
    assert settings.caches.default_cluster == "eu"
    assert settings.caches.default_plan == "100"
    assert settings.caches.dev_inactivity_days == 7
    assert settings.store.settings == {"shards": 4}
    assert settings.plans["dev"] == Plan("dev", 50 * MiB, 10, MiB, True)
    assert settings.plans["tiny"] == Plan("tiny", MiB, 3, 64 * 1024, True)
    assert settings.plans["1g"] == Plan("1g", 1024 * MiB, 2000)


def test_overrides():
    """
    Command-line overrides replace the file's listeners, database and web
    endpoint; the node name follows the first listener.
    """
    settings = parseSettings(
        '[memcache]\nlisten = ["tcp:1"]\n[database]\nurl = "sqlite:///a.db"\n',
        {"listen": ["tcp:2222:interface=127.0.0.2"], "database": "sqlite:///b.db", "web_listen": "tcp:0"},
    )
    assert settings.memcache.listen == ("tcp:2222:interface=127.0.0.2",)
    assert settings.database.url == "sqlite:///b.db"
    assert settings.web.listen == "tcp:0"
    assert settings.node.name == "127.0.0.2:2222"


def test_emptyOverridesIgnored():
    """
    L{None} and empty overrides leave the file's values alone.
    """
    settings = parseSettings(
        '[web]\nlisten = "tcp:81"\n', {"listen": [], "database": None, "web_listen": None}
    )
    assert settings.web.listen == "tcp:81"
    assert settings.memcache.listen == ("tcp:11211:interface=127.0.0.1",)


def test_nodeNameExplicit():
    """
    C{[node] name} wins over the derived name, and the default cluster is
    made of it.
    """
    settings = parseSettings('[node]\nname = "cache1.example.com:11211"\n')
    assert settings.node.name == "cache1.example.com:11211"
    assert settings.clusters == {"default": ("cache1.example.com:11211",)}


def test_everyErrorAtOnce():
    """
    Every mistake is reported in one L{ConfigError}, each message naming
    its key; unknown keys are mistakes.
    """
    errors = errorsOf(
        """
colour = "blue"
[memcache]
auth_timeout = "x"
listen = ["tcp:notaport"]
tls_min_version = "1.1"
lisen = 3
[database]
url = "nope"
poll_interval = -1
[caches]
default_plan = "gold"
dev_inactivity_days = 0
[plans.new]
memory = "lots"
[clusters.a]
servers = ["nohost"]
"""
    )
    text = "\n".join(errors)
    assert 'memcache.auth_timeout: expected a positive number, got "x"' in errors
    assert "colour: unknown key" in errors
    assert "memcache.lisen: unknown key" in errors
    for key in (
        "memcache.listen[0]",
        "memcache.tls_min_version",
        "database.url",
        "database.poll_interval",
        "caches.default_plan",
        "caches.dev_inactivity_days",
        "plans.new.memory",
        "plans.new.connections",
        "clusters.a.servers[0]",
        "caches.default_cluster",
    ):
        assert key + ":" in text, key
    assert len(errors) == 13, errors


def test_configErrorStr():
    """
    C{str(ConfigError)} lists every message.
    """
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "2 configuration errors:\n  a: one\n  b: two"
    assert str(ConfigError(["a: one"])) == "configuration error: a: one"


def test_invalidToml():
    """
    A syntax error names the file.
    """
    errors = errorsOf("[memcache\n")
    assert len(errors) == 1
    assert "invalid TOML" in errors[0]


def test_missingFile(tmp_path):
    """
    A missing file is a L{ConfigError} naming it.
    """
    path = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        loadSettings(path, {})
    assert path in str(info.value)


def test_sslListenerFiles(selfSignedCert):
    """
    An C{ssl:} listener's key and certificate must be readable, and
    C{sslmethod} (which could lower the TLS version) is refused.
    """
    key, cert = selfSignedCert
    good = f"ssl:11219:privateKey={key}:certKey={cert}"
    assert parseSettings("", {"listen": [good]}).memcache.listen == (good,)
    errors = errorsOf(
        "",
        {"listen": ["ssl:1:privateKey=/nonexistent.pem", good + ":sslmethod=TLSv1_METHOD"]},
    )
    assert errors[0].startswith("--listen[0]: privateKey file \"/nonexistent.pem\"")
    assert errors[1].startswith("--listen[1]: sslmethod is not supported")


def test_wildcardInterfaceUsesHostname():
    """
    A listener on every interface advertises the host name.
    """
    import socket

    settings = parseSettings("", {"listen": ["tcp:11211"]})
    assert settings.node.name == f"{socket.gethostname()}:11211"


def test_planItemSizeAboveMemory():
    """
    A plan whose item size exceeds its memory is refused.
    """
    errors = errorsOf('[plans.dev]\nitem_size = "100MiB"\n')
    assert errors == ["plans.dev.item_size: larger than the plan's memory (26214400 bytes)"]


def test_parseSize():
    """
    Sizes are integers or strings with binary units.
    """
    assert parseSize(5) == 5
    assert parseSize("25MiB") == 25 * MiB
    assert parseSize("25mb") == 25 * MiB
    assert parseSize("1g") == 1024 * MiB
    assert parseSize("512KB") == 512 * 1024
    assert parseSize("lots") is None
    assert parseSize(True) is None
    assert parseSize(1.5) is None


def test_analyticsDefaults():
    """
    Introspection is on by default; samples every minute, latency every
    20 s, batches every 0.02 s with 100 events counted exactly.
    """
    settings = parseSettings("")
    assert settings.analytics.introspection is True
    assert settings.analytics.sample_period == 60.0
    assert settings.analytics.latency_period == 20.0
    assert settings.analytics.drain_interval == 0.02
    assert settings.analytics.time_slice == 60
    assert settings.analytics.slices == 10
    assert settings.analytics.batch_limit == 100


def test_analyticsTable():
    settings = parseSettings(
        "[analytics]\nintrospection = false\nsample_period = 10\nlatency_period = 5.5\n"
        "drain_interval = 0.25\ntime_slice = 30\nslices = 4\nbatch_limit = 100\n"
    )
    assert settings.analytics.introspection is False
    assert settings.analytics.sample_period == 10.0
    assert settings.analytics.latency_period == 5.5
    assert settings.analytics.drain_interval == 0.25
    assert (settings.analytics.time_slice, settings.analytics.slices) == (30, 4)
    assert settings.analytics.batch_limit == 100


def test_analyticsErrorsAtOnce():
    errors = errorsOf(
        '[analytics]\nintrospection = "yes"\nsample_period = 0\nslices = -1\nbogus = 1\n'
    )
    assert sorted(errors) == [
        "analytics.bogus: unknown key",
        'analytics.introspection: expected true or false, got "yes"',
        "analytics.sample_period: expected a positive number, got 0",
        "analytics.slices: expected a positive integer, got -1",
    ]


def test_provisioningDefaults():
    """
    The Heroku routes, the provisioning API and /metrics are off by
    default, with Heroku's own URLs.
    """
    settings = parseSettings("")
    assert (settings.heroku.id, settings.heroku.password, settings.heroku.sso_salt) == (
        "memcachier", "", "",
    )
    assert settings.heroku.api_url == "https://api.heroku.com"
    assert settings.heroku.id_url == "https://id.heroku.com"
    assert (settings.heroku.client_secret, settings.provisioning.token) == ("", "")
    assert (settings.metrics.access, settings.metrics.token) == ("off", "")
    assert settings.web.public_url == "http://127.0.0.1:8080"


def test_provisioningTables():
    settings = parseSettings(
        '[web]\npublic_url = "https://cache.example.com/"\n'
        '[heroku]\nid = "mc"\npassword = "p"\nsso_salt = "s"\n'
        'api_url = "http://127.0.0.1:9/"\nid_url = "http://127.0.0.1:10"\nclient_secret = "c"\n'
        '[provisioning]\ntoken = "t"\n'
        '[metrics]\naccess = "token"\ntoken = "m"\n'
    )
    assert settings.web.public_url == "https://cache.example.com"
    assert (settings.heroku.id, settings.heroku.password, settings.heroku.sso_salt) == ("mc", "p", "s")
    assert (settings.heroku.api_url, settings.heroku.id_url) == ("http://127.0.0.1:9", "http://127.0.0.1:10")
    assert (settings.heroku.client_secret, settings.provisioning.token) == ("c", "t")
    assert (settings.metrics.access, settings.metrics.token) == ("token", "m")


def test_provisioningErrorsAtOnce():
    with pytest.raises(ConfigError) as e:
        parseSettings(
            '[web]\npublic_url = "cache.example.com"\n'
            '[heroku]\napi_url = "ftp://x"\npassword = 5\nsalt = "x"\n'
            '[provisioning]\ntoken = false\n'
            '[metrics]\naccess = "token"\n'
        )
    assert sorted(e.value.errors) == sorted([
        'web.public_url: expected an http:// or https:// URL, got "cache.example.com"',
        "heroku.salt: unknown key",
        "heroku.password: expected a string, got 5",
        'heroku.api_url: expected an http(s) URL, got "ftp://x"',
        "provisioning.token: expected a string, got false",
        'metrics.token: required when metrics.access is "token"',
    ])
    with pytest.raises(ConfigError) as e:
        parseSettings('[metrics]\naccess = "public"\n')
    assert e.value.errors == ['metrics.access: expected one of "off", "open", "token", got "public"']
def test_dashboardSettings():
    """
    C{[web] public_url} defaults to the web listener's address (https for
    ssl:); C{[heroku]} and the operator hash are optional.
    """
    settings = parseSettings("")
    assert settings.web.public_url == "http://127.0.0.1:8080"
    assert (settings.heroku.sso_salt, settings.web.operator_password_hash) == ("", "")
    from memcachier.node.settings import publicUrlOf

    assert publicUrlOf("ssl:8443:privateKey=k.pem:certKey=c.pem:interface=10.0.0.1") == (
        "https://10.0.0.1:8443")
    assert publicUrlOf("unix:/run/mc.sock") == "http://127.0.0.1:8080"
    settings = parseSettings(
        '[web]\npublic_url = "https://mc.example.com/"\n'
        'operator_password_hash = "scrypt$16384$8$1$c2FsdA==$aGFzaA=="\n'
        '[heroku]\nid = "memcachier"\npassword = "p"\nsso_salt = "s"\n'
    )
    assert settings.web.public_url == "https://mc.example.com"
    assert (settings.heroku.id, settings.heroku.password, settings.heroku.sso_salt) == (
        "memcachier", "p", "s")


def test_dashboardSettingsErrors():
    errors = errorsOf(
        '[web]\npublic_url = "ftp://x"\noperator_password_hash = "plain"\n'
        '[heroku]\nsso_salt = 5\nextra = 1\n'
    )
    assert any(e.startswith("web.public_url:") for e in errors)
    assert any(e.startswith("web.operator_password_hash:") for e in errors)
    # an empty salt is allowed: it turns Heroku SSO off
    assert any(e.startswith("heroku.sso_salt:") for e in errors)
    assert any("heroku.extra" in e for e in errors)


def test_exampleFileIsGenerated():
    """
    C{memcachier.example.toml} is what L{exampleFile} makes from the
    settings table (C{scripts/regenerate-settings} rewrites it), and loading
    it gives the embedded defaults.
    """
    from pathlib import Path

    from memcachier.node.settings import exampleFile

    example = Path(__file__).resolve().parents[2] / "memcachier.example.toml"
    assert example.read_text() == exampleFile()
    assert parseSettings(exampleFile()) == Settings()


def test_docsTableIsGenerated():
    """
    The option table of C{docs/operations.md}, between its two markers, is
    what L{docsTable} makes from the settings table: one row per option.
    """
    from pathlib import Path

    from memcachier.node.settings import DOCS_BEGIN, DOCS_END, OPTIONS, docsTable

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    start, end = text.index(DOCS_BEGIN), text.index(DOCS_END) + len(DOCS_END)
    assert text[start:end] == docsTable()
    assert len(docsTable().splitlines()) == len(OPTIONS) + 4


def test_everyFixedOptionIsASetting():
    """
    Each option of a fixed section is an attribute of its section, holding
    its default converted; the flags are the table's.
    """
    from memcachier.node.settings import FLAGS, OPTIONS

    settings = Settings()
    for option in OPTIONS:
        if not option.section.endswith(("NAME", "SLUG")):
            section = settings
            for part in option.section.split("."):
                section = getattr(section, part)
            assert getattr(section, option.name) == option.value, option
    assert [f.name for f in FLAGS] == ["listen", "web-listen", "database", "allocator"]


def test_evolve():
    """
    L{Settings.evolve} changes only the keys a section's L{dict} names, in
    nested sections too; other values replace.
    """
    settings = Settings().evolve(
        memcache={"auth_timeout": 1.0}, alerts={"smtp": {"host": "relay"}}, clusters={"a": ("h:1",)}
    )
    assert settings.memcache.auth_timeout == 1.0
    assert settings.memcache.listen == Settings().memcache.listen
    assert (settings.alerts.smtp.host, settings.alerts.smtp.port) == ("relay", 25)
    assert settings.clusters == {"a": ("h:1",)}
    assert Settings() == Settings().evolve()
