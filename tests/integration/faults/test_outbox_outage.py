"""With Kafka down the catalog and the consent service keep working; the events go out once
when it returns."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg.consent.v1 import consent_pb2 as cpb
from tdg_catalog.settings import CatalogSettings
from tdg_consent.settings import ConsentSettings
from tdg_core import topics
from tdg_core.outbox import Outbox
from tdg_core.service import Service
from tdg_core.testing import KafkaBroker

from tests.integration.fixtures.callers import Caller, CallerFactory, ConsentCaller
from tests.integration.helpers import events_for, example

pytestmark = pytest.mark.integration


async def test_event_written_during_a_kafka_outage_arrives_once(
    caller: CallerFactory[Caller], kafka: KafkaBroker, catalog_app: Service[CatalogSettings]
) -> None:
    if not kafka.owned:
        pytest.fail("this story stops the broker: run it against the session's own Kafka")
    officer = caller("lyon-data-office", "metropole-lyon", "data-officer")
    request = example("bike-counters")
    await asyncio.to_thread(kafka.stop)
    try:
        registered = await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
        published = await officer.stub.PublishDataset(
            pb.PublishDatasetRequest(id=request.id), metadata=officer.md, timeout=10
        )
        assert registered.dataset.id == request.id
        assert published.dataset.status == pb.DATASET_STATUS_PUBLISHED
        assert await catalog_app.part(Outbox).pending() >= 2
    finally:
        await asyncio.to_thread(kafka.start)
    events = await events_for(kafka.bootstrap, request.id, expected=2, timeout_s=60)
    assert [e.type for e in events] == [
        "tdg.events.v1.DatasetRegistered",
        "tdg.events.v1.DatasetPublished",
    ]
    assert await catalog_app.part(Outbox).pending() == 0


async def test_consent_events_written_during_a_kafka_outage_arrive_once(
    consent_caller: CallerFactory[ConsentCaller],
    kafka: KafkaBroker,
    consent_app: Service[ConsentSettings],
) -> None:
    if not kafka.owned:
        pytest.fail("this story stops the broker: run it against the session's own Kafka")
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    party = f"outage-partner-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(kafka.stop)
    try:
        await admin.stub.RegisterParty(
            cpb.RegisterPartyRequest(
                party=cpb.Party(id=party, kind=cpb.PARTY_KIND_RESEARCH_BODY, name="Lab")
            ),
            metadata=admin.md,
            timeout=10,
        )
        await admin.stub.SuspendParty(
            cpb.SuspendPartyRequest(id=party, reason="audit"), metadata=admin.md, timeout=10
        )
        assert await consent_app.part(Outbox).pending() >= 2
    finally:
        await asyncio.to_thread(kafka.start)
    events = await events_for(
        kafka.bootstrap, party, expected=2, timeout_s=60, topic=topics.CONSENT_EVENTS
    )
    assert [e.type for e in events] == [
        "tdg.events.v1.PartyRegistered",
        "tdg.events.v1.PartyStatusChanged",
    ]
    assert await consent_app.part(Outbox).pending() == 0
