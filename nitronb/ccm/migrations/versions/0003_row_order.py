"""An explicit write order for records and runtime configurations (``seq``), which lists use
after ``created_at``, indexed; on SQLite it starts from the rows' ``rowid`` (the order used
before).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ORDERED = ("users", "datasets", "apps", "builds", "tasks", "app_configs", "workflows",
           "final_workflows", "approval_requests", "runtime_configs")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in ORDERED:
        op.add_column(table, sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"))
        if sqlite:
            op.execute(f"UPDATE {table} SET seq = rowid")
        op.create_index(f"{table}_by_seq", table, ["seq"])  # the next seq is max + 1
