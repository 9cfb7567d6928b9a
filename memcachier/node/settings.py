# -*- test-case-name: tests.unit.test_config -*-
"""The operator's configuration: a TOML file (optional) and command-line overrides, checked and turned into one
frozen L{Settings} grouped by section (C{settings.memcache.auth_timeout}, C{settings.alerts.smtp.host}, ...).

Each option is stated once, in L{OPTIONS}; the reader, the twistd flags, C{memcachier.example.toml} and the table of
C{docs/operations.md} come from it.  Every mistake is reported at once, as with Buildbot's C{ConfigErrors}.  Tests
start from the defaults: C{Settings().evolve(memcache={"auth_timeout": 1.0})}."""

import json
import math
import os
import re
import textwrap
import tomllib
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import attr
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.internet.ssl import TLSVersion
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins

from memcachier.cluster.hello import PEER_CAPABILITIES
from memcachier.control.model import DEFAULT_PLANS, Plan
from memcachier.node.endpoints import endpointArgs, hostPort
from memcachier.node.tls import tlsOptions


class ConfigError(Exception):
    """The configuration is wrong; C{errors} has one message per mistake, each naming its key (C{memcache.auth_timeout:
    expected a positive number, got "x"})."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: List[str] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        many = f"{len(self.errors)} configuration errors:\n" + "\n".join("  " + e for e in self.errors)
        return "configuration error: " + self.errors[0] if len(self.errors) == 1 else many


#: C{tls_min_version} spellings, lowest first; nothing below TLS 1.2.
TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
DEFAULT_CLUSTER_KIND = "production"
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_show: Callable[[Any], str] = partial(json.dumps, default=repr)  # a value as the operator wrote it


def _isInt(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parseSize(value: Any) -> Optional[int]:
    """A byte size: an integer, or a string such as C{"25MiB"}, C{"1g"} or C{"512KB"} (binary units, as memcached's
    C{-m} means); L{None} if not one."""
    match = _SIZE.match(value) if isinstance(value, str) else None
    return int(value) if _isInt(value) else int(match[1]) * _UNITS[match[2].lower()] if match else None


def parseDuration(value: Any) -> Optional[float]:
    """Positive seconds from a number or a string such as C{"60s"}, C{"5m"}, C{"1h"} or C{"500ms"}; L{None} if C{value}
    is not a duration."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    seconds = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else \
        float(match[1]) * _SECONDS[match[2]] if match else math.nan
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _endpointError(description: Any) -> Optional[str]:
    """What is wrong with an endpoint description, found the way twistd will parse it but without listening: an unknown
    type (installed parser plugins count), options its parser does not take, a bad port, and for C{ssl:} key,
    certificate and CA files that do not exist or load."""

    if not isinstance(description, str) or not description:
        return f"expected an endpoint description, got {_show(description)}"
    args, kw = endpointArgs(description)
    kind, port, shown = (args or [""])[0], kw.get("port", args[1] if len(args) > 1 else ""), _show(description)
    types = ["tcp", "ssl", "unix"] + sorted(p.prefix for p in getPlugins(IStreamServerEndpointStringParser))
    if kind not in types:
        return f"unknown endpoint type {_show(kind)} in {shown}; valid types: {', '.join(types)}"
    if kind in ("tcp", "ssl", "tcp6") and not (port.isdigit() and int(port) <= 65535):
        return f"expected a port number in {shown}"
    if not kw.get("backlog", "0").isdigit():
        return f"expected a number for backlog in {shown}"
    if kind != "ssl":
        try:
            serverFromString(MemoryReactor(), description)  # builds the endpoint object only
        except Exception as e:
            return f"invalid {kind}: endpoint {shown}: {e}"
        return None
    if "sslmethod" in kw:
        return "sslmethod is not supported: TLS versions are set by memcache.tls_min_version"
    key = kw.get("privateKey", "server.pem")
    for name, path in [("privateKey", key), ("certKey", kw.get("certKey", key))] + [
            (n, kw.get(n)) for n in ("extraCertChain", "dhParameters", "clientCAs")]:
        try:
            open(path, "rb").close() if path else None
        except OSError as e:
            return f"{name} file {_show(path)} cannot be read: {e.strerror}"
    try:
        tlsOptions(description, TLSVersion.TLSv1_2)
    except Exception as e:
        return f"TLS settings of {shown} do not load: {e or type(e).__name__}"
    return None


