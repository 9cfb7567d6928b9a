"""
Caches, credentials and the control version.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

import sqlalchemy as sa
from alembic import op


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "caches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("label", sa.String(256), nullable=False, server_default=""),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("cluster", sa.String(128), nullable=False),
        sa.Column("sso_secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_active", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_caches"),
        sa.UniqueConstraint("name", name="uq_caches_name"),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cache_id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password", sa.String(128), nullable=False),
        sa.Column("write_capability", sa.Boolean, nullable=False),
        sa.Column("flush_capability", sa.Boolean, nullable=False),
        sa.Column("api_capability", sa.Boolean, nullable=False),
        sa.Column("primary", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        sa.UniqueConstraint("username", name="uq_credentials_username"),
        sa.ForeignKeyConstraint(
            ["cache_id"],
            ["caches.id"],
            name="fk_credentials_cache_id_caches",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_credentials_cache_id", "credentials", ["cache_id"])
    versionTable = op.create_table(
        "control_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_control_version"),
    )
    op.bulk_insert(versionTable, [{"id": 1, "version": 1}])


def downgrade():
    op.drop_table("control_version")
    op.drop_index("ix_credentials_cache_id", table_name="credentials")
    op.drop_table("credentials")
    op.drop_table("caches")
