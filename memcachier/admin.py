# -*- test-case-name: tests.unit.test_admin -*-
"""
C{memcachier-admin}: manage caches, credentials and plans, and list the
cluster's nodes, from a shell.

The CLI writes to the control plane's database directly (synchronously,
no reactor); running servers notice within their poll interval because
every write bumps the control version.  It reads the same configuration
file as the server, so it knows the plans, the clusters and the database::

    memcachier-admin --config memcachier.toml cache create --plan 100
    memcachier-admin --database sqlite:///memcachier.sqlite cache list --json

Errors go to standard error with exit status 1; usage mistakes exit with
status 2, as argparse does.
"""

import argparse
import json
import os
import signal
import sys
import time
from urllib.parse import urlsplit

import sqlalchemy
import sqlalchemy.exc
from twisted.python.runtime import seconds

from memcachier.alerts.message import AlertMessage, formatNumber
from memcachier.alerts.repository import AlertRepository
from memcachier.cluster.membership import Suspicions, listNodes, liveServers, requestDrain
from memcachier.cluster.states import parseDetails
from memcachier.control.migrations import upgrade
from memcachier.control.provisioning import clusterForPlan
from memcachier.control.repository import ControlPlane, ControlPlaneError
from memcachier.control.schema import makeEngine
from memcachier.heroku.manifest import manifest
from memcachier.heroku.records import HerokuRecords, UnknownResource
from memcachier.node.settings import ConfigError, loadSettings
from memcachier.node.snapshot import MANUAL_NAME, SnapshotError, SnapshotReader
from memcachier.web.alerts import alertJSON, configJSON, eventJSON
from memcachier.web.sso import MAX_LINK_TTL, hashPassword, makeLink, parseDuration


class _WallClock:
    """
    The CLI's clock: it is the composition root, so this is where the
    wall clock gets injected.
    """

    def seconds(self):
        return seconds()


class AdminError(Exception):
    """
    A failure to report on standard error with exit status 1.
    """


def _cacheJSON(cache, servers):
    return {
        "id": cache.id,
        "uuid": cache.uuid,
        "name": cache.name,
        "label": cache.label,
        "plan": cache.plan,
        "enabled": cache.enabled,
        "cluster": cache.cluster,
        "servers": list(servers),
        "created_at": cache.created_at,
        "last_active": cache.last_active,
    }


def _credentialJSON(credential):
    return {
        "id": credential.id,
        "cache_id": credential.cache_id,
        "username": credential.username,
        "password": credential.password,
        "write_capability": credential.write,
        "flush_capability": credential.flush,
        "api_capability": credential.api,
        "primary": credential.primary,
    }


def _planJSON(plan):
    return {
        "slug": plan.slug,
        "memory": plan.memory,
        "connections": plan.connections,
        "item_size": plan.item_size,
        "development": plan.development,
        "requests_per_second": plan.requests_per_second,
        "bytes_per_second": plan.bytes_per_second,
    }


def _ceiling(value):
    """
    A plan's budget as listed: C{scaled} (the node's default, scaled by
    the plan's memory), C{none}, or the number.
    """
    return "scaled" if value is None else "none" if value == 0 else str(value)


def _capabilities(credential):
    return ",".join(
        name
        for name, has in [
            ("write", credential.write),
            ("flush", credential.flush),
            ("api", credential.api),
        ]
        if has
    ) or "read-only"


