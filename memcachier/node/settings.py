# -*- test-case-name: tests.unit.test_config -*-
"""
The operator's configuration: a TOML file (optional) plus command-line
overrides, turned into one frozen L{Settings} value.

Every mistake in the file is collected and reported at once, as Buildbot
does with its C{ConfigErrors}: an operator fixing a config should not have
to restart once per typo.  Unknown keys are mistakes too.

The layout (see C{memcachier.example.toml} and C{docs/operations.md})::

    [memcache]
    listen = ["tcp:11211:interface=127.0.0.1"]
    auth_timeout = 5.0
    tls_min_version = "1.2"
    backlog = 1024
    max_connections = 0         # 0: what the descriptor limit leaves
    auth_failure_rate = 5.0     # failed logins a second, per address and per username
    auth_failure_burst = 10

    [web]
    listen = "tcp:8080:interface=127.0.0.1"
    public_url = "http://127.0.0.1:8080"   # default: derived from listen
    backlog = 1024
    max_connections = 0         # 0: min(1024, a quarter of the descriptor limit)
    header_timeout = "10s"
    body_timeout = "30s"
    idle_timeout = "60s"
    operator_password_hash = "scrypt$..."  # memcachier-admin operator hash-password

    [database]
    url = "sqlite:///memcachier.sqlite"
    poll_interval = 1.0

    [node]
    name = "127.0.0.1:11211"
    shutdown_timeout = "10s"    # SIGTERM: how long in-flight requests may take
    allocator_warning = true    # warn at start when jemalloc is not preloaded

    [clusters.default]
    servers = ["127.0.0.1:11211"]
    kind = "production"         # or "development"

    [caches]
    default_plan = "dev"
    default_cluster = "default"
    dev_inactivity_days = 30

    [store]
    plugin = "memory"
    # any other key is handed to the plugin

    [analytics]
    introspection = true     # per-key taps on the hot path (recent logs, popular items, ...)
    sample_period = 60.0     # seconds between samples of each cache's counters
    latency_period = 20.0    # seconds between latency probes of each server
    drain_interval = 0.1     # seconds between introspection batches
    time_slice = 60          # seconds per introspection time slice
    slices = 10              # time slices kept (popular items, key stats)
    batch_limit = 500        # events per batch counted exactly; more are sampled

    [limits]                      # what an API user or client can grow, per cache
    watched_prefixes = 50
    credentials = 20              # the primary credential included
    alerts = 50
    alert_configs = 20            # alert delivery configs
    multiget_keys = 0             # keys per ASCII get/gets/gat/gats; 0: only the line length bounds it

    [alerts]
    interval = "60s"              # how often rules are evaluated
    window = "5m"                 # the span hit_rate and rates are judged over
    allow_http_loopback = false   # accept http:// Slack/webhook URLs on 127.0.0.1/::1

    [alerts.smtp]
    host = "localhost"
    port = 25
    starttls = "required"         # "required" | "optional" | "off"
    username = ""                 # optional login
    password = ""
    sender = "alerts@localhost"

    [heroku]
    id = "memcachier"          # the manifest id (Basic auth user of Heroku's calls)
    password = ""              # the manifest api.password; empty = the Heroku routes are off
    sso_salt = ""
    api_url = "https://api.heroku.com"
    id_url = "https://id.heroku.com"
    client_secret = ""         # for the oauth grant exchange

    [provisioning]
    token = ""                 # bearer token of our own provisioning API; empty = off

    [metrics]
    access = "off"             # "off" | "open" | "token"
    token = ""

    [plans.dev]
    memory = "25MiB"
    connections = 10
    item_size = "1MiB"
    development = true
"""

import json
import math
import re
import socket
import tomllib

import attr
from twisted.internet.ssl import TLSVersion

from memcachier.control.model import DEFAULT_PLANS, Plan


class ConfigError(Exception):
    """
    The configuration is wrong; C{errors} says every way in which it is.

    @ivar errors: one message per mistake, each naming the key at fault
        (C{memcache.auth_timeout: expected a positive number, got "x"}).
    @type errors: L{list} of L{str}
    """

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__(self.errors)

    def __str__(self):
        if len(self.errors) == 1:
            return "configuration error: " + self.errors[0]
        return f"{len(self.errors)} configuration errors:\n" + "\n".join(
            "  " + e for e in self.errors
        )


DEFAULT_LISTEN = ("tcp:11211:interface=127.0.0.1",)
DEFAULT_WEB_LISTEN = "tcp:8080:interface=127.0.0.1"
class _DatabaseURL(str):
    url = property(str.__str__)
    poll_interval = 1.0


DEFAULT_DATABASE = _DatabaseURL("sqlite:///memcachier.sqlite")

#: What C{[clusters.NAME] kind} may say; a cluster without one is the
#: default kind.
CLUSTER_KINDS = ("production", "development")
DEFAULT_CLUSTER_KIND = "production"

