# -*- test-case-name: tests.unit.test_config -*-
"""
The operator's configuration: a TOML file (optional) plus command-line
overrides, turned into one frozen L{Settings} value grouped by section
(C{settings.memcache.auth_timeout}, C{settings.alerts.smtp.host}, ...).

Every option is stated once, in L{OPTIONS}: its section, name, kind (which
checks and converts a value), default, help text and command-line flag.
The reader, the twistd flags (L{FLAGS}), C{memcachier.example.toml}
(L{exampleFile}) and the table in C{docs/operations.md} (L{docsTable}) all
come from it.  Every mistake in the file is collected and reported at once,
as Buildbot does with its C{ConfigErrors}; unknown keys are mistakes too.

Tests build settings with C{Settings()} (the embedded defaults) and
L{Settings.evolve}: C{Settings().evolve(memcache={"auth_timeout": 1.0})}.
"""

import json
import math
import re
import textwrap
import tomllib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attr
from twisted.internet.ssl import TLSVersion

from memcachier.control.model import DEFAULT_PLANS, Plan
from memcachier.node.endpoints import checkEndpoint, endpointArgs as _endpointArgs, hostPort, show as _show

__all__ = ["ConfigError", "Settings", "OPTIONS", "FLAGS", "loadSettings", "parseSettings", "parseSize",
           "parseDuration", "publicUrlOf", "exampleFile", "docsTable", "_endpointArgs"]


class ConfigError(Exception):
    """
    The configuration is wrong; C{errors} says every way in which it is.

    @ivar errors: one message per mistake, each naming the key at fault
        (C{memcache.auth_timeout: expected a positive number, got "x"}).
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: List[str] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return "configuration error: " + self.errors[0]
        return f"{len(self.errors)} configuration errors:\n" + "\n".join("  " + e for e in self.errors)


#: What C{[clusters.NAME] kind} may say; a cluster without one is production.
CLUSTER_KINDS = ("production", "development")
DEFAULT_CLUSTER_KIND = "production"
#: C{tls_min_version} spellings, lowest first; nothing below TLS 1.2.
TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
METRICS_ACCESS = ("off", "open", "token")

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parseSize(value: Any) -> Optional[int]:
    """
    Parse a byte size: an integer, or a string such as C{"25MiB"}, C{"1g"}
    or C{"512KB"} (binary units, as memcached's C{-m} means).

    @return: the size in bytes, or L{None} if C{value} is not a size.
    """
    if _isInt(value):
        return int(value)
    match = _SIZE.match(value) if isinstance(value, str) else None
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()] if match else None


def parseDuration(value: Any) -> Optional[float]:
    """
    Parse a duration: a number of seconds, or a string such as C{"60s"},
    C{"5m"}, C{"1h"} or C{"500ms"}.

    @return: seconds (positive), or L{None} if C{value} is not a duration.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value):
        match = _DURATION.match(value)
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]  # type: ignore[union-attr]
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


#: Records one error: C{fail(message, keySuffix="")}.
Fail = Callable[..., None]


@attr.s(frozen=True, auto_attribs=True)
class Kind:
    """
    What values an option takes: C{parse(value, fail)} returns the value
    converted, calling C{fail} for each mistake; with C{fail=None} it only
    converts a value known to be good (a default), without I/O.
    """

    describe: str
    parse: Callable[[Any, Optional[Fail]], Any]


def _kind(describe: str, good: Callable[[Any], bool], message: str,
          convert: Callable[[Any], Any] = lambda v: v) -> Kind:
    def parse(value: Any, fail: Optional[Fail]) -> Any:
        if fail is not None and not good(value):
            fail(f"{message}, got {_show(value)}")
            return value
        return convert(value)
    return Kind(describe, parse)


def _then(first: Kind, second: Kind) -> Kind:
    def parse(value: Any, fail: Optional[Fail]) -> Any:
        failed: List[str] = []
        value = first.parse(value, fail and (lambda m, s="": (failed.append(m), fail(m, s))))
        return value if failed else second.parse(value, fail)
    return Kind(second.describe, parse)


def _isStr(v: Any) -> bool:
    return isinstance(v, str)


