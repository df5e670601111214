"""The datasets the consent service knows: followed from tdg.catalog.events into its own table.

The position reached in each partition is written in the same transaction as what was applied
(table `consumed_offsets`), and the consumer seeks there when partitions are assigned: the table
and its position cannot drift apart, whatever happens to the group's offsets in Kafka (a database
recreated or restored is rebuilt from the topic).

Access requests and conditions are checked against a dataset's publisher, status and columns
without a call to the catalog. A request naming a dataset not seen yet waits until this replica's
consumer group has read the topic up to its end (the dataset may have been registered a moment
ago), and only then answers NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg_core.background import Background
from tdg_core.db import transaction
from tdg_core.errors import NotFound, Unavailable
from tdg_core.events import CloudEvent, topic_partitions

from tdg_consent import store
from tdg_consent.model import DatasetColumn, DatasetRef

log = structlog.get_logger("tdg.consent.datasets")


# (partition, offset, event or None for a message that is no CloudEvent)
Record = tuple[int, int, CloudEvent | None]

# The events that carry the whole dataset.
_WHOLE_DATASET: dict[
    str, type[cev.DatasetRegistered | cev.MetadataUpdated | cev.DatasetPublished]
] = {
    m.DESCRIPTOR.full_name: m
    for m in (cev.DatasetRegistered, cev.MetadataUpdated, cev.DatasetPublished)
}


def _short(enum_type: object, number: int, prefix: str) -> str:
    name: str = enum_type.Name(number)  # type: ignore[attr-defined]
    return name.removeprefix(prefix).lower()


def _columns(schema: cpb.Schema) -> tuple[DatasetColumn, ...]:
    return tuple(
        DatasetColumn(c.name, c.type, _short(cpb.Sensitivity, c.sensitivity, "SENSITIVITY_"))
        for c in schema.columns
    )


def dataset_ref(d: cpb.Dataset) -> DatasetRef:
    return DatasetRef(
        id=d.id,
        publisher=d.publisher,
        status=_short(cpb.DatasetStatus, d.status, "DATASET_STATUS_"),
        access_level=_short(cpb.AccessLevel, d.metadata.access_level, "ACCESS_LEVEL_"),
        columns=_columns(d.schema),
        subject_column=d.schema.subject_column,
    )


class DatasetDirectory:
    def __init__(self, engine: AsyncEngine, bootstrap: str, topic: str, catch_up_s: float) -> None:
        self._engine = engine
        self._bootstrap = bootstrap
        self._topic = topic
        self._catch_up_s = catch_up_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task = Background("catalog-follower", self._run)
        self._ready = asyncio.Event()  # set while a consumer is started

    async def get(self, dataset_id: str, published: bool = False) -> DatasetRef:
        """The dataset; with `published`, a dataset seen as a draft is looked up again after
        catching up (it may have been published a moment ago)."""
        found = await self._find(dataset_id)
        stale = found is None or (published and found.status == "draft")
        if stale and self._catch_up_s > 0:
            await self._catch_up()
            found = await self._find(dataset_id)
        if found is None:
            raise NotFound(f"dataset '{dataset_id}' not found in the catalog")
        return found

    async def _find(self, dataset_id: str) -> DatasetRef | None:
        async with transaction(self._engine, write=False, name="consent") as conn:
            return await store.find_dataset(conn, dataset_id)

    async def _catch_up(self) -> None:
        """Wait until the database holds every catalog event published before now."""
        deadline = time.monotonic() + self._catch_up_s
        try:
            async with asyncio.timeout(self._catch_up_s):
                await self._ready.wait()
        except TimeoutError as exc:
            raise Unavailable(
                "the catalog's events cannot be read yet (Kafka unreachable?): "
                "cannot tell whether the dataset exists"
            ) from exc
        consumer = self._consumer
        if consumer is None:
            raise Unavailable("the catalog's events cannot be read (Kafka unreachable?)")
        try:
            tps = list(consumer.assignment())
            ends = await consumer.end_offsets(tps) if tps else {}
            while time.monotonic() < deadline:
                async with transaction(self._engine, write=False, name="consent") as conn:
                    done = await store.consumed(conn, self._topic)
                if all(done.get(tp.partition, 0) >= end for tp, end in ends.items()):
                    return
                await asyncio.sleep(0.05)
        except KafkaError as exc:
            raise Unavailable(f"cannot read the catalog's events: {exc}") from exc

    async def apply(self, event: CloudEvent) -> None:
        """Apply one catalog event that does not come from the topic (tests, tools)."""
        async with transaction(self._engine, write=True, name="consent") as conn:
            await self._apply(conn, event)

    async def apply_records(self, records: Sequence[Record]) -> None:
        """Apply records read from the topic in one transaction, with their positions. A record
        at or before the stored position was applied already, by this replica or another: it is
        skipped, so replicas reading the same partition never go backwards."""
        async with transaction(self._engine, write=True, name="consent") as conn:
            positions: dict[int, int] = {}
            for partition, offset, event in records:
                if partition not in positions:
                    positions[partition] = await store.position(
                        conn, self._topic, partition, for_update=True
                    )
                if offset < positions[partition]:
                    continue
                positions[partition] = offset + 1
                if event is not None:
                    await self._apply(conn, event)
            for partition, next_offset in positions.items():
                await store.mark_consumed(conn, self._topic, partition, next_offset - 1)

    async def _apply(self, conn: AsyncConnection, event: CloudEvent) -> None:
        try:
            await self._apply_payload(conn, event)
        except (ValueError, TypeError, DecodeError) as exc:
            # A malformed event must not stop the follower: its position is kept, it is logged.
            log.error("skipping malformed catalog event", type=event.type, error=str(exc))

    async def _apply_payload(self, conn: AsyncConnection, event: CloudEvent) -> None:
        whole = _WHOLE_DATASET.get(event.type)
        if whole is not None:
            await store.upsert_dataset(conn, dataset_ref(event.parse(whole).dataset))
        elif event.type == cev.SchemaEvolved.DESCRIPTOR.full_name:
            evolved = event.parse(cev.SchemaEvolved)
            await store.update_dataset_fields(
                conn,
                evolved.dataset_id,
                columns=[
                    {"name": c.name, "type": c.type, "sensitivity": c.sensitivity}
                    for c in _columns(evolved.schema)
                ],
                subject_column=evolved.schema.subject_column,
            )
        elif event.type == cev.DatasetDeprecated.DESCRIPTOR.full_name:
            deprecated = event.parse(cev.DatasetDeprecated)
            await store.update_dataset_fields(conn, deprecated.dataset_id, status="deprecated")

    async def _run(self) -> None:
        while True:
            # No consumer group: every replica reads every partition from the position its
            # database holds, so a replica never waits on a group rebalance, and replicas that
            # share a database skip what another one applied first.
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id="tdg-consent",
            )
            try:
                await consumer.start()
                await self._assign(consumer)
                self._consumer = consumer
                self._ready.set()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("following the catalog failed, will retry", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                self._ready.clear()
                self._consumer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Every partition of the topic, from the stored positions (waits for the topic)."""
        partitions = await topic_partitions(self._bootstrap, self._topic)
        while not partitions:  # the catalog has not created its topic yet
            await asyncio.sleep(1.0)
            partitions = await topic_partitions(self._bootstrap, self._topic)
        tps = [TopicPartition(self._topic, p) for p in partitions]
        consumer.assign(tps)
        stored = await self.stored_positions()
        for tp in tps:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            records: list[Record] = []
            for messages in batches.values():
                for msg in messages:
                    try:
                        event = CloudEvent.from_headers(msg.headers or (), msg.value or b"")
                    except ValueError as exc:
                        log.error(
                            "skipping a catalog message that is no CloudEvent", error=str(exc)
                        )
                        event = None
                    records.append((msg.partition, msg.offset, event))
            if records:
                await self.apply_records(records)

    async def stored_positions(self) -> dict[int, int]:
        async with transaction(self._engine, write=False, name="consent") as conn:
            return await store.consumed(conn, self._topic)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
