"""The outbox relay on a real broker: its events reach Kafka even when their topic has vanished
(a broker replaced, or a creation lost in an outage), since brokers do not auto-create topics."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.wrappers_pb2 import StringValue
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine
from tdg_core.db import create_engine, transaction
from tdg_core.events import CloudEvent, EventProducer, TopicSpec
from tdg_core.outbox import Outbox, outbox_table
from tdg_core.testing import KafkaBroker

pytestmark = pytest.mark.integration

metadata = MetaData()
table = outbox_table(metadata)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def keys_on(bootstrap: str, topic: str, expected: int) -> list[str]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    keys: list[str] = []
    try:
        async with asyncio.timeout(30):
            while len(keys) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    keys.extend((r.key or b"").decode() for r in records)
    finally:
        await consumer.stop()
    return keys


async def test_events_reach_a_topic_deleted_under_the_relay(
    kafka: KafkaBroker, engine: AsyncEngine
) -> None:
    topic = f"tdg.test.outbox-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(kafka.bootstrap, "test-outbox")
    relay = Outbox(table, engine, producer, topics=[TopicSpec(topic, 1)], retry_s=0.2)

    async def add(key: str) -> None:
        async with transaction(engine, write=True, name="test") as conn:
            await relay.add(conn, topic, key, CloudEvent.of(StringValue(value=key), "test"))
        relay.notify()

    relay.start()
    try:
        await add("before")
        assert await keys_on(kafka.bootstrap, topic, 1) == ["before"]
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
        await add("after")
        assert await keys_on(kafka.bootstrap, topic, 1) == ["after"]
        assert await relay.pending() == 0
    finally:
        await relay.stop()
        await producer.stop()
