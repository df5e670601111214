"""Persistence of the catalog: SQLAlchemy Core tables and queries (SQLite or PostgreSQL).

Every function takes the caller's connection, so a change and its outbox event share one
transaction. The schema is created by the Alembic migrations beside this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    and_,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from tdg_core.errors import AlreadyExists, NotFound
from tdg_core.outbox import outbox_table
from tdg_core.paging import encode_page_token

from tdg_catalog import search
from tdg_catalog.codec import metadata_from_dict, metadata_to_dict, schema_from_dict, schema_to_dict
from tdg_catalog.model import AccessLevel, Dataset, DraftScope, Schema, Status

metadata_obj = MetaData()

datasets = Table(
    "datasets",
    metadata_obj,
    Column("id", String(200), primary_key=True),
    Column("publisher", String(63), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("access_level", String(16), nullable=False, index=True),
    Column("metadata", JSON, nullable=False),
    Column("latest_schema_version", Integer, nullable=False),
    # The latest schema, denormalised so that lists and searches read one row per dataset.
    Column("latest_schema", JSON, nullable=False),
    # Normalised text over the searchable fields (see search.document_text), for the prefilter.
    Column("search_text", Text, nullable=False),
    # The normalised ranked fields (see search.search_fields): ranking reads only these.
    Column("search_fields", JSON, nullable=False),
    Column("deprecation_reason", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

dataset_themes = Table(
    "dataset_themes",
    metadata_obj,
    Column(
        "dataset_id", String(200), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("theme", String(16), primary_key=True, index=True),
)

schema_versions = Table(
    "schema_versions",
    metadata_obj,
    Column(
        "dataset_id", String(200), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("version", Integer, primary_key=True),
    Column("schema", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

outbox = outbox_table(metadata_obj)


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every time we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _dataset_of(row: Row[Any], schema: Schema | None = None) -> Dataset:
    return Dataset(
        id=row.id,
        publisher=row.publisher,
        metadata=metadata_from_dict(row.metadata),
        schema=schema
        or schema_from_dict(row.latest_schema, row.latest_schema_version, _utc(row.updated_at)),
        status=Status(row.status),
        latest_schema_version=row.latest_schema_version,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        deprecation_reason=row.deprecation_reason,
    )


async def insert_dataset(conn: AsyncConnection, d: Dataset) -> None:
    now = d.created_at or datetime.now(UTC)
    try:
        await conn.execute(
            insert(datasets).values(
                id=d.id,
                publisher=d.publisher,
                status=d.status.value,
                access_level=d.metadata.access_level.value,
                metadata=metadata_to_dict(d.metadata),
                latest_schema_version=d.latest_schema_version,
                latest_schema=schema_to_dict(d.schema),
                search_text=search.document_text(d),
                search_fields=search.search_fields(d),
                deprecation_reason="",
                created_at=now,
                updated_at=now,
            )
        )
    except IntegrityError as exc:
        raise AlreadyExists(f"dataset '{d.id}' already exists") from exc
    await _set_themes(conn, d.id, d.metadata.themes)
    await conn.execute(
        insert(schema_versions).values(
            dataset_id=d.id,
            version=d.latest_schema_version,
            schema=schema_to_dict(d.schema),
            created_at=now,
        )
    )


async def _set_themes(conn: AsyncConnection, dataset_id: str, themes: Sequence[str]) -> None:
    await conn.execute(delete(dataset_themes).where(dataset_themes.c.dataset_id == dataset_id))
    if themes:
        await conn.execute(
            insert(dataset_themes), [{"dataset_id": dataset_id, "theme": t} for t in set(themes)]
        )


async def get_dataset(
    conn: AsyncConnection, dataset_id: str, schema_version: int = 0, for_update: bool = False
) -> Dataset:
    query = select(datasets).where(datasets.c.id == dataset_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"dataset '{dataset_id}' not found")
    if schema_version in (0, row.latest_schema_version):
        return _dataset_of(row)
    version_row = (
        await conn.execute(
            select(schema_versions).where(
                schema_versions.c.dataset_id == dataset_id,
                schema_versions.c.version == schema_version,
            )
        )
    ).first()
    if version_row is None:
        raise NotFound(
            f"dataset '{dataset_id}' has no schema version {schema_version} "
            f"(latest is {row.latest_schema_version})"
        )
    schema = schema_from_dict(version_row.schema, schema_version, _utc(version_row.created_at))
    return _dataset_of(row, schema)


async def save_dataset(conn: AsyncConnection, d: Dataset) -> None:
    """Update a dataset's row after a metadata change, a status change or a new schema version."""
    await conn.execute(
        update(datasets)
        .where(datasets.c.id == d.id)
        .values(
            status=d.status.value,
            access_level=d.metadata.access_level.value,
            metadata=metadata_to_dict(d.metadata),
            latest_schema_version=d.latest_schema_version,
            latest_schema=schema_to_dict(d.schema),
            search_text=search.document_text(d),
            search_fields=search.search_fields(d),
            deprecation_reason=d.deprecation_reason,
            updated_at=d.updated_at or datetime.now(UTC),
        )
    )
    await _set_themes(conn, d.id, d.metadata.themes)


