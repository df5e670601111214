"""The audit trail's Iceberg table `tdg_ops.query_audit`, and the sink filling it from `tdg.audit`.

One row per query (`tdg.query.v1.AuditRecord`, flattened), partitioned by day of `time`, so that a
data protection officer can trace any answer: who read which dataset, for what purpose, under
which agreement and OPA decision, with which column treatments and row filters, and what came out.

Exactly once as `tdg_lake.sink` states it (the consumer loop the ingest worker runs too): the next
Kafka offset of every partition of `tdg.audit` is written in the summary of the very snapshot
holding the rows (`OFFSETS_PROPERTY`), and positions are read back from the table.

A record sent twice by the query service (a send that timed out after the broker wrote it, then
retried) has the same query id: the sink drops such a duplicate within a batch and against the
query ids it committed recently, and `search` returns each query id once.

`AuditTable`'s methods block (the callers use `asyncio.to_thread`); it holds no mutable state but
its catalog, so threads may use it at once (conflicts are resolved by the catalog).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import structlog
from aiokafka.structs import ConsumerRecord
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from tdg.events.v1.query_events_pb2 import QueryAudited
from tdg.query.v1.query_pb2 import AuditRecord, ColumnTreatment
from tdg_core import topics
from tdg_core.events import CloudEvent, topic_partitions
from tdg_lake import tables
from tdg_lake.offsets import append_exactly_once, offsets_in
from tdg_lake.sink import Batch, BatchBounds, TableSink

log = structlog.get_logger("tdg.query.audit_table")

# The namespace has an underscore, which publisher slugs cannot: no collision with a dataset.
AUDIT_TABLE = ("tdg_ops", "query_audit")
OFFSETS_PROPERTY = "tdg.audit.offsets"
AUDIT_GROUP = "tdg-query-audit"
DEFAULT_LIMIT = 100

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
        table, _ = tables.create_or_load(
            self.catalog,
            AUDIT_TABLE,
            AUDIT_SCHEMA,
            tables.BATCH_TABLE_PROPERTIES,
            (tables.PartitionBy("time", DayTransform(), "time_day"),),
        )
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
        table = tables.load_for_write(self.table)
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
            parts.append(tables.eq(column, value))
    # On `time`, which pyiceberg projects onto the day partitions: only those days are read.
    if since is not None:
        parts.append(tables.ge("time", _iso(since)))
    if until is not None:
        parts.append(tables.lt("time", _iso(until)))
    return tables.all_of(parts)


def _iso(moment: datetime) -> str:
    """Naive datetimes are taken as UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat()


# --- the sink -----------------------------------------------------------------------------------


def decode(message: ConsumerRecord[bytes, bytes]) -> AuditRecord | None:
    """The AuditRecord of a QueryAudited CloudEvent; None (logged) for anything else."""
    try:
        event = CloudEvent.from_headers(message.headers or (), message.value or b"")
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
        self._recent: OrderedDict[str, None] = OrderedDict()  # query ids committed lately
        self._remember = remember
        self.committed = 0  # records appended by this sink, for metrics and tests
        self._sink: TableSink[AuditRecord] = TableSink(
            "audit-sink",
            bootstrap,
            group_id,
            topics=lambda: {table.topic},
            positions=self._positions,
            flush=self._flush,
            bounds=BatchBounds(max(1, flush_records), None, flush_every_s),
            decode=decode,
            # The service creates the topic as it starts: a group joined before it exists is
            # assigned nothing until the next metadata refresh, so wait for it first.
            ready=self._topic_created,
            consumer_config={"client_id": "tdg-query-audit-sink"},
        )

    @property
    def healthy(self) -> bool:
        return self._sink.healthy

    def start(self) -> None:
        self._sink.start()

    async def stop(self) -> None:
        """Stops at once: what was read and not committed is read again by the next owner."""
        await self._sink.stop()

    async def _topic_created(self) -> None:
        while True:
            if await topic_partitions(self._bootstrap, self._table.topic):
                return
            await asyncio.sleep(1.0)

    async def _positions(self, topic: str) -> dict[int, int]:
        return await asyncio.to_thread(self._table.committed_offsets)

    async def _flush(self, batch: Batch[AuditRecord], starts: dict[int, int]) -> None:
        ends = batch.ends()
        records = list(self._unique(batch.records))
        snapshot_id = await asyncio.to_thread(self._table.append, records, starts, ends)
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

    def _unique(self, records: list[AuditRecord]) -> Iterator[AuditRecord]:
        """Each query id once: a record the query service sent twice is kept at its first."""
        seen: set[str] = set()
        for record in records:
            if record.query_id and (record.query_id in seen or record.query_id in self._recent):
                continue
            seen.add(record.query_id)
            yield record
