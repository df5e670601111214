"""The two revision counters: `registry` (parties and agreements: the OPA bundle's revision) and
`consent` (the consent log).

Each is a row incremented inside the writing transaction, so the row lock orders commits: a
reader that saw revision N has seen every change up to N (a sequence would let N+1 commit before
N).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tdg_consent.store._tables import counters

REGISTRY = "registry"
CONSENT = "consent"


async def bump(conn: AsyncConnection, name: str) -> int:
    """The next value of a counter, taken inside the caller's transaction (see module doc)."""
    c = counters.c
    value = await conn.scalar(
        update(counters).where(c.name == name).values(value=c.value + 1).returning(c.value)
    )
    if value is None:
        raise RuntimeError(f"counter {name!r} missing: migrations not applied")
    return int(value)


async def current(conn: AsyncConnection, name: str) -> int:
    return int(await conn.scalar(select(counters.c.value).where(counters.c.name == name)) or 0)
