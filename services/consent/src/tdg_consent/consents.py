"""Citizen consent per data subject and purpose (optionally per dataset), and the subject sets the
query service keeps in memory: everyone with active consent for (dataset, purpose) as Arrow, or
the changes since a revision of the consent log."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
from sqlalchemy.ext.asyncio import AsyncConnection
from tdg_core.db import transaction
from tdg_core.errors import FailedPrecondition, InvalidArgument
from tdg_core.identifiers import parse_dataset_id

from tdg_consent import events, store, validation
from tdg_consent.changes import Changes
from tdg_consent.datasets import DatasetDirectory
from tdg_consent.model import Consent, ConsentState
from tdg_consent.validation import MAX_SUBJECT

SNAPSHOT_SCHEMA = pa.schema([pa.field("subject_id", pa.string(), nullable=False)])
CHANGES_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.string(), nullable=False),
        pa.field("active", pa.bool_(), nullable=False),
    ]
)


# Each message stays well under gRPC's default 4 MiB receive limit, whatever the ids' length.
CHUNK_BYTES = 2 * 1024 * 1024


def _by_size(ids: list[str], budget: int) -> list[list[str]]:
    """`ids` cut into runs of at most about `budget` bytes."""
    parts: list[list[str]] = [[]]
    size = 0
    for subject in ids:
        if size >= budget:
            parts.append([])
            size = 0
        parts[-1].append(subject)
        size += len(subject) + 4  # the string and its offset
    return parts


@dataclass(frozen=True, slots=True)
class SubjectChunk:
    """One record batch of a subject set, as an Arrow IPC stream."""

    arrow_ipc: bytes
    revision: int
    snapshot: bool


def ipc_bytes(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


class Consents:
    def __init__(
        self,
        changes: Changes,
        datasets: DatasetDirectory,
        purposes: Sequence[str],
        batch_rows: int,
    ) -> None:
        self._changes = changes
        self._datasets = datasets
        self._purposes = list(purposes)
        self._batch_rows = batch_rows

    async def _check(self, subject_id: str, purpose: str, dataset_id: str, source: str) -> None:
        validation.validate_subject("subject_id", subject_id)
        validation.check_purpose("purpose", purpose, self._purposes)
        validation.validate_source("source", source)
        if dataset_id:
            parse_dataset_id(dataset_id, "dataset_id")
            await self._datasets.get(dataset_id)

    async def give(self, subject_id: str, purpose: str, dataset_id: str, source: str) -> Consent:
        await self._check(subject_id, purpose, dataset_id, source)
        return await self._record(subject_id, purpose, dataset_id, source, ConsentState.GIVEN)

    async def withdraw(
        self, subject_id: str, purpose: str, dataset_id: str, source: str
    ) -> Consent:
        await self._check(subject_id, purpose, dataset_id, source)
        return await self._record(subject_id, purpose, dataset_id, source, ConsentState.WITHDRAWN)

    async def _record(
        self, subject_id: str, purpose: str, dataset_id: str, source: str, state: ConsentState
    ) -> Consent:
        now = datetime.now(UTC)
        async with self._changes.write() as change:
            current = await store.find_consent(change.conn, subject_id, purpose, dataset_id)
            effective = current
            if current is None and dataset_id:
                # No record for this dataset: the all-datasets consent applies to it.
                effective = await store.find_consent(change.conn, subject_id, purpose, "")
            if state is ConsentState.WITHDRAWN and (
                effective is None or effective.state is ConsentState.WITHDRAWN
            ):
                scope = f"dataset '{dataset_id}'" if dataset_id else "every dataset"
                raise FailedPrecondition(
                    f"subject '{subject_id}' has no consent to withdraw for purpose '{purpose}' "
                    f"on {scope}"
                )
            given_at = (
                now if state is ConsentState.GIVEN else (current.given_at if current else None)
            )
            consent = Consent(
                receipt_id=f"rcpt-{uuid.uuid4().hex}",
                subject_id=subject_id,
                purpose=purpose,
                dataset_id=dataset_id,
                state=state,
                source=source,
                given_at=given_at,
                withdrawn_at=now if state is ConsentState.WITHDRAWN else None,
                revision=await store.bump(change.conn, store.CONSENT),
            )
            await store.record_consent(change.conn, consent, now)
            await change.emit(events.consent_changed(consent))
        return consent

    async def of_subject(self, subject_id: str) -> list[Consent]:
        validation.validate_subject("subject_id", subject_id)
        async with self._changes.read() as conn:
            return await store.subject_consents(conn, subject_id)

    async def subject_set(
        self, dataset_id: str, purpose: str, since_revision: int
    ) -> AsyncIterator[SubjectChunk]:
        """A snapshot (since_revision 0) or the changes after since_revision, in Arrow batches.
        Every chunk carries the revision the set is complete up to."""
        parse_dataset_id(dataset_id, "dataset_id")
        validation.check_purpose("purpose", purpose, self._purposes)
        if since_revision < 0:
            raise InvalidArgument("since_revision", "0 (everything) or a revision received before")
        await self._datasets.get(dataset_id)
        async with self._snapshot() as conn:
            revision = await store.current(conn, store.CONSENT)
            if since_revision > revision:
                raise InvalidArgument(
                    "since_revision", f"{since_revision} is ahead of the consent log ({revision})"
                )
            if since_revision:
                changes = await store.subject_changes(conn, dataset_id, purpose, since_revision)
                rows = max(1, min(self._batch_rows, CHUNK_BYTES // (MAX_SUBJECT + 5)))
                for start in range(0, max(len(changes), 1), rows):
                    part = changes[start : start + rows]
                    subjects = pa.array([s for s, _ in part], pa.string())
                    active = pa.array([a for _, a in part], pa.bool_())
                    batch = pa.record_batch([subjects, active], schema=CHANGES_SCHEMA)
                    yield SubjectChunk(ipc_bytes(batch), revision, snapshot=False)
                return
            sent = False
            async for ids in store.stream_subject_set(conn, dataset_id, purpose, self._batch_rows):
                for run in _by_size(ids, CHUNK_BYTES):
                    batch = pa.record_batch([pa.array(run, pa.string())], schema=SNAPSHOT_SCHEMA)
                    yield SubjectChunk(ipc_bytes(batch), revision, snapshot=True)
                    sent = True
            if not sent:  # an empty set still tells its revision
                empty = pa.record_batch([pa.array([], pa.string())], schema=SNAPSHOT_SCHEMA)
                yield SubjectChunk(ipc_bytes(empty), revision, snapshot=True)

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[AsyncConnection]:
        """One consistent read: the revision and the set it describes come from the same
        snapshot (SQLite WAL read transactions are; PostgreSQL needs REPEATABLE READ)."""
        engine = self._changes.engine
        if engine.dialect.name == "postgresql":
            engine = engine.execution_options(isolation_level="REPEATABLE READ")
        async with transaction(engine, write=False, name="consent") as conn:
            yield conn
