"""The catalog's use cases: each validates, changes the store and records its event in one
transaction, then wakes the outbox relay. No gRPC here: the servicer translates."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tdg_core import paging, topics
from tdg_core.db import transaction
from tdg_core.errors import FailedPrecondition, InvalidArgument, NotFound
from tdg_core.outbox import Outbox

from tdg_catalog import compatibility, lifecycle, search, store, validation
from tdg_catalog.dcat import export_dcat
from tdg_catalog.events import event_for
from tdg_catalog.model import METADATA_FIELDS, Dataset, DraftScope, Metadata, Schema

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_SEARCH_LIMIT = 100
DEFAULT_SEARCH_LIMIT = 20


class Catalog:
    def __init__(self, engine: AsyncEngine, outbox: Outbox, search_candidates: int) -> None:
        self._engine = engine
        self._outbox = outbox
        self._search_candidates = search_candidates

    # --- changes -------------------------------------------------------------------------

    async def register(self, dataset_id: str, metadata: Metadata, schema: Schema) -> Dataset:
        publisher = validation.validate_new_dataset(dataset_id, metadata, schema)
        now = datetime.now(UTC)
        dataset = Dataset(
            id=dataset_id,
            publisher=publisher,
            metadata=metadata,
            schema=dataclasses.replace(schema, version=1, created_at=now),
            latest_schema_version=1,
            created_at=now,
            updated_at=now,
        )
        async with self._write() as conn:
            await store.insert_dataset(conn, dataset)
            await self._emit(conn, event_for("registered", dataset))
        return dataset

    async def update_metadata(
        self, dataset_id: str, metadata: Metadata, fields: Sequence[str]
    ) -> Dataset:
        unknown = [f for f in fields if f not in METADATA_FIELDS]
        if unknown:
            raise InvalidArgument(
                "update_mask", f"unknown metadata fields {unknown}; known: {list(METADATA_FIELDS)}"
            )
        changed = list(fields) or list(METADATA_FIELDS)
        async with self._write() as conn:
            current = await store.get_dataset(conn, dataset_id, for_update=True)
            merged = dataclasses.replace(
                current.metadata, **{f: getattr(metadata, f) for f in changed}
            )
            validation.validate_metadata(merged)
            # Access level and schema constrain each other (personal needs a subject column).
            validation.validate_schema(current.schema, merged.access_level)
            updated = dataclasses.replace(current, metadata=merged, updated_at=datetime.now(UTC))
            await store.save_dataset(conn, updated)
            await self._emit(conn, event_for("metadata", updated, changed_fields=changed))
        return updated

    async def evolve_schema(
        self, dataset_id: str, schema: Schema, expected_version: int
    ) -> Dataset:
        if expected_version < 0:
            raise InvalidArgument("expected_version", "must be 0 (any) or a version number")
        async with self._write() as conn:
            current = await store.get_dataset(conn, dataset_id, for_update=True)
            lifecycle.ensure_evolvable(current.status)
            if expected_version and expected_version != current.latest_schema_version:
                raise FailedPrecondition(
                    f"schema of '{dataset_id}' is at version {current.latest_schema_version}, "
                    f"not {expected_version}"
                )
            validation.validate_schema(schema, current.metadata.access_level)
            problems = compatibility.incompatibilities(current.schema, schema)
            if problems:
                raise FailedPrecondition(
                    f"schema change of '{dataset_id}' is not backward-compatible", problems
                )
            now = datetime.now(UTC)
            version = current.latest_schema_version + 1
            new_schema = dataclasses.replace(schema, version=version, created_at=now)
            updated = dataclasses.replace(
                current, schema=new_schema, latest_schema_version=version, updated_at=now
            )
            await store.add_schema_version(conn, dataset_id, new_schema)
            await store.save_dataset(conn, updated)
            await self._emit(
                conn, event_for("schema", updated, previous_version=current.latest_schema_version)
            )
        return updated

    async def publish(self, dataset_id: str) -> Dataset:
        async with self._write() as conn:
            current = await store.get_dataset(conn, dataset_id, for_update=True)
            updated = dataclasses.replace(
                current, status=lifecycle.publish(current.status), updated_at=datetime.now(UTC)
            )
            await store.save_dataset(conn, updated)
            await self._emit(conn, event_for("published", updated))
        return updated

    async def deprecate(self, dataset_id: str, reason: str) -> Dataset:
        if len(reason) > 2000:
            raise InvalidArgument("reason", "at most 2000 characters")
        async with self._write() as conn:
            current = await store.get_dataset(conn, dataset_id, for_update=True)
            updated = dataclasses.replace(
                current,
                status=lifecycle.deprecate(current.status),
                deprecation_reason=reason,
                updated_at=datetime.now(UTC),
            )
            await store.save_dataset(conn, updated)
            await self._emit(conn, event_for("deprecated", updated))
        return updated

    # --- reads ---------------------------------------------------------------------------

    async def get(self, dataset_id: str, schema_version: int, scope: DraftScope) -> Dataset:
        if schema_version < 0:
            raise InvalidArgument("schema_version", "must be 0 (latest) or a version number")
        async with self._read() as conn:
            dataset = await store.get_dataset(conn, dataset_id, schema_version)
        if not scope.admits(dataset):
            # A draft of another publisher does not exist for this caller.
            raise NotFound(f"dataset '{dataset_id}' not found")
        return dataset

    async def list_datasets(
        self, f: store.ListFilter, scope: DraftScope, page_size: int, page_token: str
    ) -> tuple[list[Dataset], str]:
        size = paging.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = paging.decode_page_token(page_token, "ListDatasets") if page_token else ""
        async with self._read() as conn:
            return await store.list_datasets(conn, f, scope, size, after)

    async def search(
        self, query: str, limit: int, scope: DraftScope
    ) -> list[tuple[Dataset, float]]:
        if not 0 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_SEARCH_LIMIT}")
        if len(query) > 500:
            raise InvalidArgument("query", "at most 500 characters")
        terms = search.query_terms(query)
        if not terms:
            raise InvalidArgument("query", "needs at least one word to search for")
        async with self._read() as conn:
            candidates = await store.search_candidates(conn, terms, scope, self._search_candidates)
            scored = [(dataset_id, search.rank_fields(terms, f)) for dataset_id, f in candidates]
            best = sorted((h for h in scored if h[1] > 0), key=lambda h: (-h[1], h[0]))
            best = best[: limit or DEFAULT_SEARCH_LIMIT]
            found = await store.get_datasets(conn, [dataset_id for dataset_id, _ in best])
        return [(found[dataset_id], score) for dataset_id, score in best if dataset_id in found]

    async def export_dcat(self, base_uri: str) -> tuple[dict[str, Any], int]:
        async with self._read() as conn:
            published = await store.published_datasets(conn)
        return export_dcat(published, base_uri), len(published)

    # --- plumbing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with transaction(self._engine, write=True, name="catalog") as conn:
            yield conn
        # Committed: the relay sends the event now rather than at its next poll.
        self._outbox.notify()

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self._engine, write=False, name="catalog")

    async def _emit(self, conn: AsyncConnection, keyed_event: Any) -> None:
        key, event = keyed_event
        await self._outbox.add(conn, topics.CATALOG_EVENTS, key, event)
