"""What `Status` reports for a dataset, read from the table and the topic, so that any replica
answers the same: lag (topic end minus the table's offsets), rows per second over the last minute
and rejects (from the snapshots' delivery tallies, over the table's retained history), the last
event time and the last commit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from pyiceberg.table import Table
from tdg_core.events import topic_partitions

from tdg_ingest.contract import DELIVERY_PROPERTY, MAX_EVENT_TIME_PROPERTY
from tdg_ingest.datasets import DatasetEntry
from tdg_ingest.delivery import DeliveryTally
from tdg_ingest.warehouse import Warehouse, offsets_in

RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class DatasetFigures:
    dataset_id: str
    topic: str
    state: str
    lag_records: int
    records_per_s: float
    last_event_time: datetime | None
    last_commit_time: datetime | None
    rows_stored: int
    records_rejected: int
    snapshot_id: int
    schema_version: int


@dataclass(frozen=True)
class _TableFigures:
    offsets: dict[int, int]
    records_per_s: float
    last_event_time: datetime | None
    last_commit_time: datetime | None
    rows_stored: int
    rejected: int
    snapshot_id: int


def table_figures(table: Table, topic: str, now_ms: int) -> _TableFigures:
    snapshots = table.metadata.snapshots
    current = table.current_snapshot()
    recent = 0
    rejected = 0
    last_event: datetime | None = None
    for snapshot in snapshots:
        summary = snapshot.summary
        if summary is None:
            continue
        if now_ms - snapshot.timestamp_ms <= RATE_WINDOW_S * 1000:
            recent += int(summary.get("added-records") or 0)
        tally = summary.get(DELIVERY_PROPERTY)
        if tally:
            rejected += sum(
                d.rejected_total for _, _, d in DeliveryTally.from_property(tally).hours()
            )
        moment = summary.get(MAX_EVENT_TIME_PROPERTY)
        if moment:
            parsed = datetime.fromisoformat(moment)
            last_event = parsed if last_event is None or parsed > last_event else last_event
    total = current.summary.get("total-records") if current and current.summary else None
    return _TableFigures(
        offsets=offsets_in(table, topic),
        records_per_s=recent / RATE_WINDOW_S,
        last_event_time=last_event,
        last_commit_time=(
            datetime.fromtimestamp(current.timestamp_ms / 1000, UTC) if current else None
        ),
        rows_stored=int(total or 0),
        rejected=rejected,
        snapshot_id=current.snapshot_id if current else 0,
    )


class StatusReader:
    def __init__(self, bootstrap: str, warehouse: Warehouse) -> None:
        self._bootstrap = bootstrap
        self._warehouse = warehouse

    async def figures(self, entry: DatasetEntry) -> DatasetFigures:
        table = await asyncio.to_thread(self._warehouse.load, entry.id)
        figures = table_figures(table, entry.topic, int(time.time() * 1000))
        lag = await self._lag(entry.topic, figures.offsets)
        return DatasetFigures(
            dataset_id=entry.id,
            topic=entry.topic,
            state="accepting" if entry.accepting else entry.status,
            lag_records=lag,
            records_per_s=figures.records_per_s,
            last_event_time=figures.last_event_time,
            last_commit_time=figures.last_commit_time,
            rows_stored=figures.rows_stored,
            records_rejected=figures.rejected,
            snapshot_id=figures.snapshot_id,
            schema_version=entry.schema.version,
        )

    async def _lag(self, topic: str, committed: dict[int, int]) -> int:
        partitions = await topic_partitions(self._bootstrap, topic)
        if not partitions:
            return 0
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        return sum(max(0, ends[tp] - committed.get(tp.partition, starts[tp])) for tp in tps)
