"""The datasets as the consent service knows them: followed from the catalog's events (publisher,
status, access level, columns), for deciding access requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tdg_consent.model import DatasetColumn, DatasetRef
from tdg_consent.store._rows import upsert
from tdg_consent.store._tables import datasets


def _dataset_of(r: Row[Any]) -> DatasetRef:
    return DatasetRef(
        id=r.id,
        publisher=r.publisher,
        status=r.status,
        access_level=r.access_level,
        columns=tuple(DatasetColumn(**c) for c in r.columns),
        subject_column=r.subject_column,
    )


async def find_dataset(conn: AsyncConnection, dataset_id: str) -> DatasetRef | None:
    row = (await conn.execute(select(datasets).where(datasets.c.id == dataset_id))).first()
    return _dataset_of(row) if row else None


async def upsert_dataset(conn: AsyncConnection, d: DatasetRef) -> None:
    values = {
        "publisher": d.publisher,
        "status": d.status,
        "access_level": d.access_level,
        "columns": [
            {"name": c.name, "type": c.type, "sensitivity": c.sensitivity} for c in d.columns
        ],
        "subject_column": d.subject_column,
        "updated_at": datetime.now(UTC),
    }
    await upsert(conn, datasets, {"id": d.id}, values)


async def update_dataset_fields(conn: AsyncConnection, dataset_id: str, **values: Any) -> None:
    await conn.execute(
        update(datasets)
        .where(datasets.c.id == dataset_id)
        .values(updated_at=datetime.now(UTC), **values)
    )
