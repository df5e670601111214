"""Database engines and Alembic migrations: SQLite under var/ by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tdg_core.errors import Unavailable

WRITE_OPTION = "tdg_write"
"""Execution option marking a transaction that will write (SQLite: BEGIN IMMEDIATE)."""


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool), for transactions that write."""
    return engine.execution_options(**{WRITE_OPTION: True})


_WRITE_LOCKS: dict[int, asyncio.Lock] = {}


def write_gate(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[object]:
    """Serialises this process's write transactions on SQLite (one writer at a time anyway) in
    FIFO order, instead of SQLite's busy-wait backoff; PostgreSQL needs no gate."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    return _WRITE_LOCKS.setdefault(id(engine.sync_engine.pool), asyncio.Lock())


@contextlib.asynccontextmanager
async def transaction(
    engine: AsyncEngine, *, write: bool, name: str
) -> AsyncIterator[AsyncConnection]:
    """One transaction: writers pass the write gate and take SQLite's lock up front; a database
    that cannot be reached becomes Unavailable (constraint violations stay for the store)."""
    async with write_gate(engine) if write else contextlib.nullcontext():
        try:
            async with (writer(engine) if write else engine).begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except (DBAPIError, OSError) as exc:
            raise Unavailable(f"{name} database unavailable: {exc.__class__.__name__}") from exc


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # We emit BEGIN ourselves (below): the driver's implicit transactions are unreliable.
            dbapi_conn.isolation_level = None
            # WAL lets readers run beside the writer; foreign keys are off by default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            # A writer takes the lock up front, so a read-then-write transaction waits for the
            # other writer instead of failing with SQLITE_BUSY after reading a stale row.
            immediate = conn.get_execution_options().get(WRITE_OPTION)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


async def upgrade_to_head(engine: AsyncEngine, migrations_dir: Path) -> None:
    """Run the service's Alembic migrations on the engine's connection (asyncio recipe)."""

    def run(connection: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(run)


def run_migrations_in_env() -> None:
    """The body of every service's Alembic `env.py`: run on the connection handed over by
    `upgrade_to_head` (services never open their own for migrations)."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through tdg_core.db.upgrade_to_head (the service does)")
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def database_up(engine: AsyncEngine) -> bool:
    """The health probe of a service's database."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return True


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"
