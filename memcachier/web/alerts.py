# -*- test-case-name: tests.unit.test_alerts_web -*-
"""
C{alerts/...} routes of the API v2, MemCachier's paths and JSON: alerts
(C{trigger_type}, C{trigger_threshold}, C{delivery_config_id},
C{description}, C{enabled}) and their delivery configs, plus the
documented addition C{alerts/<id>/events}.  Rows live in the control
plane (L{memcachier.alerts.repository}); the evaluating node reads them
there.
"""

import json
import math
import secrets

from memcachier.alerts.delivery import DestinationError, checkEmail, checkHookURL
from memcachier.alerts.repository import (
    ConfigInUse,
    InvalidAlert,
    LimitReached,
    UnknownAlert,
    UnknownConfig,
)
from memcachier.alerts.rules import PERCENT_TRIGGERS, TRIGGER_TYPES
from memcachier.analytics.series import formatTime
from memcachier.web.common import (
    MAX_ID,
    NOT_FOUND,
    ApiError,
    emptyResponse,
    jsonResponse,
    jsonType,
    readJSONObject,
    requireNoBody,
    route,
)
from memcachier.web.openapi import errors

DELIVERY_TYPES = ("email", "slack", "webhook")
MAX_DESCRIPTION = 1024
MAX_CHANNEL = 80

#: Members a delivery config's JSON has (the contract's, then webhook's).
CONFIG_FIELDS = ("delivery_type", "email", "slack_url", "slack_channel", "webhook_url", "webhook_secret")
ALERT_FIELDS = ("trigger_type", "trigger_threshold", "delivery_config_id", "description", "enabled")


def parseId(text, what):
    """
    @raise ApiError: 400 if the path segment is not a decimal number.
    """
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        raise ApiError(400, f"the {what} id must be a number, not {text!r}")
    return int(text)


def alertIdOf(request, text):
    """
    The C{<alertId>} segment of C{alerts/<alertId>}.  C{alerts/configs} is
    its own route (GET, POST); another method on it lands here and gets
    the 405 it would get anywhere else.

    @raise ApiError: 405 for C{configs}, 400 for anything not a number.
    """
    if text == "configs":
        method = request.method.decode("ascii", "replace")
        raise ApiError(405, f"method {method} not allowed here", {b"Allow": b"GET, POST"})
    return parseId(text, "alert")


def _number(value):
    """
    A threshold rendered as the contract shows it (C{50}, not C{50.0}).
    """
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def alertJSON(alert):
    return {
        "id": alert["id"],
        "trigger_type": alert["trigger_type"],
        "trigger_threshold": _number(alert["trigger_threshold"]),
        "delivery_config_id": alert["delivery_config_id"],
        "description": alert["description"],
        "enabled": alert["enabled"],
    }


def configJSON(config):
    return {"id": config["id"], **{k: config[k] for k in CONFIG_FIELDS}}


def eventJSON(event):
    return {
        "id": event["id"],
        "alert_id": event["alert_id"],
        "kind": event["kind"],
        "time": formatTime(event["time"]),
        "trigger_type": event["trigger_type"],
        "value": event["value"],
        "threshold": _number(event["threshold"]),
        "deliveries": [
            {
                "id": d["id"],
                "delivery_config_id": d["delivery_config_id"],
                "delivery_type": d["delivery_type"],
                "status": d["status"],
                "attempts": d["attempts"],
                "last_error": d["last_error"],
                "delivered_at": None if d["delivered_at"] is None else formatTime(d["delivered_at"]),
            }
            for d in event["deliveries"]
        ],
    }


