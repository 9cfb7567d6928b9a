# -*- test-case-name: tests.unit.test_alerts_service -*-
"""
Alerts in the control plane: delivery configs, alerts, events, pending
deliveries and the evaluation lease.

L{AlertRepository} is synchronous (one short transaction per method, like
L{memcachier.control.repository.ControlPlane}); L{AsyncAlerts} runs the
same methods in the control plane's thread pool and returns Deferreds.
Rows come back as plain L{dict}s.
"""

import json

import sqlalchemy as sa

from memcachier.control import schema
# LimitReached (raised by checkLimit) is imported from here by the routes
from memcachier.control.repository import ControlPlaneError, LimitReached, checkLimit  # noqa: F401
from memcachier.tx.threads import ThreadPoolRunner

#: Events L{AlertRepository.events} returns at most.
EVENTS_LIMIT = 50

#: Events kept per alert; older ones (and their deliveries) are deleted
#: when a new one is recorded.
EVENTS_KEPT = 100


class UnknownAlert(ControlPlaneError):
    def __init__(self, cacheId, alertId):
        super().__init__(f"no alert {alertId} in cache {cacheId}")


class UnknownConfig(ControlPlaneError):
    def __init__(self, cacheId, configId):
        super().__init__(f"no alert delivery config {configId} in cache {cacheId}")


class ConfigInUse(ControlPlaneError):
    def __init__(self, configId, alertIds):
        ids = ", ".join(map(str, alertIds))
        super().__init__(
            f"alert delivery config {configId} is used by alert(s) {ids}; "
            "delete them or point them at another config first"
        )


class InvalidAlert(ControlPlaneError):
    """
    The alert refers to something it cannot (a config of another cache).
    """


def _config(row):
    return {
        "id": row.id,
        "cache_id": row.cache_id,
        "delivery_type": row.delivery_type,
        "email": row.email,
        "slack_url": row.slack_url,
        "slack_channel": row.slack_channel,
        "webhook_url": row.webhook_url,
        "webhook_secret": row.webhook_secret,
    }


def _alert(row):
    return {
        "id": row.id,
        "cache_id": row.cache_id,
        "trigger_type": row.trigger_type,
        "trigger_threshold": row.trigger_threshold,
        "delivery_config_id": row.delivery_config_id,
        "description": row.description,
        "enabled": bool(row.enabled),
        "firing": bool(row.firing),
        "state_since": row.state_since,
    }


_CONFIG_FIELDS = ("delivery_type", "email", "slack_url", "slack_channel", "webhook_url", "webhook_secret")
_ALERT_FIELDS = ("trigger_type", "trigger_threshold", "delivery_config_id", "description", "enabled")


