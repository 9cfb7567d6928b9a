# -*- test-case-name: tests.unit.test_alerts_delivery -*-
"""
What an alert says, the same to every destination: the cache, the
trigger, the measured value, the threshold, the time and a link to the
cache's dashboard page.  The formats are documented in docs/alerts.md.
"""

import json

import attr

from memcachier.alerts.rules import BELOW_TRIGGERS, FIRED, UNITS
from memcachier.analytics.series import formatTime


def formatNumber(value):
    """
    C{12.5}, C{50} (no C{.0}), at most two decimals; a small value keeps
    two significant digits (C{0.0012}), so it never reads as 0.
    """
    value = float(value)
    if 0 < abs(value) < 0.01:
        return f"{value:.2g}"
    rounded = round(value, 2)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:g}"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class AlertMessage:
    """
    One firing or resolution of one alert.

    @ivar kind: L{memcachier.alerts.rules.FIRED} or C{RESOLVED}.
    @ivar time: clock seconds of the evaluation that decided it.
    @ivar dashboardUrl: the cache's dashboard page (C{[web] public_url}
        + C{/caches/<id>/}).
    """

    kind: str
    alertId: int
    cacheId: int
    cacheName: str
    triggerType: str
    description: str
    value: float
    threshold: float
    time: float
    dashboardUrl: str

    def _figure(self, value):
        return formatNumber(value) + UNITS.get(self.triggerType, "")

    def condition(self):
        """
        C{hit_rate below 50%}.
        """
        side = "below" if self.triggerType in BELOW_TRIGGERS else "above"
        return f"{self.triggerType} {side} {self._figure(self.threshold)}"

    def subject(self):
        """
        The email subject, also the first line everywhere else.
        """
        if self.kind == FIRED:
            return (
                f"[memcachier] ALERT cache {self.cacheName}: {self.condition()} "
                f"(measured {self._figure(self.value)})"
            )
        return (
            f"[memcachier] RESOLVED cache {self.cacheName}: {self.triggerType} back at "
            f"{self._figure(self.value)} (threshold {self._figure(self.threshold)})"
        )

    def text(self):
        """
        The plain-text body.
        """
        what = "fired" if self.kind == FIRED else "resolved"
        lines = [
            f"Alert {self.alertId} on cache {self.cacheName} (id {self.cacheId}) {what}.",
            "",
            f"Trigger:   {self.condition()}",
            f"Measured:  {self._figure(self.value)}",
            f"Threshold: {self._figure(self.threshold)}",
            f"Time:      {formatTime(self.time)}",
        ]
        if self.description:
            lines.append(f"Note:      {self.description}")
        lines += ["", f"Dashboard: {self.dashboardUrl}", ""]
        return "\n".join(lines)

    def webhookJSON(self):
        """
        The webhook body (documented in docs/alerts.md).
        """
        return {
            "event": self.kind,
            "alert_id": self.alertId,
            "cache_id": self.cacheId,
            "cache_name": self.cacheName,
            "trigger_type": self.triggerType,
            "description": self.description,
            "value": self.value,
            "threshold": self.threshold,
            "time": formatTime(self.time),
            "dashboard_url": self.dashboardUrl,
            "summary": self.subject(),
        }

    def slackJSON(self, channel=""):
        """
        A Slack incoming-webhook payload (C{text}, and C{channel} if set).
        """
        payload = {"text": f"*{self.subject()}*\n{self.text()}"}
        if channel:
            payload["channel"] = channel
        return payload

    def toJSON(self):
        """
        For the events table: L{fromJSON} makes it back.
        """
        return json.dumps(attr.asdict(self))

    @classmethod
    def fromJSON(cls, text):
        return cls(**json.loads(text))