class Admin:
    """
    The commands, each writing to C{out}.

    @ivar settings: the L{memcachier.node.settings.Settings}.
    @ivar out: a text stream.
    """

    def __init__(self, settings, out, clock=None, stdin=None):
        self.settings = settings
        self.out = out
        self.stdin = sys.stdin if stdin is None else stdin
        self._clock = _WallClock() if clock is None else clock
        self._controlPlane = None

    @property
    def controlPlane(self):
        """
        The L{ControlPlane}, on a database migrated to the newest revision
        on first use (C{plan list} needs no database).
        """
        if self._controlPlane is None:
            engine = makeEngine(self.settings.database.url)
            upgrade(engine)
            self._controlPlane = ControlPlane(
                engine,
                self._clock,
                self.settings.plans,
                defaultPlan=self.settings.caches.default_plan,
                defaultCluster=self.settings.caches.default_cluster,
                clusters=self.settings.clusters,
                maxCredentials=self.settings.limits.credentials,
            )
        return self._controlPlane

    def close(self):
        if self._controlPlane is not None:
            self._controlPlane.engine.dispose()

    def _print(self, text=""):
        self.out.write(text + "\n")

    def _json(self, value):
        self._print(json.dumps(value, indent=2, sort_keys=True))

    def _nodes(self):
        return listNodes(self.controlPlane.engine)[0]

    def _servers(self, cache):
        """
        The cache's servers as the running nodes advertise them (the live
        nodes of its cluster); the configured list when no node of it has
        registered (single nodes do not).
        """
        configured = self.settings.clusters.get(cache.cluster, ())
        records = self._nodes()
        if not any(r.cluster == cache.cluster for r in records):
            return configured
        return liveServers(
            records, cache.cluster, configured, self._clock.seconds(),
            self.settings.cluster.heartbeat_timeout,
        )

    # -- nodes

    def node_list(self, args):
        now = self._clock.seconds()
        timeout = self.settings.cluster.heartbeat_timeout
        rows = []
        for record in self._nodes():
            row = record.asDict()
            row["cache_connections"] = {
                str(k): v for k, v in sorted(record.connectionsByCache().items())
            }
            row["live"] = record.heartbeat_at >= now - timeout
            row["progress"] = parseDetails(record.progress)
            suspicions = Suspicions.fromJSON(record.suspicions)
            row["suspicions"] = {
                "suspects": sorted(suspicions.suspects),
                "dropped_for": sorted(suspicions.dropped),
            }
            rows.append(row)
        if args.json:
            self._json(rows)
            return
        self._print(
            f"{'NAME':<24} {'CLUSTER':<12} {'LIVE':<4} {'STATE':<9} {'WARMUP':>6} "
            f"{'HEARTBEAT':>10} {'CONNECTIONS':>11} {'MEMORY':>12} {'RESTORED':>9} {'TAKEN':>9} "
            f"{'HANDED':>9}"
        )
        for row in rows:
            ago = f"{max(0.0, now - row['heartbeat_at']):.1f}s ago"
            progress = row["progress"]
            warmup = f"{100 * float(progress.get('warmup', 1.0)):.0f}%"
            self._print(
                f"{row['name']:<24} {row['cluster']:<12} {'in' if row['live'] else 'out':<4} "
                f"{row['state']:<9} {warmup:>6} {ago:>10} {row['connections']:>11} "
                f"{row['memory']:>12} {progress.get('restored', 0):>9} "
                f"{progress.get('taken_over', 0):>9} {progress.get('handed_off', 0):>9}"
            )

    def node_drain(self, args):
        """
        Ask a running node to drain and stop: it leaves the rings at once,
        stays the fallback of its keys' new owners for [cluster] warmup (at
        most its [node] shutdown_timeout), then stops as on SIGTERM.
        """
        records = {r.name: r for r in self._nodes()}
        if args.name not in records:
            raise AdminError(f"no registered node {args.name}")
        requestDrain(self.controlPlane.engine, args.name)
        result = {"name": args.name, "state": "draining", "stopped": None}
        if args.wait:
            deadline = time.monotonic() + args.timeout
            while True:
                if args.name not in {r.name for r in self._nodes()}:
                    result["stopped"] = True
                    break
                if time.monotonic() > deadline:
                    raise AdminError(f"node {args.name} still registered after {args.timeout:g}s")
                time.sleep(0.2)
        if args.json:
            self._json(result)
            return
        self._print(
            f"{args.name}: draining" + (", stopped" if result["stopped"] else "")
        )

    def node_snapshot(self, args):
        """
        Ask the running node (by its twistd pidfile) for an on-demand
        snapshot with C{SIGUSR1}, wait for it, and check it end to end.
        """
        node = self.settings.node
        if not node.state_dir or not node.warm_restart:
            raise AdminError("warm restart is off ([node] state_dir unset or warm_restart = false)")
        try:
            with open(args.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError) as e:
            raise AdminError(f"cannot read the node's pid from {args.pidfile}: {e}")
        path = os.path.join(node.state_dir, MANUAL_NAME)
        before = _fileStamp(path)
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            raise AdminError(f"no process {pid} (from {args.pidfile}): is the node running?")
        deadline = time.monotonic() + args.timeout
        while _fileStamp(path) == before:
            if time.monotonic() > deadline:
                raise AdminError(f"no snapshot in {path} after {args.timeout:g}s")
            time.sleep(0.05)
        caches = 0
        try:
            with open(path, "rb") as f:
                reader = SnapshotReader(f)
                for _meta, items in reader.caches():
                    caches += 1
                    for _ in items:
                        pass
        except SnapshotError as e:
            raise AdminError(f"the snapshot {path} is unusable: {e}")
        result = {"path": path, "caches": caches, "items": reader.items}
        if args.json:
            self._json(result)
            return
        self._print(f"{path}: {reader.items} items of {caches} caches")

    # -- caches

    def cache_create(self, args):
        cache, credential = self.controlPlane.createCache(
            name=args.name, plan=args.plan, cluster=args.cluster, label=args.label
        )
        servers = self._servers(cache)
        if args.json:
            self._json(
                {
                    "id": cache.id,
                    "uuid": cache.uuid,
                    "name": cache.name,
                    "plan": cache.plan,
                    "servers": list(servers),
                    "username": credential.username,
                    "password": credential.password,
                }
            )
        else:
            self._print(f"# cache {cache.id} {cache.name} (plan {cache.plan})")
            self._print(f"MEMCACHIER_SERVERS={','.join(servers)}")
            self._print(f"MEMCACHIER_USERNAME={credential.username}")
            self._print(f"MEMCACHIER_PASSWORD={credential.password}")

    def cache_list(self, args):
        caches = self.controlPlane.listCaches()
        if args.json:
            self._json([_cacheJSON(c, self._servers(c)) for c in caches])
            return
        self._print(f"{'ID':>6}  {'NAME':<24} {'PLAN':<6} {'ENABLED':<8} CLUSTER")
        for c in caches:
            enabled = "yes" if c.enabled else "no"
            self._print(f"{c.id:>6}  {c.name:<24} {c.plan:<6} {enabled:<8} {c.cluster}")

    def cache_show(self, args):
        cache = self.controlPlane.getCache(args.id)
        credentials = self.controlPlane.listCredentials(args.id)
        if args.json:
            value = _cacheJSON(cache, self._servers(cache))
            value["credentials"] = [_credentialJSON(c) for c in credentials]
            self._json(value)
            return
        self._print(f"id:          {cache.id}")
        self._print(f"uuid:        {cache.uuid}")
        self._print(f"name:        {cache.name}")
        self._print(f"label:       {cache.label}")
        self._print(f"plan:        {cache.plan}")
        self._print(f"enabled:     {'yes' if cache.enabled else 'no'}")
        self._print(f"cluster:     {cache.cluster}")
        self._print(f"servers:     {','.join(self._servers(cache))}")
        self._print("credentials:")
        for c in credentials:
            primary = " (primary)" if c.primary else ""
            self._print(f"  {c.username}  {_capabilities(c)}{primary}")

    def cache_delete(self, args):
        self.controlPlane.deleteCache(args.id)
        self._done(args, {"id": args.id, "deleted": True}, f"deleted cache {args.id}")

    def cache_enable(self, args):
        cache = self.controlPlane.setEnabled(args.id, True)
        self._cacheDone(args, cache, f"enabled cache {cache.id}")

    def cache_disable(self, args):
        cache = self.controlPlane.setEnabled(args.id, False)
        self._cacheDone(args, cache, f"disabled cache {cache.id}")

    def cache_set_plan(self, args):
        """
        Between a development and a production plan the cache moves to a
        cluster of the new plan's kind, empty (every node empties its share
        when it sees the move), as through the Heroku and provisioning APIs.
        """
        target = self.settings.plans.get(args.slug)
        cache = self.controlPlane.getCache(args.id)
        current = self.settings.plans.get(cache.plan)
        moved = None
        if target is not None and current is not None and current.development != target.development:
            cluster = clusterForPlan(self.settings, target)
            if cluster != cache.cluster:
                self.controlPlane.setCluster(args.id, cluster)
                moved = cluster
        cache = self.controlPlane.setPlan(args.id, args.slug)
        message = f"cache {cache.id} is now on plan {cache.plan}"
        if moved is not None:
            message += f", moved to cluster {moved} (emptied)"
        self._cacheDone(args, cache, message)

    def cache_dashboard_url(self, args):
        cache = self.controlPlane.getCache(args.id)
        self._print(
            makeLink(self.settings.web.public_url, cache, self._clock.seconds(), args.ttl)
        )

    def _cacheDone(self, args, cache, message):
        self._done(args, _cacheJSON(cache, self._servers(cache)), message)

    def _done(self, args, value, message):
        if args.json:
            self._json(value)
        else:
            self._print(message)

    # -- credentials

    def credential_create(self, args):
        credential = self.controlPlane.createCredential(
            args.cache_id, write=not args.read_only, flush=not args.no_flush, api=not args.no_api
        )
        if args.json:
            self._json(_credentialJSON(credential))
        else:
            self._print(f"MEMCACHIER_USERNAME={credential.username}")
            self._print(f"MEMCACHIER_PASSWORD={credential.password}")
            self._print(f"# capabilities: {_capabilities(credential)}")

    def credential_list(self, args):
        credentials = self.controlPlane.listCredentials(args.cache_id)
        if args.json:
            self._json([_credentialJSON(c) for c in credentials])
            return
        self._print(f"{'USERNAME':<10} {'PASSWORD':<34} CAPABILITIES")
        for c in credentials:
            primary = " (primary)" if c.primary else ""
            self._print(f"{c.username:<10} {c.password:<34} {_capabilities(c)}{primary}")

    def credential_delete(self, args):
        self.controlPlane.deleteCredential(args.username)
        self._done(
            args,
            {"username": args.username, "deleted": True},
            f"deleted credential {args.username}",
        )

    def credential_promote(self, args):
        credential = self.controlPlane.promoteCredential(args.username)
        self._done(
            args,
            _credentialJSON(credential),
            f"{credential.username} is now the primary credential of cache "
            f"{credential.cache_id}",
        )

    def credential_update(self, args):
        credential = self.controlPlane.updateCredential(
            args.username, write=args.write, flush=args.flush, api=args.api
        )
        self._done(
            args,
            _credentialJSON(credential),
            f"{credential.username}: {_capabilities(credential)}",
        )

    # -- alerts

    def _alerts(self):
        return AlertRepository(
            self.controlPlane.engine, self._clock, maxAlerts=self.settings.limits.alerts,
            maxConfigs=self.settings.limits.alert_configs,
        )

    def _requireCache(self, cacheId):
        self.controlPlane.getCache(cacheId)

    def alert_list(self, args):
        self._requireCache(args.cache_id)
        alerts = self._alerts().listAlerts(args.cache_id)
        configs = {c["id"]: c for c in self._alerts().listConfigs(args.cache_id)}
        if args.json:
            self._json([
                {**alertJSON(a), "firing": a["firing"],
                 "delivery_config": configJSON(configs[a["delivery_config_id"]])}
                for a in alerts
            ])
            return
        self._print(f"{'ID':>4} {'TRIGGER':<24} {'ENABLED':<8} {'STATE':<8} DELIVERY")
        for a in alerts:
            message = AlertMessage("fired", a["id"], a["cache_id"], "", a["trigger_type"], "",
                                   0.0, a["trigger_threshold"], 0.0, "")
            config = configs[a["delivery_config_id"]]
            destination = config["email"] or config["slack_url"] or config["webhook_url"]
            self._print(
                f"{a['id']:>4} {message.condition():<24} {'yes' if a['enabled'] else 'no':<8} "
                f"{'firing' if a['firing'] else 'ok':<8} "
                f"{config['delivery_type']} {_redactURL(destination)}"
            )

    def alert_events(self, args):
        self._requireCache(args.cache_id)
        events = self._alerts().events(args.cache_id)
        if args.json:
            self._json([eventJSON(e) for e in events])
            return
        self._print(f"{'TIME':<20} {'ALERT':>5} {'EVENT':<8} {'VALUE':>8}  DELIVERIES")
        for e in events:
            event = eventJSON(e)
            outcomes = ", ".join(
                f"{d['delivery_type']} {d['status']} ({d['attempts']} attempt"
                f"{'s' if d['attempts'] != 1 else ''}"
                + (f": {d['last_error']}" if d["last_error"] and d["status"] != "delivered" else "")
                + ")"
                for d in event["deliveries"]
            )
            self._print(
                f"{event['time']:<20} {event['alert_id']:>5} {event['kind']:<8} "
                f"{formatNumber(event['value']):>8}  {outcomes}"
            )

    # -- heroku

    def heroku_manifest(self, args):
        if not self.settings.web.public_url.startswith("https://"):
            raise AdminError("[web] public_url must be https: Heroku calls only https base URLs")
        if not self.settings.heroku.password or not self.settings.heroku.sso_salt:
            raise AdminError("[heroku] password and sso_salt must be set for a usable manifest")
        self._json(manifest(self.settings))

    def heroku_show(self, args):
        records = HerokuRecords(self.controlPlane, self._clock)
        resource = records.herokuResource(args.uuid)
        if resource is None:
            raise UnknownResource(args.uuid)
        value = {
            "uuid": resource.uuid,
            "cache_id": resource.cache_id,
            "app_name": resource.app_name,
            "region": resource.region,
            "created_at": resource.created_at,
            "deleted_at": resource.deleted_at,
            "grant_pending": resource.grant_code is not None,
            "has_access_token": resource.access_token is not None,
            "token_expires_at": resource.token_expires_at,
            "token_error": resource.token_error,
            "config_username": resource.config_username,
            "config_pushes": [
                {
                    "username": p.username,
                    "state": p.state,
                    "attempts": p.attempts,
                    "last_status": p.last_status,
                    "last_error": p.last_error,
                    "created_at": p.created_at,
                    "finished_at": p.finished_at,
                }
                for p in records.pushes(args.uuid)
            ],
        }
        if args.json:
            self._json(value)
            return
        for key, item in value.items():
            if key != "config_pushes":
                self._print(f"{key + ':':<18} {item}")
        self._print("config pushes:")
        for push in value["config_pushes"]:
            self._print(
                f"  {push['username']:<8} {push['state']:<10} attempts={push['attempts']} "
                f"status={push['last_status']} {push['last_error'] or ''}".rstrip()
            )
    # -- the operator

    def operator_hash_password(self, args):
        password = self.stdin.readline().rstrip("\r\n")
        if not password:
            raise AdminError("no password on standard input")
        self._print(hashPassword(password))

    # -- plans

    def plan_list(self, args):
        plans = sorted(self.settings.plans.values(), key=lambda p: (p.memory, p.slug))
        if args.json:
            self._json([_planJSON(p) for p in plans])
            return
        self._print(f"{'SLUG':<8} {'MEMORY':>14} {'CONNECTIONS':>12} {'ITEM SIZE':>10} "
                    f"{'REQUESTS/S':>10} {'BYTES/S':>10}")
        for p in plans:
            default = " (default)" if p.slug == self.settings.caches.default_plan else ""
            dev = " development" if p.development else ""
            self._print(
                f"{p.slug:<8} {p.memory:>14} {p.connections:>12} {p.item_size:>10} "
                f"{_ceiling(p.requests_per_second):>10} {_ceiling(p.bytes_per_second):>10}{dev}{default}"
            )