#: C{tls_min_version} spellings, lowest first; nothing below TLS 1.2.
TLS_VERSIONS = {
    "1.2": TLSVersion.TLSv1_2,
    "1.3": TLSVersion.TLSv1_3,
}


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Settings:
    """
    Everything a node needs to start, already checked.

    @ivar listen: memcache listener endpoint descriptions (C{tcp:...},
        C{ssl:...}, C{unix:...}).
    @ivar web_listen: the endpoint of the HTTP API and dashboard.
    @ivar database: the control plane's SQLAlchemy URL.
    @ivar node_name: the C{host:port} this node advertises to clients.
    @ivar clusters: cluster name to the C{host:port} servers clients use,
        in C{MEMCACHIER_SERVERS} order.
    @ivar cluster_kinds: cluster name to its kind, C{"production"} (the
        default) or C{"development"}; a cache switches clusters only
        within its cluster's kind (see L{Settings.clusterKind}).
    @ivar default_cluster: the cluster new caches are placed in.
    @ivar store_plugin: the name of the L{memcachier.interfaces.IStorePlugin}.
    @ivar store_settings: the rest of the C{[store]} table, for the plugin.
    @ivar plans: plan slug to L{Plan}.
    @ivar default_plan: the plan new caches get.
    @ivar auth_timeout: seconds an unauthenticated connection may live.
    @ivar dev_inactivity_days: days after which an idle development cache
        is disabled.
    @ivar poll_interval: seconds between polls of the control plane for
        changes made by other processes.
    @ivar tls_min_version: the lowest TLS version C{ssl:} listeners accept,
        a L{TLSVersion} constant, never below TLS 1.2.
    @ivar analytics_introspection: whether sessions tap every command for
        introspection (C{[analytics] introspection}).
    @ivar analytics_sample_period: seconds between counter samples.
    @ivar analytics_latency_period: seconds between latency probes.
    @ivar analytics_drain_interval: seconds between introspection batches.
    @ivar analytics_time_slice: seconds per introspection time slice.
    @ivar analytics_slices: introspection time slices kept.
    @ivar analytics_batch_limit: events per batch counted exactly.
    @ivar web_public_url: the address users reach the web site at
        (C{[web] public_url}), for dashboard links, links in alert
        messages and the Heroku manifest's URLs, without a trailing slash.
    @ivar alerts_interval: seconds between alert evaluations.
    @ivar alerts_window: seconds hit_rate and rates are judged over.
    @ivar alerts_allow_http_loopback: accept C{http://} Slack and webhook
        URLs on 127.0.0.1 and ::1.
    @ivar smtp_host: C{[alerts.smtp] host}, and so on for the port,
        C{starttls} (C{"required"}, C{"optional"} or C{"off"}), username,
        password and sender.
    @ivar memcache_backlog: listen backlog of memcache listeners that set
        none in their description.
    @ivar memcache_max_connections: connections over every memcache
        listener, C{0} for what the descriptor limit leaves
        (L{memcachier.tx.ceiling.connectionCeilings}).
    @ivar auth_failure_rate: failed logins a second each address and each
        username may sustain (L{memcachier.protocols.throttle}).
    @ivar auth_failure_burst: failed logins allowed at once.
    @ivar web_backlog: listen backlog of the web listener.
    @ivar web_max_connections: the web site's ceiling, C{0} for the default.
    @ivar web_header_timeout: seconds a request's headers may take.
    @ivar web_body_timeout: seconds a request's body may take.
    @ivar web_idle_timeout: seconds a connection may idle between requests.
    @ivar shutdown_timeout: seconds in-flight requests get after SIGTERM.
    @ivar allocator_warning: whether to warn at start when jemalloc is not
        loaded (L{memcachier.node.allocator}).
    @ivar operator_password_hash: the hash of the operator's password for
        C{/admin/} (see L{memcachier.web.sso.hashPassword}); empty turns
        the operator view off.
    @ivar heroku_id: the add-on manifest id, the user of Heroku's Basic auth.
    @ivar heroku_password: the manifest's C{api.password}; empty turns the
        Heroku partner routes off.
    @ivar heroku_sso_salt: the manifest's C{api.sso_salt}.
    @ivar heroku_api_url: Heroku's Platform API (config var updates).
    @ivar heroku_id_url: Heroku's identity service (oauth grant exchange).
    @ivar heroku_client_secret: the add-on's oauth client secret.
    @ivar provisioning_token: the bearer token of the provisioning API;
        empty turns it off.
    @ivar metrics_access: C{"off"}, C{"open"} or C{"token"} for C{/metrics}.
    @ivar metrics_token: the bearer token C{/metrics} wants with C{"token"}.
    @ivar limit_watched_prefixes: watched prefixes per cache.
    @ivar limit_credentials: credentials per cache, the primary included.
    @ivar limit_alerts: alerts per cache.
    @ivar limit_alert_configs: alert delivery configs per cache.
    @ivar limit_multiget_keys: keys one ASCII retrieval command may name,
        C{0} for no count (the line length, 256 KiB, still bounds it).
    @ivar cluster_secret: C{[cluster] secret}, the password peer nodes
        authenticate with; empty for a single node.
    @ivar heartbeat_timeout: C{[cluster] heartbeat_timeout}, seconds of
        silence after which a node is out.
    @ivar peer_timeout: C{[cluster] request_timeout}, seconds a forwarded
        request may wait for its owner.
    """

    listen: tuple = DEFAULT_LISTEN
    web_listen: str = DEFAULT_WEB_LISTEN
    database: str = DEFAULT_DATABASE
    node_name: str = "127.0.0.1:11211"
    clusters: dict = attr.Factory(lambda: {"default": ("127.0.0.1:11211",)})
    cluster_kinds: dict = attr.Factory(lambda: {"default": DEFAULT_CLUSTER_KIND})
    default_cluster: str = "default"
    store_plugin: str = "memory"
    store_settings: dict = attr.Factory(dict)
    plans: dict = attr.Factory(lambda: {p.slug: p for p in DEFAULT_PLANS})
    default_plan: str = "dev"
    auth_timeout: float = 5.0
    dev_inactivity_days: int = 30
    poll_interval: float = 1.0
    tls_min_version: object = TLSVersion.TLSv1_2
    analytics_introspection: bool = True
    analytics_sample_period: float = 60.0
    analytics_latency_period: float = 20.0
    analytics_drain_interval: float = 0.1
    analytics_time_slice: int = 60
    analytics_slices: int = 10
    analytics_batch_limit: int = 500
    web_public_url: str = "http://127.0.0.1:8080"
    alerts_interval: float = 60.0
    alerts_window: float = 300.0
    alerts_allow_http_loopback: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_starttls: str = "required"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_sender: str = "alerts@localhost"
    memcache_backlog: int = 1024
    memcache_max_connections: int = 0
    auth_failure_rate: float = 5.0
    auth_failure_burst: int = 10
    web_backlog: int = 1024
    web_max_connections: int = 0
    web_header_timeout: float = 10.0
    web_body_timeout: float = 30.0
    web_idle_timeout: float = 60.0
    shutdown_timeout: float = 10.0
    allocator_warning: bool = True
    operator_password_hash: str = ""
    # -- provisioning (issue 10)
    heroku_id: str = "memcachier"
    heroku_password: str = ""
    heroku_sso_salt: str = ""
    heroku_api_url: str = "https://api.heroku.com"
    heroku_id_url: str = "https://id.heroku.com"
    heroku_client_secret: str = ""
    provisioning_token: str = ""
    metrics_access: str = "off"
    metrics_token: str = ""
    limit_watched_prefixes: int = 50
    limit_credentials: int = 20
    limit_alerts: int = 50
    limit_alert_configs: int = 20
    limit_multiget_keys: int = 0
    cluster_secret: str = ""
    heartbeat_timeout: float = 5.0
    peer_timeout: float = 2.0

    @property
    def clustered(self):
        """
        Whether this node is one of several sharing the control plane
        (C{[cluster] secret} set): it registers, heartbeats and forwards.
        """
        return bool(self.cluster_secret)

    @property
    def node_cluster(self):
        """
        The cluster this node serves: the first whose servers list its
        name, else the default cluster.
        """
        for name, servers in self.clusters.items():
            if self.node_name in servers:
                return name
        return self.default_cluster

    def clusterKind(self, name):
        """
        The kind of cluster C{name}: C{"production"} unless configured
        otherwise (also for a cluster no longer configured).

        @rtype: L{str}
        """
        return self.cluster_kinds.get(name, DEFAULT_CLUSTER_KIND)


