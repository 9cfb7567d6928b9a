"""
Dashboard: a uuid for every cache (Heroku's resource id), server-side
dashboard sessions, and the used single-use login links.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import uuid

import sqlalchemy as sa
from alembic import op


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    # Added nullable, filled, then indexed unique.  No batch (table copy)
    # on SQLite: dropping the old caches table would cascade to every
    # table that references it (credentials, samples, alerts).
    op.add_column("caches", sa.Column("uuid", sa.String(64), nullable=True))
    caches = sa.table("caches", sa.column("id", sa.Integer), sa.column("uuid", sa.String))
    connection = op.get_bind()
    for (cacheId,) in connection.execute(sa.select(caches.c.id)).fetchall():
        connection.execute(
            caches.update().where(caches.c.id == cacheId).values(uuid=str(uuid.uuid4()))
        )
    op.create_index("ix_caches_uuid", "caches", ["uuid"], unique=True)

    op.create_table(
        "dashboard_sessions",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("cache_id", sa.Integer, nullable=True),
        sa.Column("sso_fingerprint", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("user", sa.String(256), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_dashboard_sessions"),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"],
            name="fk_dashboard_sessions_cache_id_caches", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_dashboard_sessions_cache_id", "dashboard_sessions", ["cache_id"])
    op.create_table(
        "dashboard_links_used",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("nonce", name="pk_dashboard_links_used"),
    )


def downgrade():
    op.drop_table("dashboard_links_used")
    op.drop_index("ix_dashboard_sessions_cache_id", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    op.drop_index("ix_caches_uuid", table_name="caches")
    op.drop_column("caches", "uuid")
