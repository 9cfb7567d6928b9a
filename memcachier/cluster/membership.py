# -*- test-case-name: tests.unit.test_cluster -*-
"""
Which nodes are in each cluster, from their heartbeats in the control
plane.

Every node upserts its row in C{nodes} every L{Membership.interval}
seconds and reads everyone's; a node whose last heartbeat is older than
C{[cluster] heartbeat_timeout} is out, and in again as soon as it beats.
On PostgreSQL a join, a leave and a change someone noticed are
C{NOTIFY}-ed on L{NODES_CHANNEL}, control-plane writes on
L{CONTROL_CHANNEL} and watched prefix changes on L{PREFIXES_CHANNEL}; a thread blocked in C{LISTEN} wakes the reactor, so
the other nodes see a join or a new credential within milliseconds.
Polling (the heartbeat itself, and the control index's poll) is the
fallback and the SQLite path.

A node's peers may also I{suspect} it (a peer connection failed).  The
suspicion is written in the suspecting node's row and holds on every node,
the suspected one included: all leave it out of their rings, so its keys
fall to the next node at once, the same next node everywhere.  The
suspected node drops what it holds and acknowledges in its own row; the
suspicion ends when it restarted, or is out, or once C{heartbeat_timeout}
has passed and it acknowledged.  It is then in again as after a join: it
drops what it was sent meanwhile and warms from the nodes that held its
range.  So a value written while it was suspected is never shadowed by an
older one it held (see C{docs/cluster.md}, "Suspicions").
"""

import json
import threading
import time

import sqlalchemy as sa
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from memcachier.cluster.ring import Ring
from memcachier.cluster.states import DRAINING, SERVING
from memcachier.control import schema
from memcachier.tx.periodic import PeriodicService
from memcachier.tx.threads import ThreadPoolRunner

#: PostgreSQL channel of membership changes
NODES_CHANNEL = "memcachier_nodes"
#: PostgreSQL channel of control-plane writes (see ControlPlane.announceChange)
CONTROL_CHANNEL = "memcachier_control"
#: PostgreSQL channel of watched prefix changes (see
#: memcachier.analytics.repository.AnalyticsRepository.createPrefix)
PREFIXES_CHANNEL = "memcachier_prefixes"