def _isInt(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _isHTTPURL(value: Any) -> bool:
    return isinstance(value, str) and bool(re.match(r"^https?://[^/\s]+(/\S*)?$", value))


def _isHostPort(value: Any) -> bool:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    return bool(sep and host and port.isdigit() and 0 < int(port) <= 65535)


def integer(minimum: int = 1) -> Kind:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return _kind(what[what.index(" ") + 1:], lambda v: _isInt(v) and v >= minimum, f"expected {what}")


def duration(examples: str = '10, "500ms", "10s", "5m" or "1h"') -> Kind:
    return _kind("duration", lambda v: parseDuration(v) is not None,
                 f"expected a duration such as {examples}", parseDuration)


def choice(values: Sequence[str], mapping: Optional[Mapping[str, Any]] = None,
           key: Callable[[Any], Any] = lambda v: v) -> Kind:
    return _kind(" or ".join(map(_show, values)), lambda v: _hashable(key(v)) in values,
                 f"expected one of {', '.join(map(_show, values))}",
                 lambda v: mapping[key(v)] if mapping else v)


def _hashable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, type(None))) else None


NUMBER = _kind("positive number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v) and v > 0, "expected a positive number", float)
SIZE = _kind("size", lambda v: (parseSize(v) or 0) > 0,
             'expected a size in bytes such as 26214400 or "25MiB"', parseSize)
BOOLEAN = _kind("boolean", lambda v: isinstance(v, bool), "expected true or false")
STRING = _kind("string", lambda v: isinstance(v, str) and v != "", "expected a non-empty string")
TEXT = _kind("string, may be empty", _isStr, "expected a string")
PORT = _kind("port", lambda v: _isInt(v) and 0 < v <= 65535, "expected a port number")
HOST_PORT = _kind('"host:port"', _isHostPort, 'expected "host:port"')
HTTP_URL = _kind("http(s) URL", _isHTTPURL, "expected an http:// or https:// URL", lambda v: v.rstrip("/"))
HEROKU_URL = _then(STRING, _kind("http(s) URL", _isHTTPURL, "expected an http(s) URL", lambda v: v.rstrip("/")))
SQL_URL = _then(STRING, _kind("SQLAlchemy URL", lambda v: bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", v)),
                              "expected an SQLAlchemy URL such as sqlite:///memcachier.sqlite"))
EMAIL = _then(STRING, _kind("email address", lambda v: bool(re.match(r"^[^@\s<>]+@[^@\s<>]+$", v)),
                            "expected an email address"))
SCRYPT_HASH = _then(STRING, _kind("scrypt hash", lambda v: v.startswith("scrypt$"),
                                  "expected a hash printed by memcachier-admin operator hash-password"))
TLS_VERSION = choice(tuple(TLS_VERSIONS), TLS_VERSIONS, lambda v: str(v) if isinstance(v, (str, float)) else None)


def _endpoint(value: Any, fail: Optional[Fail]) -> Any:
    if fail is not None:
        checkEndpoint(value, fail)
    return value


def _endpoints(value: Any, fail: Optional[Fail]) -> Any:
    value = [value] if isinstance(value, str) else value
    if fail is not None and (not isinstance(value, (list, tuple)) or not value):
        fail(f"expected a non-empty list of endpoints, got {_show(value)}")
        return value
    for i, description in enumerate(value):
        _endpoint(description, fail and (lambda m, s="", i=i: fail(m, f"[{i}]{s}")))
    return tuple(d for d in value if isinstance(d, str))


def _hostPorts(value: Any, fail: Optional[Fail]) -> Any:
    if fail is None or not isinstance(value, list) or not value:
        fail and fail(f'expected a non-empty list of "host:port", got {_show(value)}')
        return tuple(value or ())
    for i, server in enumerate(value):
        HOST_PORT.parse(server, fail and (lambda m, s="", i=i: fail(m, f"[{i}]")))
    return tuple(value)


ENDPOINT = _then(STRING, Kind("endpoint", _endpoint))
ENDPOINTS = Kind("list of endpoints", _endpoints)
HOST_PORTS = Kind('list of "host:port"', _hostPorts)


@attr.s(frozen=True, auto_attribs=True)
class Flag:
    """
    The twistd command-line flag that overrides an option (C{--NAME}).
    """

    name: str
    short: Optional[str]
    help: str
    repeatable: bool = False


@attr.s(frozen=True, auto_attribs=True)
class Option:
    """
    One configuration key.

    @ivar section: the TOML table (C{"alerts.smtp"}; C{"plans.SLUG"} for a
        key of every table of a dynamic family).
    @ivar default: the default as an operator writes it in TOML.
    @ivar example: a value shown commented out in the example file instead
        of the default (a key whose default is empty or derived).
    @ivar shown: the docs' text for a default that is derived or empty.
    @ivar derive: computes the default from the values already read
        (C{"memcache.listen"} to its value).
    """

    section: str
    name: str
    kind: Kind
    default: Any
    help: str
    flag: Optional[Flag] = None
    example: Any = None
    shown: Optional[str] = None
    derive: Optional[Callable[[Dict[str, Any]], Any]] = None

    @property
    def value(self) -> Any:
        """
        The default, converted (what L{Settings} holds when the key is absent).
        """
        return self.kind.parse(self.default, None)


def _nodeName(got: Dict[str, Any]) -> str:
    names = (hostPort(d) for d in got["memcache.listen"])
    return next((h for h in names if _isHostPort(h)), "127.0.0.1:11211")


O = Option
#: Each section's meaning, in the order of the example file and the docs.
SECTIONS = {
    "memcache": "Memcache listeners (binary and ASCII on the same port) and connection hardening.",
    "web": "The HTTP API (/api/v2), the dashboard (/caches/<id>/, /admin/), provisioning and /metrics.",
    "database": "The control plane: caches, credentials, plans in use, alerts. SQLite for one node; "
                "PostgreSQL shared by every node of a multi-node setup.",
    "node": "This node.",
    "cluster": "Several nodes sharing one PostgreSQL control plane (docs/cluster.md). Without a secret "
               "this node is a single node: it neither registers nor forwards.",
    "clusters.NAME": "Clusters: the servers clients spread a cache's keys over. Default: one cluster "
                     '"default" made of this node.',
    "caches": "Plan and cluster of caches created without one, and idle development caches.",
    "store": "The store plugin holding the keys; any other key in this table goes to the plugin.",
    "plans.SLUG": "Plans: a table changes a built-in plan (dev, 100, 250, 500, 1g, 2g, 5g) or adds one "
                  "(memory and connections are required for a new plan).",
    "limits": "What an API user or a client can grow, per cache; past a limit the API answers 409.",
    "analytics": "Counters, latency probes and per-key introspection (docs/analytics.md).",
    "alerts": "Alert rules and their delivery (docs/alerts.md).",
    "alerts.smtp": "The SMTP relay alert emails go through.",
    "heroku": "Heroku's add-on partner API v3 under /heroku/resources (docs/provisioning.md).",
    "provisioning": "Our own provisioning API (/api/v2/caches).",
    "metrics": "/metrics in the Prometheus text format (docs/metrics.md).",
}
_DURATION_2 = duration('"60s" or "5m"')
#: Every option, in the order of the example file.
OPTIONS: Tuple[Option, ...] = (
    O("memcache", "listen", ENDPOINTS, ["tcp:11211:interface=127.0.0.1"],
      "memcache listeners, Twisted endpoint strings: tcp:PORT[:interface=ADDR][:backlog=N], unix:PATH, "
      "ssl:PORT:privateKey=key.pem:certKey=cert.pem[:clientCAs=ca.pem] (kill -HUP reloads ssl: files)",
      Flag("listen", None, "Add a memcache listener endpoint, e.g. tcp:11211:interface=127.0.0.1 or "
           "ssl:11219:privateKey=key.pem:certKey=cert.pem; repeatable (replaces [memcache] listen).", True)),
    O("memcache", "auth_timeout", NUMBER, 5.0, "seconds before an unauthenticated connection is closed"),
    O("memcache", "tls_min_version", TLS_VERSION, "1.2", "lowest TLS version on ssl: listeners"),
    O("memcache", "backlog", integer(), 1024, "listen backlog of memcache listeners whose description sets none"),
    O("memcache", "max_connections", integer(0), 0, "connections over every memcache listener; 0: ulimit -n "
      "minus the web ceiling minus 64 (see Limits)", shown="`0` (auto)"),
    O("memcache", "auth_failure_rate", NUMBER, 5.0, "failed logins a second per source address (IPv6: /64) "
      "and per username; past it logins are refused unchecked and closed"),
    O("memcache", "auth_failure_burst", integer(), 10, "failed logins allowed at once before the rate applies"),
    O("web", "listen", ENDPOINT, "tcp:8080:interface=127.0.0.1", "HTTP API, dashboard, provisioning, metrics",
      Flag("web-listen", None, "Endpoint of the HTTP API and dashboard; overrides [web] listen.")),
    O("web", "public_url", HTTP_URL, "http://127.0.0.1:8080", "the address users reach the site at (dashboard "
      "links, links in alert messages; the Heroku manifest's base_url and sso_url, which must be https)",
      example="https://memcachier.example.com", shown='from `web.listen`, e.g. `"http://127.0.0.1:8080"`',
      derive=lambda got: publicUrlOf(got["web.listen"])),
    O("web", "backlog", integer(), 1024, "listen backlog of the web listener"),
    O("web", "max_connections", integer(0), 0, "the web site's own connection ceiling (503 past it); "
      "0: min(1024, a quarter of ulimit -n)", shown="`0` (auto)"),
    O("web", "header_timeout", duration(), "10s", "a request's headers must arrive within this (408 otherwise)"),
    O("web", "body_timeout", duration(), "30s", "a request's body must arrive within this of its headers"),
    O("web", "idle_timeout", duration(), "60s", "a keep-alive connection idle this long is closed"),
    O("web", "operator_password_hash", SCRYPT_HASH, "", "scrypt hash of the operator's password for /admin/ "
      "(echo 'passphrase' | memcachier-admin operator hash-password)", example="scrypt$16384$8$1$...",
      shown="none (no operator view)"),
    O("database", "url", SQL_URL, "sqlite:///memcachier.sqlite", "control plane (SQLAlchemy URL, e.g. "
      "postgresql+psycopg://user:secret@db/memcachier; relative SQLite paths are relative to the working directory)",
      Flag("database", "d", "Control-plane SQLAlchemy URL; overrides [database] url.")),
    O("database", "poll_interval", NUMBER, 1.0, "seconds between checks for changes made elsewhere"),
    O("node", "name", HOST_PORT, "127.0.0.1:11211", "the host:port this node advertises in MEMCACHIER_SERVERS",
      example="cache1.example.com:11211", shown="first tcp/ssl listener's `interface:port` (the host name "
      "on every interface)", derive=_nodeName),
    O("node", "shutdown_timeout", duration(), "10s", "on SIGTERM, how long requests under way may take"),
    O("node", "allocator_warning", BOOLEAN, True, "log one warning at start when the process does not run "
      "on jemalloc (Memory allocator, below)"),
    O("cluster", "secret", TEXT, "", "password peer nodes authenticate with; the same on every node sharing "
      "the database", example="a long random string", shown="none"),
    O("cluster", "heartbeat_timeout", duration(), "5s", "a node silent this long is out"),
    O("cluster", "request_timeout", duration(), "2s", "deadline of a request forwarded to its owner node"),
    O("clusters.NAME", "servers", HOST_PORTS, None, "servers of each cluster, in MEMCACHIER_SERVERS order",
      example=["cache1.example.com:11211", "cache2.example.com:11211"], shown="`{default = [node.name]}`"),
    O("clusters.NAME", "kind", choice(CLUSTER_KINDS), DEFAULT_CLUSTER_KIND,
      "a cache switches clusters only within its cluster's kind", example=DEFAULT_CLUSTER_KIND),
    O("caches", "default_plan", STRING, "dev", "plan of caches created without one"),
    O("caches", "default_cluster", STRING, "default", "cluster of caches created without one"),
    O("caches", "dev_inactivity_days", integer(), 30, "idle days before a development cache is disabled"),
    O("store", "plugin", STRING, "memory", "store plugin; other [store] keys go to the plugin"),
    O("plans.SLUG", "memory", SIZE, None, "bytes of cache memory (\"64KiB\", \"25MiB\", \"1g\")", example="50MiB",
      shown="MemCachier's plans"),
    O("plans.SLUG", "connections", integer(), None, "concurrent connections per cache", example=10,
      shown="MemCachier's plans"),
    O("plans.SLUG", "item_size", SIZE, "1MiB", "largest key + value", example="1MiB"),
    O("plans.SLUG", "development", BOOLEAN, False, "a free development plan", example=True),
    O("limits", "watched_prefixes", integer(), 50, "prefixes one cache may watch (introspection)"),
    O("limits", "credentials", integer(), 20, "credentials one cache may have, its primary included"),
    O("limits", "alerts", integer(), 50, "alerts one cache may have"),
    O("limits", "alert_configs", integer(), 20, "alert delivery configs one cache may have"),
    O("limits", "multiget_keys", integer(0), 0, "keys one ASCII get/gets/gat/gats may name; 0: no count "
      "(the 256 KiB line bounds it)", shown="`0` (no count)"),
    O("analytics", "introspection", BOOLEAN, True, "per-key taps on the hot path (recent logs, popular items, ...)"),
    O("analytics", "sample_period", NUMBER, 60.0, "seconds between samples of each cache's counters"),
    O("analytics", "latency_period", NUMBER, 20.0, "seconds between latency probes of each server"),
    O("analytics", "drain_interval", NUMBER, 0.1, "seconds between introspection batches"),
    O("analytics", "time_slice", integer(), 60, "seconds per introspection time slice"),
    O("analytics", "slices", integer(), 10, "time slices kept (popular items, key stats)"),
    O("analytics", "batch_limit", integer(), 500, "events per batch counted exactly; more are sampled"),
    O("alerts", "interval", _DURATION_2, "60s", "how often alert rules are evaluated"),
    O("alerts", "window", _DURATION_2, "5m", "the span hit_rate and per-minute rates are judged over"),
    O("alerts", "allow_http_loopback", BOOLEAN, False, "accept http:// Slack/webhook URLs on 127.0.0.1 and ::1 (tests)"),
    O("alerts.smtp", "host", STRING, "localhost", "the SMTP relay of alert emails"),
    O("alerts.smtp", "port", PORT, 25, "its port"),
    O("alerts.smtp", "starttls", choice(("required", "optional", "off")), "required",
      "the relay's certificate is verified against host"),
    O("alerts.smtp", "username", TEXT, "", "login at the relay, if any"),
    O("alerts.smtp", "password", TEXT, "", "its password (needs a username)"),
    O("alerts.smtp", "sender", EMAIL, "alerts@localhost", "the From of alert emails"),
    O("heroku", "id", STRING, "memcachier", "the add-on manifest id: the Basic auth user of Heroku's calls"),
    O("heroku", "password", TEXT, "", "the manifest's api.password; empty turns /heroku/resources off"),
    O("heroku", "sso_salt", TEXT, "", "the manifest's api.sso_salt; turns on Heroku SSO (POST /sso/login)"),
    O("heroku", "api_url", HEROKU_URL, "https://api.heroku.com", "Heroku's Platform API (config var updates)"),
    O("heroku", "id_url", HEROKU_URL, "https://id.heroku.com", "Heroku's identity service (oauth grant exchange)"),
    O("heroku", "client_secret", TEXT, "", "the add-on's oauth client secret"),
    O("provisioning", "token", TEXT, "", "bearer token of the provisioning API; empty turns it off"),
    O("metrics", "access", choice(METRICS_ACCESS), "off", '/metrics: "off" (404), "open", or "token"'),
    O("metrics", "token", TEXT, "", 'the bearer token /metrics wants with access = "token"'),
)
#: The twistd flags, for L{memcachier.node.tap.Options}.
FLAGS: Tuple[Flag, ...] = tuple(o.flag for o in OPTIONS if o.flag)


def _options(section: str) -> List[Option]:
    return [o for o in OPTIONS if o.section == section]


def _className(section: str) -> str:
    return "".join(p.title() for p in section.split(".")) + "Settings"


def _sectionClass(section: str) -> type:
    fields = {o.name: attr.ib(default=o.value) for o in _options(section)}
    if section == "alerts":
        fields["smtp"] = attr.ib(factory=SECTION_CLASSES["alerts.smtp"])
    if section == "store":
        fields["settings"] = attr.ib(factory=dict)
    return attr.make_class(_className(section), fields, frozen=True, slots=True)


#: Section name to its frozen attrs class, whose attributes are its keys.
SECTION_CLASSES: Dict[str, type] = {}
for _s in ["alerts.smtp"] + [s for s in SECTIONS if "." not in s]:
    SECTION_CLASSES[_s] = _sectionClass(_s)


def _section(name: str) -> Any:
    return attr.ib(factory=SECTION_CLASSES[name])


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Settings:
    """
    Everything a node needs to start, already checked: one attribute per
    section of L{OPTIONS}, named as the TOML table and holding its keys
    (C{settings.web.public_url}; C{settings.alerts.smtp.host};
    C{settings.store.settings}: the rest of C{[store]}, for the plugin),
    plus the dynamic tables.

    @ivar plans: plan slug to L{Plan}.
    @ivar clusters: cluster name to the C{host:port} servers clients use.
    @ivar cluster_kinds: cluster name to its kind (see L{clusterKind}).
    """

    memcache: Any = _section("memcache")
    web: Any = _section("web")
    database: Any = _section("database")
    node: Any = _section("node")
    cluster: Any = _section("cluster")
    caches: Any = _section("caches")
    store: Any = _section("store")
    limits: Any = _section("limits")
    analytics: Any = _section("analytics")
    alerts: Any = _section("alerts")
    heroku: Any = _section("heroku")
    provisioning: Any = _section("provisioning")
    metrics: Any = _section("metrics")
    plans: Dict[str, Plan] = attr.Factory(lambda: {p.slug: p for p in DEFAULT_PLANS})
    clusters: Dict[str, Tuple[str, ...]] = attr.Factory(lambda: {"default": ("127.0.0.1:11211",)})
    cluster_kinds: Dict[str, str] = attr.Factory(lambda: {"default": DEFAULT_CLUSTER_KIND})

    def evolve(self, **changes: Any) -> "Settings":
        """
        A copy with C{changes}: a L{dict} for a section changes its keys
        (C{alerts={"smtp": {"host": "relay"}}}), anything else replaces.
        """
        def merge(obj: Any, new: Mapping[str, Any]) -> Any:
            return attr.evolve(obj, **{k: merge(getattr(obj, k), v) if isinstance(v, dict)
                                       and attr.has(type(getattr(obj, k))) else v for k, v in new.items()})
        return merge(self, changes)  # type: ignore[no-any-return]

    @property
    def clustered(self) -> bool:
        """
        Whether this node is one of several sharing the control plane
        (C{[cluster] secret} set): it registers, heartbeats and forwards.
        """
        return bool(self.cluster.secret)

    @property
    def node_cluster(self) -> str:
        """
        The cluster this node serves: the first whose servers list its
        name, else the default cluster.
        """
        name = next((n for n, servers in self.clusters.items() if self.node.name in servers), None)
        return name or self.caches.default_cluster  # type: ignore[no-any-return]

    def clusterKind(self, name: str) -> str:
        """
        The kind of cluster C{name}: C{"production"} unless configured
        otherwise (also for a cluster no longer configured).
        """
        return self.cluster_kinds.get(name, DEFAULT_CLUSTER_KIND)


def publicUrlOf(description: str) -> str:
    """
    The URL a web listener is reached at, for C{[web] public_url}'s
    default: C{http://127.0.0.1:8080} for C{tcp:8080:interface=127.0.0.1},
    C{https://...} for C{ssl:}.
    """
    args, _ = _endpointArgs(description)
    found = hostPort(description)
    scheme = "https" if args and args[0] == "ssl" else "http"
    return f"{scheme}://{found}" if found else "http://127.0.0.1:8080"


def _settingsFrom(data: Dict[str, Any], overrides: Mapping[str, Any]) -> Tuple[Optional[Settings], List[str]]:
    """
    Read every section of a parsed TOML document, collecting the errors.
    """
    errors: List[str] = []

    def table(parent: Dict[str, Any], key: str, name: str) -> Dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            errors.append(f"{name}: expected a table, got {_show(value)}")
            return {}
        return value

    def unknown(tableData: Dict[str, Any], prefix: str, known: Sequence[str]) -> None:
        errors.extend(f"{prefix}{k}: unknown key" for k in tableData if k not in known)

    def read(o: Option, data: Dict[str, Any], prefix: str, default: Any = None) -> Any:
        fallback = o.value if default is None else default
        key, flagged = prefix + o.name, o.flag and overrides.get(o.flag.name.replace("-", "_"))
        if flagged:
            key, value = "--" + o.flag.name, flagged  # type: ignore[union-attr]
        elif o.name in data:
            value = data[o.name]
        else:
            return o.derive(got) if o.derive else fallback
        before = len(errors)
        value = o.kind.parse(value, lambda m, s="": errors.append(f"{key}{s}: {m}"))
        return value if len(errors) == before else fallback

    unknown(data, "", [s for s in SECTIONS if "." not in s] + ["clusters", "plans"])
    got: Dict[str, Any] = {}
    tables: Dict[str, Dict[str, Any]] = {}
    for section in (s for s in SECTIONS if "NAME" not in s and "SLUG" not in s):
        parent, _, last = section.rpartition(".")
        tables[section] = spec = table(tables[parent] if parent else data, last, section)
        if section != "store":
            unknown(spec, section + ".", [o.name for o in _options(section)] + (["smtp"] * (section == "alerts")))
        for o in _options(section):
            got[f"{section}.{o.name}"] = read(o, spec, section + ".")

    clustersTable = table(data, "clusters", "clusters")
    clusters, kinds = {}, {}
    for name, spec in clustersTable.items():
        if not isinstance(spec, dict):
            errors.append(f"clusters.{name}: expected a table, got {_show(spec)}")
            continue
        unknown(spec, f"clusters.{name}.", [o.name for o in _options("clusters.NAME")])
        servers = HOST_PORTS.parse(spec.get("servers"), lambda m, s="": errors.append(
            f"clusters.{name}.servers{s}: {m}"))
        clusters[name], kinds[name] = servers, read(_options("clusters.NAME")[1], spec, f"clusters.{name}.")
    if not clustersTable:
        clusters, kinds = {"default": (got["node.name"],)}, {"default": DEFAULT_CLUSTER_KIND}
    if clustersTable and got["caches.default_cluster"] not in clustersTable:
        errors.append(f"caches.default_cluster: no cluster {_show(got['caches.default_cluster'])}; "
                      f"configured: {', '.join(sorted(clustersTable))}")

    plans = _readPlans(table(data, "plans", "plans"), read, unknown, errors)
    if got["caches.default_plan"] not in plans:
        errors.append(f"caches.default_plan: no plan {_show(got['caches.default_plan'])}; known: {', '.join(plans)}")
    if got["alerts.smtp.password"] and not got["alerts.smtp.username"]:
        errors.append("alerts.smtp.password: set without a username")
    if got["metrics.access"] == "token" and not got["metrics.token"]:
        errors.append('metrics.token: required when metrics.access is "token"')
    if errors:
        return None, errors

    def build(section: str, **extra: Any) -> Any:
        values = {o.name: got[f"{section}.{o.name}"] for o in _options(section)}
        return SECTION_CLASSES[section](**values, **extra)

    sections = {s: build(s) for s in SECTION_CLASSES if s not in ("alerts", "alerts.smtp", "store")}
    return Settings(
        **sections, alerts=build("alerts", smtp=build("alerts.smtp")),
        store=build("store", settings={k: v for k, v in tables["store"].items() if k != "plugin"}),
        plans=plans, clusters=clusters, cluster_kinds=kinds,
    ), []


def _readPlans(table: Dict[str, Any], read: Callable[..., Any], unknown: Callable[..., None],
               errors: List[str]) -> Dict[str, Plan]:
    """
    C{[plans.SLUG]}: each table changes a built-in plan or adds one.
    """
    plans = {p.slug: p for p in DEFAULT_PLANS}
    for slug, spec in table.items():
        prefix = f"plans.{slug}."
        if not isinstance(spec, dict):
            errors.append(f"plans.{slug}: expected a table, got {_show(spec)}")
            continue
        unknown(spec, prefix, [o.name for o in _options("plans.SLUG")])
        base = plans.get(slug)
        if base is None:
            errors.extend(f"{prefix}{k}: required for the new plan {slug!r}"
                          for k in ("memory", "connections") if k not in spec)
            base = Plan(slug, 1, 1)
        before = len(errors)
        values = [read(o, spec, prefix, getattr(base, o.name)) for o in _options("plans.SLUG")]
        if len(errors) == before and values[2] > values[0]:
            errors.append(f"{prefix}item_size: larger than the plan's memory ({values[0]} bytes)")
        plans[slug] = Plan(slug, *values)
    return plans


def parseSettings(text: str, overrides: Optional[Mapping[str, Any]] = None, source: str = "<config>") -> Settings:
    """
    Build L{Settings} from TOML text.

    @param overrides: see L{loadSettings}.
    @param source: what to call the document in a syntax error message.
    @raise ConfigError: listing every mistake.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: invalid TOML: {e}"])
    settings, errors = _settingsFrom(data, overrides or {})
    if settings is None:
        raise ConfigError(errors)
    return settings


def loadSettings(path: Optional[str], overrides: Optional[Mapping[str, Any]] = None) -> Settings:
    """
    Load the configuration file at C{path} (or only the embedded defaults
    if C{path} is L{None}) and apply command-line overrides.

    @param overrides: flag name (C{-} as C{_}) to its value, for the
        options of L{FLAGS}: C{listen} (a list of endpoint descriptions
        replacing C{memcache.listen}), C{database} and C{web_listen};
        L{None} or empty values are ignored.
    @raise ConfigError: listing every mistake in the file and overrides.
    """
    if path is None:
        return parseSettings("", overrides)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration file: {e.strerror}"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8: {e}"])
    return parseSettings(text, overrides, source=path)


def _toml(value: Any) -> str:
    return json.dumps(value)


def exampleFile() -> str:
    """
    The text of C{memcachier.example.toml}: every section and key of
    L{OPTIONS} with its help, set to its default, or commented out with an
    example where the default is empty or derived.
    """
    out = ["# memcachier configuration (TOML), generated from memcachier/node/settings.py",
           "# (exampleFile).  Every key is optional; the values shown are the embedded",
           "# defaults; lines commented out show examples.  Unknown keys are errors, and",
           "# every error is reported at once when twistd starts.",
           "#", "#   twistd -n memcachier --config=memcachier.toml"]
    for section, help in SECTIONS.items():
        dynamic = "NAME" in section or "SLUG" in section
        name = section.replace("NAME", "default").replace("SLUG", "dev")
        out += ["", ("# " if dynamic else "") + f"[{name}]"]
        out += textwrap.wrap(help, 76, initial_indent="# ", subsequent_indent="# ")
        for o in _options(section):
            out += textwrap.wrap(o.help, 76, initial_indent="# ", subsequent_indent="# ")
            shown = o.default if o.example is None else o.example
            out.append(("# " if dynamic or o.example is not None else "") + f"{o.name} = {_toml(shown)}")
    return "\n".join(out) + "\n"


DOCS_BEGIN = "<!-- settings-table:begin (generated by memcachier.node.settings.docsTable) -->"
DOCS_END = "<!-- settings-table:end -->"


def docsTable() -> str:
    """
    The option table of C{docs/operations.md}, between L{DOCS_BEGIN} and
    L{DOCS_END}.
    """
    rows = [DOCS_BEGIN, "| Key | Kind | Default | Meaning |", "| --- | --- | --- | --- |"]
    for o in OPTIONS:
        default = o.shown or f"`{_toml(o.default)}`"
        flag = f" (`--{o.flag.name}` overrides)" if o.flag else ""
        rows.append(f"| `{o.section}.{o.name}` | {o.kind.describe} | {default} | {o.help}{flag} |")
    return "\n".join(rows + [DOCS_END])