def _redactURL(url):
    """
    A webhook URL without its path (Slack's carries the secret).
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


def _cacheId(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a cache id is a number, not {text!r}")


def _ttl(text):
    try:
        seconds = parseDuration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    if not 0 < seconds <= MAX_LINK_TTL:
        raise argparse.ArgumentTypeError(f"between 1s and {MAX_LINK_TTL // 3600}h, not {text!r}")
    return seconds


def _switch(parser, name, help):
    """
    Add C{--NAME} / C{--no-NAME}, defaulting to L{None} (unchanged).
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument(f"--{name}", dest=name, action="store_true", default=None, help=help)
    group.add_argument(f"--no-{name}", dest=name, action="store_false", help=f"no {help}")


def makeParser():
    """
    @rtype: L{argparse.ArgumentParser}
    """
    parser = argparse.ArgumentParser(
        prog="memcachier-admin",
        description="Manage the caches, credentials and plans of a memcachier installation.",
    )
    parser.add_argument("--config", metavar="FILE", help="the server's TOML configuration file")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy URL of the control plane (overrides the configuration file)",
    )
    groups = parser.add_subparsers(
        dest="group", metavar="{cache,credential,heroku,node,plan,alert,operator}", required=True
    )

    def command(sub, name, method, help, json=True):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(method=method)
        if json:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    cache = groups.add_parser("cache", help="manage caches").add_subparsers(
        dest="command", required=True
    )
    p = command(cache, "create", "cache_create", "create a cache and print its credentials")
    p.add_argument("--name", help="unique name (generated if omitted)")
    p.add_argument("--plan", metavar="SLUG", help="plan slug (default: the configured default)")
    p.add_argument("--cluster", help="cluster (default: the configured default)")
    p.add_argument("--label", help="free text for operators")
    command(cache, "list", "cache_list", "list caches")
    for name, method, help in [
        ("show", "cache_show", "show a cache and its credentials"),
        ("delete", "cache_delete", "delete a cache and its credentials"),
        ("enable", "cache_enable", "enable a cache"),
        ("disable", "cache_disable", "disable a cache (authentication fails)"),
    ]:
        command(cache, name, method, help).add_argument("id", type=_cacheId, metavar="ID")
    p = command(
        cache,
        "dashboard-url",
        "cache_dashboard_url",
        "print a signed, single-use login link to the cache's dashboard",
        json=False,
    )
    p.add_argument("id", type=_cacheId, metavar="ID")
    p.add_argument(
        "--ttl", type=_ttl, default=600, metavar="DURATION",
        help="how long the link works: 600, 90s, 10m, 2h (default 10m, at most 24h)",
    )
    p = command(
        cache, "set-plan", "cache_set_plan",
        "move a cache to another plan (between development and production: to a cluster "
        "of the other kind, emptied)",
    )
    p.add_argument("id", type=_cacheId, metavar="ID")
    p.add_argument("slug", metavar="SLUG")

    credential = groups.add_parser("credential", help="manage credentials").add_subparsers(
        dest="command", required=True
    )
    p = command(credential, "create", "credential_create", "add a credential to a cache")
    p.add_argument("cache_id", type=_cacheId, metavar="CACHE_ID")
    p.add_argument("--read-only", action="store_true", help="no write capability")
    p.add_argument("--no-flush", action="store_true", help="no flush capability")
    p.add_argument("--no-api", action="store_true", help="no analytics API capability")
    p = command(credential, "list", "credential_list", "list a cache's credentials")
    p.add_argument("cache_id", type=_cacheId, metavar="CACHE_ID")
    p = command(credential, "delete", "credential_delete", "delete a (non-primary) credential")
    p.add_argument("username", metavar="USERNAME")
    p = command(credential, "promote", "credential_promote", "make a credential the primary one")
    p.add_argument("username", metavar="USERNAME")
    p = command(credential, "update", "credential_update", "change a credential's capabilities")
    p.add_argument("username", metavar="USERNAME")
    _switch(p, "write", "write capability")
    _switch(p, "flush", "flush capability")
    _switch(p, "api", "analytics API capability")

    node = groups.add_parser("node", help="the cluster nodes; a running node's snapshot").add_subparsers(
        dest="command", required=True
    )
    command(
        node, "list", "node_list",
        "list every registered node: its cluster, whether it is in, its state (restoring, "
        "warming, serving, draining), warm-up progress, last heartbeat, connections, memory, "
        "items restored, taken over from previous owners and handed off to new ones",
    )

    p = command(
        node, "drain", "node_drain",
        "drain a running node: out of the rings at once, the fallback of its keys' new owners "
        "for [cluster] warmup, then it stops as on SIGTERM",
    )
    p.add_argument("name", help="the node's name (host:port, as node list shows it)")
    p.add_argument("--wait", action="store_true", help="wait until the node has left")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long --wait waits (default 120)")

    p = command(
        node, "snapshot", "node_snapshot",
        f"take a snapshot of the running node's items into [node] state_dir/{MANUAL_NAME} "
        "(SIGUSR1 to the pid in --pidfile; rename it to 'snapshot' while the node is stopped "
        "to restore it)",
    )
    p.add_argument("--pidfile", default="twistd.pid", help="the node's twistd pidfile (default: twistd.pid)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the snapshot (default 60)")

    heroku = groups.add_parser("heroku", help="the Heroku add-on").add_subparsers(
        dest="command", required=True
    )
    command(
        heroku, "manifest", "heroku_manifest",
        "print the add-on's addon-manifest.json (from [heroku] and [web] public_url)",
        json=False,
    )
    p = command(
        heroku, "show", "heroku_show",
        "show a Heroku resource: its cache, oauth token state and config var pushes",
    )
    p.add_argument("uuid", metavar="UUID")

    plan = groups.add_parser("plan", help="show plans").add_subparsers(
        dest="command", required=True
    )
    command(plan, "list", "plan_list", "list the configured plans")

    alert = groups.add_parser("alert", help="show alerts and what they sent").add_subparsers(
        dest="command", required=True
    )
    p = command(alert, "list", "alert_list", "list a cache's alerts and their state")
    p.add_argument("cache_id", type=_cacheId, metavar="CACHE_ID")
    p = command(alert, "events", "alert_events",
                "the last firings and resolutions of a cache's alerts, with each delivery's outcome")
    p.add_argument("cache_id", type=_cacheId, metavar="CACHE_ID")

    operator = groups.add_parser("operator", help="the operator view").add_subparsers(
        dest="command", required=True
    )
    command(
        operator,
        "hash-password",
        "operator_hash_password",
        "read a password on standard input and print its hash for "
        "[web] operator_password_hash",
        json=False,
    )
    return parser


