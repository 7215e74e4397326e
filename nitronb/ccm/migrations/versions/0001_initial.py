"""The first schema: one table per record kind, tokens, sealed secrets, runtime configurations,
nonces, the audit log, meta (SQLite's ``user_version`` 1).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RECORD_TABLES = ("users", "datasets", "apps", "builds", "tasks", "app_configs", "workflows",
                 "final_workflows", "approval_requests")


def upgrade() -> None:
    for table in RECORD_TABLES:
        op.create_table(table, sa.Column("id", sa.Text, primary_key=True),
                        sa.Column("owner", sa.Text, nullable=False), sa.Column("name", sa.Text),
                        sa.Column("created_at", sa.Text, nullable=False),
                        sa.Column("body", sa.Text, nullable=False))
    op.create_table("tokens", sa.Column("token_hash", sa.Text, primary_key=True),
                    sa.Column("user_id", sa.Text, nullable=False))
    op.create_table("dataset_secrets", sa.Column("dataset_id", sa.Text, primary_key=True),
                    sa.Column("sealed", sa.LargeBinary, nullable=False))
    op.create_table("runtime_configs", sa.Column("id", sa.Text, primary_key=True),
                    sa.Column("workflow_id", sa.Text, nullable=False),
                    sa.Column("app_config_id", sa.Text, nullable=False),
                    sa.Column("config", sa.Text, nullable=False),
                    sa.Column("extra", sa.Text, nullable=False),
                    sa.Column("created_at", sa.Text, nullable=False))
    op.create_table("nonces", sa.Column("nonce", sa.Text, primary_key=True),
                    sa.Column("expires_at", sa.Double, nullable=False),
                    sa.Column("used_at", sa.Double))
    op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                    *(sa.Column(name, sa.Text, nullable=False) for name in
                      ("at", "actor", "action", "object_type", "object_id", "details",
                       "prev_hash", "hash")))
    op.create_table("meta", sa.Column("key", sa.Text, primary_key=True),
                    sa.Column("value", sa.Text, nullable=False))