class NodeRecord:
    """
    One row of C{nodes}.
    """

    __slots__ = (
        "name", "cluster", "started_at", "heartbeat_at", "connections", "memory",
        "cache_connections", "state", "progress", "suspicions",
    )

    def __init__(self, name, cluster, started_at, heartbeat_at, connections, memory,
                 cache_connections="{}", state=SERVING, progress="{}", suspicions="{}"):
        self.name = name
        self.cluster = cluster
        self.started_at = started_at
        self.heartbeat_at = heartbeat_at
        self.connections = connections
        self.memory = memory
        #: JSON text: cache id to open connections
        self.cache_connections = cache_connections
        #: restoring, warming, serving or draining
        self.state = state
        #: JSON text: warm-up progress and items restored, taken over, handed off
        self.progress = progress
        #: JSON text: whom this node suspects, and the suspicions of itself
        #: it dropped its items for (see L{Suspicions})
        self.suspicions = suspicions

    def asDict(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def connectionsByCache(self):
        """
        @return: L{dict} of cache id (L{int}) to open connections.
        """
        try:
            return {int(k): int(v) for k, v in json.loads(self.cache_connections).items()}
        except (ValueError, TypeError, AttributeError):
            return {}


class Suspicions:
    """
    A heartbeat row's C{suspicions}: C{{"v": 1, "suspects": {name:
    [started_at, since]}, "dropped": {name: since}}}.

    @ivar suspects: the nodes this node suspects: name to (the suspected
        run's C{started_at}, the suspecting node's wall-clock time of the
        suspicion).
    @ivar dropped: for each node suspecting this one, the time of its
        suspicion (as it wrote it) this node has dropped its items for.
    @ivar acknowledges: whether the node acknowledges suspicions at all
        (a node from before revision 0009 writes nothing here, and is
        then trusted as before: its suspicion ends after the timeout).
    """

    __slots__ = ("suspects", "dropped", "acknowledges")

    def __init__(self, suspects=None, dropped=None, acknowledges=True):
        self.suspects = {} if suspects is None else suspects
        self.dropped = {} if dropped is None else dropped
        self.acknowledges = acknowledges

    def toJSON(self):
        return json.dumps({
            "v": 1,
            "suspects": {n: [s, t] for n, (s, t) in self.suspects.items()},
            "dropped": self.dropped,
        }, sort_keys=True)

    @classmethod
    def fromJSON(cls, text):
        """
        @return: a L{Suspicions}; one that does not acknowledge when
            C{text} is empty or unreadable.
        """
        try:
            value = json.loads(text or "{}")
            if not isinstance(value, dict) or "v" not in value:
                return cls(acknowledges=False)
            suspects = {
                str(n): (float(s), float(t)) for n, (s, t) in value.get("suspects", {}).items()
            }
            dropped = {str(n): float(t) for n, t in value.get("dropped", {}).items()}
        except (ValueError, TypeError, AttributeError):
            return cls(acknowledges=False)
        return cls(suspects, dropped)


def _notify(conn, channel, payload=""):
    if conn.engine.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


def _bumpVersion(conn, cluster):
    updated = conn.execute(
        schema.cluster_versions.update()
        .where(schema.cluster_versions.c.cluster == cluster)
        .values(version=schema.cluster_versions.c.version + 1)
    ).rowcount
    if not updated:
        try:
            with conn.begin_nested():
                conn.execute(schema.cluster_versions.insert().values(cluster=cluster, version=1))
        except sa.exc.IntegrityError:
            _bumpVersion(conn, cluster)


def listNodes(engine):
    """
    Every node row and every cluster version.  Blocking.

    @return: a 2-tuple: L{list} of L{NodeRecord} (by name), L{dict} of
        cluster to version.
    """
    with engine.connect() as conn:
        rows = conn.execute(schema.nodes.select().order_by(schema.nodes.c.name)).all()
        versions = dict(conn.execute(sa.select(
            schema.cluster_versions.c.cluster, schema.cluster_versions.c.version
        )).all())
    return [NodeRecord(*row) for row in rows], versions


def seenOut(records, name, deadline, now):
    """
    Whether another node beat, and so read everyone, after this node's row
    went stale (C{deadline}: its last heartbeat plus the timeout) and before
    this node's beat of C{now}: only then did some node count it out and
    take its range.  When every node stalled together (the control plane
    was slow or down), none did, and what this node holds is still the
    newest.

    @param records: every L{NodeRecord}, as read after this node's beat.
    @param name: this node's name.
    """
    return any(r.name != name and deadline < r.heartbeat_at < now for r in records)


def heartbeat(engine, record, timeout):
    """
    Upsert a node's row; a node that was not in (no row, or a stale one,
    or another run) bumps its cluster's version and notifies.  Blocking.

    @type record: L{NodeRecord}
    @return: what L{listNodes} returns, after the write.
    """
    nodes = schema.nodes
    with engine.begin() as conn:
        old = conn.execute(
            sa.select(
                nodes.c.started_at, nodes.c.heartbeat_at, nodes.c.cluster, nodes.c.state,
                nodes.c.suspicions,
            )
            .where(nodes.c.name == record.name)
            # a drain requested meanwhile waits for this write, then sticks
            .with_for_update()
        ).first()
        values = record.asDict()
        if old is not None and old.state == DRAINING and old.started_at == record.started_at:
            # memcachier-admin node drain asked this run to drain
            values["state"] = DRAINING
        if old is None:
            try:
                with conn.begin_nested():
                    conn.execute(nodes.insert().values(**values))
            except sa.exc.IntegrityError:
                conn.execute(nodes.update().where(nodes.c.name == record.name).values(**values))
        else:
            conn.execute(nodes.update().where(nodes.c.name == record.name).values(**values))
        joined = (
            old is None
            or old.started_at != record.started_at
            or old.cluster != record.cluster
            or old.heartbeat_at < record.heartbeat_at - timeout
            # a drain takes it out of the servers; others act on it at once
            or old.state != values["state"]
        )
        if joined:
            _bumpVersion(conn, record.cluster)
            if old is not None and old.cluster != record.cluster:
                _bumpVersion(conn, old.cluster)
        if joined or old.suspicions != values["suspicions"]:
            # a suspicion (or its acknowledgement) takes effect everywhere
            # at once; it changes the rings, not the servers
            _notify(conn, NODES_CHANNEL, record.name)
    return listNodes(engine)


def noticed(engine, clusters):
    """
    This node saw the live set of C{clusters} change (a node timed out):
    bump their versions and tell the others.  Blocking.
    """
    with engine.begin() as conn:
        for cluster in sorted(clusters):
            _bumpVersion(conn, cluster)
        _notify(conn, NODES_CHANNEL, "")
    return listNodes(engine)


def requestDrain(engine, name):
    """
    Ask the node C{name} to drain (it reads its row at its next heartbeat
    or notification).  Blocking.

    @return: whether a row of that name was there.
    """
    with engine.begin() as conn:
        updated = conn.execute(
            schema.nodes.update().where(schema.nodes.c.name == name).values(state=DRAINING)
        ).rowcount
        row = conn.execute(
            sa.select(schema.nodes.c.cluster).where(schema.nodes.c.name == name)
        ).first()
        if row is not None:
            _bumpVersion(conn, row.cluster)
        _notify(conn, NODES_CHANNEL, name)
    return bool(updated)


def leave(engine, name):
    """
    Remove a node's row (clean shutdown) and tell the others.  Blocking.
    """
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(schema.nodes.c.cluster).where(schema.nodes.c.name == name)
        ).first()
        conn.execute(schema.nodes.delete().where(schema.nodes.c.name == name))
        if row is not None:
            _bumpVersion(conn, row.cluster)
        _notify(conn, NODES_CHANNEL, name)


