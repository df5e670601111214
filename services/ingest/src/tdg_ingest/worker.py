"""The ingest worker: dataset topics → validated Arrow → one Iceberg snapshot per micro-batch.

Exactly once: each snapshot carries, in its summary, the next Kafka offset of every partition whose
records it holds (`Warehouse.commit_batch`). When partitions are assigned (start, rebalance,
restart after a crash) the worker seeks to the offsets of the table's last snapshot, not to the
group's committed offsets, which are only advisory (lag monitoring, autoscaling). A worker killed
at any moment either committed its batch with its offsets or committed nothing; a zombie that lost
its partitions but still commits is refused by the offsets guard (`StaleOffsets`) and re-reads.

Every record ends up in exactly one of two places: a row of the table, or a dead letter. Rejects are
sent (and acknowledged) before the snapshot that moves past them is committed, so a crash between
the two re-sends them with the same key (readers deduplicate by key) and never loses one.

Micro-batches are bounded by records, bytes and time; each dataset is flushed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from pyiceberg.exceptions import NoSuchTableError
from tdg_core.background import Background
from tdg_core.errors import Unavailable
from tdg_lake.offsets import StaleOffsets

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
from tdg_ingest.triage import Triage, Triager, header
from tdg_ingest.warehouse import Warehouse
from tdg_ingest.writes import WritePermissions

log = structlog.get_logger("tdg.ingest.worker")


@dataclass
class Batch:
    """Records of one dataset topic read since its last commit, in fetch order."""

    topic: str
    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    nbytes: int = 0
    opened: float = field(default_factory=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0
    last: dict[int, int] = field(default_factory=dict)  # partition -> last offset held

    def add(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Records of one partition, in offset order; any already held are left out (a seek
        back must never put a record twice into one snapshot)."""
        if not records:
            return
        last = self.last.get(records[0].partition, -1)
        if records[0].offset <= last:
            records = [r for r in records if r.offset > last]
            if not records:
                return
        if not self.records:
            self.opened = time.monotonic()
        self.records.extend(records)
        self.last[records[0].partition] = records[-1].offset
        self.nbytes += sum(len(r.value or b"") for r in records)

    def ends(self) -> dict[int, int]:
        return {partition: last + 1 for partition, last in self.last.items()}


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
        self._provisioner = provisioner
        self._warehouse = warehouse
        self._writes = writes
        self._locks = locks
        self._batches: dict[str, Batch] = {}
        # Per assigned partition: where the table says this worker's next batch starts
        # (None: the table holds no offset for it yet).
        self._starts: dict[TopicPartition, int | None] = {}
        self._triager = Triager(directory, provisioner, writes, settings.ingest_max_record_bytes)
        self._flush_lock = asyncio.Lock()
        self._rebalancing = False  # from a subscription change or a revocation to assignment
        self._rebalance_since = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq_producer: AIOKafkaProducer | None = None
        self._task = Background("ingest-worker", self._run)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                group_id=self._settings.ingest_consumer_group,
                client_id="tdg-ingest-worker",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=16 * 1024 * 1024,
                fetch_max_wait_ms=100,
                metadata_max_age_ms=10_000,
                isolation_level="read_committed",
            )
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                client_id="tdg-ingest-dlq",
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                max_request_size=2 * self._settings.ingest_max_record_bytes + 65536,
            )
            try:
                await consumer.start()
                await producer.start()
                self._consumer, self._dlq_producer = consumer, producer
                await self._serve(consumer, DeadLetterWriter(producer))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ingest worker failed, restarting", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                self._rebalancing = False
                self._batches.clear()
                self._starts.clear()
                self._consumer = self._dlq_producer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def _serve(self, consumer: AIOKafkaConsumer, dlq: DeadLetterWriter) -> None:
        await self._directory.caught_up.wait()
        subscribed: set[str] = set()
        listener = _Rebalance(self)
        poll = min(10_000, self._settings.ingest_batch_max_records)
        while True:
            topics = self._provisioner.ready_topics()
            # Never while a rebalance runs: aiokafka loses track of a subscription changed
            # inside its listeners (seen here as a group join that never ends).
            stalled = time.monotonic() - self._rebalance_since > 60
            if topics != subscribed and topics and (not self._rebalancing or stalled):
                self._rebalancing, self._rebalance_since = True, time.monotonic()
                consumer.subscribe(topics=sorted(topics), listener=listener)
                subscribed = topics
            if not subscribed:
                await asyncio.sleep(0.2)
                continue
            fetched = await consumer.getmany(timeout_ms=50, max_records=poll)
            for tp, records in fetched.items():
                if tp not in self._starts:
                    # Assigned without a position from its table (the rebalance listener was cut
                    # short by another rebalance): position it now; the records are read again.
                    await self._position(consumer, {tp})
                    continue
                self._batches.setdefault(tp.topic, Batch(tp.topic)).add(records)
            now = time.monotonic()
            for topic in list(self._batches):
                batch = self._batches[topic]
                if batch.records and self._due(batch) and now >= batch.retry_at:
                    await self._flush_once(consumer, dlq, batch)

    def _due(self, batch: Batch) -> bool:
        s = self._settings
        return (
            len(batch.records) >= s.ingest_batch_max_records
            or batch.nbytes >= s.ingest_batch_max_bytes
            or time.monotonic() - batch.opened >= s.ingest_batch_max_wait_s
        )

    # --- partitions ----------------------------------------------------------------------

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        try:
            await self._position(consumer, partitions)
        finally:
            self._rebalancing = False
        log.info("partitions assigned", partitions=len(partitions))

    async def _position(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Seek each partition to the offset its table's last snapshot committed. A partition
        that cannot be positioned now (its table unreadable, or no longer assigned) stays
        unpositioned: its records are not used until it is."""
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp)
        for topic, tps in by_topic.items():
            entry = self._directory.by_topic(topic)
            if entry is None:
                continue
            try:
                offsets = await asyncio.to_thread(
                    self._warehouse.committed_offsets, entry.id, entry.topic
                )
                assignment = consumer.assignment()
                for tp in tps:
                    # Positioned meanwhile (by the other path, while the offsets were read):
                    # seeking again would fetch its records twice.
                    if tp in assignment and tp not in self._starts:
                        await self._seek(consumer, tp, offsets.get(tp.partition))
            except NoSuchTableError as exc:
                log.info("partition not positioned yet", topic=topic, error=str(exc))
            except Exception as exc:
                log.warning("cannot position partitions", topic=topic, error=repr(exc))

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Drop what was read from them: the next owner re-reads it from the table's offsets.
        Waits for a commit in flight so that the next owner finds the table settled."""
        self._rebalancing, self._rebalance_since = True, time.monotonic()
        async with self._flush_lock:
            topics = {tp.topic for tp in partitions}
            for topic in topics:
                self._batches.pop(topic, None)
            for tp in partitions:
                self._starts.pop(tp, None)
            # Batches of other partitions of the same topics were dropped too: rewind them.
            consumer = self._consumer
            if consumer is not None:
                for tp, start in list(self._starts.items()):
                    if tp.topic in topics:
                        await self._seek(consumer, tp, start)

    async def _seek(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int | None
    ) -> None:
        """Position a partition where its table's offsets say (the beginning: none yet)."""
        try:
            # Offset 0 below the log's start resets to the earliest (auto_offset_reset); no
            # awaited seek_to_beginning here: inside a rebalance listener it can wait forever
            # on the fetcher, which waits for the rebalance.
            consumer.seek(tp, 0 if start is None else start)
        except (IllegalStateError, AssertionError):  # no longer ours: a rebalance is under way
            self._starts.pop(tp, None)
            return
        self._starts[tp] = start

    # --- flushing ------------------------------------------------------------------------

    async def _flush_once(
        self, consumer: AIOKafkaConsumer, dlq: DeadLetterWriter, batch: Batch
    ) -> None:
        """Transient failures (OPA, Kafka, the Iceberg catalog) keep the batch, pause its topic
        and retry it later, with backoff: a record is never dead-lettered because a dependency
        was down, and one dataset's trouble does not hold up the others."""
        try:
            async with self._flush_lock:
                if self._batches.get(batch.topic) is not batch:
                    return  # dropped by a rebalance meanwhile
                await self._flush(consumer, dlq, batch)
                del self._batches[batch.topic]
        except StaleOffsets as exc:
            log.warning("another worker committed first; re-reading", error=str(exc))
            await self._rewind(consumer, batch)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            batch.failures += 1
            delay = min(0.2 * 2**batch.failures, 5.0)
            batch.retry_at = time.monotonic() + delay
            # Fetch no more of it meanwhile: memory stays bounded.
            with contextlib.suppress(Exception):
                consumer.pause(*[tp for tp in consumer.assignment() if tp.topic == batch.topic])
            log.warning(
                "flush failed, will retry", topic=batch.topic, retry_in_s=delay, error=str(exc)
            )
            return
        if batch.failures:
            with contextlib.suppress(Exception):  # reassigned meanwhile: nothing is paused
                consumer.resume(*[tp for tp in consumer.assignment() if tp.topic == batch.topic])
        with contextlib.suppress(Exception):
            # Advisory only (lag, autoscaling): the table's offsets are the truth.
            await consumer.commit(
                {TopicPartition(batch.topic, p): o for p, o in batch.ends().items()}
            )

    async def _rewind(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        async with self._flush_lock:
            self._batches.pop(batch.topic, None)
            entry = self._directory.by_topic(batch.topic)
            if entry is None:
                return
            offsets = await asyncio.to_thread(
                self._warehouse.committed_offsets, entry.id, entry.topic
            )
            for tp in list(self._starts):
                if tp.topic == batch.topic:
                    await self._seek(consumer, tp, offsets.get(tp.partition))

    async def _flush(self, consumer: AIOKafkaConsumer, dlq: DeadLetterWriter, batch: Batch) -> None:
        entry = self._directory.by_topic(batch.topic)
        if entry is None:
            raise Unavailable(f"no dataset known for topic {batch.topic}")
        records = batch.records
        ends = batch.ends()
        starts: dict[int, int] = {}
        for partition in ends:
            start = self._starts.get(TopicPartition(batch.topic, partition))
            starts[partition] = -1 if start is None else start
        t0 = time.perf_counter()
        triaged = await self._triager.triage(entry, records)
        entry = triaged.entry
        tally = DeliveryTally()
        letters = [self._letter(entry, records[i], reject) for i, reject in triaged.rejects]
        for i, reject in triaged.rejects:
            r = records[i]
            tally.add_rejected(
                header(r, PRODUCER_HEADER), r.timestamp, f"{reject.category}/{reject.code}"
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
        for partition, end in ends.items():
            tp = TopicPartition(batch.topic, partition)
            if tp in self._starts:
                self._starts[tp] = end
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
        producers = [header(records[i], PRODUCER_HEADER) for i in triaged.positions]
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
        self, entry: DatasetEntry, record: ConsumerRecord[bytes, bytes], reject: Reject
    ) -> DeadLetter:
        return DeadLetter(
            dataset_id=entry.id,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            producer=header(record, PRODUCER_HEADER),
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


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: IngestWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._worker._consumer
        if consumer is not None:
            await self._worker.assigned(consumer, set(assigned))