def _show(value):
    """
    Render a config value the way the operator wrote it, for messages.
    """
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parseSize(value):
    """
    Parse a byte size: an integer, or a string such as C{"25MiB"},
    C{"1g"} or C{"512KB"} (units are binary: 1 KB = 1024 bytes, as
    memcached's C{-m} means).

    @return: the size in bytes, or L{None} if C{value} is not a size.
    @rtype: L{int} or L{None}
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    return None


def serverEndpointTypes():
    """
    The endpoint types a listener description may start with: Twisted's
    built-in C{tcp}, C{ssl} and C{unix}, and every installed parser
    plugin's prefix (C{tcp6}, C{systemd}, ...).

    @rtype: L{list} of L{str}
    """
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    return ["tcp", "ssl", "unix"] + sorted(
        p.prefix for p in getPlugins(IStreamServerEndpointStringParser)
    )


def _endpointArgs(description):
    """
    Split an endpoint description at unescaped colons, the way
    L{twisted.internet.endpoints.serverFromString} does.

    @return: a 2-tuple of positional L{str}s (the first one is the type) and
        a L{dict} of the C{key=value} ones.
    """
    args, kw = [], {}
    current, escaped = [], False
    parts = []
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    for part in parts:
        key, eq, value = part.partition("=")
        if eq:
            kw[key] = value
        else:
            args.append(part)
    return args, kw


def _hostPort(description):
    """
    The C{host:port} a C{tcp:}/C{ssl:} listener is reachable at, or
    L{None} for other endpoint types.
    """
    args, kw = _endpointArgs(description)
    if len(args) < 2 or args[0] not in ("tcp", "ssl"):
        return None
    port = kw.get("port", args[1])
    host = kw.get("interface", "")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


class _Checker:
    """
    Reads one TOML document, collecting every error instead of stopping at
    the first.
    """

    def __init__(self):
        self.errors = []

    def error(self, key, message):
        self.errors.append(f"{key}: {message}")

    def table(self, data, key):
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.error(key, f"expected a table, got {_show(value)}")
            return {}
        return value

    def unknown(self, table, prefix, known):
        for key in table:
            if key not in known:
                self.error(f"{prefix}{key}", "unknown key")

    def string(self, table, prefix, key, default):
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            self.error(prefix + key, f"expected a non-empty string, got {_show(value)}")
            return default
        return value

    def optionalString(self, table, prefix, key):
        """
        A non-empty string if the key is there, C{""} if it is not.
        """
        if key not in table:
            return ""
        return self.string(table, prefix, key, "")

    def number(self, table, prefix, key, default):
        value = table.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            self.error(prefix + key, f"expected a positive number, got {_show(value)}")
            return default
        return float(value)

    def duration(self, table, prefix, key, default):
        """
        A positive duration in seconds: a number, or a string such as
        C{"500ms"}, C{"10s"}, C{"5m"} or C{"1h"}.
        """
        value = table.get(key, default)
        seconds = parseDuration(value)
        if seconds is None or seconds <= 0:
            self.error(
                prefix + key,
                f'expected a duration such as 10, "500ms", "10s", "5m" or "1h", got {_show(value)}',
            )
            return default
        return seconds

    def integer(self, table, prefix, key, default, minimum=1):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            self.error(prefix + key, f"expected {what}, got {_show(value)}")
            return default
        return value

    def size(self, table, prefix, key, default):
        value = table.get(key, default)
        size = parseSize(value)
        if size is None or size <= 0:
            self.error(
                prefix + key,
                f'expected a size in bytes such as 26214400 or "25MiB", got {_show(value)}',
            )
            return default
        return size

    def boolean(self, table, prefix, key, default):
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.error(prefix + key, f"expected true or false, got {_show(value)}")
            return default
        return value

    def hostPorts(self, value, key):
        if not isinstance(value, list) or not value:
            self.error(key, f'expected a non-empty list of "host:port", got {_show(value)}')
            return None
        result = []
        for i, server in enumerate(value):
            if not isinstance(server, str) or not _isHostPort(server):
                self.error(f"{key}[{i}]", f'expected "host:port", got {_show(server)}')
            else:
                result.append(server)
        return tuple(result)

    def endpoint(self, description, key):
        """
        Check an endpoint description the way twistd will use it, without
        listening: its type is known, its options are what the type's
        parser accepts, its port is a number, and for C{ssl:} the key,
        certificates and CA files exist and parse (L{memcachier.node.tls}).
        """
        if not isinstance(description, str) or not description:
            self.error(key, f"expected an endpoint description, got {_show(description)}")
            return False
        args, kw = _endpointArgs(description)
        kind = args[0] if args else ""
        types = serverEndpointTypes()
        if kind not in types:
            self.error(
                key,
                f"unknown endpoint type {_show(kind)} in {_show(description)}; "
                f"valid types: {', '.join(types)}",
            )
            return False
        if kind in ("tcp", "ssl", "tcp6"):
            port = kw.get("port", args[1] if len(args) > 1 else None)
            if port is None or not port.isdigit() or int(port) > 65535:
                self.error(key, f"expected a port number in {_show(description)}")
                return False
        if "backlog" in kw and not kw["backlog"].isdigit():
            self.error(key, f"expected a number for backlog in {_show(description)}")
            return False
        if kind == "ssl":
            if "sslmethod" in kw:
                self.error(
                    key,
                    "sslmethod is not supported: TLS versions are set by "
                    "memcache.tls_min_version",
                )
                return False
            return self._tls(description, key, kw)
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.testing import MemoryReactor

        try:
            # builds the endpoint object only; nothing listens
            serverFromString(MemoryReactor(), description)
        except Exception as e:
            self.error(key, f"invalid {kind}: endpoint {_show(description)}: {e}")
            return False
        return True

    def _tls(self, description, key, kw):
        from memcachier.node.tls import tlsOptions

        privateKey = kw.get("privateKey", "server.pem")
        for name, path in (
            ("privateKey", privateKey),
            ("certKey", kw.get("certKey", privateKey)),
            ("extraCertChain", kw.get("extraCertChain")),
            ("dhParameters", kw.get("dhParameters")),
            ("clientCAs", kw.get("clientCAs")),
        ):
            if path is None:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                self.error(key, f"{name} file {_show(path)} cannot be read: {e.strerror}")
                return False
        try:
            tlsOptions(description, TLSVersion.TLSv1_2)
        except Exception as e:
            self.error(key, f"TLS settings of {_show(description)} do not load: {e or type(e).__name__}")
            return False
        return True


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parseDuration(value):
    """
    Parse a duration: a number of seconds, or a string such as C{"60s"},
    C{"5m"}, C{"1h"} or C{"500ms"}.

    @return: seconds (positive), or L{None} if C{value} is not a duration.
    @rtype: L{float} or L{None}
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            return None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def publicUrlOf(description):
    """
    The URL a web listener is reached at, for C{[web] public_url}'s
    default: C{http://127.0.0.1:8080} for C{tcp:8080:interface=127.0.0.1},
    C{https://...} for C{ssl:}.
    """
    args, _ = _endpointArgs(description)
    scheme = "https" if args and args[0] == "ssl" else "http"
    hostPort = _hostPort(description)
    if hostPort is None:
        return "http://127.0.0.1:8080"
    return f"{scheme}://{hostPort}"


