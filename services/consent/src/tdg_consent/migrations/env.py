"""Alembic environment: runs on the connection handed over by tdg_core.db.upgrade_to_head."""

from tdg_core.db import run_migrations_in_env

run_migrations_in_env()
