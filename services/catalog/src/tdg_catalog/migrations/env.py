"""Alembic environment: runs on the connection handed over by tdg_core.db.upgrade_to_head."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through tdg_core.db.upgrade_to_head (the service does)")

context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
