"""Small helpers of the integration stories: example datasets and reading events back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg.consent.v1 import consent_pb2 as consent_pb
from tdg_cli.dataset_file import load_register_request, load_schema
from tdg_core import topics
from tdg_core.events import CloudEvent

from tests.integration.fixtures.callers import CallerFactory, CatalogClient, ConsentCaller

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str, publisher: str = "", suffix: bool = True) -> pb.RegisterDatasetRequest:
    """An example dataset file, renamed so that every test owns its dataset."""
    request = load_register_request(EXAMPLES / f"{name}.yaml")
    pub, _, ds = request.id.partition(".")
    request.id = f"{publisher or pub}.{ds}" + (f"-{uuid.uuid4().hex[:8]}" if suffix else "")
    return request


def evolution(name: str) -> pb.Schema:
    return load_schema(EXAMPLES / "evolutions" / f"{name}.yaml")


async def events_for(
    bootstrap: str,
    dataset_id: str,
    expected: int,
    timeout_s: float = 20.0,
    topic: str = topics.CATALOG_EVENTS,
) -> list[CloudEvent]:
    """Every event of the topic (tdg.catalog.events by default) keyed by the dataset (or `key`),
    once at least `expected` arrived and the topic has nothing more for now."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    found: list[CloudEvent] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        if (r.key or b"").decode() == dataset_id:
                            found.append(CloudEvent.from_headers(r.headers, r.value or b""))
                if not batch and len(found) >= expected:
                    return found
    except TimeoutError:
        return found
    finally:
        await consumer.stop()


async def consent_events_for(
    bootstrap: str, key: str, expected: int, timeout_s: float = 20.0
) -> list[CloudEvent]:
    """Every event of tdg.consent.events keyed by `key`, once at least `expected` arrived."""
    return await events_for(bootstrap, key, expected, timeout_s, topic=topics.CONSENT_EVENTS)


async def published(officer: CatalogClient, name: str) -> pb.Dataset:
    """An example dataset registered and published by `officer` (a caller with a catalog stub)."""
    request = example(name)
    await officer.catalog.RegisterDataset(request, metadata=officer.md, timeout=10)
    response = await officer.catalog.PublishDataset(
        pb.PublishDatasetRequest(id=request.id), metadata=officer.md, timeout=10
    )
    dataset: pb.Dataset = response.dataset
    return dataset


async def partner_with_app(admin: ConsentCaller) -> tuple[str, str]:
    """A fresh private partner and its application, registered by the platform admin."""
    suffix = uuid.uuid4().hex[:6]
    org, app = f"velo-startup-{suffix}", f"velo-app-{suffix}"
    parties = [
        consent_pb.Party(id=org, kind=consent_pb.PARTY_KIND_PRIVATE_PARTNER, name="Vélo Startup"),
        consent_pb.Party(
            id=app,
            kind=consent_pb.PARTY_KIND_APPLICATION,
            name="Vélo planner",
            organisation=org,
            roles=["consumer"],
        ),
    ]
    for party in parties:
        await admin.stub.RegisterParty(
            consent_pb.RegisterPartyRequest(party=party), metadata=admin.md, timeout=10
        )
    return org, app


async def granted_application(
    consent_caller: CallerFactory[ConsentCaller],
    dataset_id: str,
    purpose: str,
    conditions: consent_pb.Conditions,
    publisher: str = "metropole-lyon",
) -> tuple[str, str, str]:
    """A fresh partner's application with a read agreement for `purpose`, approved by the
    publisher's data officer with `conditions`: (org, app, agreement id)."""
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    officer = consent_caller("lyon-data-office", publisher, "data-officer")
    org, app_id = await partner_with_app(admin)
    app = consent_caller(app_id, org)
    requested = await app.stub.RequestAccess(
        consent_pb.RequestAccessRequest(
            dataset_id=dataset_id,
            purposes=[purpose],
            legal_basis=consent_pb.LEGAL_BASIS_PUBLIC_TASK,
            justification="Plan the charging network",
        ),
        metadata=app.md,
        timeout=10,
    )
    await officer.stub.ApproveAccess(
        consent_pb.ApproveAccessRequest(agreement_id=requested.agreement.id, conditions=conditions),
        metadata=officer.md,
        timeout=10,
    )
    return org, app_id, requested.agreement.id
