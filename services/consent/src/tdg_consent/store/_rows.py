"""What every aggregate's queries share: UTC times read back from SQLite, a portable upsert and
a row lock where the database has one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, Table, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

Query = TypeVar("Query", bound=Select[Any])


def utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every time we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None


async def upsert(
    conn: AsyncConnection, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    """Update the row with `key`, or insert it (portable across SQLite and PostgreSQL)."""
    where = [table.c[name] == value for name, value in key.items()]
    result = await conn.execute(update(table).where(*where).values(**values))
    if result.rowcount == 0:
        await conn.execute(insert(table).values(**key, **values))


def locked(conn: AsyncConnection, query: Query, for_update: bool) -> Query:
    """`query` locking the rows it reads when `for_update` (PostgreSQL; SQLite's write
    transaction holds the database lock anyway)."""
    if for_update and conn.dialect.name == "postgresql":
        return query.with_for_update()
    return query
