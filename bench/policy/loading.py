"""The bulk inserts into the consent service's SQLite databases before it starts (not measured):
its own schema first, then the registry, or the consents of the exported subject set."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from tdg_consent import store
from tdg_consent.server import MIGRATIONS
from tdg_core.db import create_engine, upgrade_to_head

from .registry import Registry, dataset_row, registry_revision
from .scenario import EXPORT_DATASET, SURVEY_COLUMNS
from .subjects import SubjectSet, build_subjects


async def migrate(db: Path) -> None:
    """The service's own schema (its Alembic migrations), as it would create it."""
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await upgrade_to_head(engine, MIGRATIONS)
    finally:
        await engine.dispose()


def bulk_load(db: Path, load: Callable[[sa.Connection], None]) -> None:
    """One transaction on a plain synchronous connection, without fsync (a throw-away file)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-262144")
            conn.commit()
            with conn.begin():
                load(conn)
    finally:
        engine.dispose()


def set_counter(conn: sa.Connection, name: str, value: int) -> None:
    c = store.counters.c
    conn.execute(sa.update(store.counters).where(c.name == name).values(value=value))


def load_registry(conn: sa.Connection, registry: Registry) -> None:
    conn.execute(sa.insert(store.parties), registry.parties)
    conn.execute(sa.insert(store.datasets), registry.datasets)
    conn.execute(sa.insert(store.agreements), registry.agreements)
    set_counter(conn, store.REGISTRY, registry_revision(registry))


def load_subjects(conn: sa.Connection, subjects: SubjectSet) -> None:
    now = datetime.now(UTC)
    survey = dataset_row(EXPORT_DATASET, "personal", SURVEY_COLUMNS, "respondent_id", now)
    conn.execute(sa.insert(store.datasets), [survey])
    # A million rows: the statement compiled from the service's tables, the values already in
    # their stored form, straight to the driver's executemany (SQLAlchemy's per-row processing
    # would double the loading time).
    dialect = sqlite_dialect.dialect()
    for table, rows in ((store.consents, subjects.consents), (store.consent_log, subjects.log)):
        statement = str(sa.insert(table).compile(dialect=dialect))
        for start in range(0, len(rows), 100_000):
            conn.exec_driver_sql(statement, rows[start : start + 100_000])
    set_counter(conn, store.CONSENT, subjects.revision)


def prepare_export_db(db: Path, n: int, rng: random.Random) -> tuple[int, int]:
    """Builds and loads the consents; (subjects expected in the set, last consent revision)."""
    subjects = build_subjects(n, rng)
    bulk_load(db, lambda conn: load_subjects(conn, subjects))
    return subjects.expected, subjects.revision
