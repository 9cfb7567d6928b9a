"""
Flush generations: each cache's last flush, which every node checks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "flush_generations",
        sa.Column("cache_id", sa.Integer, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("flush_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("cache_id", name="pk_flush_generations"),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"], ondelete="CASCADE",
            name="fk_flush_generations_cache_id_caches",
        ),
    )


def downgrade():
    op.drop_table("flush_generations")