def main(argv=None, stdout=None, stderr=None, stdin=None):
    """
    The C{memcachier-admin} console script.

    @param argv: the arguments, without the program name; C{sys.argv[1:]}
        if L{None}.
    @return: the exit status: 0, 1 for errors, 2 for usage mistakes.
    @rtype: L{int}
    """
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parser = makeParser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code

    def fail(message):
        stderr.write(f"memcachier-admin: error: {message}\n")
        return 1

    try:
        settings = loadSettings(args.config, {"database": args.database})
    except ConfigError as e:
        return fail(str(e))

    admin = Admin(settings, stdout, stdin=stdin)
    try:
        getattr(admin, args.method)(args)
    except (ControlPlaneError, AdminError) as e:
        return fail(str(e))
    except ImportError as e:
        return fail(
            f"database {_safeURL(settings.database.url)}: its driver is not installed ({e.name})"
        )
    except sqlalchemy.exc.SQLAlchemyError as e:
        # The driver's message only: SQLAlchemy's own would show the
        # statement's parameters, passwords included.
        if isinstance(e, sqlalchemy.exc.StatementError):
            detail = e.orig
        else:
            detail = e
        return fail(f"database {_safeURL(settings.database.url)}: {detail}")
    finally:
        admin.close()
    return 0


def _fileStamp(path):
    """
    What changes when C{path} is replaced (its inode and time), or L{None}.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


def _safeURL(url):
    """
    A database URL without its password, for messages.
    """
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
