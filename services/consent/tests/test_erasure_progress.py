"""Erasure requests follow what the ingest service reports on tdg.ingest.events (real Kafka,
SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.consent.v1 import consent_pb2 as pb
from tdg.events.v1 import ingest_events_pb2 as iev
from tdg_consent.convert import erasure_to_pb
from tdg_consent.erasure_progress import apply_ingest_event
from tdg_consent.follower import TopicFollower
from tdg_consent.model import DatasetErasure, Erasure, ErasureState
from tdg_core.events import CloudEvent, EventProducer, TopicSpec, ensure_topics
from tdg_core.testing import KafkaBroker

from services.consent.tests.conftest import Service

pytestmark = pytest.mark.integration

EV_SESSIONS = "metropole-lyon.ev-sessions"
BIKES = "metropole-lyon.bike-counters"
APPLIED_AT = datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)
COMPLETED_AT = datetime(2026, 3, 1, 10, 0, 9, tzinfo=UTC)


def _ts(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def applied(
    erasure: Erasure, dataset_id: str, snapshot_id: int, rows: int, failure: str = ""
) -> iev.ErasureApplied:
    return iev.ErasureApplied(
        erasure_id=erasure.id,
        subject_id=erasure.subject_id,
        dataset_id=dataset_id,
        snapshot_id=snapshot_id,
        rows_deleted=rows,
        applied_at=_ts(APPLIED_AT),
        failure=failure,
    )


def completed(erasure: Erasure, failure: str = "") -> iev.ErasureCompleted:
    return iev.ErasureCompleted(
        erasure_id=erasure.id,
        subject_id=erasure.subject_id,
        dataset_ids=[EV_SESSIONS, BIKES],
        completed_at=_ts(COMPLETED_AT),
        failure=failure,
    )


@dataclass
class IngestEvents:
    """The ingest service's side of tdg.ingest.events (a topic of this test's own), and the
    consent service's follower reading it into the test's database."""

    bootstrap: str
    topic: str
    producer: EventProducer
    follower: TopicFollower

    async def report(self, *payloads: iev.ErasureApplied | iev.ErasureCompleted) -> None:
        """Publish as the ingest service does: keyed by dataset (applied) or erasure (completed)."""
        for payload in payloads:
            key = payload.dataset_id if isinstance(payload, iev.ErasureApplied) else ""
            await self.send(key or payload.erasure_id, CloudEvent.of(payload, "tdg/ingest"))

    async def send(self, key: str, event: CloudEvent) -> None:
        await self.producer.send(self.topic, key, event)

    async def settled(self) -> None:
        """Wait until the follower has applied everything published so far."""
        await self.follower.catch_up(timeout_s=30)


@pytest.fixture
async def ingest_events(service: Service, kafka: KafkaBroker) -> AsyncIterator[IngestEvents]:
    topic = f"tdg.ingest.events.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka.bootstrap, [TopicSpec(topic, partitions=3)])
    producer = EventProducer(kafka.bootstrap, client_id="test-ingest")
    follower = TopicFollower(service.engine, kafka.bootstrap, topic, apply_ingest_event)
    follower.start()
    yield IngestEvents(kafka.bootstrap, topic, producer, follower)
    await follower.stop()
    await producer.stop()


async def _requested(service: Service, dataset_id: str = "") -> Erasure:
    await service.add_dataset(EV_SESSIONS)
    await service.add_dataset(BIKES)
    return await service.erasures.request("s1", dataset_id, "moved away", "portal", "portal-app")


async def test_erasure_reported_by_ingest_is_shown_completed(
    service: Service, ingest_events: IngestEvents
) -> None:
    erasure = await _requested(service)
    await ingest_events.report(applied(erasure, EV_SESSIONS, snapshot_id=7001, rows=3))
    await ingest_events.settled()
    halfway = await service.erasures.get(erasure.id)
    assert halfway.state is ErasureState.IN_PROGRESS
    assert halfway.datasets == (DatasetErasure(EV_SESSIONS, 7001, 3, APPLIED_AT),)
    assert halfway.completed_at is None

    await ingest_events.report(applied(erasure, BIKES, snapshot_id=0, rows=0), completed(erasure))
    await ingest_events.settled()
    done = await service.erasures.get(erasure.id)
    assert done.state is ErasureState.COMPLETED
    assert done.completed_at == COMPLETED_AT
    assert done.failure == ""
    assert done.datasets == (
        DatasetErasure(BIKES, 0, 0, APPLIED_AT),
        DatasetErasure(EV_SESSIONS, 7001, 3, APPLIED_AT),
    )
    # What GetErasure and ListErasures answer.
    shown = erasure_to_pb(done)
    assert shown.state == pb.ERASURE_STATE_COMPLETED
    assert [(d.dataset_id, d.snapshot_id, d.rows_deleted) for d in shown.datasets] == [
        (BIKES, 0, 0),
        (EV_SESSIONS, 7001, 3),
    ]
    listed, _ = await service.erasures.list_page("s1", ErasureState.COMPLETED, 0, "")
    assert listed == [done]


async def test_duplicate_reports_change_nothing(
    service: Service, ingest_events: IngestEvents
) -> None:
    erasure = await _requested(service, EV_SESSIONS)
    report = applied(erasure, EV_SESSIONS, snapshot_id=7001, rows=3)
    # A producer retry writes the same report at a new offset.
    await ingest_events.report(report, report, completed(erasure), report, completed(erasure))
    await ingest_events.settled()
    done = await service.erasures.get(erasure.id)
    assert done.state is ErasureState.COMPLETED
    assert done.datasets == (DatasetErasure(EV_SESSIONS, 7001, 3, APPLIED_AT),)

    # Applied once more outside the topic, and read again by a second replica sharing the
    # database (it starts from the stored positions): still the same erasure.
    await ingest_events.follower.apply(CloudEvent.of(report, "tdg/ingest"))
    replica = TopicFollower(
        service.engine, ingest_events.bootstrap, ingest_events.topic, apply_ingest_event
    )
    replica.start()
    try:
        await replica.catch_up(timeout_s=30)
    finally:
        await replica.stop()
    assert await service.erasures.get(erasure.id) == done


async def test_unknown_erasure_is_skipped_and_the_follower_goes_on(
    service: Service, ingest_events: IngestEvents
) -> None:
    erasure = await _requested(service, EV_SESSIONS)
    stranger = Erasure(
        id="era-of-another-deployment",
        subject_id="s9",
        dataset_id="",
        reason="",
        source="",
        state=ErasureState.RECEIVED,
        requested_by="",
        requested_at=APPLIED_AT,
    )
    await ingest_events.report(applied(stranger, EV_SESSIONS, 1, 1), completed(stranger))
    # The right id for another subject, a payload that does not parse, a message without headers.
    someone_else = dataclasses.replace(erasure, subject_id="s2")
    await ingest_events.report(applied(someone_else, EV_SESSIONS, 5, 5))
    garbled = CloudEvent(iev.ErasureApplied.DESCRIPTOR.full_name, "tdg/ingest", b"\xff\xff\xff")
    await ingest_events.send(EV_SESSIONS, garbled)
    await _send_raw(ingest_events, b"{not a cloud event}")
    await ingest_events.report(applied(erasure, EV_SESSIONS, 7001, 3), completed(erasure))
    await ingest_events.settled()

    done = await service.erasures.get(erasure.id)
    assert done.state is ErasureState.COMPLETED
    assert done.datasets == (DatasetErasure(EV_SESSIONS, 7001, 3, APPLIED_AT),)
    everyone, _ = await service.erasures.list_page("", None, 0, "")
    assert [e.id for e in everyone] == [erasure.id]


async def test_failures_are_shown_until_a_completion_says_otherwise(
    service: Service, ingest_events: IngestEvents
) -> None:
    erasure = await _requested(service)
    await ingest_events.report(applied(erasure, BIKES, 0, 0, failure="table locked"))
    await ingest_events.settled()
    failed = await service.erasures.get(erasure.id)
    assert (failed.state, failed.failure, failed.datasets) == (
        ErasureState.FAILED,
        "table locked",
        (),
    )

    # The ingest service retried: both datasets done, then the completion.
    await ingest_events.report(
        applied(erasure, BIKES, 42, 1), applied(erasure, EV_SESSIONS, 43, 2), completed(erasure)
    )
    await ingest_events.settled()
    done = await service.erasures.get(erasure.id)
    assert (done.state, done.failure) == (ErasureState.COMPLETED, "")
    assert [d.snapshot_id for d in done.datasets] == [42, 43]


async def test_completion_reported_with_a_failure(
    service: Service, ingest_events: IngestEvents
) -> None:
    erasure = await _requested(service, BIKES)
    await ingest_events.report(completed(erasure, failure="bucket unreachable"))
    await ingest_events.settled()
    failed = await service.erasures.get(erasure.id)
    assert (failed.state, failed.failure) == (ErasureState.FAILED, "bucket unreachable")
    assert failed.completed_at == COMPLETED_AT


async def test_dataset_reported_after_the_completion_is_still_recorded(service: Service) -> None:
    # Completions (keyed by erasure) and dataset reports (keyed by dataset) sit on different
    # partitions: either may be read first.
    erasure = await _requested(service, BIKES)
    follower = TopicFollower(service.engine, "127.0.0.1:1", "unused", apply_ingest_event)
    await follower.apply(CloudEvent.of(completed(erasure), "tdg/ingest"))
    await follower.apply(CloudEvent.of(applied(erasure, BIKES, 42, 1), "tdg/ingest"))
    await follower.apply(CloudEvent.of(applied(erasure, BIKES, 0, 0, "late failure"), "tdg/ingest"))
    done = await service.erasures.get(erasure.id)
    assert (done.state, done.failure) == (ErasureState.COMPLETED, "")
    assert done.datasets == (DatasetErasure(BIKES, 42, 1, APPLIED_AT),)


async def _send_raw(events: IngestEvents, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=events.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(events.topic, value=value, key=b"x")
    finally:
        await producer.stop()
