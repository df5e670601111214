"""Where each topic follower (`tdg_consent.follower`) is in each partition: the next offset to
apply, written in the transaction that applies the record before it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tdg_consent.store._rows import locked, upsert
from tdg_consent.store._tables import consumed_offsets


async def consumed(conn: AsyncConnection, topic: str) -> dict[int, int]:
    """The next offset to read in each partition of `topic` (partitions never read are absent)."""
    c = consumed_offsets.c
    rows = await conn.execute(select(c.partition, c.next_offset).where(c.topic == topic))
    return {r.partition: r.next_offset for r in rows}


async def position(
    conn: AsyncConnection, topic: str, partition: int, for_update: bool = False
) -> int:
    """The next offset to apply in a partition (0 when never read); locked with `for_update`
    (PostgreSQL; SQLite's write transaction holds the database lock anyway)."""
    c = consumed_offsets.c
    query = select(c.next_offset).where(c.topic == topic, c.partition == partition)
    return int(await conn.scalar(locked(conn, query, for_update)) or 0)


async def mark_consumed(conn: AsyncConnection, topic: str, partition: int, offset: int) -> None:
    await upsert(
        conn,
        consumed_offsets,
        {"topic": topic, "partition": partition},
        {"next_offset": offset + 1},
    )
