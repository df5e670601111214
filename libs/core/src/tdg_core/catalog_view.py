"""A service's view of the catalog, followed in memory from tdg.catalog.events.

The catalog's topic keeps every event forever, so each replica rebuilds its view by reading it from
the beginning at start (no consumer group, no local state). Services keep their own entry type
built from the catalog's `Dataset` (the ingest service adds the table schema, for example).

A request for a dataset not seen yet (or a schema version not seen yet) makes the caller wait for
this view to catch up with the topic's end: the catalog may have published or evolved it a moment
ago (its event leaves the catalog's outbox a moment after the call that made it returns).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer
from google.protobuf.message import DecodeError
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.events.v1 import catalog_events_pb2 as cev

from tdg_core.errors import Unavailable
from tdg_core.events import CloudEvent
from tdg_core.topic_reader import TopicReader

log = structlog.get_logger("tdg.core.catalog_view")

_WHOLE_DATASET: dict[
    str, type[cev.DatasetRegistered | cev.MetadataUpdated | cev.DatasetPublished]
] = {
    m.DESCRIPTOR.full_name: m
    for m in (cev.DatasetRegistered, cev.MetadataUpdated, cev.DatasetPublished)
}


class HasDataset(Protocol):
    @property
    def dataset(self) -> cpb.Dataset: ...


E = TypeVar("E", bound=HasDataset)


class CatalogView(Generic[E]):
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        client_id: str,
        make_entry: Callable[[cpb.Dataset], E],
        catch_up_s: float = 3.0,
    ) -> None:
        self._make_entry = make_entry
        self._bootstrap = bootstrap
        self._topic = topic
        self._catch_up_s = catch_up_s
        self._entries: dict[str, E] = {}
        self._positions: dict[int, int] = {}
        self._reader = TopicReader(
            bootstrap,
            topic,
            client_id,
            self._read_positions,
            self._consume,
        )
        self.caught_up = asyncio.Event()  # set once the history up to start-up has been read
        self.changed = asyncio.Event()  # set on every applied change; consumers clear it
        self._listeners: list[Callable[[E], None]] = []

    def on_change(self, listener: Callable[[E], None]) -> None:
        self._listeners.append(listener)

    def get(self, dataset_id: str) -> E | None:
        return self._entries.get(dataset_id)

    def entries(self) -> list[E]:
        return list(self._entries.values())

    async def fresh(self, dataset_id: str, min_schema_version: int = 0) -> E | None:
        """The entry, looked up again after catching up while it is missing, a draft, or older
        than wanted: the catalog may have just registered, published or evolved it (its event
        leaves the catalog's outbox a moment after the call that made it returns)."""
        deadline = time.monotonic() + self._catch_up_s
        while True:
            found = self._entries.get(dataset_id)
            if not (
                found is None
                or found.dataset.status == cpb.DATASET_STATUS_DRAFT
                or found.dataset.schema.version < min_schema_version
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

    def _apply(self, event: CloudEvent) -> E | None:
        whole = _WHOLE_DATASET.get(event.type)
        if whole is not None:
            entry = self._make_entry(event.parse(whole).dataset)
            self._entries[entry.dataset.id] = entry
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
            entry = self._make_entry(dataset)
            self._entries[entry.dataset.id] = entry
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
            entry = self._make_entry(dataset)
            self._entries[entry.dataset.id] = entry
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
