"""Follows a Kafka topic of events into the consent database (catalog and ingest events).

No consumer group: every replica reads every partition from the position its database holds. The
position reached in each partition is written in the same transaction as what was applied (table
`consumed_offsets`), and the consumer seeks there when partitions are assigned: the tables and
their position cannot drift apart, whatever happens to offsets in Kafka (a database recreated or
restored is rebuilt from the topic), a replica never waits on a group rebalance, and replicas that
share a database skip what another one applied first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tdg_core.db import transaction
from tdg_core.errors import Unavailable
from tdg_core.events import CloudEvent
from tdg_core.topic_reader import TopicReader

from tdg_consent import store

log = structlog.get_logger("tdg.consent.follower")

# (partition, offset, event or None for a message that is no CloudEvent)
Record = tuple[int, int, CloudEvent | None]

# Applies one event inside the follower's transaction; events it does not handle it ignores.
Apply = Callable[[AsyncConnection, CloudEvent], Awaitable[None]]


class TopicFollower:
    def __init__(self, engine: AsyncEngine, bootstrap: str, topic: str, apply: Apply) -> None:
        self.topic = topic
        self._engine = engine
        self._bootstrap = bootstrap
        self._apply = apply
        self._reader = TopicReader(
            bootstrap, topic, "tdg-consent", self.stored_positions, self._consume
        )

    async def apply(self, event: CloudEvent) -> None:
        """Apply one event that does not come from the topic (tests, tools)."""
        async with transaction(self._engine, write=True, name="consent") as conn:
            await self._apply_logged(conn, event)

    async def apply_records(self, records: Sequence[Record]) -> None:
        """Apply records read from the topic in one transaction, with their positions. A record
        at or before the stored position was applied already, by this replica or another: it is
        skipped, so replicas reading the same partition never go backwards."""
        async with transaction(self._engine, write=True, name="consent") as conn:
            positions: dict[int, int] = {}
            for partition, offset, event in records:
                if partition not in positions:
                    positions[partition] = await store.position(
                        conn, self.topic, partition, for_update=True
                    )
                if offset < positions[partition]:
                    continue
                positions[partition] = offset + 1
                if event is not None:
                    await self._apply_logged(conn, event)
            for partition, next_offset in positions.items():
                await store.mark_consumed(conn, self.topic, partition, next_offset - 1)

    async def _apply_logged(self, conn: AsyncConnection, event: CloudEvent) -> None:
        try:
            await self._apply(conn, event)
        except (ValueError, TypeError, DecodeError) as exc:
            # A malformed event must not stop the follower: its position is kept, it is logged.
            log.error("skipping malformed event", topic=self.topic, type=event.type, error=str(exc))

    async def catch_up(self, timeout_s: float) -> None:
        """Wait until the database holds every event published on the topic before now;
        Unavailable when the topic cannot be read within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._reader.ready.wait()
        except TimeoutError as exc:
            raise Unavailable(f"{self.topic} cannot be read yet (Kafka unreachable?)") from exc
        try:
            ends = await self._reader.end_offsets()
            while True:
                done = await self.stored_positions()
                if all(done.get(p, 0) >= end for p, end in ends.items()):
                    return
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
        except (KafkaError, RuntimeError) as exc:
            raise Unavailable(f"cannot read {self.topic}: {exc}") from exc
        # Behind the topic's end: an answer read from the database now could be wrong.
        raise Unavailable(f"{self.topic} not caught up within {timeout_s}s")

    async def stored_positions(self) -> dict[int, int]:
        async with transaction(self._engine, write=False, name="consent") as conn:
            return await store.consumed(conn, self.topic)

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
                            "skipping a message that is no CloudEvent",
                            topic=self.topic,
                            partition=msg.partition,
                            offset=msg.offset,
                            error=str(exc),
                        )
                        event = None
                    records.append((msg.partition, msg.offset, event))
            if records:
                await self.apply_records(records)

    def start(self) -> None:
        self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()
