"""
Alerts: rules on a cache's figures (L{memcachier.alerts.rules}, pure and
clock-driven), the messages they send (L{memcachier.alerts.message}),
deliverers for email, Slack and webhooks (L{memcachier.alerts.delivery}),
their rows in the control plane (L{memcachier.alerts.repository}) and the
service that evaluates and delivers on one node (L{memcachier.alerts.service}).
See docs/alerts.md.
"""