_SMTP_STARTTLS = ("required", "optional", "off")


def _checkAlerts(check, data):
    """
    C{[alerts]} and C{[alerts.smtp]}.

    @return: a L{dict} of L{Settings} fields.
    """
    alerts = check.table(data, "alerts")
    check.unknown(alerts, "alerts.", ("interval", "window", "allow_http_loopback", "smtp"))
    out = {}
    for key, default in (("interval", 60.0), ("window", 300.0)):
        value = alerts.get(key, default)
        seconds = parseDuration(value)
        if seconds is None:
            check.error(f"alerts.{key}", f'expected a duration such as "60s" or "5m", got {_show(value)}')
            seconds = default
        out[f"alerts_{key}"] = seconds
    out["alerts_allow_http_loopback"] = check.boolean(alerts, "alerts.", "allow_http_loopback", False)
    smtp = check.table(alerts, "smtp")
    prefix = "alerts.smtp."
    check.unknown(smtp, prefix, ("host", "port", "starttls", "username", "password", "sender"))
    out["smtp_host"] = check.string(smtp, prefix, "host", "localhost")
    port = smtp.get("port", 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        check.error(prefix + "port", f"expected a port number, got {_show(port)}")
        port = 25
    out["smtp_port"] = port
    starttls = smtp.get("starttls", "required")
    if starttls not in _SMTP_STARTTLS:
        check.error(
            prefix + "starttls",
            f"expected one of {', '.join(map(_show, _SMTP_STARTTLS))}, got {_show(starttls)}",
        )
        starttls = "required"
    out["smtp_starttls"] = starttls
    for key in ("username", "password"):
        value = smtp.get(key, "")
        if not isinstance(value, str):
            check.error(prefix + key, f"expected a string, got {_show(value)}")
            value = ""
        out[f"smtp_{key}"] = value
    if out["smtp_password"] and not out["smtp_username"]:
        check.error(prefix + "password", "set without a username")
    sender = check.string(smtp, prefix, "sender", "alerts@localhost")
    if not re.match(r"^[^@\s<>]+@[^@\s<>]+$", sender):
        check.error(prefix + "sender", f"expected an email address, got {_show(sender)}")
    out["smtp_sender"] = sender
    return out


def _text(check, table, prefix, key, default):
    """
    A string setting that may be empty (an empty secret turns its feature
    off).
    """
    value = table.get(key, default)
    if not isinstance(value, str):
        check.error(prefix + key, f"expected a string, got {_show(value)}")
        return default
    return value


def _isHTTPURL(value):
    return bool(re.match(r"^https?://[^/\s]+(/\S*)?$", value))


def _isHostPort(value):
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) <= 65535)


