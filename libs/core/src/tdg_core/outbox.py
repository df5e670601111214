"""Transactional outbox: events are written in the same transaction as the change they describe,
then relayed to Kafka in order by `OutboxRelay`.

With Kafka down the calls still succeed; the relay retries until the broker returns. A row is
marked sent only after Kafka acknowledged it; its CloudEvents id is fixed at write time, so the
rare redelivery after a crash between acknowledgement and marking is recognisable by consumers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.errors import UnknownTopicOrPartitionError
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tdg_core.background import Background, log_failure
from tdg_core.db import write_gate
from tdg_core.events import CloudEvent, EventProducer, TopicSpec, ensure_topics

log = structlog.get_logger("tdg.outbox")


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column(
            "seq",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("topic", String(255), nullable=False),
        Column("key", String(255), nullable=False),
        Column("ce_id", String(64), nullable=False, unique=True),
        Column("ce_type", String(255), nullable=False),
        Column("ce_source", String(255), nullable=False),
        Column("ce_subject", String(255), nullable=False, default=""),
        Column("ce_time", DateTime(timezone=True), nullable=False),
        Column("data", LargeBinary, nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True, index=True),
    )


_LOCK_KEY = 7_465_676  # PostgreSQL advisory lock of the outbox relay


def _event_of(r: Any) -> CloudEvent:
    time = r.ce_time if r.ce_time.tzinfo else r.ce_time.replace(tzinfo=UTC)
    return CloudEvent(
        type=r.ce_type,
        source=r.ce_source,
        data=r.data,
        id=r.ce_id,
        time=time,
        subject=r.ce_subject,
    )


class Outbox:
    """Writes events inside the caller's transaction and relays them to Kafka."""

    def __init__(
        self,
        table: Table,
        engine: AsyncEngine,
        producer: EventProducer,
        topics: Sequence[TopicSpec] = (),
        batch_size: int = 500,
        idle_poll_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        self._table = table
        self._engine = engine
        self._producer = producer
        self._topics = list(topics)
        self._topics_ready = not self._topics
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self._task = Background("outbox-relay", self._run)

    async def add(self, conn: AsyncConnection, topic: str, key: str, event: CloudEvent) -> None:
        """Record an event in the caller's open transaction."""
        await conn.execute(
            insert(self._table).values(
                topic=topic,
                key=key,
                ce_id=event.id,
                ce_type=event.type,
                ce_source=event.source,
                ce_subject=event.subject,
                ce_time=event.time,
                data=event.data,
            )
        )

    def notify(self) -> None:
        """Wake the relay after a commit, so events leave without waiting for the next poll."""
        self._wake.set()

    async def pending(self) -> int:
        async with self._engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(self._table).where(self._table.c.sent_at.is_(None))
            )
        return int(count or 0)

    async def relay_once(self) -> int:
        """Send the oldest unsent events in order; returns how many were sent.

        No transaction stays open while Kafka is called, so a slow or absent broker never holds
        the database lock that the service's own writes need.
        """
        t = self._table
        if not self._topics_ready:
            # Topics are created with their partitioning before the first event (no auto-create).
            await ensure_topics(self._producer.bootstrap, self._topics)
            self._topics_ready = True
        async with self._engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                # One relay at a time across replicas, or the order would be lost.
                got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY})
                await conn.commit()
                if not got:
                    return 0
            try:
                query = select(t).where(t.c.sent_at.is_(None)).order_by(t.c.seq)
                rows = (await conn.execute(query.limit(self._batch_size))).all()
                await conn.commit()
                if not rows:
                    return 0
                by_topic: dict[str, list[tuple[str, CloudEvent]]] = {}
                for r in rows:
                    by_topic.setdefault(r.topic, []).append((r.key, _event_of(r)))
                for topic, items in by_topic.items():
                    try:
                        await self._producer.send_many(topic, items)
                    except UnknownTopicOrPartitionError:
                        # Gone or never made (a broker replaced, a creation lost in an outage):
                        # made again before the next try, since brokers do not auto-create.
                        self._topics_ready = not self._topics
                        raise
                sent = [r.seq for r in rows]
                async with write_gate(self._engine):
                    await conn.execute(
                        update(t).where(t.c.seq.in_(sent)).values(sent_at=datetime.now(UTC))
                    )
                    await conn.commit()
            finally:
                if postgres:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                    await conn.commit()
        return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                while await self.relay_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "outbox relay failed, will retry", exc)
                await asyncio.sleep(self._retry_s)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
