"""Runs the migrations on the connection the store passes in (never a URL of its own)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():  # the store's transaction: a no-op here
    context.run_migrations()
