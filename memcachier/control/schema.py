# -*- test-case-name: tests.unit.test_control -*-
"""
The control plane's tables, in SQLAlchemy Core, for SQLite and PostgreSQL.

This module describes the I{current} schema, which the repository queries.
The database itself is created and evolved only by the Alembic revisions in
L{memcachier.control.migrations}; L{upgrade} runs them.  A revision never
imports this module (a revision describes the schema as it was when it was
written), so a new table (alerts, prefixes, samples, ...) means a new column
or table here plus a new revision there.

Tables:

  - C{caches}: one row per tenant.
  - C{credentials}: usernames and passwords of a cache, with capabilities;
    exactly one per cache is C{primary}.
  - C{control_version}: a single row whose C{version} every write bumps,
    so that other processes (the admin CLI, other nodes) can tell that
    something changed by reading one integer.
"""

import os

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import StaticPool


#: Constraint names, fixed so that later Alembic revisions (including
#: SQLite batch migrations) can name the constraints they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


caches = sa.Table(
    "caches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("label", sa.String(256), nullable=False, server_default=""),
    sa.Column("plan", sa.String(64), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("cluster", sa.String(128), nullable=False),
    sa.Column("sso_secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_active", sa.Float, nullable=False),
    #: Heroku's resource id for provisioned caches, a random uuid otherwise
    #: (revision 0004).  Nullable only because SQLite cannot add a NOT NULL
    #: column to a table other tables reference without copying it: the
    #: repository always sets it.
    sa.Column("uuid", sa.String(64), nullable=True, unique=True, index=True),
)


credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("username", sa.String(128), nullable=False, unique=True),
    sa.Column("password", sa.String(128), nullable=False),
    sa.Column("write_capability", sa.Boolean, nullable=False),
    sa.Column("flush_capability", sa.Boolean, nullable=False),
    sa.Column("api_capability", sa.Boolean, nullable=False),
    sa.Column("primary", sa.Boolean, nullable=False, server_default=sa.false()),
)


control_version = sa.Table(
    "control_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

#: The id of the one row of C{control_version}.
VERSION_ROW = 1


def _configureSQLite(dbapiConnection, connectionRecord):
    """
    SQLite ignores C{ON DELETE CASCADE} unless each connection asks for
    foreign keys.  A file database uses write-ahead logging, so that the
    server's polls and the admin CLI's writes do not block each other.
    """
    cursor = dbapiConnection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0].lower() not in ("memory", "wal"):
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def makeEngine(url):
    """
    Create the engine of the control plane's database.

    For SQLite this turns foreign keys on for every connection and lets the
    repository's worker threads share connections; an in-memory database
    (C{sqlite://}) gets one connection shared by every thread (so use a
    thread pool of one thread with it), since each new connection would
    otherwise see a new, empty database.

    @param url: an SQLAlchemy URL (C{sqlite:///memcachier.sqlite},
        C{postgresql+psycopg://user@host/db}, ...).
    @type url: L{str}
    @rtype: L{sqlalchemy.engine.Engine}
    """
    parsed = sa.engine.make_url(url)
    kwargs = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            # A relative path is relative to the working directory; make
            # sure its directory exists rather than failing obscurely.
            directory = os.path.dirname(os.path.abspath(parsed.database))
            os.makedirs(directory, exist_ok=True)
    engine = sa.create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configureSQLite)
    return engine


def isSQLite(engine):
    """
    @return: whether C{engine} talks to SQLite.
    """
    return engine.dialect.name == "sqlite"


# -- analytics (revision 0002) ---------------------------------------------
#
# Time series are stored as rollup buckets: one row per (series, server,
# resolution, bucket start).  A sample adds its counter deltas to the
# bucket of every resolution, so rollups are exact sums, never
# re-aggregated averages.  See memcachier.analytics.series for the
# resolutions and their retention, docs/analytics.md for the meaning.

stat_samples = sa.Table(
    "stat_samples",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("server", sa.String(255), nullable=False),
    sa.Column("resolution", sa.Integer, nullable=False),
    sa.Column("time", sa.BigInteger, nullable=False),
    #: seconds of sampling the bucket holds (rates divide by this)
    sa.Column("seconds", sa.Float, nullable=False),
    #: JSON: counter deltas summed over the bucket, and the last gauges
    sa.Column("data", sa.Text, nullable=False),
    sa.UniqueConstraint("cache_id", "server", "resolution", "time", name="uq_stat_samples_bucket"),
    sa.Index("ix_stat_samples_query", "cache_id", "resolution", "time"),
)


