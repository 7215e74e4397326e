"""Nonces per client, for the limits on unauthenticated requests; refused provisions counted
(SQLite's ``user_version`` 2).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nonces", sa.Column("client", sa.Text, nullable=False, server_default=""))
    op.add_column("nonces", sa.Column("issued_at", sa.Double, nullable=False,
                                      server_default="0"))
    op.create_index("nonces_by_client", "nonces", ["client", "issued_at"])
    op.create_index("nonces_by_expiry", "nonces", ["expires_at"])
    op.create_table("provision_refusals", sa.Column("config_id", sa.Text, primary_key=True),
                    sa.Column("minute", sa.Text, primary_key=True),
                    sa.Column("count", sa.Integer, nullable=False),
                    sa.Column("last_reason", sa.Text, nullable=False))
