"""The datasets ingestion knows: followed in memory from tdg.catalog.events.

The catalog's topic keeps every event forever, so each replica rebuilds its view by reading it from
the beginning at start (no consumer group, no local state). What the events imply outside this
process (the dataset's Kafka topic and Iceberg table) is reconciled separately and idempotently
(`Provisioner`), so replaying the history is harmless.

A record for a dataset not seen yet (or a schema version not seen yet) makes the caller wait for
this view to catch up with the topic's end before it is rejected: the catalog may have published
or evolved it a moment ago.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer
from google.protobuf.message import DecodeError
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg_core.errors import Unavailable
from tdg_core.events import CloudEvent
from tdg_core.read_policy import dataset_input
from tdg_core.topic_reader import TopicReader

from tdg_ingest.schema import TableSchema
from tdg_ingest.settings import topic_for

log = structlog.get_logger("tdg.ingest.datasets")

_WHOLE_DATASET: dict[
    str, type[cev.DatasetRegistered | cev.MetadataUpdated | cev.DatasetPublished]
] = {
    m.DESCRIPTOR.full_name: m
    for m in (cev.DatasetRegistered, cev.MetadataUpdated, cev.DatasetPublished)
}


@dataclass(frozen=True)
class DatasetEntry:
    dataset: cpb.Dataset
    schema: TableSchema

    @property
    def id(self) -> str:
        return self.dataset.id

    @property
    def publisher(self) -> str:
        return self.dataset.publisher

    @property
    def status(self) -> str:
        return str(dataset_input(self.dataset)["status"])

    @property
    def topic(self) -> str:
        return topic_for(self.dataset.id)

    @property
    def accepting(self) -> bool:
        return self.dataset.status == cpb.DATASET_STATUS_PUBLISHED

    @property
    def has_table(self) -> bool:
        """Published once: deprecated datasets keep their topic and table (records to them are
        dead-lettered, the data stays readable)."""
        return self.dataset.status in (
            cpb.DATASET_STATUS_PUBLISHED,
            cpb.DATASET_STATUS_DEPRECATED,
        )

    def policy_input(self) -> dict[str, str]:
        return {"id": self.id, "publisher": self.publisher, "status": self.status}


def _entry(dataset: cpb.Dataset) -> DatasetEntry:
    return DatasetEntry(dataset, TableSchema.from_proto(dataset.id, dataset.schema))


class DatasetDirectory:
    def __init__(self, bootstrap: str, topic: str, catch_up_s: float = 3.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._catch_up_s = catch_up_s
        self._entries: dict[str, DatasetEntry] = {}
        self._positions: dict[int, int] = {}
        self._reader = TopicReader(
            bootstrap,
            topic,
            "tdg-ingest-catalog",
            self._read_positions,
            self._consume,
        )
        self.caught_up = asyncio.Event()  # set once the history up to start-up has been read
        self.changed = asyncio.Event()  # set on every applied change; consumers clear it
        self._listeners: list[Callable[[DatasetEntry], None]] = []

    def on_change(self, listener: Callable[[DatasetEntry], None]) -> None:
        self._listeners.append(listener)

    def get(self, dataset_id: str) -> DatasetEntry | None:
        return self._entries.get(dataset_id)

    def entries(self) -> list[DatasetEntry]:
        return list(self._entries.values())

    def by_topic(self, topic: str) -> DatasetEntry | None:
        if not topic.startswith("tdg.ingest."):
            return None
        return self._entries.get(topic.removeprefix("tdg.ingest."))

    async def fresh(self, dataset_id: str, min_schema_version: int = 0) -> DatasetEntry | None:
        """The entry, looked up again after catching up while it is missing, a draft, or older
        than wanted: the catalog may have just registered, published or evolved it (its event
        leaves the catalog's outbox a moment after the call that made it returns)."""
        deadline = time.monotonic() + self._catch_up_s
        while True:
            found = self._entries.get(dataset_id)
            if not (
                found is None
                or found.dataset.status == cpb.DATASET_STATUS_DRAFT
                or found.schema.version < min_schema_version
            ):
                return found
            await self.catch_up()
            if time.monotonic() >= deadline:
                return self._entries.get(dataset_id)
            await asyncio.sleep(0.1)

    async def catch_up(self) -> None:
        """Wait until every catalog event published before now has been applied."""
        deadline = time.monotonic() + self._catch_up_s
        try:
            async with asyncio.timeout(self._catch_up_s):
                await self._reader.ready.wait()
        except TimeoutError as exc:
            raise Unavailable("the catalog's events cannot be read (Kafka unreachable?)") from exc
        try:
            ends = await self._reader.end_offsets()
        except Exception as exc:
            raise Unavailable(f"cannot read the catalog's events: {exc}") from exc
        while time.monotonic() < deadline:
            if all(self._positions.get(p, 0) >= end for p, end in ends.items()):
                return
            await asyncio.sleep(0.02)
        raise Unavailable("the catalog's events could not be read up to date in time")

    def apply(self, event: CloudEvent) -> None:
        """Apply one catalog event (also used by tests and tools that hold events)."""
        try:
            changed = self._apply(event)
        except (ValueError, TypeError, DecodeError) as exc:
            log.error("skipping malformed catalog event", type=event.type, error=str(exc))
            return
        if changed is not None:
            self.changed.set()
            for listener in self._listeners:
                listener(changed)

    def _apply(self, event: CloudEvent) -> DatasetEntry | None:
        whole = _WHOLE_DATASET.get(event.type)
        if whole is not None:
            entry = _entry(event.parse(whole).dataset)
            self._entries[entry.id] = entry
            return entry
        if event.type == cev.SchemaEvolved.DESCRIPTOR.full_name:
            evolved = event.parse(cev.SchemaEvolved)
            known = self._entries.get(evolved.dataset_id)
            if known is None:
                return None
            dataset = cpb.Dataset()
            dataset.CopyFrom(known.dataset)
            dataset.schema.CopyFrom(evolved.schema)
            dataset.latest_schema_version = evolved.schema.version
            entry = _entry(dataset)
            self._entries[entry.id] = entry
            return entry
        if event.type == cev.DatasetDeprecated.DESCRIPTOR.full_name:
            deprecated = event.parse(cev.DatasetDeprecated)
            known = self._entries.get(deprecated.dataset_id)
            if known is None:
                return None
            dataset = cpb.Dataset()
            dataset.CopyFrom(known.dataset)
            dataset.status = cpb.DATASET_STATUS_DEPRECATED
            dataset.deprecation_reason = deprecated.reason
            entry = _entry(dataset)
            self._entries[entry.id] = entry
            return entry
        return None

    async def _read_positions(self) -> dict[int, int]:
        return dict(self._positions)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        start_ends = await self._reader.end_offsets()
        while True:
            if not self.caught_up.is_set() and all(
                self._positions.get(p, 0) >= end for p, end in start_ends.items()
            ):
                self.caught_up.set()
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, messages in batches.items():
                for msg in messages:
                    try:
                        event = CloudEvent.from_headers(msg.headers or (), msg.value or b"")
                    except ValueError as exc:
                        log.error(
                            "skipping a catalog message that is no CloudEvent", error=str(exc)
                        )
                    else:
                        self.apply(event)
                    self._positions[tp.partition] = msg.offset + 1

    def start(self) -> None:
        self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()