Fail = Callable[..., Any]  # records one mistake: fail(message, keySuffix="")


@attr.s(frozen=True, auto_attribs=True)
class Kind:
    """What an option takes: C{check(value, fail)} reports each mistake (after C{first}'s), C{convert} converts."""

    describe: str
    check: Callable[[Any, Fail], Any]
    convert: Callable[[Any], Any] = lambda v: v
    first: Optional["Kind"] = None

    def parse(self, value: Any, fail: Optional[Fail] = None) -> Any:
        """C{value} checked and converted, unchanged after a mistake; without C{fail} only converted (a default)."""
        failed: Dict[str, bool] = {}
        for kind in (self.first, self) if fail else ():
            if kind is not None and not failed:
                kind.check(value, lambda m, s="": (failed.setdefault(m, True), fail(m, s)))  # type: ignore[misc]
        return value if failed else self.convert(value)


def _kind(describe: str, good: Callable[[Any], Any], message: str,
          convert: Callable[[Any], Any] = lambda v: v, first: Optional[Kind] = None) -> Kind:
    return Kind(describe, lambda v, fail: None if good(v) else fail(f"{message}, got {_show(v)}"), convert, first)


def integer(minimum: int = 1) -> Kind:
    """An integer of at least C{minimum}."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return _kind(what.split(" ", 1)[1], lambda v: _isInt(v) and v >= minimum, f"expected {what}")


def duration(examples: str = '10, "500ms", "10s", "5m" or "1h"') -> Kind:
    """A duration (L{parseDuration}); C{examples} for its error message."""
    return _kind("duration", parseDuration, f"expected a duration such as {examples}", parseDuration)


def durationOrOff() -> Kind:
    """A duration, or 0 (C{0}, C{"0s"}) for off."""
    def parse(value: Any) -> Optional[float]:
        return 0.0 if value in (0, "0", "0s") and not isinstance(value, bool) else parseDuration(value)
    return _kind("duration or 0", lambda v: parse(v) is not None,
                 'expected a duration such as "30s", or 0 for off', parse)


def choice(values: Sequence[str], mapping: Optional[Mapping[str, Any]] = None,
           key: Callable[[Any], Any] = lambda v: v if isinstance(v, str) else None) -> Kind:
    """One of C{values}: C{key} of the value, converted by C{mapping} if given."""
    return _kind(" or ".join(map(_show, values)), lambda v: key(v) in values,
                 f"expected one of {', '.join(map(_show, values))}", lambda v: mapping[key(v)] if mapping else v)


def _listOf(what: str, item: Kind, one: bool = False) -> Kind:
    def check(value: Any, fail: Fail) -> None:
        value = [value] if one and isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not value:
            return fail(f"expected a non-empty list of {what}, got {_show(value)}")
        for i, v in enumerate(value):
            item.parse(v, lambda m, s="", i=i: fail(m, f"[{i}]{s}"))
    return Kind(f"list of {what}", check, lambda v: tuple([v] if isinstance(v, str) else v or ()))


def _isHostPort(value: Any) -> bool:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    return bool(sep and host and port.isdigit() and 0 < int(port) <= 65535)


NUMBER = _kind("positive number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v) and v > 0, "expected a positive number", float)
SIZE = _kind("size", lambda v: (parseSize(v) or 0) > 0, 'expected a size in bytes such as 26214400 or "25MiB"',
             parseSize)
BOOLEAN = _kind("boolean", lambda v: isinstance(v, bool), "expected true or false")
STRING = _kind("string", lambda v: isinstance(v, str) and v, "expected a non-empty string")
TEXT = _kind("string, may be empty", lambda v: isinstance(v, str), "expected a string")
PORT = _kind("port", lambda v: _isInt(v) and 0 < v <= 65535, "expected a port number")
HOST_PORT = _kind('"host:port"', _isHostPort, 'expected "host:port"')
_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")
HTTP_URL = _kind("http(s) URL", lambda v: isinstance(v, str) and _URL.match(v), "expected an http:// or https:// URL",
                 lambda v: v.rstrip("/"))
HEROKU_URL = _kind("http(s) URL", _URL.match, "expected an http(s) URL", lambda v: v.rstrip("/"), STRING)
SQL_URL = _kind("SQLAlchemy URL", lambda v: re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", v),
                "expected an SQLAlchemy URL such as sqlite:///memcachier.sqlite", first=STRING)
EMAIL = _kind("email address", lambda v: re.match(r"^[^@\s<>]+@[^@\s<>]+$", v), "expected an email address",
              first=STRING)
SCRYPT_HASH = _kind("scrypt hash", lambda v: v.startswith("scrypt$"),
                    "expected a hash printed by memcachier-admin operator hash-password", first=STRING)
TLS_VERSION = choice(tuple(TLS_VERSIONS), TLS_VERSIONS, lambda v: str(v) if isinstance(v, (str, float)) else None)
_ENDPOINT = Kind("endpoint", lambda v, fail: (lambda e: e and fail(e))(_endpointError(v)))
ENDPOINT = attr.evolve(_ENDPOINT, first=STRING)
ENDPOINTS = _listOf("endpoints", _ENDPOINT, one=True)
HOST_PORTS = _listOf('"host:port"', HOST_PORT)
WORKERS = _kind('positive integer or "auto"', lambda v: v == "auto" or (_isInt(v) and v >= 1),
                'expected a positive integer or "auto" (the machine\'s cores)',
                lambda v: (os.cpu_count() or 1) if v == "auto" else v)
_TCP_PORT = re.compile(r"^(tcp:(?:port=)?)(\d+)(?=:|$)")


def workerName(name: str, worker: int) -> str:
    """Worker C{worker}'s C{host:port} (C{[node] workers}): C{node.name}'s port plus C{worker}; worker 0 is the
    node itself."""
    host, _, port = name.rpartition(":")
    return f"{host}:{int(port) + worker}"


def workerListen(listen: Sequence[str], worker: int) -> Optional[str]:
    """Worker C{worker}'s one memcache listener: the first C{tcp:PORT} listener's description with C{worker} added
    to its port; L{None} if there is no such listener."""
    for description in listen:
        match = _TCP_PORT.match(description)
        if match:
            return _TCP_PORT.sub(lambda m: m[1] + str(int(m[2]) + worker), description)
    return None


#: The twistd flag C{--name} that overrides an option.
Flag = NamedTuple("Flag", [("name", str), ("short", Optional[str]), ("help", str), ("repeatable", bool)])


@attr.s(frozen=True, auto_attribs=True)
class Option:
    """One key: C{default} as written in TOML; C{example}, shown commented out in the example file instead (for an empty
    or derived default); C{shown}, the docs' text for such a default; C{derive}, computing it from the values read
    before (C{"memcache.listen"}: ...).  A section ending in C{NAME} or C{SLUG} means every table of a family."""

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
        """The default converted: what L{Settings} holds when the key is absent."""
        return self.kind.parse(self.default)


O = Option
#: The sections, in the order of the example file; C{NAME} and C{SLUG} stand for every table of a family.
SECTIONS = ("memcache", "web", "database", "node", "cluster", "clusters.NAME", "caches", "store", "plans.SLUG",
            "limits", "analytics", "alerts", "alerts.smtp", "heroku", "provisioning", "metrics")
_ALERT_DURATION, _AUTO = duration('"60s" or "5m"'), "`0` (auto)"
OPTIONS: Tuple[Option, ...] = (  # every option, in the order of the example file
    O("memcache", "listen", ENDPOINTS, ["tcp:11211:interface=127.0.0.1"], "memcache listeners: Twisted endpoint "
      "strings (tcp:PORT[:interface=ADDR][:backlog=N], unix:PATH, ssl:PORT:privateKey=key.pem:certKey=cert.pem"
      "[:clientCAs=ca.pem]; kill -HUP reloads ssl: files)", Flag("listen", None, "Add a memcache listener endpoint,"
      " e.g. tcp:11211:interface=127.0.0.1 or ssl:11219:privateKey=key.pem:certKey=cert.pem; repeatable (replaces"
      " [memcache] listen).", True)),
    O("memcache", "auth_timeout", NUMBER, 5.0, "seconds before an unauthenticated connection is closed"),
    O("memcache", "tls_min_version", TLS_VERSION, "1.2", "lowest TLS version on ssl: listeners"),
    O("memcache", "backlog", integer(), 1024, "listen backlog of memcache listeners whose description sets none"),
    O("memcache", "max_connections", integer(0), 0, "connections over every memcache listener; 0: ulimit -n minus "
      "the web ceiling minus 64 (see Limits)", shown=_AUTO),
    O("memcache", "auth_failure_rate", NUMBER, 5.0, "failed logins (memcache and the dashboard's sign-in) a second per "
      "source address (IPv6: /64) and per username; past it logins are refused unchecked"),
    O("memcache", "auth_failure_burst", integer(), 10, "failed logins allowed at once before the rate applies"),
    O("memcache", "login_batch", integer(0), 16, "a storm of new connections: how many may be read before they "
      "sent their login, how many logins are handled per reactor turn, and (fast paths on) how many connections "
      "a listener accepts per turn; the rest wait their turn; 0: no bound"),
    O("memcache", "auth_remember_for", duration(), "24h", "how long an address that logged in as a username is not "
      "refused by that username's failure budget (its own address budget still applies)"),
    O("memcache", "auth_remember_entries", integer(), 100000, "(username, address) logins remembered for that"),
    O("web", "listen", ENDPOINT, "tcp:8080:interface=127.0.0.1", "HTTP API, dashboard, provisioning, metrics",
      Flag("web-listen", None, "Endpoint of the HTTP API and dashboard; overrides [web] listen.", False)),
    O("web", "public_url", HTTP_URL, "http://127.0.0.1:8080", "the address users reach the site at: dashboard links, "
      "alert messages' links, the Heroku manifest's (https) URLs", example="https://mc.example.com",
      shown='from `web.listen`, e.g. `"http://127.0.0.1:8080"`', derive=lambda got: publicUrlOf(got["web.listen"])),
    O("web", "backlog", integer(), 1024, "listen backlog of the web listener"),
    O("web", "max_connections", integer(0), 0, "the web site's own connection ceiling (503 past it); 0: min(1024, "
      "a quarter of ulimit -n)", shown=_AUTO),
    O("web", "header_timeout", duration(), "10s", "a request's headers must arrive within this (else 408)"),
    O("web", "body_timeout", duration(), "30s", "a request's body must arrive within this of its headers"),
    O("web", "idle_timeout", duration(), "60s", "a keep-alive connection idle this long is closed"),
    O("web", "operator_password_hash", SCRYPT_HASH, "", "scrypt hash of the operator's password for /admin/, from "
      "memcachier-admin operator hash-password; none: no operator view", example="scrypt$16384$8$1$..."),
    O("database", "url", SQL_URL, "sqlite:///memcachier.sqlite", "the control plane's SQLAlchemy URL (relative "
      "SQLite paths from the working directory)", Flag("database", "d", "Control-plane SQLAlchemy URL; overrides "
      "[database] url.", False)),
    O("database", "poll_interval", NUMBER, 1.0, "seconds between checks for changes made elsewhere"),
    O("node", "name", HOST_PORT, "127.0.0.1:11211", "the host:port this node advertises in MEMCACHIER_SERVERS",
      example="cache1.example.com:11211", shown="the first tcp/ssl listener's `interface:port`",
      derive=lambda got: next(filter(_isHostPort, map(hostPort, got["memcache.listen"])), "127.0.0.1:11211")),
    O("node", "workers", WORKERS, 1, 'node processes on this machine, one local cluster; "auto": one per core. '
      "Worker i > 0 listens on the first tcp listener's port + i as node.name's port + i, listed after node.name in "
      "its cluster's servers; needs PostgreSQL and cluster.secret (Workers)"),
    O("node", "shutdown_timeout", duration(), "10s", "on SIGTERM, how long requests under way may take"),
    O("node", "allocator", choice(("jemalloc", "system")), "jemalloc", '"jemalloc": started without it, the node runs '
      'itself again with Debian\'s libjemalloc2 preloaded; "system": the allocator it was started with (Memory allocator)',
      Flag("allocator", None, "jemalloc or system; overrides [node] allocator.", False)),
    O("node", "allocator_warning", BOOLEAN, True, "warn at start when not running on jemalloc (Memory allocator)"),
    O("node", "malloc_trim", durationOrOff(), "1s", "on glibc's allocator, how often freed heap pages go back to the "
      "kernel (malloc_trim, a pause of the reactor); 0: never (Memory allocator)"),
    O("node", "state_dir", TEXT, "", "directory of the warm-restart snapshot (created if missing); empty: no warm "
      "restart", example="/var/lib/memcachier"),
    O("node", "warm_restart", BOOLEAN, True, "with state_dir: save the caches' items on a graceful stop, restore them "
      "at start (Warm restart)"),
    O("cluster", "secret", TEXT, "", "password peer nodes authenticate with, the same on all", example="long random"),
    O("cluster", "heartbeat_timeout", duration(), "5s", "a node silent this long is out"),
    O("cluster", "request_timeout", duration(), "2s", "deadline of a request forwarded to its owner node"),
    O("cluster", "warmup", durationOrOff(), "30s",
      "after a join or a drain, a node asks a key's previous owner for what it misses this long; 0 turns it off"),
    O("cluster", "peer_capabilities", _listOf("peer capabilities", choice(PEER_CAPABILITIES)), list(PEER_CAPABILITIES),
      "what this node's peer connections advertise; fewer only to try mixed versions"),
    O("clusters.NAME", "servers", HOST_PORTS, None, "servers of each cluster, in MEMCACHIER_SERVERS order",
      example=["cache1.example.com:11211", "cache2.example.com:11211"], shown="`{default = [node.name]}`"),
    O("clusters.NAME", "kind", choice(("production", "development")), DEFAULT_CLUSTER_KIND,
      "caches switch clusters only within a kind"),
    O("caches", "default_plan", STRING, "dev", "plan of caches created without one"),
    O("caches", "default_cluster", STRING, "default", "cluster of caches created without one"),
    O("caches", "dev_inactivity_days", integer(), 30, "idle days before a development cache is disabled"),
    O("store", "plugin", STRING, "auto", 'store plugin: "segment", "memory" or an installed one; "auto" is segment '
      'where its C module was built, else memory; other [store] keys go to the plugin'),
    O("plans.SLUG", "memory", SIZE, None, 'memory ("64KiB", "25MiB", "1g"; required for a new plan)', example="50MiB",
      shown="MemCachier's plans"),
    O("plans.SLUG", "connections", integer(), None, "connections per cache (required for a new plan)", example=10,
      shown="MemCachier's plans"),
    O("plans.SLUG", "item_size", SIZE, "1MiB", "largest key + value"),
    O("plans.SLUG", "development", BOOLEAN, False, "a free development plan"),
    O("plans.SLUG", "requests_per_second", integer(0), None, "requests a second a cache may make before it is held "
      "back (never refused); 0: no ceiling", example=2000, shown="`[limits] budget_requests` x MiB of memory"),
    O("plans.SLUG", "bytes_per_second", integer(0), None, "bytes a second a cache may send, and receive, before it is "
      "held back; 0: no ceiling", example=10485760, shown="`[limits] budget_bytes` x MiB of memory"),
    O("limits", "watched_prefixes", integer(), 50, "prefixes one cache may watch (introspection)"),
    O("limits", "credentials", integer(), 20, "credentials one cache may have, its primary included"),
    O("limits", "alerts", integer(), 50, "alerts one cache may have"),
    O("limits", "alert_configs", integer(), 20, "alert delivery configs one cache may have"),
    O("limits", "scheduler", BOOLEAN, True, "fair share: when several caches are busy, one over its share of the "
      "node (weighted by plan memory) is read from fewer connections for a round"),
    O("limits", "scheduler_round", NUMBER, 0.02, "seconds per round of the fair share and the budgets"),
    O("limits", "scheduler_reading", integer(), 8, "connections of a cache over its share read at once"),
    O("limits", "budget_requests", integer(0), 2000, "requests a second a cache may make per MiB of its plan's "
      "memory, at least 10000 (held back past it by a second's worth, never refused); 0: no budget"),
    O("limits", "budget_bytes", integer(0), 2097152, "bytes a second a cache may send, and receive, per MiB of its "
      "plan's memory, at least 64 MiB (held back past it by a second's worth); 0: no budget"),
    O("limits", "multiget_keys", integer(0), 0, "keys one ASCII get/gets/gat/gats may name; 0: no count (the 256 KiB "
      "line bounds it)"),
    O("analytics", "introspection", BOOLEAN, True, "per-key taps on the hot path (recent logs, popular items, ...)"),
    O("analytics", "sample_period", NUMBER, 60.0, "seconds between samples of each cache's counters"),
    O("analytics", "latency_period", NUMBER, 20.0, "seconds between latency probes of each server"),
    O("analytics", "drain_interval", NUMBER, 0.02, "seconds between introspection batches (short, so that "
      "each batch is short: other requests wait while one is counted)"),
    O("analytics", "time_slice", integer(), 60, "seconds per introspection time slice"),
    O("analytics", "slices", integer(), 10, "time slices kept (popular items, key stats)"),
    O("analytics", "batch_limit", integer(), 100, "events per batch counted exactly; more are sampled"),
    O("alerts", "interval", _ALERT_DURATION, "60s", "how often alert rules are evaluated"),
    O("alerts", "window", _ALERT_DURATION, "5m", "the span hit_rate and per-minute rates are judged over"),
    O("alerts", "allow_http_loopback", BOOLEAN, False, "accept http:// Slack/webhook URLs on 127.0.0.1, ::1 (tests)"),
    O("alerts.smtp", "host", STRING, "localhost", "the SMTP relay of alert emails"),
    O("alerts.smtp", "port", PORT, 25, "its port"),
    O("alerts.smtp", "starttls", choice(("required", "optional", "off")), "required", "certificates are verified"),
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
    O("metrics", "access", choice(("off", "open", "token")), "off", '/metrics: "off" (404), "open", or "token"'),
    O("metrics", "token", TEXT, "", 'the bearer token /metrics wants with access = "token"'),
)
FLAGS: Tuple[Flag, ...] = tuple(o.flag for o in OPTIONS if o.flag)  # for memcachier.node.tap.Options


def _options(section: str) -> List[Option]:
    return [o for o in OPTIONS if o.section == section]


#: Each fixed section to its frozen attrs class, whose attributes are its keys.
SECTION_CLASSES: Dict[str, type] = {}
for _name in ["alerts.smtp"] + [s for s in SECTIONS if "." not in s]:
    SECTION_CLASSES[_name] = attr.make_class(
        "".join(p.title() for p in _name.split(".")) + "Settings",
        {o.name: attr.ib(default=o.value) for o in _options(_name)}
        | ({"smtp": attr.ib(factory=SECTION_CLASSES["alerts.smtp"])} if _name == "alerts" else {})
        | ({"settings": attr.ib(factory=dict)} if _name == "store" else {}), frozen=True, slots=True)
_FIELDS = {s: attr.ib(factory=c) for s, c in SECTION_CLASSES.items() if "." not in s} | {
    "plans": attr.ib(factory=lambda: {p.slug: p for p in DEFAULT_PLANS}),
    "clusters": attr.ib(factory=lambda: {"default": ("127.0.0.1:11211",)}),
    "cluster_kinds": attr.ib(factory=lambda: {"default": DEFAULT_CLUSTER_KIND})}
_Fields: Any = attr.make_class("_Fields", _FIELDS, frozen=True, slots=True)  # Settings' attributes


class Settings(_Fields):
    """Everything a node needs to start, already checked: an attribute per fixed section (L{SECTION_CLASSES}),
    named as its TOML table, whose attributes are its keys (C{settings.web.public_url}, C{settings.alerts.smtp.host};
    C{settings.store.settings} is the rest of C{[store]}, for the plugin); C{plans} (slug to L{Plan}), C{clusters}
    (name to the C{host:port} servers clients use) and C{cluster_kinds} (name to kind)."""

    __slots__ = ()

    def evolve(self, **changes: Any) -> "Settings":
        """A copy with C{changes}: a L{dict} for a section changes only the keys it names (C{alerts={"smtp": {"host":
        "relay"}}}); other values replace."""
        def merge(obj: Any, new: Mapping[str, Any]) -> Any:
            return attr.evolve(obj, **{k: merge(getattr(obj, k), v) if isinstance(v, dict)
                                       and attr.has(type(getattr(obj, k))) else v for k, v in new.items()})
        return merge(self, changes)

    @property
    def clustered(self) -> bool:
        """Whether this node shares the control plane with others (C{[cluster] secret} set) and forwards to them."""
        return bool(self.cluster.secret)

    @property
    def node_cluster(self) -> str:
        """The cluster this node serves: the first whose servers list its name, else the default cluster."""
        name = next((n for n, servers in self.clusters.items() if self.node.name in servers), None)
        return name or self.caches.default_cluster

    def clusterKind(self, name: str) -> str:
        """The kind of cluster C{name}: C{"production"} unless configured otherwise (or no longer configured)."""
        return self.cluster_kinds.get(name, DEFAULT_CLUSTER_KIND)


def publicUrlOf(description: str) -> str:
    """The URL a web listener is reached at, C{[web] public_url}'s default: C{http://127.0.0.1:8080} for
    C{tcp:8080:interface=127.0.0.1}, C{https://...} for C{ssl:}."""
    found, scheme = hostPort(description), "https" if description.startswith("ssl:") else "http"
    return f"{scheme}://{found}" if found else "http://127.0.0.1:8080"


def _settingsFrom(data: Dict[str, Any], overrides: Mapping[str, Any]) -> Settings:
    """Read every section of a parsed TOML document; raise L{ConfigError} with every mistake."""
    errors: List[str] = []
    got: Dict[str, Any] = {}

    def table(parent: Dict[str, Any], key: str, name: str, known: Optional[List[str]] = None) -> Dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            errors.append(f"{name}: expected a table, got {_show(value)}")
            return {}
        errors.extend(f"{name}.{k}".lstrip(".") + ": unknown key" for k in value if k not in (known or value))
        return value

    def read(o: Option, spec: Dict[str, Any], prefix: str, default: Any = None) -> Any:
        key, flagged = prefix + o.name, o.flag and overrides.get(o.flag.name.replace("-", "_"))
        fallback = o.value if default is None else default
        if o.name not in spec and not flagged:
            return o.derive(got) if o.derive else fallback
        before, key = len(errors), "--" + o.flag.name if flagged else key  # type: ignore[union-attr]
        value = o.kind.parse(flagged or spec[o.name], lambda m, s="": errors.append(f"{key}{s}: {m}"))
        return value if len(errors) == before else fallback

    def family(name: str) -> Any:
        for key, spec in table(data, name.split(".")[0], name.split(".")[0]).items():
            prefix = name.replace("NAME", key).replace("SLUG", key)
            if table({key: spec}, key, prefix, [o.name for o in _options(name)]) is spec:
                yield key, prefix + ".", spec

    tables = {"": table({"": data}, "", "", [s for s in SECTIONS if "." not in s] + ["clusters", "plans"])}
    for section in (s for s in SECTIONS if not s.endswith(("NAME", "SLUG"))):
        parent, _, last = section.rpartition(".")
        known = [o.name for o in _options(section)] + ["smtp"] * (section == "alerts")
        tables[section] = table(tables[parent], last, section, None if section == "store" else known)
        got.update((f"{section}.{o.name}", read(o, tables[section], section + ".")) for o in _options(section))
    clusters, kinds = {"default": (got["node.name"],)}, {"default": DEFAULT_CLUSTER_KIND}
    for i, (name, prefix, spec) in enumerate(family("clusters.NAME")):
        clusters, kinds = (clusters, kinds) if i else ({}, {})
        clusters[name] = HOST_PORTS.parse(spec.get("servers"), lambda m, s="", p=prefix: errors.append(
            f"{p}servers{s}: {m}"))
        kinds[name] = read(_options("clusters.NAME")[1], spec, prefix)
    workers = got["node.workers"]
    if workers > 1:
        errors.extend(_workersErrors(got, workers))
        clusters = _withWorkers(clusters, got["node.name"], workers)
    if data.get("clusters") and got["caches.default_cluster"] not in clusters:
        errors.append(f"caches.default_cluster: no cluster {_show(got['caches.default_cluster'])}; "
                      f"configured: {', '.join(sorted(clusters))}")
    plans = {p.slug: p for p in DEFAULT_PLANS}
    for slug, prefix, spec in family("plans.SLUG"):
        errors.extend(f"{prefix}{k}: required for the new plan {slug!r}" for k in ("memory", "connections")
                      if slug not in plans and k not in spec)
        base, before = plans.get(slug, Plan(slug, 1, 1)), len(errors)
        values = [read(o, spec, prefix, getattr(base, o.name)) for o in _options("plans.SLUG")]
        if len(errors) == before and values[2] > values[0]:
            errors.append(f"{prefix}item_size: larger than the plan's memory ({values[0]} bytes)")
        plans[slug] = Plan(slug, *values)
    if got["caches.default_plan"] not in plans:
        errors.append(f"caches.default_plan: no plan {_show(got['caches.default_plan'])}; known: {', '.join(plans)}")
    if got["alerts.smtp.password"] and not got["alerts.smtp.username"]:
        errors.append("alerts.smtp.password: set without a username")
    if got["metrics.access"] == "token" and not got["metrics.token"]:
        errors.append('metrics.token: required when metrics.access is "token"')

    def build(section: str, **extra: Any) -> Any:
        return SECTION_CLASSES[section](**{o.name: got[f"{section}.{o.name}"] for o in _options(section)}, **extra)

    sections = {s: build(s) for s in SECTION_CLASSES if s not in ("alerts", "alerts.smtp", "store")}
    store = build("store", settings={k: v for k, v in tables["store"].items() if k != "plugin"})
    if errors:
        raise ConfigError(errors)
    return Settings(**sections, alerts=build("alerts", smtp=build("alerts.smtp")), store=store, plans=plans,
                    clusters=clusters, cluster_kinds=kinds)


def _workersErrors(got: Dict[str, Any], workers: int) -> List[str]:
    """What stops C{workers} processes from being one local cluster."""
    errors = []
    if got["database.url"].startswith("sqlite"):
        errors.append(f"node.workers: {workers} workers share the control plane as a cluster, which needs "
                      f"PostgreSQL; database.url is SQLite ({got['database.url']})")
    if not got["cluster.secret"]:
        errors.append(f"node.workers: {workers} workers are a cluster: set cluster.secret")
    last = _TCP_PORT.match(workerListen(got["memcache.listen"], workers - 1) or "")
    if last is None:
        errors.append("node.workers: workers listen on the first tcp:PORT listener's port + i; "
                      "memcache.listen has none")
    elif max(int(last[2]), int(workerName(got["node.name"], workers - 1).rpartition(":")[2])) > 65535:
        errors.append(f"node.workers: {workers} workers need ports past 65535")
    return errors


def _withWorkers(clusters: Dict[str, Any], name: str, workers: int) -> Dict[str, Any]:
    """C{clusters} with the workers' names in the node's cluster (the first listing C{name}), each after the one
    before, unless listed already: the cache's servers then list every worker."""
    for cluster, servers in clusters.items():
        if name in servers:
            listed = list(servers)
            for i in range(1, workers):
                worker = workerName(name, i)
                if worker not in listed:
                    listed.insert(listed.index(workerName(name, i - 1)) + 1, worker)
            return {**clusters, cluster: tuple(listed)}
    return clusters


def parseSettings(text: str, overrides: Optional[Mapping[str, Any]] = None, source: str = "<config>") -> Settings:
    """L{Settings} from TOML text; C{overrides} as for L{loadSettings}; C{source} names the text in a syntax error.

    @raise ConfigError: listing every mistake."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: invalid TOML: {e}"])
    return _settingsFrom(data, overrides or {})


def loadSettings(path: Optional[str], overrides: Optional[Mapping[str, Any]] = None) -> Settings:
    """The file at C{path} (the defaults only if L{None}) with the command line's C{overrides}: L{FLAGS} by name, C{-}
    as C{_} (C{listen}: a list replacing C{memcache.listen}, C{database}, C{web_listen}); empty values are ignored.

    @raise ConfigError: listing every mistake in the file and overrides."""
    if path is None:
        return parseSettings("", overrides)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration file: {e.strerror}"])
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8: {e}"])
    return parseSettings(text, overrides, source=path)


def exampleFile() -> str:
    """C{memcachier.example.toml}: every key with its help, set to its default or commented out with an example."""
    out = ["# memcachier configuration (TOML), made by memcachier.node.settings.exampleFile: twistd -n memcachier",
           "# --config=FILE.  Every key is optional; values shown are the defaults, commented-out ones examples."]
    for section in SECTIONS:
        dynamic = section.endswith(("NAME", "SLUG"))
        out += ["", "# " * dynamic + f"[{section.replace('NAME', 'default').replace('SLUG', 'dev')}]"]
        for o in _options(section):
            out += textwrap.wrap(o.help, 76, initial_indent="# ", subsequent_indent="# ")
            commented = dynamic or o.example is not None
            out.append("# " * commented + f"{o.name} = {json.dumps(o.default if o.example is None else o.example)}")
    return "\n".join(out) + "\n"


DOCS_BEGIN, DOCS_END = "<!-- settings-table (memcachier.node.settings.docsTable) -->", "<!-- settings-table:end -->"


def docsTable() -> str:
    """The option table of C{docs/operations.md}, from L{DOCS_BEGIN} to L{DOCS_END}."""
    rows = [DOCS_BEGIN, "| Key | Kind | Default | Meaning |", "| --- | --- | --- | --- |"] + [
        f"| `{o.section}.{o.name}` | {o.kind.describe} | {o.shown or '`' + json.dumps(o.default) + '`'} | {o.help}"
        + (f" (`--{o.flag.name}` overrides it)" if o.flag else "") + " |" for o in OPTIONS]
    return "\n".join(rows + [DOCS_END])
