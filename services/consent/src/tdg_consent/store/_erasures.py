"""Erasure requests: a subject's data to erase, and the progress the ingest service reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from tdg_core.errors import NotFound
from tdg_core.paging import encode_page_token

from tdg_consent.codec import erasures_from_list, erasures_to_list
from tdg_consent.model import Erasure, ErasureState
from tdg_consent.store._rows import locked, utc, utc_or_none
from tdg_consent.store._tables import erasures


def _erasure_of(r: Row[Any]) -> Erasure:
    return Erasure(
        id=r.id,
        subject_id=r.subject_id,
        dataset_id=r.dataset_id,
        reason=r.reason,
        source=r.source,
        state=ErasureState(r.state),
        requested_by=r.requested_by,
        requested_at=utc(r.requested_at),
        completed_at=utc_or_none(r.completed_at),
        datasets=erasures_from_list(r.datasets),
        failure=r.failure,
    )


async def insert_erasure(conn: AsyncConnection, e: Erasure) -> None:
    await conn.execute(
        insert(erasures).values(
            id=e.id,
            subject_id=e.subject_id,
            dataset_id=e.dataset_id,
            reason=e.reason,
            source=e.source,
            state=e.state.value,
            requested_by=e.requested_by,
            requested_at=e.requested_at,
            completed_at=e.completed_at,
            datasets=erasures_to_list(e.datasets),
            failure=e.failure,
        )
    )


async def find_erasure(
    conn: AsyncConnection, erasure_id: str, for_update: bool = False
) -> Erasure | None:
    query = locked(conn, select(erasures).where(erasures.c.id == erasure_id), for_update)
    row = (await conn.execute(query)).first()
    return _erasure_of(row) if row else None


async def save_erasure_progress(conn: AsyncConnection, e: Erasure) -> None:
    """Store what the ingest service reported: state, datasets done, completion, failure."""
    await conn.execute(
        update(erasures)
        .where(erasures.c.id == e.id)
        .values(
            state=e.state.value,
            datasets=erasures_to_list(e.datasets),
            completed_at=e.completed_at,
            failure=e.failure,
        )
    )


async def get_erasure(conn: AsyncConnection, erasure_id: str) -> Erasure:
    erasure = await find_erasure(conn, erasure_id)
    if erasure is None:
        raise NotFound(f"erasure request '{erasure_id}' not found")
    return erasure


async def list_erasures(
    conn: AsyncConnection, subject_id: str, state: ErasureState | None, size: int, after: str
) -> tuple[list[Erasure], str]:
    c = erasures.c
    where: list[ColumnElement[bool]] = []
    if subject_id:
        where.append(c.subject_id == subject_id)
    if state is not None:
        where.append(c.state == state.value)
    if after:
        where.append(c.id > after)
    rows = (await conn.execute(select(erasures).where(*where).order_by(c.id).limit(size + 1))).all()
    page = [_erasure_of(r) for r in rows[:size]]
    return page, encode_page_token(page[-1].id) if len(rows) > size else ""
