"""
Node states: each node's state (restoring, warming, serving, draining)
and its warm-up progress in its heartbeat row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="serving"))
        batch.add_column(sa.Column("progress", sa.Text, nullable=False, server_default="{}"))


def downgrade():
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("progress")
        batch.drop_column("state")
