"""
Provisioning: Heroku resources (uuid, oauth tokens) and the config var
pushes that follow credential promotion.

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "heroku_resources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(64), nullable=False),
        sa.Column("cache_id", sa.Integer, nullable=True),
        sa.Column("app_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("region", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("deleted_at", sa.Float, nullable=True),
        sa.Column("grant_code", sa.String(512), nullable=True),
        sa.Column("grant_expires_at", sa.Float, nullable=True),
        sa.Column("access_token", sa.String(512), nullable=True),
        sa.Column("refresh_token", sa.String(512), nullable=True),
        sa.Column("token_expires_at", sa.Float, nullable=True),
        sa.Column("token_error", sa.String(1024), nullable=True),
        sa.Column("token_claimed_until", sa.Float, nullable=True),
        sa.Column("config_username", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_heroku_resources"),
        sa.UniqueConstraint("uuid", name="uq_heroku_resources_uuid"),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"],
            name="fk_heroku_resources_cache_id_caches", ondelete="SET NULL",
        ),
    )
    op.create_index("ix_heroku_resources_cache_id", "heroku_resources", ["cache_id"])
    op.create_table(
        "heroku_config_pushes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("resource_id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.String(1024), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_heroku_config_pushes"),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["heroku_resources.id"],
            name="fk_heroku_config_pushes_resource_id_heroku_resources", ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_heroku_config_pushes_resource_id", "heroku_config_pushes", ["resource_id"]
    )


def downgrade():
    op.drop_table("heroku_config_pushes")
    op.drop_table("heroku_resources")