def liveServers(records, cluster, configured, now, timeout, exclude=()):
    """
    The live servers of C{cluster}: the configured ones in their
    (C{MEMCACHIER_SERVERS}) order, then any other registered node of the
    cluster by name.

    @param records: L{NodeRecord}s.
    @param configured: the cluster's configured servers.
    @param exclude: names to leave out (suspected).
    @rtype: L{tuple} of L{str}

    A draining node is left out: its keys go to their next owners (which
    ask it for what they miss while it drains).
    """
    live = {
        r.name for r in records
        if r.cluster == cluster and r.heartbeat_at >= now - timeout and r.name not in exclude
        and r.state != DRAINING
    }
    ordered = [s for s in configured if s in live]
    ordered.extend(sorted(live.difference(configured)))
    return tuple(ordered)


class Membership(PeriodicService):
    """
    This node's heartbeat and its view of every cluster.

    @ivar name: this node's advertised C{host:port}.
    @ivar cluster: this node's cluster.
    @ivar records: the last L{NodeRecord}s read.
    @ivar versions: cluster to discovery version.
    """

    _log = Logger()

    def __init__(self, engine, pool, reactor, name, cluster, clusters, timeout,
                 usage=lambda: (0, 0, {}), wallClock=time.time, listen=True,
                 controlChanged=None, state=None, drainAsked=None):
        """
        @param pool: the L{ThreadPool} the SQL runs in.
        @param clusters: cluster name to configured servers.
        @param usage: returns this node's (connections, memory bytes,
            L{dict} of cache id to connections).
        @param wallClock: heartbeat times (shared between machines, so
            not the reactor's clock in tests).
        @param listen: whether to C{LISTEN} on PostgreSQL.
        @param controlChanged: called when another process announced a
            control-plane write (the index's C{refresh}), or L{None}.
        @param state: this node's L{memcachier.cluster.states.NodeState}
            (written in its row), or L{None} (always C{serving}).
        @param drainAsked: called once when this node's row says it was
            asked to drain (C{memcachier-admin node drain}), or L{None}.
        """
        PeriodicService.__init__(self, min(1.0, timeout / 4.0), self.beat, reactor, "heartbeat")
        self.engine = engine
        self.reactor = reactor
        self._threads = ThreadPoolRunner(reactor, pool)
        self.name = name
        self.cluster = cluster
        self.clusters = clusters
        self.timeout = timeout
        self.usage = usage
        self.wallClock = wallClock
        self.startedAt = wallClock()
        self.records = []
        self.versions = {}
        self._elsewhere = {}
        self._live = {}
        self._rings = {}
        self._suspects = {}
        self._listeners = []
        self._beating = False
        self._again = False
        self._listen = listen and engine.dialect.name == "postgresql"
        self._listener = None
        self.controlChanged = controlChanged
        self._leaving = False
        self._beatWaiters = []
        self._firstView = Deferred()
        self._prefixListeners = []
        self.state = state
        self.drainAsked = drainAsked
        self._reachable = {}
        self._rejoinListeners = []
        self._suspectedListeners = []
        #: nodes a live peer suspects (this one included): name to
        #: {suspecting node: time of its suspicion}
        self._suspectedBy = {}
        #: per node suspecting this one, the suspicion it dropped for
        self._dropped = {}
        #: suspicions ended but still in this node's row: out of its rings
        #: until a beat wrote the row without them
        self._lifting = set()
        #: wall-clock time of the last heartbeat written
        self._lastBeat = None
        if state is not None:
            state.addListener(self.beat)

    # -- views -----------------------------------------------------------------

    def servers(self, cluster):
        """
        The live servers of C{cluster} in a stable order (configured
        order first); the configured list before the first heartbeat.
        """
        live = self._live.get(cluster)
        if live is None:
            return tuple(self.clusters.get(cluster, ()))
        return live

    def ring(self, cluster):
        """
        The L{Ring} of C{cluster}'s live servers that no live node
        suspects (this node is out of its own ring while a peer suspects
        it: it forwards its keys where every other node sends them).
        """
        ring = self._rings.get(cluster)
        if ring is None:
            exclude = self._suspected()
            ring = Ring(s for s in self.servers(cluster) if s not in exclude)
            self._rings[cluster] = ring
        return ring

    def reachable(self, cluster):
        """
        The nodes of C{cluster} that still answer peers: the live ones and
        the draining ones, less the suspected.

        @rtype: L{frozenset} of C{host:port}
        """
        return self._reachable.get(cluster, frozenset()) - self._suspected()

    def version(self, cluster):
        return self.versions.get(cluster, 0)

    def connectionsElsewhere(self, cacheId):
        """
        The open connections of a cache on the other live nodes, as of
        their last heartbeats (plan connection limits count across nodes).
        """
        return self._elsewhere.get(cacheId, 0)

    def addListener(self, listener):
        """
        Call C{listener()} whenever a ring may have changed.
        """
        self._listeners.append(listener)

    def addRejoinListener(self, listener):
        """
        Call C{listener()} when this node's heartbeat had stopped for longer
        than the timeout (a partition, a stalled database) and it is in
        again: the others took its range meanwhile, so what it holds there
        may be older than what they were given.
        """
        self._rejoinListeners.append(listener)

    def addSuspectedListener(self, listener):
        """
        Call C{listener()} when a peer suspects this node (a suspicion it
        has not dropped for yet), before the acknowledgement is written:
        while it is suspected its range is the others', so what it holds
        may become older than what they are given.
        """
        self._suspectedListeners.append(listener)

    def suspected(self):
        """
        Whether a live peer suspects this node (it is then out of every
        ring, its own included).
        """
        return self.name in self._suspectedBy

    def addPrefixListener(self, listener):
        """
        Call C{listener()} whenever a watched prefix was created or
        deleted through any node.
        """
        self._prefixListeners.append(listener)

    def firstView(self):
        """
        A L{Deferred} firing once this node has read the membership for
        the first time (it then knows whom to forward to).
        """
        observer = Deferred()
        self._firstView.addBoth(lambda result: (observer.callback(None), result)[1])
        return observer

    def liveEverywhere(self):
        """
        Every live server of every cluster, configured or seen in a
        heartbeat: the peers worth keeping connections to.

        @rtype: L{set} of C{host:port}
        """
        live = set()
        for cluster in set(self.clusters) | {r.cluster for r in self.records}:
            live.update(self.servers(cluster))
        return live

    def _suspected(self):
        own = set() if self._leavingRings() else set(self._suspects) | self._lifting
        return own | set(self._suspectedBy)

    def _leavingRings(self):
        """
        Whether this node drains or stops.  Its own suspicions then stay
        its own: it is not written in its row (a drain's bulk hand-off
        times out on a loaded peer, which would then drop everything it
        holds), nor does it route around them (its clients' keys would go
        where the others do not send them); a request to a peer that
        fails falls back as a miss.
        """
        return self._leaving or (self.state is not None and self.state.state == DRAINING)

    def suspect(self, name):
        """
        A peer connection to C{name} failed: leave it out of this node's
        rings, and write the suspicion in this node's row at once (every
        node leaves it out of its rings; it drops what it holds).  It
        lasts until C{name} restarts or is out, or until a heartbeat
        timeout passed and C{name} acknowledged it.
        """
        if name == self.name or name in self._suspects:
            return
        record = next((r for r in self.records if r.name == name), None)
        now = self.wallClock()
        self._suspects[name] = (
            now + self.timeout, None if record is None else record.started_at, now
        )
        self._log.info("node {name} suspected down", event="suspected", name=name)
        self._changed()
        self.beat()

    def _expireSuspects(self, now):
        """
        End the suspicions of nodes that restarted, are out, or, once
        the timeout passed, dropped their items for it.

        @return: whether one ended.
        """
        records = {r.name: r for r in self.records}
        gone = []
        for name, (until, startedAt, since) in self._suspects.items():
            record = records.get(name)
            if record is None or record.started_at != startedAt:
                gone.append(name)
            elif record.heartbeat_at < now - self.timeout:
                # out: its return drops what it holds (seenOut)
                gone.append(name)
            elif now >= until:
                held = Suspicions.fromJSON(record.suspicions)
                if not held.acknowledges or held.dropped.get(self.name, -1.0) >= since:
                    gone.append(name)
        for name in gone:
            self._log.info("node {name} no longer suspected", event="unsuspected", name=name)
            del self._suspects[name]
            self._lifting.add(name)
        if gone:
            # in this node's rings again once its row says so
            self._again = True
        return bool(gone)

    def _suspicionsJSON(self):
        suspects = {} if self._leavingRings() else {
            n: (startedAt or 0.0, since) for n, (_, startedAt, since) in self._suspects.items()
        }
        return Suspicions(suspects, dict(self._dropped)).toJSON()

    def _readSuspicions(self, records, now):
        """
        Who the live nodes suspect (of a run still under way); drop what
        this node holds for a new suspicion of it, and acknowledge it in
        the next beat.

        @return: (whether the nodes suspected changed, whether this node
            is no longer suspected)
        """
        started = {r.name: r.started_at for r in records}
        suspectedBy = {}
        for r in records:
            if r.name == self.name or r.heartbeat_at < now - self.timeout:
                continue
            for name, (startedAt, since) in Suspicions.fromJSON(r.suspicions).suspects.items():
                if started.get(name) == startedAt:
                    suspectedBy.setdefault(name, {})[r.name] = since
        before = self._suspectedBy
        self._suspectedBy = suspectedBy
        mine = suspectedBy.get(self.name, {})
        if self._leavingRings():
            # out of the rings already and about to stop: what it holds is
            # for its snapshot and its keys' new owners (as an add, which
            # leaves newer values be), and a restart drops it if others
            # are live
            return set(before) != set(suspectedBy), False
        fresh = {p: t for p, t in mine.items() if self._dropped.get(p) != t}
        # acknowledgements of suspicions that ended are of no more use
        self._dropped = {p: t for p, t in self._dropped.items() if p in mine}
        if fresh:
            self._log.info(
                "suspected by {nodes}: this node is out of the rings and drops what it holds "
                "(the others are given its keys meanwhile)",
                event="suspected_here", nodes=", ".join(sorted(fresh)),
            )
            self._callEach(self._suspectedListeners)
            self._dropped.update(fresh)
            # the acknowledgement goes out with the next beat, at once
            self._again = True
        back = self.name in before and not mine
        return set(before) != set(suspectedBy), back

    def _changed(self):
        self._rings.clear()
        self._callEach(self._listeners)
        if not self._firstView.called:
            self._firstView.callback(None)

    def _callEach(self, listeners):
        for listener in list(listeners):
            try:
                listener()
            except Exception:
                self._log.failure("membership listener {listener!r} failed", listener=listener)

    # -- heartbeat ---------------------------------------------------------------

    def beat(self):
        """
        Heartbeat now and read everyone (one at a time; a call during one
        runs once more after it).

        @return: a L{Deferred} firing when done, or L{None} if one runs.
        """
        if self._leaving:
            # stopping: a beat now could land after the row was deleted
            return None
        if self._beating:
            self._again = True
            return None
        self._beating = True
        self._again = False
        connections, memory, byCache = self.usage()
        now = self.wallClock()
        state = self.state
        record = NodeRecord(
            self.name, self.cluster, self.startedAt, now, connections, memory,
            json.dumps({str(k): v for k, v in byCache.items() if v}, sort_keys=True),
            SERVING if state is None else state.state,
            "{}" if state is None else state.detailsJSON(),
            self._suspicionsJSON(),
        )
        d = self._threads.run(heartbeat, self.engine, record, self.timeout)
        d.addCallback(self._read, now, set(self._lifting))
        d.addErrback(lambda f: self._log.failure("heartbeat failed", f))
        d.addBoth(self._beaten)
        return d

    def _beaten(self, result):
        self._beating = False
        if self._again:
            self._again = False
            self.beat()
        if not self._beating:
            waiters, self._beatWaiters = self._beatWaiters, []
            for waiter in waiters:
                waiter.callback(None)
        return result

    def _beatOver(self):
        """
        A L{Deferred} firing once no heartbeat is under way.
        """
        if not self._beating:
            return succeed(None)
        waiter = Deferred()
        self._beatWaiters.append(waiter)
        return waiter

    def _read(self, result, now, lifted=frozenset()):
        """
        @param lifted: the suspicions that had ended when the beat's row
            was built: it no longer lists them, so they leave the rings.
        """
        records, versions = result
        self._lifting -= lifted
        self.records = records
        self.versions = versions
        last, self._lastBeat = self._lastBeat, now
        if last is not None and now - last > self.timeout:
            if seenOut(records, self.name, last + self.timeout, now):
                self._log.info(
                    "this node was out of its cluster (no heartbeat for {seconds:.1f}s): what it "
                    "holds may be older than what the others were given",
                    event="rejoined", seconds=now - last,
                )
                self._callEach(self._rejoinListeners)
            else:
                self._log.info(
                    "no heartbeat for {seconds:.1f}s, but no other node beat meanwhile (a slow "
                    "control plane, not this node): none saw it out, what it holds is kept",
                    event="heartbeat_gap", seconds=now - last,
                )
        live = {
            cluster: liveServers(records, cluster, self.clusters.get(cluster, ()), now, self.timeout)
            for cluster in set(self.clusters) | {r.cluster for r in records}
        }
        changed = sorted(
            c for c in live if self._live.get(c, ()) != live[c] and c in self._live
        )
        first = not self._live
        self._live = live
        elsewhere = {}
        for r in records:
            if r.name != self.name and r.heartbeat_at >= now - self.timeout:
                for cacheId, count in r.connectionsByCache().items():
                    elsewhere[cacheId] = elsewhere.get(cacheId, 0) + count
        self._elsewhere = elsewhere
        reachable = {}
        for r in records:
            if r.heartbeat_at >= now - self.timeout:
                reachable.setdefault(r.cluster, set()).add(r.name)
        self._reachable = {c: frozenset(names) for c, names in reachable.items()}
        if self.drainAsked is not None and self.state is not None and self.state.state != DRAINING:
            mine = next((r for r in records if r.name == self.name), None)
            if mine is not None and mine.state == DRAINING:
                drainAsked, self.drainAsked = self.drainAsked, None
                self._log.info("asked to drain", event="drain_asked")
                drainAsked()
        expired = self._expireSuspects(now)
        suspicions, back = self._readSuspicions(records, now)
        if changed:
            self._log.info(
                "cluster {clusters} changed: {servers}",
                clusters=", ".join(changed),
                servers="; ".join(",".join(live[c]) for c in changed),
            )
            self._threads.run(noticed, self.engine, changed).addCallback(self._versions).addErrback(
                lambda f: self._log.failure("could not record a membership change", f)
            )
        if changed or first or expired or suspicions or lifted:
            self._changed()
        if back:
            # in again: what it was sent while out may be older than what
            # the others hold; drop it and warm from them, as after a join
            self._log.info(
                "no longer suspected: back in the rings, dropping what it was sent meanwhile",
                event="unsuspected_here",
            )
            self._callEach(self._rejoinListeners)

    def _versions(self, result):
        self.versions = result[1]

    # -- service ---------------------------------------------------------------

    def startService(self):
        self._leaving = False
        super().startService()
        if self._listen:
            self._listener = _Listener(self.engine, self.reactor, self._notified)
            self._listener.start()

    def _notified(self, channel):
        if channel == CONTROL_CHANNEL:
            if self.controlChanged is not None:
                self.controlChanged()
        elif channel == PREFIXES_CHANNEL:
            self._callEach(self._prefixListeners)
        else:
            self.beat()

    def stopService(self):
        """
        Stop beating and listening, then, once the heartbeat under way (if
        any) is over, delete this node's row: the others see it leave at
        once.
        """
        self._leaving = True
        stopped = maybeDeferred(super().stopService)
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        # a beat a notification started runs outside the timer: wait for
        # it too, or its write could bring the deleted row back
        stopped.addCallback(lambda _: self._beatOver())
        stopped.addCallback(lambda _: self._threads.run(leave, self.engine, self.name))
        return stopped.addErrback(lambda f: self._log.failure("could not leave the cluster", f))


class _Listener:
    """
    A thread blocked in PostgreSQL's C{LISTEN} on L{NODES_CHANNEL},
    L{CONTROL_CHANNEL} and L{PREFIXES_CHANNEL}, calling C{notified(channel)} in the reactor thread
    for each notification.  It reconnects after errors.
    """

    _log = Logger()

    def __init__(self, engine, reactor, notified):
        self.url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.reactor = reactor
        self.notified = notified
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memcachier-listen", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopping.set()

    def _run(self):
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NODES_CHANNEL}")
                    conn.execute(f"LISTEN {CONTROL_CHANNEL}")
                    conn.execute(f"LISTEN {PREFIXES_CHANNEL}")
                    while not self._stopping.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            self.reactor.callFromThread(self.notified, notify.channel)
            except Exception as e:
                if self._stopping.is_set():
                    return
                self.reactor.callFromThread(
                    self._log.warn, "LISTEN connection failed ({error}); retrying", error=str(e)
                )
                self._stopping.wait(1.0)
