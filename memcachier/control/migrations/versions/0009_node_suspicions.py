"""
Node suspicions: the peers each node suspects (a peer connection to them
failed) and the suspicions of itself it has dropped its items for, in its
heartbeat row, so that a suspicion holds on every node and ends only once
the suspected node holds nothing older than what the others were given.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("suspicions", sa.Text, nullable=False, server_default="{}"))


def downgrade():
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("suspicions")