class AlertRepository:
    """
    Synchronous access to the alert tables.
    """

    def __init__(self, engine, clock, maxAlerts=50, maxConfigs=20):
        """
        @param maxAlerts: alerts a cache may have (C{limits.alerts}).
        @param maxConfigs: delivery configs a cache may have
            (C{limits.alert_configs}).
        """
        self.engine = engine
        self._clock = clock
        self.maxAlerts = maxAlerts
        self.maxConfigs = maxConfigs

    # -- delivery configs

    def _configRow(self, conn, cacheId, configId):
        t = schema.alert_configs
        row = conn.execute(
            sa.select(t).where(t.c.id == configId, t.c.cache_id == cacheId)
        ).first()
        if row is None:
            raise UnknownConfig(cacheId, configId)
        return row

    def listConfigs(self, cacheId):
        t = schema.alert_configs
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.cache_id == cacheId).order_by(t.c.id))
            return [_config(r) for r in rows]

    def createConfig(self, cacheId, **fields):
        values = {k: fields.get(k, "") for k in _CONFIG_FIELDS}
        with self.engine.begin() as conn:
            checkLimit(
                conn, schema.alert_configs, cacheId, self.maxConfigs, "alert delivery configs",
                "alert_configs",
            )
            result = conn.execute(schema.alert_configs.insert().values(cache_id=cacheId, **values))
            return _config(self._configRow(conn, cacheId, result.inserted_primary_key[0]))

    def deleteConfig(self, cacheId, configId):
        with self.engine.begin() as conn:
            self._configRow(conn, cacheId, configId)
            users = [
                r[0] for r in conn.execute(
                    sa.select(schema.alerts.c.id)
                    .where(schema.alerts.c.delivery_config_id == configId)
                    .order_by(schema.alerts.c.id)
                )
            ]
            if users:
                raise ConfigInUse(configId, users)
            conn.execute(schema.alert_configs.delete().where(schema.alert_configs.c.id == configId))

    # -- alerts

    def _alertRow(self, conn, cacheId, alertId):
        t = schema.alerts
        row = conn.execute(sa.select(t).where(t.c.id == alertId, t.c.cache_id == cacheId)).first()
        if row is None:
            raise UnknownAlert(cacheId, alertId)
        return row

    def _checkConfig(self, conn, cacheId, configId):
        try:
            self._configRow(conn, cacheId, configId)
        except UnknownConfig as e:
            raise InvalidAlert(f"delivery_config_id: {e}") from None

    def listAlerts(self, cacheId):
        t = schema.alerts
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.cache_id == cacheId).order_by(t.c.id))
            return [_alert(r) for r in rows]

    def getAlert(self, cacheId, alertId):
        with self.engine.connect() as conn:
            return _alert(self._alertRow(conn, cacheId, alertId))

    def createAlert(self, cacheId, **fields):
        values = {k: fields[k] for k in _ALERT_FIELDS if k in fields}
        with self.engine.begin() as conn:
            checkLimit(conn, schema.alerts, cacheId, self.maxAlerts, "alerts", "alerts")
            self._checkConfig(conn, cacheId, values["delivery_config_id"])
            result = conn.execute(schema.alerts.insert().values(cache_id=cacheId, **values))
            return _alert(self._alertRow(conn, cacheId, result.inserted_primary_key[0]))

    def updateAlert(self, cacheId, alertId, **fields):
        """
        Change the fields given.  A changed trigger or threshold starts the
        alert's rule afresh (not firing).
        """
        values = {k: fields[k] for k in _ALERT_FIELDS if k in fields}
        with self.engine.begin() as conn:
            row = self._alertRow(conn, cacheId, alertId)
            if "delivery_config_id" in values:
                self._checkConfig(conn, cacheId, values["delivery_config_id"])
            if any(
                k in values and values[k] != getattr(row, k)
                for k in ("trigger_type", "trigger_threshold")
            ):
                values.update(firing=False, state_since=None)
            if values:
                conn.execute(
                    schema.alerts.update().where(schema.alerts.c.id == alertId).values(**values)
                )
            return _alert(self._alertRow(conn, cacheId, alertId))

    def deleteAlert(self, cacheId, alertId):
        with self.engine.begin() as conn:
            row = self._alertRow(conn, cacheId, alertId)
            conn.execute(schema.alerts.delete().where(schema.alerts.c.id == alertId))
            return _alert(row)

    # -- evaluation

    def evaluationSnapshot(self):
        """
        Every alert with its delivery config, for the evaluator.

        @return: a L{list} of (alert, config) L{dict} pairs.
        """
        a, c = schema.alerts, schema.alert_configs
        with self.engine.connect() as conn:
            configs = {r.id: _config(r) for r in conn.execute(sa.select(c))}
            return [
                (_alert(r), configs.get(r.delivery_config_id))
                for r in conn.execute(sa.select(a).order_by(a.c.id))
            ]

    def recordTransition(self, alertId, kind, now, value, threshold, triggerType, message,
                         destination):
        """
        In one transaction: the alert's new state, the event, and a pending
        delivery to C{destination} due at once.

        @param kind: C{"fired"} or C{"resolved"}.
        @param message: the L{AlertMessage} as JSON text.
        @param destination: the delivery config L{dict}.
        @return: the new delivery's id, or L{None} if the alert is gone.
        """
        with self.engine.begin() as conn:
            updated = conn.execute(
                schema.alerts.update()
                .where(schema.alerts.c.id == alertId)
                .values(firing=(kind == "fired"), state_since=now)
            )
            if not updated.rowcount:
                return None
            event = conn.execute(
                schema.alert_events.insert().values(
                    alert_id=alertId, kind=kind, time=now, value=value,
                    threshold=threshold, trigger_type=triggerType, message=message,
                )
            ).inserted_primary_key[0]
            delivery = conn.execute(
                schema.alert_deliveries.insert().values(
                    event_id=event, destination=json.dumps(destination), status="pending",
                    attempts=0, next_attempt=now,
                )
            ).inserted_primary_key[0]
            e = schema.alert_events
            old = [
                r[0] for r in conn.execute(
                    sa.select(e.c.id).where(e.c.alert_id == alertId)
                    .order_by(e.c.id.desc()).offset(EVENTS_KEPT)
                )
            ]
            if old:
                conn.execute(e.delete().where(e.c.id.in_(old)))
            return delivery

    def pendingDeliveries(self):
        """
        Every delivery not yet done or given up.

        @return: L{list} of L{dict}: C{id}, C{destination} (dict),
            C{message} (JSON text), C{attempts}, C{next_attempt}.
        """
        d, e = schema.alert_deliveries, schema.alert_events
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(d.c.id, d.c.destination, d.c.attempts, d.c.next_attempt, e.c.message)
                .join(e, e.c.id == d.c.event_id)
                .where(d.c.status == "pending")
                .order_by(d.c.id)
            )
            return [
                {"id": r.id, "destination": json.loads(r.destination), "message": r.message,
                 "attempts": r.attempts, "next_attempt": r.next_attempt}
                for r in rows
            ]

    def deliveryDone(self, deliveryId, now, attempts):
        with self.engine.begin() as conn:
            conn.execute(
                schema.alert_deliveries.update()
                .where(schema.alert_deliveries.c.id == deliveryId)
                .values(status="delivered", attempts=attempts, delivered_at=now,
                        next_attempt=None)
            )

    def deliveryFailed(self, deliveryId, attempts, error, nextAttempt):
        """
        Record a failed attempt: still pending until C{nextAttempt}, or
        C{failed} for good if that is L{None}.
        """
        with self.engine.begin() as conn:
            conn.execute(
                schema.alert_deliveries.update()
                .where(schema.alert_deliveries.c.id == deliveryId)
                .values(
                    status="pending" if nextAttempt is not None else "failed",
                    attempts=attempts, last_error=error[:1024], next_attempt=nextAttempt,
                )
            )

    def events(self, cacheId, alertId=None, limit=EVENTS_LIMIT):
        """
        The last firings and resolutions, newest first, each with its
        deliveries' outcomes.

        @param alertId: one alert's (which must be of C{cacheId}), or all
            of the cache's.
        """
        a, e, d = schema.alerts, schema.alert_events, schema.alert_deliveries
        with self.engine.connect() as conn:
            if alertId is not None:
                self._alertRow(conn, cacheId, alertId)
            query = (
                sa.select(e).join(a, a.c.id == e.c.alert_id).where(a.c.cache_id == cacheId)
            )
            if alertId is not None:
                query = query.where(e.c.alert_id == alertId)
            rows = list(conn.execute(query.order_by(e.c.time.desc(), e.c.id.desc()).limit(limit)))
            deliveries = {}
            if rows:
                for r in conn.execute(
                    sa.select(d).where(d.c.event_id.in_([r.id for r in rows])).order_by(d.c.id)
                ):
                    deliveries.setdefault(r.event_id, []).append(r)
            return [
                {
                    "id": r.id,
                    "alert_id": r.alert_id,
                    "kind": r.kind,
                    "time": r.time,
                    "trigger_type": r.trigger_type,
                    "value": r.value,
                    "threshold": r.threshold,
                    "deliveries": [_delivery(x) for x in deliveries.get(r.id, [])],
                }
                for r in rows
            ]

    # -- the lease

    def acquireLease(self, holder, now, ttl):
        """
        Take or renew the evaluation lease: the row's holder is C{holder}
        until C{now + ttl}.  It is taken only if free, expired or already
        ours; the conditional update makes two nodes racing for it agree.

        @return: whether C{holder} holds it now.
        """
        t = schema.alert_lease
        with self.engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.id == schema.LEASE_ROW, sa.or_(t.c.holder == holder, t.c.expires < now))
                .values(holder=holder, expires=now + ttl)
            )
            if result.rowcount:
                return True
            exists = conn.execute(sa.select(t.c.id).where(t.c.id == schema.LEASE_ROW)).first()
        if exists is not None:
            return False
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values(id=schema.LEASE_ROW, holder=holder, expires=now + ttl))
            return True
        except sa.exc.IntegrityError:
            return False

    def releaseLease(self, holder):
        t = schema.alert_lease
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.id == schema.LEASE_ROW, t.c.holder == holder))

    def leaseHolder(self):
        t = schema.alert_lease
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == schema.LEASE_ROW)).first()
            return None if row is None else {"holder": row.holder, "expires": row.expires}


def _delivery(row):
    destination = json.loads(row.destination)
    return {
        "id": row.id,
        "delivery_config_id": destination.get("id"),
        "delivery_type": destination.get("delivery_type"),
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "delivered_at": row.delivered_at,
        "next_attempt": row.next_attempt,
    }


class AsyncAlerts:
    """
    L{AlertRepository}'s methods in the control plane's thread pool, each
    returning a L{Deferred}.
    """

    _METHODS = (
        "listConfigs", "createConfig", "deleteConfig", "listAlerts", "getAlert",
        "createAlert", "updateAlert", "deleteAlert", "evaluationSnapshot",
        "recordTransition", "pendingDeliveries", "deliveryDone", "deliveryFailed",
        "events", "acquireLease", "releaseLease", "leaseHolder",
    )

    def __init__(self, repository, threadpool, reactor):
        self.repository = repository
        self._threads = ThreadPoolRunner(reactor, threadpool)

    def __getattr__(self, name):
        if name not in self._METHODS:
            raise AttributeError(name)
        method = getattr(self.repository, name)
        return lambda *args, **kwargs: self._threads.run(method, *args, **kwargs)
