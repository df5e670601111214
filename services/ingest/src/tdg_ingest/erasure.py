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
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer
from pyiceberg.exceptions import NoSuchTableError
from tdg_core import topics
from tdg_core.background import Background, log_failure
from tdg_core.events import EventProducer
from tdg_lake.failures import LAKE_FAILURES

from tdg_ingest.datasets import DatasetDirectory, DatasetEntry
from tdg_ingest.events import ErasureApplied, ErasureRequest, erasure_carried_out, erasure_request
from tdg_ingest.locks import TableLocks
from tdg_ingest.settings import ERASURE_GROUP
from tdg_ingest.warehouse import Warehouse

log = structlog.get_logger("tdg.ingest.erasure")


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

    async def erase(self, request: ErasureRequest) -> list[ErasureApplied]:
        """Carry one request out and announce it (also called directly by tests and tools)."""
        if request.dataset_id:
            found = await self._directory.fresh(request.dataset_id)
            targets = [found] if found is not None and found.has_table else []
        else:
            targets = self._directory.with_tables()
        applied = [await self._erase_one(request.subject_id, e) for e in targets]
        events = erasure_carried_out(request, applied, datetime.now(UTC))
        await self._producer.send_many(topics.INGEST_EVENTS, events)
        log.info(
            "erasure carried out",
            erasure=request.id,
            datasets=len(applied),
            rows=sum(a.rows_deleted for a in applied),
            failures=sum(1 for a in applied if a.failure),
        )
        return applied

    async def _erase_one(self, subject_id: str, entry: DatasetEntry) -> ErasureApplied:
        snapshot_id, rows = 0, 0
        column = entry.schema.subject_column
        # A dataset without a subject column holds no one's personal data: nothing to delete.
        if column:
            try:
                async with self._locks.of(entry.id):
                    snapshot_id, rows = await asyncio.to_thread(
                        self._warehouse.delete_rows, entry.id, column, subject_id
                    )
            except NoSuchTableError:  # published a moment ago: no table yet, so no row
                snapshot_id, rows = 0, 0
        return ErasureApplied(entry.id, snapshot_id, rows, datetime.now(UTC))

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
                log_failure(
                    log, "erasure follower failed, will retry", exc, dependencies=LAKE_FAILURES
                )
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _handle(self, headers: Iterable[tuple[str, bytes]], value: bytes) -> None:
        try:
            request = erasure_request(headers, value)
        except Exception:
            log.exception("skipping malformed erasure request")
            return
        if request is not None:
            await self.erase(request)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