async def add_schema_version(conn: AsyncConnection, dataset_id: str, schema: Schema) -> None:
    try:
        await conn.execute(
            insert(schema_versions).values(
                dataset_id=dataset_id,
                version=schema.version,
                schema=schema_to_dict(schema),
                created_at=schema.created_at or datetime.now(UTC),
            )
        )
    except IntegrityError as exc:
        raise AlreadyExists(
            f"schema version {schema.version} of '{dataset_id}' was written concurrently"
        ) from exc


def _visible(scope: DraftScope) -> ColumnElement[bool]:
    """Published and deprecated datasets for everyone; drafts only within the draft scope."""
    if scope.all:
        return datasets.c.id.is_not(None)
    return or_(
        datasets.c.status != Status.DRAFT.value,
        datasets.c.publisher.in_(sorted(scope.publishers)),
    )


@dataclass(frozen=True, slots=True)
class ListFilter:
    publisher: str = ""
    theme: str = ""
    access_level: AccessLevel | None = None
    status: Status | None = None


async def list_datasets(
    conn: AsyncConnection, f: ListFilter, scope: DraftScope, page_size: int, after_id: str
) -> tuple[list[Dataset], str]:
    conditions: list[ColumnElement[bool]] = [_visible(scope)]
    if f.publisher:
        conditions.append(datasets.c.publisher == f.publisher)
    if f.access_level is not None:
        conditions.append(datasets.c.access_level == f.access_level.value)
    if f.status is not None:
        conditions.append(datasets.c.status == f.status.value)
    if f.theme:
        conditions.append(
            exists().where(
                and_(
                    dataset_themes.c.dataset_id == datasets.c.id, dataset_themes.c.theme == f.theme
                )
            )
        )
    if after_id:
        conditions.append(datasets.c.id > after_id)
    rows = (
        await conn.execute(
            select(datasets).where(*conditions).order_by(datasets.c.id).limit(page_size + 1)
        )
    ).all()
    page = [_dataset_of(r) for r in rows[:page_size]]
    next_token = encode_page_token(page[-1].id) if len(rows) > page_size else ""
    return page, next_token


async def search_candidates(
    conn: AsyncConnection, terms: Sequence[str], scope: DraftScope, limit: int
) -> list[tuple[str, list[str]]]:
    """(id, ranked fields) of the datasets whose search text contains every term: the prefilter
    before ranking; only the small search columns are read."""
    conditions = [_visible(scope)]
    for term in terms:
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(datasets.c.search_text.like(f"%{escaped}%", escape="\\"))
    query = (
        select(datasets.c.id, datasets.c.search_fields)
        .where(*conditions)
        .order_by(datasets.c.id)
        .limit(limit)
    )
    return [(r.id, r.search_fields) for r in (await conn.execute(query)).all()]


async def get_datasets(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Dataset]:
    rows = (await conn.execute(select(datasets).where(datasets.c.id.in_(list(ids))))).all()
    return {r.id: _dataset_of(r) for r in rows}


async def published_datasets(conn: AsyncConnection) -> list[Dataset]:
    rows = (
        await conn.execute(
            select(datasets)
            .where(datasets.c.status == Status.PUBLISHED.value)
            .order_by(datasets.c.id)
        )
    ).all()
    return [_dataset_of(r) for r in rows]
