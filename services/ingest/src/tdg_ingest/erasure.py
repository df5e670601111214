"""Erasure: a subject's rows deleted from the dataset tables, on the consent service's request.

Follows `ErasureRequested` on tdg.consent.events (consumer group `tdg-ingest-erasure`, so each
request is carried out by one replica), deletes the subject's rows from each dataset concerned
(one dataset, or every dataset with a subject column) with an Iceberg row-level delete, and
publishes on tdg.ingest.events one `ErasureApplied` per dataset (with the snapshot that deleted the
rows) and then `ErasureCompleted`. The consent service follows those to update the request.

The group's offset is committed only after the events are acknowledged: a replica dying half-way
carries the request out again, which deletes nothing more (the rows are gone) and re-announces it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer
from google.protobuf.timestamp_pb2 import Timestamp
from pyiceberg.exceptions import NoSuchTableError
from tdg.events.v1 import consent_events_pb2 as consent_ev
from tdg.events.v1 import ingest_events_pb2 as ingest_ev
from tdg_core import topics
from tdg_core.background import Background
from tdg_core.events import CloudEvent, EventProducer

from tdg_ingest.datasets import DatasetDirectory, DatasetEntry
from tdg_ingest.failures import log_failed_round
from tdg_ingest.locks import TableLocks
from tdg_ingest.settings import ERASURE_GROUP
from tdg_ingest.warehouse import Warehouse

log = structlog.get_logger("tdg.ingest.erasure")

SOURCE = "tdg-ingest"
_REQUESTED = consent_ev.ErasureRequested.DESCRIPTOR.full_name


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return ts


class Eraser:
    def __init__(
        self,
        bootstrap: str,
        directory: DatasetDirectory,
        warehouse: Warehouse,
        locks: TableLocks,
        producer: EventProducer,
    ) -> None:
        self._bootstrap = bootstrap
        self._directory = directory
        self._warehouse = warehouse
        self._locks = locks
        self._producer = producer
        self._task = Background("eraser", self._run)

    async def erase(self, request: consent_ev.ErasureRequested) -> ingest_ev.ErasureCompleted:
        """Carry one request out and announce it (also called directly by tests and tools)."""
        erasure = request.erasure
        if erasure.dataset_id:
            found = await self._directory.fresh(erasure.dataset_id)
            targets = [found] if found is not None and found.has_table else []
        else:
            targets = [e for e in self._directory.entries() if e.has_table]
        applied = [await self._erase_one(erasure.id, erasure.subject_id, e) for e in targets]
        events = [(a.dataset_id, CloudEvent.of(a, SOURCE, a.dataset_id)) for a in applied]
        failures = [f"{a.dataset_id}: {a.failure}" for a in applied if a.failure]
        completed = ingest_ev.ErasureCompleted(
            erasure_id=erasure.id,
            subject_id=erasure.subject_id,
            dataset_ids=[a.dataset_id for a in applied],
            completed_at=_now(),
            failure="; ".join(failures),
        )
        events.append((erasure.id, CloudEvent.of(completed, SOURCE, erasure.id)))
        await self._producer.send_many(topics.INGEST_EVENTS, events)
        log.info(
            "erasure carried out",
            erasure=erasure.id,
            datasets=len(applied),
            rows=sum(a.rows_deleted for a in applied),
            failures=len(failures),
        )
        return completed

    async def _erase_one(
        self, erasure_id: str, subject_id: str, entry: DatasetEntry
    ) -> ingest_ev.ErasureApplied:
        applied = ingest_ev.ErasureApplied(
            erasure_id=erasure_id, subject_id=subject_id, dataset_id=entry.id
        )
        column = entry.schema.subject_column
        if column:
            try:
                async with self._locks.of(entry.id):
                    snapshot_id, rows = await asyncio.to_thread(
                        self._warehouse.delete_rows, entry.id, column, subject_id
                    )
            except NoSuchTableError:  # published a moment ago: no table yet, so no row
                snapshot_id, rows = 0, 0
            applied.snapshot_id, applied.rows_deleted = snapshot_id, rows
        # A dataset without a subject column holds no one's personal data: nothing to delete.
        applied.applied_at.CopyFrom(_now())
        return applied

    async def _run(self) -> None:
        await self._directory.caught_up.wait()
        while True:
            consumer = AIOKafkaConsumer(
                topics.CONSENT_EVENTS,
                bootstrap_servers=self._bootstrap,
                group_id=ERASURE_GROUP,
                client_id="tdg-ingest-eraser",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=50)
                    for messages in batches.values():
                        for msg in messages:
                            await self._handle(msg.headers or (), msg.value or b"")
                    if batches:
                        await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failed_round(log, "erasure follower failed, will retry", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _handle(self, headers: object, value: bytes) -> None:
        try:
            event = CloudEvent.from_headers(headers, value)  # type: ignore[arg-type]
        except ValueError:
            return
        if event.type != _REQUESTED:
            return
        try:
            request = event.parse(consent_ev.ErasureRequested)
        except Exception:
            log.exception("skipping malformed erasure request")
            return
        await self.erase(request)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
