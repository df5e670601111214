"""The ingest worker: dataset topics → validated Arrow → one Iceberg snapshot per micro-batch.

Exactly once as `tdg_lake.sink` states it: each snapshot carries, in its summary, the next Kafka
offset of every partition whose records it holds (`Warehouse.commit_batch`), and the worker reads
its positions back from the tables, never from the consumer group.

Every record ends up in exactly one of two places: a row of the table, or a dead letter. Rejects are
sent (and acknowledged) before the snapshot that moves past them is committed, so a crash between
the two re-sends them with the same key (readers deduplicate by key) and never loses one.

Micro-batches are bounded by records, bytes and time; each dataset is flushed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from tdg_core.errors import Unavailable
from tdg_lake.sink import Batch, BatchBounds, TableSink

from tdg_ingest.contract import (
    DELIVERY_PROPERTY,
    MAX_EVENT_TIME_PROPERTY,
    PRODUCER_HEADER,
    SCHEMA_VERSION_PROPERTY,
)
from tdg_ingest.datasets import DatasetDirectory, DatasetEntry
from tdg_ingest.delivery import DeliveryTally
from tdg_ingest.dlq import DeadLetter, DeadLetterWriter
from tdg_ingest.locks import TableLocks
from tdg_ingest.provisioner import Provisioner
from tdg_ingest.records import Reject
from tdg_ingest.settings import IngestSettings
from tdg_ingest.triage import Triage, Triager
from tdg_ingest.warehouse import Warehouse
from tdg_ingest.writes import WritePermissions

log = structlog.get_logger("tdg.ingest.worker")


class IngestWorker:
    def __init__(
        self,
        settings: IngestSettings,
        directory: DatasetDirectory,
        provisioner: Provisioner,
        warehouse: Warehouse,
        writes: WritePermissions,
        locks: TableLocks,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._warehouse = warehouse
        self._locks = locks
        self._triager = Triager(directory, provisioner, writes, settings.ingest_max_record_bytes)
        self._dlq: DeadLetterWriter | None = None
        self._sink: TableSink[ConsumerRecord[bytes, bytes]] = TableSink(
            "ingest-worker",
            settings.kafka_bootstrap,
            settings.ingest_consumer_group,
            topics=provisioner.ready_topics,
            positions=self._positions,
            flush=self._flush,
            bounds=BatchBounds(
                settings.ingest_batch_max_records,
                settings.ingest_batch_max_bytes,
                settings.ingest_batch_max_wait_s,
            ),
            ready=directory.caught_up.wait,
            session=self._dead_letters,
            consumer_config={
                "client_id": "tdg-ingest-worker",
                "fetch_max_bytes": 64 * 1024 * 1024,
                "max_partition_fetch_bytes": 16 * 1024 * 1024,
                "isolation_level": "read_committed",
            },
        )

    def start(self) -> None:
        self._sink.start()

    async def stop(self) -> None:
        await self._sink.stop()

    @contextlib.asynccontextmanager
    async def _dead_letters(self) -> AsyncIterator[None]:
        """The producer of dead letters, for as long as the worker's consumer runs."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            client_id="tdg-ingest-dlq",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=2 * self._settings.ingest_max_record_bytes + 65536,
        )
        await producer.start()
        self._dlq = DeadLetterWriter(producer)
        try:
            yield
        finally:
            self._dlq = None
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _positions(self, topic: str) -> dict[int, int] | None:
        entry = self._directory.by_topic(topic)
        if entry is None:
            return None
        return await asyncio.to_thread(self._warehouse.committed_offsets, entry.id, entry.topic)

    async def _flush(
        self, batch: Batch[ConsumerRecord[bytes, bytes]], starts: dict[int, int]
    ) -> None:
        """Triage the batch, send its rejects to the DLQ, then commit its rows and offsets. Any
        failure (OPA, Kafka, the Iceberg catalog) is transient: the sink retries the batch later,
        so a record is never dead-lettered because a dependency was down."""
        entry = self._directory.by_topic(batch.topic)
        dlq = self._dlq
        if entry is None:
            raise Unavailable(f"no dataset known for topic {batch.topic}")
        if dlq is None:
            raise Unavailable("the dead-letter producer is not running")
        records = batch.records
        ends = batch.ends()
        t0 = time.perf_counter()
        triaged = await self._triager.triage(entry, records)
        entry = triaged.entry
        tally = DeliveryTally()
        producers = triaged.producers
        letters = [
            self._letter(entry, records[i], producers[i], reject) for i, reject in triaged.rejects
        ]
        for i, reject in triaged.rejects:
            tally.add_rejected(
                producers[i], records[i].timestamp, f"{reject.category}/{reject.code}"
            )
        table = triaged.table
        properties = {SCHEMA_VERSION_PROPERTY: str(entry.schema.version)}
        if table.num_rows:
            self._tally_accepted(entry, records, triaged, tally)
            max_time = pc.max(table[entry.schema.event_time_column]).as_py()
            if max_time is not None:
                properties[MAX_EVENT_TIME_PROPERTY] = str(max_time.isoformat())
        for producer, decision in triaged.decisions.items():
            tally.set_commitments(producer, decision.commitments)
        properties[DELIVERY_PROPERTY] = tally.to_property()
        t1 = time.perf_counter()
        if letters:
            await dlq.send_all(letters)
        t2 = time.perf_counter()
        async with self._locks.of(entry.id):
            snapshot_id = await asyncio.to_thread(
                self._warehouse.commit_batch,
                entry.id,
                entry.topic,
                table,
                starts,
                ends,
                properties,
            )
        log.info(
            "batch committed",
            dataset=entry.id,
            prepare_ms=round((t1 - t0) * 1000, 1),
            dead_letter_ms=round((t2 - t1) * 1000, 1),
            commit_ms=round((time.perf_counter() - t2) * 1000, 1),
            received=len(records),
            stored=table.num_rows,
            rejected=len(letters),
            snapshot_id=snapshot_id,
        )

    def _tally_accepted(
        self,
        entry: DatasetEntry,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        triaged: Triage,
        tally: DeliveryTally,
    ) -> None:
        event_time = triaged.table[entry.schema.event_time_column]
        if not pa.types.is_timestamp(event_time.type):
            event_time = pc.cast(event_time, pa.timestamp("us", tz="UTC"))
        arrival = pa.array([records[i].timestamp for i in triaged.positions], pa.int64())
        producers = [triaged.producers[i] for i in triaged.positions]
        distinct = list(dict.fromkeys(producers))
        if len(distinct) == 1:
            tally.add_accepted(distinct[0], arrival, event_time.combine_chunks())
            return
        column = pa.array(producers)
        for producer in distinct:
            mask = pc.equal(column, producer)
            tally.add_accepted(
                producer,
                pc.filter(arrival, mask),
                pc.filter(event_time.combine_chunks(), mask),
            )

    def _letter(
        self,
        entry: DatasetEntry,
        record: ConsumerRecord[bytes, bytes],
        producer: str,
        reject: Reject,
    ) -> DeadLetter:
        return DeadLetter(
            dataset_id=entry.id,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            producer=producer,
            category=reject.category,
            code=reject.code,
            message=reject.message,
            value=record.value or b"",
            source_key=record.key,
            schema_version=entry.schema.version,
            rejected_at=datetime.now(UTC),
            extra_headers=tuple(
                (k, bytes(v)) for k, v in (record.headers or ()) if k != PRODUCER_HEADER
            ),
        )