_TOP = (
    "memcache", "web", "database", "node", "cluster", "clusters", "caches", "store", "plans",
    "analytics", "alerts", "heroku", "provisioning", "metrics", "limits",
)
_HEROKU_KEYS = ("id", "password", "sso_salt", "api_url", "id_url", "client_secret")
METRICS_ACCESS = ("off", "open", "token")
#: C{[limits]} keys, their defaults and the smallest value each accepts
_LIMITS = {
    "watched_prefixes": (50, 1),
    "credentials": (20, 1),
    "alerts": (50, 1),
    "alert_configs": (20, 1),
    "multiget_keys": (0, 0),
}
_ANALYTICS_KEYS = (
    "introspection", "sample_period", "latency_period", "drain_interval", "time_slice",
    "slices", "batch_limit",
)
_PLAN_KEYS = ("memory", "connections", "item_size", "development")
_MEMCACHE_KEYS = (
    "listen", "auth_timeout", "tls_min_version", "backlog", "max_connections",
    "auth_failure_rate", "auth_failure_burst",
)
_WEB_KEYS = (
    "listen", "public_url", "backlog", "max_connections", "header_timeout", "body_timeout",
    "idle_timeout", "operator_password_hash",
)


def _checkPlans(check, data, defaults):
    plans = dict(defaults)
    table = check.table(data, "plans")
    for slug, spec in table.items():
        prefix = f"plans.{slug}."
        if not isinstance(spec, dict):
            check.error(f"plans.{slug}", f"expected a table, got {_show(spec)}")
            continue
        check.unknown(spec, prefix, _PLAN_KEYS)
        base = plans.get(slug)
        if base is None:
            for required in ("memory", "connections"):
                if required not in spec:
                    check.error(prefix + required, f"required for the new plan {slug!r}")
            base = Plan(slug, 0, 0)
        before = len(check.errors)
        memory = check.size(spec, prefix, "memory", base.memory or 1)
        connections = check.integer(spec, prefix, "connections", base.connections or 1)
        itemSize = check.size(spec, prefix, "item_size", base.item_size)
        development = check.boolean(spec, prefix, "development", base.development)
        if len(check.errors) == before and itemSize > memory:
            check.error(prefix + "item_size", f"larger than the plan's memory ({memory} bytes)")
        plans[slug] = Plan(slug, memory, connections, itemSize, development)
    return plans


