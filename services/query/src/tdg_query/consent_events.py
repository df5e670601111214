"""Follows tdg.consent.events from its end: consent changes refresh the subject sets, agreement
and party changes stop the streams they concern. Every replica reads every partition (no group):
each holds its own sets and streams."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer
from google.protobuf.message import DecodeError
from tdg.events.v1 import consent_events_pb2 as cev
from tdg_core.events import CloudEvent
from tdg_core.topic_reader import TopicReader

from tdg_query.consent_sets import ConsentSets
from tdg_query.revocations import Revocations

log = structlog.get_logger("tdg.query.consent_events")

CONSENT_CHANGED = cev.ConsentChanged.DESCRIPTOR.full_name
AGREEMENT_CHANGED = cev.AgreementStateChanged.DESCRIPTOR.full_name
PARTY_CHANGED = cev.PartyStatusChanged.DESCRIPTOR.full_name


class ConsentFollower:
    def __init__(
        self, bootstrap: str, topic: str, sets: ConsentSets, revocations: Revocations
    ) -> None:
        self._sets = sets
        self._revocations = revocations
        self._reader = TopicReader(
            bootstrap, topic, "tdg-query-consent", self._positions, self._consume, from_end=True
        )
        self._refreshing: set[asyncio.Task[None]] = set()

    def following(self) -> bool:
        return self._reader.ready.is_set()

    def start(self) -> None:
        self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()
        for task in list(self._refreshing):
            task.cancel()

    async def _positions(self) -> dict[int, int]:
        # From the end each time it (re)connects: the sets are refreshed whole meanwhile
        # (`following()` is false while disconnected, so queries refresh them themselves).
        return {}

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for messages in batches.values():
                for msg in messages:
                    try:
                        event = CloudEvent.from_headers(msg.headers or (), msg.value or b"")
                        self.apply(event)
                    except (ValueError, DecodeError) as exc:
                        log.error("skipping a malformed consent event", error=str(exc))

    def apply(self, event: CloudEvent) -> None:
        if event.type == CONSENT_CHANGED:
            consent = event.parse(cev.ConsentChanged).consent
            keys = self._sets.mark_stale(consent.purpose, consent.dataset_id, consent.revision)
            if keys:
                task = asyncio.create_task(self._sets.refresh_stale(keys))
                self._refreshing.add(task)
                task.add_done_callback(self._refreshing.discard)
        elif event.type == AGREEMENT_CHANGED:
            self._revocations.agreement_changed(event.parse(cev.AgreementStateChanged).agreement)
        elif event.type == PARTY_CHANGED:
            self._revocations.party_changed(event.parse(cev.PartyStatusChanged).party)
