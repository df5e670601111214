"""The audit trail's Iceberg table `tdg_ops.query_audit`, and the sink filling it from `tdg.audit`.

One row per query (`tdg.query.v1.AuditRecord`, flattened), partitioned by day of `time`, so that a
data protection officer can trace any answer: who read which dataset, for what purpose, under
which agreement and OPA decision, with which column treatments and row filters, and what came out.

Exactly once, as in the ingest worker (tdg_ingest.warehouse): the next Kafka offset of every
partition of `tdg.audit` is written in the summary of the very snapshot holding the rows
(`OFFSETS_PROPERTY`), and a batch is committed only if the table is still at the offsets the batch
started from (`StaleOffsets` otherwise). pyiceberg's own commit retry is switched off for the table
(`commit.retry.num-retries = 0`): pyiceberg 0.12 would rebase a conflicting append on another
writer's snapshot while keeping its stale offsets. The sink seeks each assigned partition to the
table's offsets, never to the group's committed offsets (advisory only: lag monitoring), so a sink
killed at any moment has either committed a batch with its offsets or nothing.

A record sent twice by the query service (a send that timed out after the broker wrote it, then
retried) has the same query id: the sink drops such a duplicate within a batch and against the
query ids it committed recently, and `search` returns each query id once.

`AuditTable`'s methods block (the callers use `asyncio.to_thread`); it holds no mutable state but
its catalog, so threads may use it at once (conflicts are resolved by the catalog).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
)
from pyiceberg.table import Table, TableProperties
from pyiceberg.transforms import DayTransform
from sqlalchemy.exc import IntegrityError
from tdg.events.v1.query_events_pb2 import QueryAudited
from tdg.query.v1.query_pb2 import AuditRecord, ColumnTreatment
from tdg_core import topics
from tdg_core.background import Background
from tdg_core.events import CloudEvent, topic_partitions
from tdg_lake.offsets import COMMIT_ATTEMPTS, StaleOffsets, append_exactly_once, offsets_in

log = structlog.get_logger("tdg.query.audit_table")

# The namespace has an underscore, which publisher slugs cannot: no collision with a dataset.
AUDIT_TABLE = ("tdg_ops", "query_audit")
OFFSETS_PROPERTY = "tdg.audit.offsets"
AUDIT_GROUP = "tdg-query-audit"
# Commits retried on a conflict before giving up (the caller's own retry takes over then).
DEFAULT_LIMIT = 100

TABLE_PROPERTIES = {
    TableProperties.COMMIT_NUM_RETRIES: "0",
    # A commit per sink batch makes many metadata files; keep the last hundred only.
    TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
}

_UTC_US = pa.timestamp("us", tz="UTC")

# AuditRecord, flattened: scalars as columns, `reasons` as list<string>, `treatments` as
# map<column, treatment>; the request and the policy's row filters stay JSON text as in the record.
AUDIT_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("time", _UTC_US, nullable=False),
        pa.field("party", pa.string()),
        pa.field("org", pa.string()),
        pa.field("dataset_id", pa.string()),
        pa.field("snapshot_id", pa.int64()),
        pa.field("purpose", pa.string()),
        pa.field("agreement_id", pa.string()),
        pa.field("decision_id", pa.string()),
        pa.field("allowed", pa.bool_()),
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("treatments", pa.map_(pa.string(), pa.string())),
        pa.field("request_json", pa.string()),
        pa.field("row_filters_json", pa.string()),
        pa.field("consent_required", pa.bool_()),
        pa.field("consent_revision", pa.int64()),
        pa.field("min_group_size", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("duration_ms", pa.int64()),
        pa.field("outcome", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("error", pa.string()),
    ]
)
_STRINGS = (
    "party",
    "org",
    "dataset_id",
    "purpose",
    "agreement_id",
    "decision_id",
    "request_json",
    "row_filters_json",
    "outcome",
    "channel",
    "error",
)
_INTS = ("snapshot_id", "consent_revision", "min_group_size", "rows", "bytes", "duration_ms")
_BOOLS = ("allowed", "consent_required")


class AuditTable:
    def __init__(self, catalog: Catalog, topic: str = topics.AUDIT) -> None:
        self.catalog = catalog
        self.topic = topic

    # --- the table ----------------------------------------------------------------------------

    def table(self) -> Table:
        """The table, created on first use (by whichever process gets there first)."""
        for _ in range(COMMIT_ATTEMPTS):
            try:
                return self.catalog.load_table(AUDIT_TABLE)
            except NoSuchTableError:
                pass
            try:
                self.catalog.create_namespace_if_not_exists(AUDIT_TABLE[0])
            except IntegrityError:
                pass  # created by another process between its existence check and its insert
            try:
                return self._create()
            except (TableAlreadyExistsError, CommitFailedException):
                continue  # lost the race: load the winner's
        raise CommitFailedException(f"{'.'.join(AUDIT_TABLE)}: cannot be created")

    def _create(self) -> Table:
        tx = self.catalog.create_table_transaction(
            AUDIT_TABLE, schema=AUDIT_SCHEMA, properties=dict(TABLE_PROPERTIES)
        )
        with tx.update_spec() as spec:
            spec.add_field("time", DayTransform(), "time_day")
        table = tx.commit_transaction()
        log.info("table created", table=".".join(AUDIT_TABLE))
        return table

    def _table_for_write(self) -> Table:
        """The table, made sure first that pyiceberg will not rebase a conflicting commit
        (a table created elsewhere may lack the property)."""
        table = self.table()
        if table.properties.get(TableProperties.COMMIT_NUM_RETRIES) != "0":
            try:
                with table.transaction() as tx:
                    tx.set_properties(dict(TABLE_PROPERTIES))
            except CommitFailedException:
                table = self.table()
                if table.properties.get(TableProperties.COMMIT_NUM_RETRIES) != "0":
                    raise
        return table

    # --- offsets and batches ------------------------------------------------------------------

    def committed_offsets(self) -> dict[int, int]:
        """Next offset per partition of the topic, as of the table's current snapshot."""
        return offsets_in(self.table(), self.topic, OFFSETS_PROPERTY)

    def append(self, records: list[AuditRecord], start: dict[int, int], end: dict[int, int]) -> int:
        """Append `records` (possibly none: offsets past malformed messages) in one snapshot
        carrying the offsets advanced to `end`; StaleOffsets when the table is not at `start`
        (a partition the table holds no offset for is accepted from wherever the batch began).
        Returns the new snapshot id."""
        table = self._table_for_write()
        data = to_arrow(records, table.schema().as_arrow())
        return append_exactly_once(
            table, self.table, data, self.topic, OFFSETS_PROPERTY, start, end
        )

    # --- reading ------------------------------------------------------------------------------

    def search(
        self,
        dataset_id: str = "",
        party: str = "",
        purpose: str = "",
        agreement_id: str = "",
        query_id: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[AuditRecord]:
        """The records matching every filter given (empty/None: any), `time` in [since, until),
        newest first, each query id once; at most `limit` (DEFAULT_LIMIT when not positive)."""
        limit = limit if limit > 0 else DEFAULT_LIMIT
        table = self.table()
        if table.current_snapshot() is None:
            return []
        where = _where(
            dataset_id=dataset_id,
            party=party,
            purpose=purpose,
            agreement_id=agreement_id,
            query_id=query_id,
            since=since,
            until=until,
        )
        best: pa.Table | None = None
        # The newest `limit` rows so far, kept batch after batch: memory stays bounded.
        for batch in table.scan(row_filter=where).to_arrow_batch_reader():
            if batch.num_rows:
                read = pa.Table.from_batches([batch])
                best = _newest(read if best is None else pa.concat_tables([best, read]), limit)
        return [] if best is None else [from_row(row) for row in best.to_pylist()]


# --- rows ---------------------------------------------------------------------------------------


def to_arrow(records: Iterable[AuditRecord], schema: pa.Schema = AUDIT_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist([to_row(r) for r in records], schema=schema)


def to_row(record: AuditRecord) -> dict[str, Any]:
    row: dict[str, Any] = {
        "query_id": record.query_id,
        "time": record.time.ToDatetime(tzinfo=UTC),
        "reasons": list(record.reasons),
        "treatments": [(t.column, t.treatment) for t in record.treatments],
    }
    for name in (*_STRINGS, *_INTS, *_BOOLS):
        row[name] = getattr(record, name)
    return row


def from_row(row: dict[str, Any]) -> AuditRecord:
    record = AuditRecord(
        query_id=row["query_id"],
        reasons=row["reasons"] or (),
        treatments=[ColumnTreatment(column=c, treatment=t) for c, t in row["treatments"] or ()],
        **{n: row[n] for n in (*_STRINGS, *_INTS, *_BOOLS) if row[n] is not None},
    )
    record.time.FromDatetime(row["time"])
    return record


def _newest(rows: pa.Table, limit: int) -> pa.Table:
    """The newest `limit` rows, each query id once (copies of one record sort together)."""
    ordered = rows.sort_by([("time", "descending"), ("query_id", "ascending")])
    keep: list[int] = []
    previous: str | None = None
    for i, query_id in enumerate(ordered.column("query_id").to_pylist()):
        if query_id != previous:
            keep.append(i)
            if len(keep) == limit:
                break
        previous = query_id
    return ordered.take(pa.array(keep, pa.int64()))


def _where(
    *,
    dataset_id: str,
    party: str,
    purpose: str,
    agreement_id: str,
    query_id: str,
    since: datetime | None,
    until: datetime | None,
) -> BooleanExpression:
    parts: list[BooleanExpression] = []
    for column, value in (
        ("dataset_id", dataset_id),
        ("party", party),
        ("purpose", purpose),
        ("agreement_id", agreement_id),
        ("query_id", query_id),
    ):
        if value:
            parts.append(_eq(column, value))
    # On `time`, which pyiceberg projects onto the day partitions: only those days are read.
    if since is not None:
        parts.append(_ge("time", _iso(since)))
    if until is not None:
        parts.append(_lt("time", _iso(until)))
    where: BooleanExpression = AlwaysTrue()
    for part in parts:
        where = And(where, part)
    return where


def _iso(moment: datetime) -> str:
    """Naive datetimes are taken as UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat()


# pydantic's mypy plugin misreads the constructors pyiceberg's predicates override.
def _eq(column: str, value: Any) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg]


def _ge(column: str, value: Any) -> BooleanExpression:
    return GreaterThanOrEqual(column, value)  # type: ignore[call-arg]


def _lt(column: str, value: Any) -> BooleanExpression:
    return LessThan(column, value)  # type: ignore[call-arg]


# --- the sink -----------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Messages read since the last commit, in fetch order; `records` the decodable ones."""

    records: list[AuditRecord] = field(default_factory=list)
    messages: int = 0
    opened: float = field(default_factory=time.monotonic)
    last: dict[int, int] = field(default_factory=dict)  # partition -> last offset held
    failures: int = 0
    retry_at: float = 0.0

    def add(self, messages: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Messages of one partition, in offset order; any already held are left out (a seek
        back must never put a record twice into one snapshot)."""
        last = self.last.get(messages[0].partition, -1) if messages else -1
        messages = [m for m in messages if m.offset > last]
        if not messages:
            return
        if not self.messages:
            self.opened = time.monotonic()
        self.messages += len(messages)
        self.last[messages[0].partition] = messages[-1].offset
        for message in messages:
            record = decode(message)
            if record is not None:
                self.records.append(record)

    def ends(self) -> dict[int, int]:
        return {partition: last + 1 for partition, last in self.last.items()}


def decode(message: ConsumerRecord[bytes, bytes]) -> AuditRecord | None:
    """The AuditRecord of a QueryAudited CloudEvent; None (logged) for anything else."""
    try:
        event = CloudEvent.from_headers(
            [(k, bytes(v)) for k, v in message.headers or ()], message.value or b""
        )
        audited = event.parse(QueryAudited)
    except Exception as exc:  # anything that is not a QueryAudited CloudEvent
        log.error(
            "malformed message on the audit topic skipped",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error=str(exc),
        )
        return None
    record = audited.record
    if not record.HasField("time"):
        record.time.FromDatetime(event.time)
    return record


class AuditSink:
    """Consumer group `tdg-query-audit` on `tdg.audit` → `tdg_ops.query_audit`, a commit every
    `flush_every_s` seconds or `flush_records` messages, exactly once."""

    def __init__(
        self,
        bootstrap: str,
        table: AuditTable,
        flush_every_s: float = 5.0,
        flush_records: int = 1000,
        group_id: str = AUDIT_GROUP,
        remember: int = 100_000,
    ) -> None:
        self._bootstrap = bootstrap
        self._table = table
        self._flush_every_s = flush_every_s
        self._flush_records = flush_records
        self._group_id = group_id
        self._batch = _Batch()
        # Per assigned partition: where the table says the next batch starts (None: the table
        # holds no offset for it yet). A partition absent here is not positioned: not used.
        self._starts: dict[TopicPartition, int | None] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()  # query ids committed lately
        self._remember = remember
        self._flush_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._task = Background("audit-sink", self._run)
        self.healthy = False
        self.committed = 0  # records appended by this sink, for metrics and tests

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        """Stops at once: what was read and not committed is read again by the next owner."""
        await self._task.stop()

    async def _topic_created(self) -> None:
        while True:
            if await topic_partitions(self._bootstrap, self._table.topic):
                return
            await asyncio.sleep(1.0)

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self._group_id,
                client_id="tdg-query-audit-sink",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
                # Partitions added to the topic are picked up within seconds, not 5 minutes.
                metadata_max_age_ms=10_000,
            )
            try:
                # The service creates the topic as it starts: a group joined before it exists is
                # assigned nothing until the next metadata refresh, so wait for it first.
                await self._topic_created()
                await consumer.start()
                self._consumer = consumer
                # Subscribed once, before any rebalance can run.
                consumer.subscribe(topics=[self._table.topic], listener=_Rebalance(self))
                await self._serve(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("audit sink failed, restarting", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                self.healthy = False
                self._batch = _Batch()
                self._starts.clear()
                self._consumer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _serve(self, consumer: AIOKafkaConsumer) -> None:
        poll = min(10_000, max(1, self._flush_records))
        while True:
            fetched = await consumer.getmany(timeout_ms=100, max_records=poll)
            self.healthy = True
            for tp, messages in fetched.items():
                if tp not in self._starts:
                    # Assigned without a position from the table (the listener failed or was cut
                    # short): position it now; these messages are read again.
                    await self._position(consumer, {tp})
                    continue
                self._batch.add(messages)
            batch = self._batch
            if batch.messages and self._due(batch) and time.monotonic() >= batch.retry_at:
                await self._flush_once(consumer, batch)

    def _due(self, batch: _Batch) -> bool:
        return (
            batch.messages >= self._flush_records
            or time.monotonic() - batch.opened >= self._flush_every_s
        )

    # --- partitions ---------------------------------------------------------------------------

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        await self._position(consumer, partitions)
        log.info("audit partitions assigned", partitions=len(partitions))

    async def _position(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Seek each partition to the table's offset; one that cannot be positioned now (the
        catalog unreachable, the partition no longer ours) stays unpositioned."""
        try:
            offsets = await asyncio.to_thread(self._table.committed_offsets)
        except Exception as exc:
            log.warning("cannot position audit partitions", error=repr(exc))
            return
        assignment = consumer.assignment()
        for tp in partitions:
            # Positioned meanwhile by the other path: seeking again would fetch twice.
            if tp in assignment and tp not in self._starts:
                self._seek(consumer, tp, offsets.get(tp.partition))

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Drop what was read (the next owner re-reads it from the table's offsets), after a
        commit in flight, so that the next owner finds the table settled."""
        async with self._flush_lock:
            self._batch = _Batch()
            for tp in partitions:
                self._starts.pop(tp, None)
            # The batch held records of the partitions kept too: rewind them.
            consumer = self._consumer
            if consumer is not None:
                for tp, start in list(self._starts.items()):
                    self._seek(consumer, tp, start)

    def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int | None) -> None:
        try:
            # Synchronous: an awaited seek_to_beginning inside a rebalance listener can wait
            # forever on the fetcher, which waits for the rebalance. Offset 0 below the log's
            # start resets to the earliest (auto_offset_reset).
            consumer.seek(tp, 0 if start is None else start)
        except (IllegalStateError, AssertionError):  # no longer ours: a rebalance is under way
            self._starts.pop(tp, None)
            return
        self._starts[tp] = start

    # --- flushing -----------------------------------------------------------------------------

    async def _flush_once(self, consumer: AIOKafkaConsumer, batch: _Batch) -> None:
        """A failure (the catalog, the warehouse) keeps the batch and retries it with backoff,
        fetching nothing more meanwhile; nothing is skipped because a dependency was down."""
        try:
            async with self._flush_lock:
                if self._batch is not batch:
                    return  # dropped by a rebalance meanwhile
                ends = await self._flush(batch)
                self._batch = _Batch()
        except StaleOffsets as exc:
            log.warning("another audit sink committed first; re-reading", error=str(exc))
            await self._rewind(consumer, exc.committed)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.healthy = False
            batch.failures += 1
            delay = min(0.2 * 2**batch.failures, 5.0)
            batch.retry_at = time.monotonic() + delay
            with contextlib.suppress(Exception):
                consumer.pause(*consumer.assignment())
            log.warning("audit flush failed, will retry", retry_in_s=delay, error=str(exc))
            return
        if batch.failures:
            with contextlib.suppress(Exception):
                consumer.resume(*consumer.assignment())
        with contextlib.suppress(Exception):
            # Advisory only (lag monitoring): the table's offsets are the truth.
            await consumer.commit(
                {TopicPartition(self._table.topic, p): o for p, o in ends.items()}
            )

    async def _flush(self, batch: _Batch) -> dict[int, int]:
        ends = batch.ends()
        starts: dict[int, int] = {}
        for partition in ends:
            start = self._starts.get(TopicPartition(self._table.topic, partition))
            starts[partition] = -1 if start is None else start
        records = list(self._unique(batch.records))
        snapshot_id = await asyncio.to_thread(self._table.append, records, starts, ends)
        for partition, end in ends.items():
            tp = TopicPartition(self._table.topic, partition)
            if tp in self._starts:
                self._starts[tp] = end
        for record in records:
            self._recent[record.query_id] = None
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        self.committed += len(records)
        log.info(
            "audit batch committed",
            messages=batch.messages,
            records=len(records),
            duplicates=len(batch.records) - len(records),
            snapshot_id=snapshot_id,
        )
        return ends

    def _unique(self, records: list[AuditRecord]) -> Iterator[AuditRecord]:
        """Each query id once: a record the query service sent twice is kept at its first."""
        seen: set[str] = set()
        for record in records:
            if record.query_id and (record.query_id in seen or record.query_id in self._recent):
                continue
            seen.add(record.query_id)
            yield record

    async def _rewind(self, consumer: AIOKafkaConsumer, committed: dict[int, int]) -> None:
        async with self._flush_lock:
            self._batch = _Batch()
            for tp in list(self._starts):
                self._seek(consumer, tp, committed.get(tp.partition))
            with contextlib.suppress(Exception):  # paused by failed attempts of the dropped batch
                consumer.resume(*consumer.assignment())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: AuditSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sink.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._sink._consumer
        if consumer is not None:
            await self._sink.assigned(consumer, set(assigned))