def _settingsFrom(data, overrides):
    """
    Build L{Settings} from a parsed TOML document and overrides.

    @return: a 2-tuple of L{Settings} (or L{None}) and the list of errors.
    """
    check = _Checker()
    check.unknown(data, "", _TOP)

    memcache = check.table(data, "memcache")
    check.unknown(memcache, "memcache.", _MEMCACHE_KEYS)
    listen = overrides.get("listen") or memcache.get("listen", list(DEFAULT_LISTEN))
    listenKey = "--listen" if overrides.get("listen") else "memcache.listen"
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, (list, tuple)) or not listen:
        check.error(listenKey, f"expected a non-empty list of endpoints, got {_show(listen)}")
        listen = list(DEFAULT_LISTEN)
    for i, description in enumerate(listen):
        check.endpoint(description, f"{listenKey}[{i}]")
    listen = tuple(d for d in listen if isinstance(d, str))
    authTimeout = check.number(memcache, "memcache.", "auth_timeout", 5.0)
    tlsName = memcache.get("tls_min_version", "1.2")
    tlsMin = TLS_VERSIONS.get(str(tlsName) if isinstance(tlsName, (str, float)) else None)
    if tlsMin is None:
        check.error(
            "memcache.tls_min_version",
            f'expected one of {", ".join(map(_show, TLS_VERSIONS))}, got {_show(tlsName)}',
        )
        tlsMin = TLSVersion.TLSv1_2

    memcacheBacklog = check.integer(memcache, "memcache.", "backlog", 1024)
    memcacheMax = check.integer(memcache, "memcache.", "max_connections", 0, minimum=0)
    authFailureRate = check.number(memcache, "memcache.", "auth_failure_rate", 5.0)
    authFailureBurst = check.integer(memcache, "memcache.", "auth_failure_burst", 10)

    web = check.table(data, "web")
    check.unknown(web, "web.", _WEB_KEYS)
    webBacklog = check.integer(web, "web.", "backlog", 1024)
    webMax = check.integer(web, "web.", "max_connections", 0, minimum=0)
    headerTimeout = check.duration(web, "web.", "header_timeout", 10.0)
    bodyTimeout = check.duration(web, "web.", "body_timeout", 30.0)
    idleTimeout = check.duration(web, "web.", "idle_timeout", 60.0)
    if overrides.get("web_listen"):
        webListen = overrides["web_listen"]
        check.endpoint(webListen, "--web-listen")
    else:
        webListen = check.string(web, "web.", "listen", DEFAULT_WEB_LISTEN)
        check.endpoint(webListen, "web.listen")
    operatorHash = check.optionalString(web, "web.", "operator_password_hash")
    if operatorHash and not operatorHash.startswith("scrypt$"):
        check.error(
            "web.operator_password_hash",
            "expected a hash printed by memcachier-admin operator hash-password",
        )


    publicUrl = web.get("public_url", publicUrlOf(webListen))
    if not isinstance(publicUrl, str) or not re.match(r"^https?://[^/\s]+(/\S*)?$", publicUrl):
        check.error("web.public_url", f"expected an http:// or https:// URL, got {_show(publicUrl)}")
        publicUrl = publicUrlOf(webListen)

    database = check.table(data, "database")
    check.unknown(database, "database.", ("url", "poll_interval"))
    if overrides.get("database"):
        url = overrides["database"]
    else:
        url = check.string(database, "database.", "url", DEFAULT_DATABASE)
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        key = "--database" if overrides.get("database") else "database.url"
        check.error(key, f"expected an SQLAlchemy URL such as sqlite:///memcachier.sqlite, got {_show(url)}")
    pollInterval = check.number(database, "database.", "poll_interval", 1.0)

    node = check.table(data, "node")
    check.unknown(node, "node.", ("name", "shutdown_timeout", "allocator_warning"))
    shutdownTimeout = check.duration(node, "node.", "shutdown_timeout", 10.0)
    allocatorWarning = check.boolean(node, "node.", "allocator_warning", True)
    derived = next(
        (h for h in map(_hostPort, listen) if h and _isHostPort(h)), "127.0.0.1:11211"
    )
    nodeName = node.get("name", derived)
    if not isinstance(nodeName, str) or not _isHostPort(nodeName):
        check.error("node.name", f'expected "host:port", got {_show(nodeName)}')
        nodeName = derived

    clusterTable = check.table(data, "cluster")
    check.unknown(clusterTable, "cluster.", ("secret", "heartbeat_timeout", "request_timeout"))
    clusterSecret = clusterTable.get("secret", "")
    if not isinstance(clusterSecret, str):
        check.error("cluster.secret", f"expected a string, got {_show(clusterSecret)}")
        clusterSecret = ""
    heartbeatTimeout = check.duration(clusterTable, "cluster.", "heartbeat_timeout", 5.0)
    peerTimeout = check.duration(clusterTable, "cluster.", "request_timeout", 2.0)

    clustersTable = check.table(data, "clusters")
    clusters = {}
    clusterKinds = {}
    for name, spec in clustersTable.items():
        if not isinstance(spec, dict):
            check.error(f"clusters.{name}", f"expected a table, got {_show(spec)}")
            continue
        check.unknown(spec, f"clusters.{name}.", ("servers", "kind"))
        servers = check.hostPorts(spec.get("servers"), f"clusters.{name}.servers")
        if servers is not None:
            clusters[name] = servers
        kind = spec.get("kind", DEFAULT_CLUSTER_KIND)
        if kind not in CLUSTER_KINDS:
            check.error(
                f"clusters.{name}.kind",
                f"expected one of {', '.join(map(_show, CLUSTER_KINDS))}, got {_show(kind)}",
            )
        else:
            clusterKinds[name] = kind
    if not clustersTable:
        clusters = {"default": (nodeName,)}
        clusterKinds = {"default": DEFAULT_CLUSTER_KIND}

    caches = check.table(data, "caches")
    check.unknown(caches, "caches.", ("default_plan", "default_cluster", "dev_inactivity_days"))
    defaultCluster = check.string(caches, "caches.", "default_cluster", "default")
    if clustersTable and defaultCluster not in clustersTable:
        check.error(
            "caches.default_cluster",
            f"no cluster {_show(defaultCluster)}; configured: {', '.join(sorted(clustersTable))}",
        )
    devDays = check.integer(caches, "caches.", "dev_inactivity_days", 30)

    plans = _checkPlans(check, data, {p.slug: p for p in DEFAULT_PLANS})
    defaultPlan = check.string(caches, "caches.", "default_plan", "dev")
    if defaultPlan not in plans:
        check.error(
            "caches.default_plan",
            f"no plan {_show(defaultPlan)}; known: {', '.join(plans)}",
        )

    store = check.table(data, "store")
    storePlugin = check.string(store, "store.", "plugin", "memory")
    storeSettings = {k: v for k, v in store.items() if k != "plugin"}

    analytics = check.table(data, "analytics")
    check.unknown(analytics, "analytics.", _ANALYTICS_KEYS)
    introspection = check.boolean(analytics, "analytics.", "introspection", True)
    samplePeriod = check.number(analytics, "analytics.", "sample_period", 60.0)
    latencyPeriod = check.number(analytics, "analytics.", "latency_period", 20.0)
    drainInterval = check.number(analytics, "analytics.", "drain_interval", 0.1)
    timeSlice = check.integer(analytics, "analytics.", "time_slice", 60)
    slices = check.integer(analytics, "analytics.", "slices", 10)
    batchLimit = check.integer(analytics, "analytics.", "batch_limit", 500)

    alertSettings = _checkAlerts(check, data)
    heroku = check.table(data, "heroku")
    check.unknown(heroku, "heroku.", _HEROKU_KEYS)
    herokuId = check.string(heroku, "heroku.", "id", "memcachier")
    herokuPassword = _text(check, heroku, "heroku.", "password", "")
    herokuSalt = _text(check, heroku, "heroku.", "sso_salt", "")
    herokuClientSecret = _text(check, heroku, "heroku.", "client_secret", "")
    herokuURLs = {}
    for key, default in (("api_url", "https://api.heroku.com"), ("id_url", "https://id.heroku.com")):
        herokuURL = check.string(heroku, "heroku.", key, default)
        if not _isHTTPURL(herokuURL):
            check.error("heroku." + key, f"expected an http(s) URL, got {_show(herokuURL)}")
        herokuURLs[key] = herokuURL.rstrip("/")

    provisioning = check.table(data, "provisioning")
    check.unknown(provisioning, "provisioning.", ("token",))
    provisioningToken = _text(check, provisioning, "provisioning.", "token", "")

    metrics = check.table(data, "metrics")
    check.unknown(metrics, "metrics.", ("access", "token"))
    metricsAccess = metrics.get("access", "off")
    if metricsAccess not in METRICS_ACCESS:
        check.error(
            "metrics.access",
            f"expected one of {', '.join(map(_show, METRICS_ACCESS))}, got {_show(metricsAccess)}",
        )
        metricsAccess = "off"
    metricsToken = _text(check, metrics, "metrics.", "token", "")
    if metricsAccess == "token" and not metricsToken:
        check.error("metrics.token", 'required when metrics.access is "token"')

    limitsTable = check.table(data, "limits")
    check.unknown(limitsTable, "limits.", tuple(_LIMITS))
    limits = {
        "limit_" + key: check.integer(limitsTable, "limits.", key, default, minimum=minimum)
        for key, (default, minimum) in _LIMITS.items()
    }

    if check.errors:
        return None, check.errors
    return (
        Settings(
            listen=listen,
            web_listen=webListen,
            database=_dbURL(url, pollInterval),
            node_name=nodeName,
            clusters=clusters,
            cluster_kinds=clusterKinds,
            default_cluster=defaultCluster,
            store_plugin=storePlugin,
            store_settings=storeSettings,
            plans=plans,
            default_plan=defaultPlan,
            auth_timeout=authTimeout,
            dev_inactivity_days=devDays,
            poll_interval=pollInterval,
            tls_min_version=tlsMin,
            analytics_introspection=introspection,
            analytics_sample_period=samplePeriod,
            analytics_latency_period=latencyPeriod,
            analytics_drain_interval=drainInterval,
            analytics_time_slice=timeSlice,
            analytics_slices=slices,
            analytics_batch_limit=batchLimit,
            web_public_url=publicUrl.rstrip("/"),
            operator_password_hash=operatorHash,
            **alertSettings,
            memcache_backlog=memcacheBacklog,
            memcache_max_connections=memcacheMax,
            auth_failure_rate=authFailureRate,
            auth_failure_burst=authFailureBurst,
            web_backlog=webBacklog,
            web_max_connections=webMax,
            web_header_timeout=headerTimeout,
            web_body_timeout=bodyTimeout,
            web_idle_timeout=idleTimeout,
            shutdown_timeout=shutdownTimeout,
            allocator_warning=allocatorWarning,
            heroku_id=herokuId,
            heroku_password=herokuPassword,
            heroku_sso_salt=herokuSalt,
            heroku_api_url=herokuURLs["api_url"],
            heroku_id_url=herokuURLs["id_url"],
            heroku_client_secret=herokuClientSecret,
            provisioning_token=provisioningToken,
            metrics_access=metricsAccess,
            metrics_token=metricsToken,
            **limits,
            cluster_secret=clusterSecret,
            heartbeat_timeout=heartbeatTimeout,
            peer_timeout=peerTimeout,
        ),
        [],
    )


