"""
Analytics: stat samples and rollups, latency samples, watched prefixes and
their samples.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "stat_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cache_id", sa.Integer, nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("resolution", sa.Integer, nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stat_samples"),
        sa.UniqueConstraint(
            "cache_id", "server", "resolution", "time", name="uq_stat_samples_bucket"
        ),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"],
            name="fk_stat_samples_cache_id_caches", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_stat_samples_query", "stat_samples", ["cache_id", "resolution", "time"])
    op.create_table(
        "latency_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("resolution", sa.Integer, nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False),
        sa.Column("total_ns", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_latency_samples"),
        sa.UniqueConstraint("server", "resolution", "time", name="uq_latency_samples_bucket"),
    )
    op.create_table(
        "prefixes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cache_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prefixes"),
        sa.UniqueConstraint("cache_id", "name", name="uq_prefixes_cache_id_name"),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"],
            name="fk_prefixes_cache_id_caches", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_prefixes_cache_id", "prefixes", ["cache_id"])
    op.create_table(
        "prefix_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prefix_id", sa.Integer, nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("resolution", sa.Integer, nullable=False),
        sa.Column("time", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prefix_samples"),
        sa.UniqueConstraint(
            "prefix_id", "server", "resolution", "time", name="uq_prefix_samples_bucket"
        ),
        sa.ForeignKeyConstraint(
            ["prefix_id"], ["prefixes.id"],
            name="fk_prefix_samples_prefix_id_prefixes", ondelete="CASCADE",
        ),
    )


def downgrade():
    op.drop_table("prefix_samples")
    op.drop_index("ix_prefixes_cache_id", table_name="prefixes")
    op.drop_table("prefixes")
    op.drop_table("latency_samples")
    op.drop_index("ix_stat_samples_query", table_name="stat_samples")
    op.drop_table("stat_samples")
