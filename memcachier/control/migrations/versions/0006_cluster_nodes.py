"""
Cluster membership: the nodes' heartbeats and each cluster's discovery
version.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("cluster", sa.String(128), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("connections", sa.Integer, nullable=False, server_default="0"),
        sa.Column("memory", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cache_connections", sa.Text, nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint("name", name="pk_nodes"),
    )
    op.create_table(
        "cluster_versions",
        sa.Column("cluster", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("cluster", name="pk_cluster_versions"),
    )


def downgrade():
    op.drop_table("cluster_versions")
    op.drop_table("nodes")