def _dbURL(url, poll):
    u = _DatabaseURL(url)
    u.poll_interval = poll
    return u


def parseSettings(text, overrides=None, source="<config>"):
    """
    Build L{Settings} from TOML text.

    @param text: the TOML document.
    @type text: L{str}
    @param overrides: see L{loadSettings}.
    @param source: what to call the document in a syntax error message.
    @raise ConfigError: listing every mistake.
    @rtype: L{Settings}
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: invalid TOML: {e}"])
    settings, errors = _settingsFrom(data, overrides or {})
    if errors:
        raise ConfigError(errors)
    return settings


def loadSettings(path, overrides=None):
    """
    Load the configuration file at C{path} (or only the embedded defaults
    if C{path} is L{None}) and apply command-line overrides.

    @param path: a TOML file, or L{None}.
    @type path: L{str} or L{None}
    @param overrides: C{listen} (a list of endpoint descriptions replacing
        C{memcache.listen}), C{database} (an SQLAlchemy URL) and
        C{web_listen}; L{None} or empty values are ignored.
    @type overrides: L{dict}
    @raise ConfigError: listing every mistake in the file and overrides.
    @rtype: L{Settings}
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


# -- temporary shim while the settings table lands: the grouped names over
# the flat fields.
import types as _types  # noqa: E402




