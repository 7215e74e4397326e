"""The manager's tables as SQLAlchemy Core objects (what the store's queries are built from).

The schema itself is made and upgraded by the migrations in :mod:`nitronb.ccm.migrations`; this
module only describes the current revision. Records keep their JSON text as written (``body``);
``seq`` orders rows created in the same second (every write of a record moves it last, as
SQLite's ``INSERT OR REPLACE`` did).
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Double, Integer, LargeBinary, MetaData, Table,
                        Text)

metadata = MetaData()

#: record kind -> table name
TABLES = {
    "user": "users", "dataset": "datasets", "app": "apps", "build": "builds", "task": "tasks",
    "app_config": "app_configs", "workflow": "workflows", "final_workflow": "final_workflows",
    "approval_request": "approval_requests",
}

records = {
    kind: Table(name, metadata,
                Column("id", Text, primary_key=True), Column("owner", Text, nullable=False),
                Column("name", Text), Column("created_at", Text, nullable=False),
                Column("body", Text, nullable=False),
                Column("seq", BigInteger, nullable=False, server_default="0", index=True))
    for kind, name in TABLES.items()
}

tokens = Table("tokens", metadata, Column("token_hash", Text, primary_key=True),
               Column("user_id", Text, nullable=False))

dataset_secrets = Table("dataset_secrets", metadata, Column("dataset_id", Text, primary_key=True),
                        Column("sealed", LargeBinary, nullable=False))

runtime_configs = Table(
    "runtime_configs", metadata, Column("id", Text, primary_key=True),
    Column("workflow_id", Text, nullable=False), Column("app_config_id", Text, nullable=False),
    Column("config", Text, nullable=False), Column("extra", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("seq", BigInteger, nullable=False, server_default="0", index=True))

nonces = Table("nonces", metadata, Column("nonce", Text, primary_key=True),
               Column("expires_at", Double, nullable=False), Column("used_at", Double),
               Column("client", Text, nullable=False, server_default=""),
               Column("issued_at", Double, nullable=False, server_default="0"))

audit = Table("audit", metadata, Column("id", Integer, primary_key=True, autoincrement=False),
              Column("at", Text, nullable=False), Column("actor", Text, nullable=False),
              Column("action", Text, nullable=False), Column("object_type", Text, nullable=False),
              Column("object_id", Text, nullable=False), Column("details", Text, nullable=False),
              Column("prev_hash", Text, nullable=False), Column("hash", Text, nullable=False))

meta = Table("meta", metadata, Column("key", Text, primary_key=True),
             Column("value", Text, nullable=False))

provision_refusals = Table(
    "provision_refusals", metadata, Column("config_id", Text, primary_key=True),
    Column("minute", Text, primary_key=True), Column("count", Integer, nullable=False),
    Column("last_reason", Text, nullable=False))
