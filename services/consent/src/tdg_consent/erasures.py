"""Erasure requests: a subject asks to be erased from one dataset or from all. Recorded here,
published as an event; the ingest service deletes the rows and reports back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tdg_core import paging
from tdg_core.identifiers import parse_dataset_id

from tdg_consent import events, store, validation
from tdg_consent.changes import Changes
from tdg_consent.datasets import DatasetDirectory
from tdg_consent.model import Erasure, ErasureState

MAX_REASON = 2000


class Erasures:
    def __init__(self, changes: Changes, datasets: DatasetDirectory) -> None:
        self._changes = changes
        self._datasets = datasets

    async def request(
        self, subject_id: str, dataset_id: str, reason: str, source: str, actor: str
    ) -> Erasure:
        validation.validate_subject("subject_id", subject_id)
        validation.text("reason", reason, MAX_REASON)
        validation.validate_source("source", source)
        if dataset_id:
            parse_dataset_id(dataset_id, "dataset_id")
            await self._datasets.get(dataset_id)
        erasure = Erasure(
            id=f"era-{uuid.uuid4().hex}",
            subject_id=subject_id,
            dataset_id=dataset_id,
            reason=reason,
            source=source,
            state=ErasureState.RECEIVED,
            requested_by=actor,
            requested_at=datetime.now(UTC),
        )
        async with self._changes.write() as change:
            await store.insert_erasure(change.conn, erasure)
            await change.emit(events.erasure_requested(erasure))
        return erasure

    async def get(self, erasure_id: str) -> Erasure:
        async with self._changes.read() as conn:
            return await store.get_erasure(conn, erasure_id)

    async def list_page(
        self, subject_id: str, state: ErasureState | None, page_size: int, page_token: str
    ) -> tuple[list[Erasure], str]:
        size = paging.page_size(page_size)
        after = paging.decode_page_token(page_token, "ListErasures") if page_token else ""
        async with self._changes.read() as conn:
            return await store.list_erasures(conn, subject_id, state, size, after)
