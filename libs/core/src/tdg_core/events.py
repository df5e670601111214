"""Kafka events: CloudEvents binary-mode envelope over protobuf, producer, consumer, topics.

Every tdg event is a protobuf message; its CloudEvents `ce_type` is the message's full name
(e.g. `tdg.events.v1.DatasetRegistered`) and `ce_id` is stable across redeliveries, so consumers
can drop a duplicate by id.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from google.protobuf.message import Message

CONTENT_TYPE = "application/protobuf"
M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One event as it travels: CloudEvents attributes plus the serialized protobuf payload."""

    type: str
    source: str
    data: bytes
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    subject: str = ""

    @classmethod
    def of(cls, payload: Message, source: str, subject: str = "") -> CloudEvent:
        return cls(
            type=payload.DESCRIPTOR.full_name,
            source=source,
            data=payload.SerializeToString(),
            subject=subject,
        )

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", self.time.isoformat().encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        if self.subject:
            headers.append(("ce_subject", self.subject.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]], data: bytes) -> CloudEvent:
        h = {k: v.decode() for k, v in headers}
        missing = [k for k in ("ce_specversion", "ce_id", "ce_source", "ce_type") if k not in h]
        if missing:
            raise ValueError(f"not a CloudEvent: missing headers {missing}")
        return cls(
            type=h["ce_type"],
            source=h["ce_source"],
            data=data,
            id=h["ce_id"],
            time=datetime.fromisoformat(h["ce_time"]) if "ce_time" in h else datetime.now(UTC),
            subject=h.get("ce_subject", ""),
        )

    def parse(self, message_type: builtins.type[M]) -> M:
        if message_type.DESCRIPTOR.full_name != self.type:
            raise ValueError(f"event is {self.type}, not {message_type.DESCRIPTOR.full_name}")
        message = message_type()
        message.ParseFromString(self.data)
        return message


class EventProducer:
    """Idempotent producer (acks=all): a retried send is written once per partition."""

    def __init__(self, bootstrap: str, client_id: str, request_timeout_ms: int = 10_000) -> None:
        self.bootstrap = bootstrap
        self._options = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "request_timeout_ms": request_timeout_ms,
            "linger_ms": 5,
        }
        self._producer_or_none: AIOKafkaProducer | None = None

    @property
    def _producer(self) -> AIOKafkaProducer:
        assert self._producer_or_none is not None, "start() first"
        return self._producer_or_none

    async def start(self) -> None:
        """Connect (again); a start that fails leaves nothing behind, so the next call retries."""
        if self._producer_or_none is not None:
            return
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer_or_none = producer

    async def send(self, topic: str, key: str, event: CloudEvent) -> None:
        """Send and wait for the broker's acknowledgement."""
        await self.start()
        await self._producer.send_and_wait(
            topic, value=event.data, key=key.encode(), headers=event.headers()
        )

    async def send_many(self, topic: str, items: Sequence[tuple[str, CloudEvent]]) -> None:
        """Send in order and wait for every acknowledgement (order kept per key)."""
        await self.start()
        futures = [
            await self._producer.send(topic, value=e.data, key=k.encode(), headers=e.headers())
            for k, e in items
        ]
        for fut in futures:
            await fut

    async def stop(self) -> None:
        if self._producer_or_none is not None:
            await self._producer_or_none.stop()
            self._producer_or_none = None


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    topic: str
    partition: int
    offset: int
    key: str
    event: CloudEvent


async def consume_events(consumer: AIOKafkaConsumer) -> AsyncIterator[ReceivedEvent]:
    """Decode CloudEvents from a started consumer; messages that are not CloudEvents are skipped
    by the caller's choice: they raise ValueError here, with their position."""
    async for msg in consumer:
        try:
            event = CloudEvent.from_headers(msg.headers or (), msg.value or b"")
        except ValueError as exc:
            raise ValueError(f"{msg.topic}[{msg.partition}]@{msg.offset}: {exc}") from exc
        yield ReceivedEvent(msg.topic, msg.partition, msg.offset, (msg.key or b"").decode(), event)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


async def ensure_topics(
    bootstrap: str, topics: Sequence[TopicSpec], timeout_ms: int = 10_000
) -> None:
    """Create the topics that do not exist yet (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=t.config)
            for t in topics
            if t.name not in existing
        ]
        if new:
            try:
                response = await admin.create_topics(new)
            except TopicAlreadyExistsError:
                return  # created meanwhile by another replica
            # The broker answers per topic, and aiokafka raises for none of them: a topic not
            # created (the controller moving, a timeout) must not pass for one that exists.
            for topic, code, *message in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    error = for_code(code)
                    raise error(f"topic {topic} not created: {message[0] if message else ''}")
    finally:
        await admin.close()


async def topic_partitions(bootstrap: str, topic: str, timeout_ms: int = 10_000) -> list[int]:
    """The partition numbers of a topic, sorted; [] when it does not exist (yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code", 0) != 0:
        return []
    return sorted(p["partition"] for p in described.get("partitions", []))


async def kafka_reachable(bootstrap: str, timeout_ms: int = 2_000) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            await admin.start()
            await admin.list_topics()
    except Exception:
        return False
    finally:
        await admin.close()
    return True