def _shim(section, fields):
    def get(self):
        ns = _types.SimpleNamespace(**{new: getattr(self, old) for new, old in fields.items()})
        if section == "alerts":
            ns.smtp = _types.SimpleNamespace(**{
                k: getattr(self, "smtp_" + k)
                for k in ("host", "port", "starttls", "username", "password", "sender")})
        return ns
    return property(get)


for _section, _fields in {
    "memcache": dict(listen="listen", auth_timeout="auth_timeout", tls_min_version="tls_min_version",
                     backlog="memcache_backlog", max_connections="memcache_max_connections",
                     auth_failure_rate="auth_failure_rate", auth_failure_burst="auth_failure_burst"),
    "web": dict(listen="web_listen", public_url="web_public_url", backlog="web_backlog",
                max_connections="web_max_connections", header_timeout="web_header_timeout",
                body_timeout="web_body_timeout", idle_timeout="web_idle_timeout",
                operator_password_hash="operator_password_hash"),
    "node": dict(name="node_name", shutdown_timeout="shutdown_timeout", allocator_warning="allocator_warning"),
    "cluster": dict(secret="cluster_secret", heartbeat_timeout="heartbeat_timeout", request_timeout="peer_timeout"),
    "caches": dict(default_plan="default_plan", default_cluster="default_cluster",
                   dev_inactivity_days="dev_inactivity_days"),
    "store": dict(plugin="store_plugin", settings="store_settings"),
    "analytics": {k: "analytics_" + k for k in _ANALYTICS_KEYS},
    "alerts": dict(interval="alerts_interval", window="alerts_window",
                   allow_http_loopback="alerts_allow_http_loopback"),
    "heroku": {k: "heroku_" + k for k in _HEROKU_KEYS},
    "provisioning": dict(token="provisioning_token"),
    "metrics": dict(access="metrics_access", token="metrics_token"),
    "limits": {k: "limit_" + k for k in _LIMITS},
}.items():
    setattr(Settings, _section, _shim(_section, _fields))
