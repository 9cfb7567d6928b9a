"""
Alerts: delivery configs, alerts (with their rule state), events,
deliveries (pending ones survive a restart) and the evaluation lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "alert_configs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cache_id", sa.Integer, nullable=False),
        sa.Column("delivery_type", sa.String(16), nullable=False),
        sa.Column("email", sa.String(254), nullable=False, server_default=""),
        sa.Column("slack_url", sa.String(2048), nullable=False, server_default=""),
        sa.Column("slack_channel", sa.String(128), nullable=False, server_default=""),
        sa.Column("webhook_url", sa.String(2048), nullable=False, server_default=""),
        sa.Column("webhook_secret", sa.String(128), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_alert_configs"),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"],
            name="fk_alert_configs_cache_id_caches", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_alert_configs_cache_id", "alert_configs", ["cache_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cache_id", sa.Integer, nullable=False),
        sa.Column("trigger_type", sa.String(32), nullable=False),
        sa.Column("trigger_threshold", sa.Float, nullable=False),
        sa.Column("delivery_config_id", sa.Integer, nullable=False),
        sa.Column("description", sa.String(1024), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("firing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("state_since", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"],
            name="fk_alerts_cache_id_caches", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_config_id"], ["alert_configs.id"],
            name="fk_alerts_delivery_config_id_alert_configs",
        ),
    )
    op.create_index("ix_alerts_cache_id", "alerts", ["cache_id"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("trigger_type", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"],
            name="fk_alert_events_alert_id_alerts", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_alert_events_alert", "alert_events", ["alert_id", "time"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Integer, nullable=False),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt", sa.Float, nullable=True),
        sa.Column("last_error", sa.String(1024), nullable=False, server_default=""),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["alert_events.id"],
            name="fk_alert_deliveries_event_id_alert_events", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_alert_deliveries_event_id", "alert_deliveries", ["event_id"])
    op.create_index(
        "ix_alert_deliveries_status", "alert_deliveries", ["status", "next_attempt"]
    )
    op.create_table(
        "alert_lease",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_lease"),
    )


def downgrade():
    op.drop_table("alert_lease")
    op.drop_index("ix_alert_deliveries_status", table_name="alert_deliveries")
    op.drop_index("ix_alert_deliveries_event_id", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alert_events_alert", table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_index("ix_alerts_cache_id", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_alert_configs_cache_id", table_name="alert_configs")
    op.drop_table("alert_configs")
