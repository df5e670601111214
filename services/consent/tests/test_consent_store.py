"""The consent service's use cases on both databases it supports: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import select
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg_consent import store
from tdg_consent.access import AccessRequest
from tdg_consent.model import (
    AccessKind,
    AgreementState,
    ColumnMask,
    Commitments,
    Conditions,
    ConsentState,
    Generalisation,
    LegalBasis,
    MaskMethod,
    Party,
    PartyKind,
    PartyStatus,
    TerritoryFilter,
)
from tdg_core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

from services.consent.tests.conftest import Service

pytestmark = pytest.mark.integration

DATASET = "metropole-lyon.ev-sessions"


async def _partner(service: Service, org: str = "velo-co", app: str = "velo-app") -> None:
    await service.parties.register(Party(org, PartyKind.PRIVATE_PARTNER, "Vélo Co", ""))
    await service.parties.register(Party(app, PartyKind.APPLICATION, "Vélo app", org))


def _request(kind: AccessKind = AccessKind.READ, consumer: str = "velo-app") -> AccessRequest:
    return AccessRequest(
        dataset_id=DATASET,
        consumer=consumer,
        kind=kind,
        purposes=("mobility-planning",),
        legal_basis=LegalBasis.PUBLIC_TASK,
        justification="planning",
        columns=(),
    )


async def _events(service: Service) -> list[str]:
    async with service.engine.connect() as conn:
        rows = await conn.execute(select(store.outbox.c.ce_type).order_by(store.outbox.c.seq))
        return [r.ce_type.rsplit(".", 1)[-1] for r in rows]


async def test_party_register_suspend_reinstate(service: Service) -> None:
    await _partner(service)
    app = await service.parties.get("velo-app")
    assert app.organisation == "velo-co"
    assert (await service.parties.get("velo-co")).organisation == "velo-co"
    with pytest.raises(AlreadyExists):
        await service.parties.register(Party("velo-co", PartyKind.PRIVATE_PARTNER, "again", ""))
    with pytest.raises(NotFound, match="organisation 'nobody'"):
        await service.parties.register(Party("orphan", PartyKind.APPLICATION, "x", "nobody"))
    suspended = await service.parties.suspend("velo-co", "unpaid")
    assert suspended.status is PartyStatus.SUSPENDED
    with pytest.raises(FailedPrecondition, match="already suspended"):
        await service.parties.suspend("velo-co", "again")
    with pytest.raises(InvalidArgument, match="reason"):
        await service.parties.suspend("velo-app", "")
    await service.parties.reinstate("velo-co")
    page, token = await service.parties.list_page(store.PartyFilter(organisation="velo-co"), 1, "")
    assert [p.id for p in page] == ["velo-app"] and token
    rest, end = await service.parties.list_page(store.PartyFilter(organisation="velo-co"), 1, token)
    assert [p.id for p in rest] == ["velo-co"] and end == ""
    assert await _events(service) == [
        "PartyRegistered",
        "PartyRegistered",
        "PartyStatusChanged",
        "PartyStatusChanged",
    ]


async def test_agreement_lifecycle_and_history(service: Service) -> None:
    await _partner(service)
    await service.add_dataset(DATASET)
    requested = await service.access.request(_request(), actor="velo-app")
    assert requested.state is AgreementState.REQUESTED
    assert requested.publisher == "metropole-lyon" and requested.consumer_org == "velo-co"
    conditions = Conditions(
        columns=("ts", "kwh", "user_id", "commune"),
        masks=(
            ColumnMask("user_id", MaskMethod.HASH),
            ColumnMask("ts", MaskMethod.GENERALISE, Generalisation(truncate_to="day")),
        ),
        territory_filter=TerritoryFilter("commune", ("69123",)),
    )
    approved = await service.access.approve(requested.id, conditions, actor="lyon-officer")
    assert approved.state is AgreementState.ACTIVE
    assert approved.conditions is not None and approved.conditions.valid_from is not None
    with pytest.raises(FailedPrecondition, match="only an agreement that is requested"):
        await service.access.approve(requested.id, conditions, actor="lyon-officer")
    await service.access.suspend(requested.id, "audit", actor="lyon-officer")
    await service.access.resume(requested.id, actor="lyon-officer")
    await service.access.revoke(requested.id, "ended", actor="lyon-officer")
    with pytest.raises(FailedPrecondition, match="it is revoked"):
        await service.access.resume(requested.id, actor="lyon-officer")
    got = await service.access.get(requested.id)
    assert [(h.state, h.actor) for h in got.history] == [
        (AgreementState.REQUESTED, "velo-app"),
        (AgreementState.ACTIVE, "lyon-officer"),
        (AgreementState.SUSPENDED, "lyon-officer"),
        (AgreementState.ACTIVE, "lyon-officer"),
        (AgreementState.REVOKED, "lyon-officer"),
    ]
    assert got.conditions == approved.conditions
    assert (await _events(service)).count("AgreementStateChanged") == 5


async def test_requests_are_checked_against_the_dataset(service: Service) -> None:
    await _partner(service)
    await service.add_dataset(DATASET)
    with pytest.raises(NotFound, match=r"dataset 'metropole-lyon.unknown'"):
        await service.access.request(
            dataclasses.replace(_request(), dataset_id="metropole-lyon.unknown"), "x"
        )
    with pytest.raises(NotFound, match="party 'ghost'"):
        await service.access.request(_request(consumer="ghost"), "ghost")
    with pytest.raises(InvalidArgument, match=r"^purposes\[0\]: unknown purpose 'spying'"):
        await service.access.request(
            dataclasses.replace(_request(), purposes=("spying",)), "velo-app"
        )
    with pytest.raises(InvalidArgument, match=r"^columns\[0\]: no column 'nope'"):
        await service.access.request(dataclasses.replace(_request(), columns=("nope",)), "velo-app")
    await service.add_dataset("metropole-lyon.draft", status=cpb.DATASET_STATUS_DRAFT)
    with pytest.raises(FailedPrecondition, match="is draft"):
        await service.access.request(
            dataclasses.replace(_request(), dataset_id="metropole-lyon.draft"), "x"
        )
    await service.parties.register(Party("metropole-lyon", PartyKind.INTERCOMMUNALITY, "ML", ""))
    with pytest.raises(FailedPrecondition, match="needs no agreement"):
        await service.access.request(_request(consumer="metropole-lyon"), "lyon")


@pytest.mark.parametrize(
    ("conditions", "field"),
    [
        (Conditions(columns=("nope",)), "conditions.columns[0]"),
        (Conditions(masks=(ColumnMask("kwh", MaskMethod.GENERALISE),)), "conditions.masks[0]"),
        (
            Conditions(
                masks=(ColumnMask("kwh", MaskMethod.GENERALISE, Generalisation(truncate_to="day")),)
            ),
            "conditions.masks[0].generalisation.truncate_to",
        ),
        (
            Conditions(
                masks=(ColumnMask("commune", MaskMethod.GENERALISE, Generalisation(round_to=10)),)
            ),
            "conditions.masks[0].generalisation.round_to",
        ),
        (
            Conditions(territory_filter=TerritoryFilter("commune", ("6912",))),
            "conditions.territory_filter.codes[0]",
        ),
        (Conditions(min_group_size=5), "conditions.min_group_size"),
        (
            Conditions(valid_until=datetime.now(UTC) - timedelta(days=1)),
            "conditions.valid_until",
        ),
        (Conditions(commitments=Commitments(completeness_pct=120)), "conditions.commitments"),
    ],
)
async def test_bad_conditions_name_the_field(
    service: Service, conditions: Conditions, field: str
) -> None:
    await _partner(service)
    await service.add_dataset(DATASET)
    requested = await service.access.request(_request(), actor="velo-app")
    with pytest.raises(InvalidArgument) as refusal:
        await service.access.approve(requested.id, conditions, actor="lyon-officer")
    assert refusal.value.field.startswith(field)
    assert (await service.access.get(requested.id)).state is AgreementState.REQUESTED


async def test_producer_grants_and_expiry(service: Service) -> None:
    await _partner(service)
    await service.add_dataset(DATASET)
    writer = await service.access.request(_request(AccessKind.WRITE), actor="velo-app")
    await service.access.approve(
        writer.id,
        Conditions(
            commitments=Commitments(300, 95.0, 99.0),
            valid_until=datetime.now(UTC) + timedelta(seconds=1),
        ),
        actor="lyon-officer",
    )
    grants = await service.access.producer_grants(DATASET)
    assert [(g.party, g.agreement_id) for g in grants] == [
        ("metropole-lyon", ""),
        ("velo-app", writer.id),
    ]
    await asyncio.sleep(1.1)
    assert [g.party for g in await service.access.producer_grants(DATASET)] == ["metropole-lyon"]
    assert await service.access.expire_due() == 1
    assert (await service.access.get(writer.id)).state is AgreementState.EXPIRED


def _registry_of(body: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body))) as tar:
        registry: dict[str, Any] = json.load(tar.extractfile("tdg/registry/data.json"))  # type: ignore[arg-type]
    return registry


async def test_bundle_holds_what_opa_decides_on(service: Service) -> None:
    await _partner(service)
    await service.add_dataset(DATASET)
    active = await service.access.request(_request(), actor="velo-app")
    await service.access.approve(
        active.id, Conditions(masks=(ColumnMask("user_id", MaskMethod.HASH),)), "lyon-officer"
    )
    pending = await service.access.request(_request(), actor="velo-app")
    await service.bundle.refresh()  # the background rebuild may not have run yet
    built = await service.bundle.current()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(built.body))) as tar:
        manifest = json.load(tar.extractfile(".manifest"))  # type: ignore[arg-type]
    assert manifest["roots"] == ["tdg/registry"]
    data = _registry_of(built.body)
    assert data["revision"] == built.revision
    assert set(data["agreements"]) == {active.id}, "a pending request decides nothing"
    assert pending.id not in json.dumps(data)
    doc = data["agreements"][active.id]
    assert doc["masks"] == {"user_id": {"method": "hash"}}
    assert len(doc["salt"]) == 64
    assert data["index"]["velo-app"][DATASET] == {"read": [active.id], "write": []}
    assert data["parties"]["velo-app"] == {
        "kind": "application",
        "organisation": "velo-co",
        "status": "active",
        "roles": [],
    }
    # A change moves the revision, and a waiting long poll gets the new bundle.
    waiter = asyncio.create_task(service.bundle.wait_newer(built.etag, 5.0))
    await service.access.revoke(active.id, "ended", "lyon-officer")
    newer = await waiter
    assert newer.revision > built.revision and newer.etag != built.etag
    after = _registry_of(newer.body)
    assert after["agreements"] == {} and after["index"] == {}, "a revoked agreement leaves"
    assert after["parties"] == data["parties"]


async def test_consents_and_subject_sets(service: Service) -> None:
    await service.add_dataset(DATASET, access_level=cpb.ACCESS_LEVEL_PERSONAL)
    purpose = "energy-planning"
    for subject in ("s1", "s2", "s3", "s4"):
        await service.consents.give(subject, purpose, "", "portal")
    await service.consents.give("s5", purpose, DATASET, "portal")
    await service.consents.withdraw("s2", purpose, DATASET, "portal")  # this dataset only
    with pytest.raises(FailedPrecondition, match="no consent to withdraw"):
        await service.consents.withdraw("s9", purpose, "", "portal")

    async def subject_set(since: int = 0) -> tuple[pa.Table, int, bool]:
        batches, revision, snapshot = [], 0, True
        async for chunk in service.consents.subject_set(DATASET, purpose, since):
            batches.extend(pa.ipc.open_stream(chunk.arrow_ipc).read_all().to_batches())
            revision, snapshot = chunk.revision, chunk.snapshot
        return pa.Table.from_batches(batches), revision, snapshot

    table, revision, snapshot = await subject_set()
    assert snapshot and revision == 6
    assert sorted(table.column("subject_id").to_pylist()) == ["s1", "s3", "s4", "s5"]
    other, _, _ = await subject_set()
    assert other.num_rows == 4
    await service.consents.withdraw("s1", purpose, "", "portal")
    await service.consents.give("s2", purpose, DATASET, "portal")
    changes, newer, snapshot = await subject_set(since=revision)
    assert not snapshot and newer == 8
    assert dict(zip(*changes.to_pydict().values(), strict=True)) == {"s1": False, "s2": True}
    with pytest.raises(InvalidArgument, match="since_revision"):
        await subject_set(since=99)
    mine = await service.consents.of_subject("s2")
    assert [(c.dataset_id, c.state) for c in mine] == [
        ("", ConsentState.GIVEN),
        (DATASET, ConsentState.GIVEN),
    ]
    assert len({c.receipt_id for c in mine}) == 2


async def test_erasure_requests_are_recorded_and_published(service: Service) -> None:
    await service.add_dataset(DATASET)
    erasure = await service.erasures.request("s1", DATASET, "moved away", "portal", "portal-app")
    assert (await service.erasures.get(erasure.id)).subject_id == "s1"
    page, _ = await service.erasures.list_page("s1", None, 0, "")
    assert [e.id for e in page] == [erasure.id]
    with pytest.raises(NotFound):
        await service.erasures.request("s1", "metropole-lyon.nope", "", "portal", "x")
    assert await _events(service) == ["ErasureRequested"]