def checkThreshold(triggerType, value):
    """
    @raise ApiError: 400 unless C{value} is a number, 0-100 for the
        percentage triggers and at least 0 for the others.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"trigger_threshold: expected a number, got {jsonType(value)}")
    if triggerType in PERCENT_TRIGGERS and not 0 <= value <= 100:
        raise ApiError(
            400, f"trigger_threshold: a {triggerType} threshold is a percentage from 0 to 100, "
            f"got {value}"
        )
    if value < 0:
        raise ApiError(400, f"trigger_threshold: must be 0 or more, got {value}")
    return float(value)


def checkAlertFields(body, current=None):
    """
    Check an alert body (whole for C{POST}, partial for C{PUT} with the
    C{current} alert).

    @return: the fields to store.
    @raise ApiError: 400 naming the first mistake.
    """
    merged = dict(current or {})
    merged.update(body)
    if "trigger_type" not in merged:
        raise ApiError(400, f"trigger_type is required: one of {', '.join(TRIGGER_TYPES)}")
    trigger = merged["trigger_type"]
    if trigger not in TRIGGER_TYPES:
        raise ApiError(
            400, f"trigger_type: expected one of {', '.join(TRIGGER_TYPES)}, got {json.dumps(trigger)}"
        )
    if "trigger_threshold" not in merged:
        raise ApiError(400, "trigger_threshold is required")
    out = {"trigger_type": trigger}
    out["trigger_threshold"] = checkThreshold(trigger, merged["trigger_threshold"])
    if "delivery_config_id" not in merged or merged["delivery_config_id"] is None:
        raise ApiError(400, "delivery_config_id is required: the id of a delivery config of this cache")
    configId = merged["delivery_config_id"]
    if isinstance(configId, bool) or not isinstance(configId, int) or not 0 <= configId <= MAX_ID:
        raise ApiError(400, f"delivery_config_id: expected an id (an integer), got {jsonType(configId)}")
    out["delivery_config_id"] = configId
    description = merged.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ApiError(400, f"description: expected a string of at most {MAX_DESCRIPTION} characters")
    out["description"] = description
    enabled = merged.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ApiError(400, f"enabled: expected true or false, got {jsonType(enabled)}")
    out["enabled"] = enabled
    if current is not None:
        out = {k: v for k, v in out.items() if k in body or k in ("trigger_type", "trigger_threshold")}
    return out


def checkConfigFields(body, allowHttpLoopback):
    """
    @return: the delivery config's fields to store.
    @raise ApiError: 400 naming the first mistake.
    """
    for name, value in body.items():
        if not isinstance(value, str):
            raise ApiError(400, f"{name}: expected a string, got {jsonType(value)}")
    kind = body.get("delivery_type")
    if kind is None:
        raise ApiError(400, f"delivery_type is required: one of {', '.join(DELIVERY_TYPES)}")
    if kind not in DELIVERY_TYPES:
        raise ApiError(
            400, f"delivery_type: expected one of {', '.join(DELIVERY_TYPES)}, got {json.dumps(kind)}"
        )
    own = {
        "email": ("email",),
        "slack": ("slack_url", "slack_channel"),
        "webhook": ("webhook_url", "webhook_secret"),
    }[kind]
    for name in CONFIG_FIELDS[1:]:
        if name not in own and body.get(name):
            raise ApiError(400, f"{name} does not apply to a {kind} delivery config")
    out = {"delivery_type": kind}
    try:
        if kind == "email":
            checkEmail(body.get("email", ""))
            out["email"] = body["email"]
        elif kind == "slack":
            checkHookURL(body.get("slack_url", ""), allowHttpLoopback, "slack_url")
            out["slack_url"] = body["slack_url"]
            channel = body.get("slack_channel", "")
            if len(channel) > MAX_CHANNEL or any(c.isspace() for c in channel):
                raise ApiError(
                    400, f"slack_channel: expected a channel such as #alerts "
                    f"(no spaces, at most {MAX_CHANNEL} characters)"
                )
            out["slack_channel"] = channel
        else:
            checkHookURL(body.get("webhook_url", ""), allowHttpLoopback, "webhook_url")
            out["webhook_url"] = body["webhook_url"]
            secret = body.get("webhook_secret", "") or secrets.token_hex(32)
            if len(secret) > 128:
                raise ApiError(400, "webhook_secret: at most 128 characters")
            out["webhook_secret"] = secret
    except DestinationError as e:
        raise ApiError(400, str(e)) from None
    return out


def _refusal(failure):
    """
    The repository's refusals as API errors.
    """
    failure.trap(UnknownAlert, UnknownConfig, ConfigInUse, InvalidAlert, LimitReached)
    if failure.check(UnknownAlert, UnknownConfig):
        raise ApiError(404, str(failure.value))
    if failure.check(LimitReached):
        raise ApiError(409, str(failure.value))
    raise ApiError(400, str(failure.value))


class AlertsAPI:
    """
    The C{alerts} route group.
    """

    def __init__(self, auth, store, allowHttpLoopback=False):
        """
        @param auth: the API's L{memcachier.web.common.CacheAuth}.
        @param store: an L{memcachier.alerts.repository.AsyncAlerts}.
        @param allowHttpLoopback: C{[alerts] allow_http_loopback}.
        """
        self.auth = auth
        self.store = store
        self.allowHttpLoopback = allowHttpLoopback

    def _caller(self, request, cacheId):
        return self.auth.authorize(request, cacheId, unknownCache=NOT_FOUND)

    # -- alerts

    @route("/alerts", ["GET"])
    async def listAlerts(self, request, cacheId):
        caller = self._caller(request, cacheId)
        alerts = await self.store.listAlerts(caller.cacheId)
        return jsonResponse(request, [alertJSON(a) for a in alerts])

    @route("/alerts", ["POST"])
    async def createAlert(self, request, cacheId):
        caller = self._caller(request, cacheId)
        fields = checkAlertFields(readJSONObject(request, ALERT_FIELDS))
        alert = await self.store.createAlert(caller.cacheId, **fields).addErrback(_refusal)
        return jsonResponse(request, alertJSON(alert), 201)

    @route("/alerts/<alertId>", ["GET"])
    async def getAlert(self, request, cacheId, alertId):
        caller = self._caller(request, cacheId)
        alertId = alertIdOf(request, alertId)
        alert = await self.store.getAlert(caller.cacheId, alertId).addErrback(_refusal)
        return jsonResponse(request, alertJSON(alert))

    @route("/alerts/<alertId>", ["PUT"])
    async def updateAlert(self, request, cacheId, alertId):
        caller = self._caller(request, cacheId)
        alertId = alertIdOf(request, alertId)
        body = readJSONObject(request, ("id",) + ALERT_FIELDS)
        if "id" in body and body.pop("id") != alertId:
            raise ApiError(400, f"id: the body's id must be the path's ({alertId}) or left out")
        current = await self.store.getAlert(caller.cacheId, alertId).addErrback(_refusal)
        fields = checkAlertFields(body, current)
        alert = await self.store.updateAlert(caller.cacheId, alertId, **fields).addErrback(_refusal)
        return jsonResponse(request, alertJSON(alert), 201)

    @route("/alerts/<alertId>", ["DELETE"])
    async def deleteAlert(self, request, cacheId, alertId):
        caller = self._caller(request, cacheId)
        alertId = alertIdOf(request, alertId)
        requireNoBody(request)
        alert = await self.store.deleteAlert(caller.cacheId, alertId).addErrback(_refusal)
        return jsonResponse(request, alertJSON(alert), 201)

    @route("/alerts/<alertId>/events", ["GET"])
    async def alertEvents(self, request, cacheId, alertId):
        caller = self._caller(request, cacheId)
        alertId = parseId(alertId, "alert")
        events = await self.store.events(caller.cacheId, alertId).addErrback(_refusal)
        return jsonResponse(request, [eventJSON(e) for e in events])

    # -- delivery configs

    @route("/alerts/configs", ["GET"])
    async def listConfigs(self, request, cacheId):
        caller = self._caller(request, cacheId)
        configs = await self.store.listConfigs(caller.cacheId)
        return jsonResponse(request, [configJSON(c) for c in configs])

    @route("/alerts/configs", ["POST"])
    async def createConfig(self, request, cacheId):
        caller = self._caller(request, cacheId)
        fields = checkConfigFields(readJSONObject(request, CONFIG_FIELDS), self.allowHttpLoopback)
        config = await self.store.createConfig(caller.cacheId, **fields).addErrback(_refusal)
        return jsonResponse(request, configJSON(config), 201)

    @route("/alerts/configs", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
    def configsOtherMethods(self, request, cacheId):
        """
        Only a 405 with C{Allow: GET, POST}: without this, werkzeug would
        advertise the methods of C{alerts/<alertId>} too, whose pattern
        also matches C{alerts/configs}.  Not in the document (it serves
        nothing).
        """
        return alertIdOf(request, "configs")

    @route("/alerts/configs/<configId>", ["DELETE"])
    async def deleteConfig(self, request, cacheId, configId):
        caller = self._caller(request, cacheId)
        configId = parseId(configId, "alert delivery config")
        requireNoBody(request)
        await self.store.deleteConfig(caller.cacheId, configId).addErrback(_refusal)
        return emptyResponse(request, 204)

    # -- the document

    def openapiPaths(self):
        return openapiPaths()


def _schemaRef(name):
    return {"$ref": f"#/components/schemas/{name}"}


ALERT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": list(("id",) + ALERT_FIELDS),
    "properties": {
        "id": {"type": "integer"},
        "trigger_type": {"type": "string", "enum": list(TRIGGER_TYPES)},
        "trigger_threshold": {"type": "number"},
        "delivery_config_id": {"type": "integer"},
        "description": {"type": "string"},
        "enabled": {"type": "boolean"},
    },
}

CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", *CONFIG_FIELDS],
    "properties": {
        "id": {"type": "integer"},
        "delivery_type": {"type": "string", "enum": list(DELIVERY_TYPES)},
        "email": {"type": "string"},
        "slack_url": {"type": "string"},
        "slack_channel": {"type": "string"},
        "webhook_url": {"type": "string"},
        "webhook_secret": {"type": "string"},
    },
}

EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "alert_id", "kind", "time", "trigger_type", "value", "threshold",
                 "deliveries"],
    "properties": {
        "id": {"type": "integer"},
        "alert_id": {"type": "integer"},
        "kind": {"type": "string", "enum": ["fired", "resolved"]},
        "time": {"type": "string", "format": "date-time"},
        "trigger_type": {"type": "string"},
        "value": {"type": "number"},
        "threshold": {"type": "number"},
        "deliveries": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "delivery_type", "status", "attempts", "last_error"],
                "properties": {
                    "id": {"type": "integer"},
                    "delivery_config_id": {"type": "integer", "nullable": True},
                    "delivery_type": {"type": "string", "nullable": True},
                    "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    "attempts": {"type": "integer"},
                    "last_error": {"type": "string"},
                    "delivered_at": {"type": "string", "format": "date-time", "nullable": True},
                },
            },
        },
    },
}

_REFUSALS = (
    "400 also when the body is valid JSON of the right shape but refers to "
    "something unusable: a delivery_config_id that is not a config of this cache, "
    "a percentage trigger (hit_rate, memory_usage, connections, held_back) with a threshold "
    "above 100, an https-only URL given as http, or a malformed email address. "
    "409 when creating one past the node's limits.alerts (50) or limits.alert_configs (20) "
    "per cache."
)


def _alertBody(partial):
    properties = {
        "trigger_type": {"type": "string", "enum": list(TRIGGER_TYPES),
                         "description": "hit_rate and memory_usage are MemCachier's; "
                         "evictions, connections, latency, auth_errors and held_back are additions "
                         "(docs/alerts.md)."},
        "trigger_threshold": {"type": "number", "minimum": 0,
                              "description": "A percentage 0-100 for hit_rate, memory_usage, "
                              "connections and held_back; per minute (evictions, auth_errors) or "
                              "milliseconds (latency) otherwise."},
        "delivery_config_id": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "enabled": {"type": "boolean"},
    }
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if partial:
        properties["id"] = {"type": "integer", "description": "If given, the path's id."}
    else:
        schema["required"] = ["trigger_type", "trigger_threshold", "delivery_config_id"]
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_CONFIG_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object",
        "additionalProperties": False,
        "required": ["delivery_type"],
        "properties": {
            "delivery_type": {"type": "string", "enum": list(DELIVERY_TYPES)},
            "email": {"type": "string", "description": "For email: the address to send to."},
            "slack_url": {"type": "string", "description": "For slack: the incoming-webhook "
                          "URL (https)."},
            "slack_channel": {"type": "string", "maxLength": MAX_CHANNEL},
            "webhook_url": {"type": "string", "description": "For webhook: the https URL "
                            "to POST to."},
            "webhook_secret": {"type": "string", "maxLength": 128, "description": "For "
                               "webhook: the HMAC key (generated if left out)."},
        },
    }}},
}


def _id(name, what):
    return {
        "name": name, "in": "path", "required": True,
        "description": f"The {what}'s id; not a number: 400.",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    }


def _ok(description, schema, code="200"):
    return {code: {"description": description, "content": {"application/json": {"schema": schema}}}}


def openapiPaths():
    """
    The alerts paths, relative to C{/api/v2/caches/{cacheId}}.
    """
    auth = (400, 401, 403, 404)
    alertId = _id("alertId", "alert")
    configId = _id("configId", "alert delivery config")
    alert = ALERT_SCHEMA
    return {
        "/alerts": {
            "get": {"summary": "The cache's alerts.",
                    "responses": {**_ok("An array of alert objects.",
                                        {"type": "array", "items": alert}), **errors(*auth)}},
            "post": {"summary": "Create an alert.", "description": _REFUSALS,
                     "requestBody": _alertBody(False),
                     "responses": {**_ok("The new alert.", alert, "201"),
                                   **errors(*auth, 409, 413)}},
        },
        "/alerts/{alertId}": {
            "parameters": [alertId],
            "get": {"summary": "One alert.",
                    "responses": {**_ok("An alert object.", alert), **errors(*auth)}},
            "put": {"summary": "Update an alert; fields left out keep their value.",
                    "description": _REFUSALS, "requestBody": _alertBody(True),
                    "responses": {**_ok("The updated alert.", alert, "201"),
                                  **errors(*auth, 413)}},
            "delete": {"summary": "Delete an alert (and its events).",
                       "responses": {**_ok("The deleted alert.", alert, "201"),
                                     **errors(*auth, 413)}},
        },
        "/alerts/{alertId}/events": {
            "parameters": [alertId],
            "get": {"summary": "The alert's last 50 firings and resolutions, newest first, "
                    "with each delivery's outcome (an addition to MemCachier's API).",
                    "responses": {**_ok("An array of events.", {"type": "array",
                                                                "items": EVENT_SCHEMA}),
                                  **errors(*auth)}},
        },
        "/alerts/configs": {
            "get": {"summary": "The cache's alert delivery configs.",
                    "responses": {**_ok("An array of delivery configs.",
                                        {"type": "array", "items": CONFIG_SCHEMA}),
                                  **errors(*auth)}},
            "post": {"summary": "Create an alert delivery config.",
                     "description": _REFUSALS, "requestBody": _CONFIG_BODY,
                     "responses": {**_ok("The new delivery config.", CONFIG_SCHEMA, "201"),
                                   **errors(*auth, 409, 413)}},
        },
        "/alerts/configs/{configId}": {
            "parameters": [configId],
            "delete": {"summary": "Delete an alert delivery config; 400 while an alert "
                       "uses it.",
                       "responses": {"204": {"description": "Deleted."},
                                     **errors(*auth, 413)}},
        },
    }