latency_samples = sa.Table(
    "latency_samples",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("server", sa.String(255), nullable=False),
    sa.Column("resolution", sa.Integer, nullable=False),
    sa.Column("time", sa.BigInteger, nullable=False),
    #: sum of the round trips in the bucket, nanoseconds
    sa.Column("total_ns", sa.Float, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.UniqueConstraint("server", "resolution", "time", name="uq_latency_samples_bucket"),
)


prefixes = sa.Table(
    "prefixes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(250), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("cache_id", "name", name="uq_prefixes_cache_id_name"),
)


prefix_samples = sa.Table(
    "prefix_samples",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "prefix_id",
        sa.Integer,
        sa.ForeignKey("prefixes.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("server", sa.String(255), nullable=False),
    sa.Column("resolution", sa.Integer, nullable=False),
    sa.Column("time", sa.BigInteger, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    #: JSON: hits, misses, mutations (sums), num_keys, total_size (last)
    sa.Column("data", sa.Text, nullable=False),
    sa.UniqueConstraint("prefix_id", "server", "resolution", "time", name="uq_prefix_samples_bucket"),
)


# -- alerts (revision 0003) ------------------------------------------------
#
# Alerts and their delivery configs belong to a cache (deleted with it).
# An alert's rule state (firing or not, since when) is kept on its row, so
# the node that evaluates next (after a restart or a lease move) neither
# fires again nor forgets to resolve.  Each firing or resolution is an
# event; each event has one delivery row per destination, which stays
# "pending" until the destination accepted it or the retries ran out, so
# deliveries survive a restart.  One row of alert_lease names the node
# that evaluates and delivers.  See memcachier.alerts and docs/alerts.md.

alert_configs = sa.Table(
    "alert_configs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("delivery_type", sa.String(16), nullable=False),
    sa.Column("email", sa.String(254), nullable=False, server_default=""),
    sa.Column("slack_url", sa.String(2048), nullable=False, server_default=""),
    sa.Column("slack_channel", sa.String(128), nullable=False, server_default=""),
    sa.Column("webhook_url", sa.String(2048), nullable=False, server_default=""),
    sa.Column("webhook_secret", sa.String(128), nullable=False, server_default=""),
)


alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("trigger_type", sa.String(32), nullable=False),
    sa.Column("trigger_threshold", sa.Float, nullable=False),
    sa.Column(
        "delivery_config_id",
        sa.Integer,
        sa.ForeignKey("alert_configs.id"),
        nullable=False,
    ),
    sa.Column("description", sa.String(1024), nullable=False, server_default=""),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    #: whether the alert has fired and not yet resolved
    sa.Column("firing", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("state_since", sa.Float, nullable=True),
)


alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "alert_id",
        sa.Integer,
        sa.ForeignKey("alerts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    #: "fired" or "resolved"
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("trigger_type", sa.String(32), nullable=False),
    #: JSON: the message every destination gets (memcachier.alerts.rules.AlertMessage)
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_alert_events_alert", "alert_id", "time"),
)


alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "event_id",
        sa.Integer,
        sa.ForeignKey("alert_events.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    #: JSON: the delivery config as it was when the event happened
    sa.Column("destination", sa.Text, nullable=False),
    #: "pending", "delivered" or "failed"
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt", sa.Float, nullable=True),
    sa.Column("last_error", sa.String(1024), nullable=False, server_default=""),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Index("ix_alert_deliveries_status", "status", "next_attempt"),
)


alert_lease = sa.Table(
    "alert_lease",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)

#: The id of the one row of C{alert_lease}.
LEASE_ROW = 1
# -- provisioning (revision 0005) ------------------------------------------
#
# A cache provisioned by Heroku keeps its Heroku side here: the resource
# uuid (Heroku delivers each call at least once, so provisioning is
# idempotent on it), the oauth tokens its Platform API calls need, and the
# config var pushes that follow its primary credential.  A deprovisioned
# resource keeps its row (C{deleted_at}) so that a second DELETE is a 410.

heroku_resources = sa.Table(
    "heroku_resources",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    sa.Column("app_name", sa.String(256), nullable=False, server_default=""),
    sa.Column("region", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
    #: the oauth grant until it is exchanged (cleared then)
    sa.Column("grant_code", sa.String(512), nullable=True),
    sa.Column("grant_expires_at", sa.Float, nullable=True),
    sa.Column("access_token", sa.String(512), nullable=True),
    sa.Column("refresh_token", sa.String(512), nullable=True),
    sa.Column("token_expires_at", sa.Float, nullable=True),
    #: why the last exchange or refresh failed, for operators
    sa.Column("token_error", sa.String(1024), nullable=True),
    #: a node exchanging or refreshing the tokens holds them until then
    #: (a grant or a refresh token works once: one node at a time)
    sa.Column("token_claimed_until", sa.Float, nullable=True),
    #: the primary username whose values Heroku has (or is being sent)
    sa.Column("config_username", sa.String(128), nullable=True),
)


heroku_config_pushes = sa.Table(
    "heroku_config_pushes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "resource_id",
        sa.Integer,
        sa.ForeignKey("heroku_resources.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("username", sa.String(128), nullable=False),
    #: "pending", "done", or "superseded" (a newer promotion came first)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(1024), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
)


# -- dashboard (revision 0004) ---------------------------------------------
#
# Dashboard sessions live here so that every node of a cluster knows them;
# the key is the sha256 of the cookie's value, so reading the table does
# not give anyone a session.  See memcachier.web.sso.

dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    #: the cache the session may see; NULL for an operator's session
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    ),
    #: a digest of the cache's SSO secret when the session began: rotating
    #: the secret ends the session
    sa.Column("sso_fingerprint", sa.String(64), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    #: who logged in (an email, "admin-link", "operator"), for the page
    sa.Column("user", sa.String(256), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)


#: Nonces of single-use login links already used, until they expire.
dashboard_links_used = sa.Table(
    "dashboard_links_used",
    metadata,
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)


# -- cluster membership (revision 0006) ------------------------------------
#
# Each node upserts its row on every heartbeat; a node whose heartbeat is
# older than [cluster] heartbeat_timeout is out.  cluster_versions holds
# the version `config get cluster` reports, bumped by whichever node sees
# the live set of a cluster change.  See memcachier.cluster.membership.

nodes = sa.Table(
    "nodes",
    metadata,
    #: the advertised host:port
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("cluster", sa.String(128), nullable=False),
    #: wall-clock seconds of this run's start (a restart changes it)
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("connections", sa.Integer, nullable=False, server_default="0"),
    sa.Column("memory", sa.BigInteger, nullable=False, server_default="0"),
    #: JSON: cache id to its open connections on the node (plan limits
    #: count across nodes)
    sa.Column("cache_connections", sa.Text, nullable=False, server_default="{}"),
    #: restoring, warming, serving or draining (memcachier.cluster.states);
    #: memcachier-admin node drain writes draining for the node to act on
    sa.Column("state", sa.String(16), nullable=False, server_default="serving"),
    #: JSON: warm-up progress, items restored, taken over and handed off
    sa.Column("progress", sa.Text, nullable=False, server_default="{}"),
    #: JSON (revision 0009): the peers this node suspects, each with its
    #: run and the time of the suspicion, and, per suspecting peer, the
    #: suspicion of this node it dropped its items for
    #: (memcachier.cluster.membership)
    sa.Column("suspicions", sa.Text, nullable=False, server_default="{}"),
)


cluster_versions = sa.Table(
    "cluster_versions",
    metadata,
    sa.Column("cluster", sa.String(128), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)


# -- flush generations (revision 0007) -------------------------------------
#
# A cache's last flush: its generation (1 for the first, one more for each
# flush after) and flush_at, the wall-clock time from which items stored
# before it are invalid (a flush_all with a delay has it in the future).
# Every node compares it with what it applied.  See
# memcachier.cluster.flushes.

flush_generations = sa.Table(
    "flush_generations",
    metadata,
    sa.Column(
        "cache_id",
        sa.Integer,
        sa.ForeignKey("caches.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("flush_at", sa.Float, nullable=False),
)
