"""An application asks for access, the publisher approves with conditions, OPA decides reads
from the agreement, and a revocation reaches OPA within two seconds (measured)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.consent.v1 import consent_pb2 as pb
from tdg.events.v1 import consent_events_pb2 as ev
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input
from tdg_core.testing import KafkaBroker, OpaEndpoint

from tests.integration.fixtures.callers import CallerFactory, ConsentCaller
from tests.integration.helpers import consent_events_for, partner_with_app, published

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"
PROPAGATION_LIMIT_S = 2.0


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


async def until(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, every_s: float = 0.005
) -> float:
    """Seconds until `check()` holds; fails the test after `timeout_s`."""
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout_s:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(every_s)
    return time.perf_counter() - start


@pytest.fixture
def policy(opa: OpaEndpoint) -> PolicyClient:
    return PolicyClient(opa.url, timeout_s=2.0)


async def test_request_approve_decide_revoke(
    consent_caller: CallerFactory[ConsentCaller], policy: PolicyClient, kafka: KafkaBroker
) -> None:
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    officer = consent_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "ev-charging-sessions")
    org, app_id = await partner_with_app(admin)
    app = consent_caller(app_id, org)
    subject = {"party": app_id, "org": org, "roles": []}

    async def decide(purpose: str = "mobility-planning", **request: Any) -> dict[str, Any]:
        decision: dict[str, Any] = await policy.decide(
            DecisionPath.READ, read_input(dataset, subject, purpose, **request)
        )
        return decision

    requested = await app.stub.RequestAccess(
        pb.RequestAccessRequest(
            dataset_id=dataset.id,
            purposes=["mobility-planning", "energy-planning"],
            legal_basis=pb.LEGAL_BASIS_PUBLIC_TASK,
            justification="Dimension the public charging network",
            columns=["session_start", "energy_kwh", "user_id", "commune_code"],
        ),
        metadata=app.md,
        timeout=10,
    )
    agreement_id = requested.agreement.id
    assert requested.agreement.state == pb.AGREEMENT_STATE_REQUESTED
    assert requested.agreement.consumer == app_id
    # A restricted dataset without an active agreement: denied, with the reason.
    before = await decide()
    assert before["allow"] is False and before["reasons"]

    approved = await officer.stub.ApproveAccess(
        pb.ApproveAccessRequest(
            agreement_id=agreement_id,
            conditions=pb.Conditions(
                columns=["session_start", "energy_kwh", "user_id", "commune_code"],
                masks=[
                    pb.ColumnMask(column="user_id", method=pb.MASK_METHOD_HASH),
                    pb.ColumnMask(
                        column="session_start",
                        method=pb.MASK_METHOD_GENERALISE,
                        generalisation=pb.Generalisation(truncate_to="day"),
                    ),
                ],
                territory_filter=pb.TerritoryFilter(column="commune_code", codes=["69123"]),
                valid_until=ts(datetime.now(UTC) + timedelta(days=30)),
            ),
        ),
        metadata=officer.md,
        timeout=10,
    )
    assert approved.agreement.state == pb.AGREEMENT_STATE_ACTIVE
    assert approved.agreement.decided_by == "lyon-data-office"

    async def allowed() -> bool:
        return bool((await decide(columns=["energy_kwh", "user_id"]))["allow"])

    await until(allowed, timeout_s=PROPAGATION_LIMIT_S)
    decision = await decide(columns=["energy_kwh", "user_id", "session_start"])
    assert decision["agreement_id"] == agreement_id
    columns = decision["columns"]
    assert columns["energy_kwh"]["treatment"] == "clear"
    assert columns["user_id"]["treatment"] == "hash"
    assert len(columns["user_id"]["salt"]) == 64
    assert columns["session_start"] == {
        "treatment": "generalise",
        "generalise": {"truncate_to": "day"},
    }
    assert columns["charging_point_id"]["treatment"] == "deny"  # not granted
    assert decision["row_filters"] == [{"column": "commune_code", "op": "in", "values": ["69123"]}]
    assert decision["consent"]["required"] is False
    # The agreement's purposes only; a column not granted cannot be asked for.
    assert (await decide(purpose="research"))["allow"] is False
    assert (await decide(columns=["charging_point_id"]))["allow"] is False
    # The salt is OPA's and the query service's business, never the caller's.
    got = await app.stub.GetAgreement(
        pb.GetAgreementRequest(agreement_id=agreement_id), metadata=app.md, timeout=10
    )
    assert approved.agreement.SerializeToString().find(columns["user_id"]["salt"].encode()) == -1
    assert columns["user_id"]["salt"] not in str(got)

    await officer.stub.RevokeAgreement(
        pb.RevokeAgreementRequest(agreement_id=agreement_id, reason="contract ended"),
        metadata=officer.md,
        timeout=10,
    )

    async def denied() -> bool:
        return not (await decide(columns=["energy_kwh"]))["allow"]

    propagation_s = await until(denied, timeout_s=PROPAGATION_LIMIT_S + 1)
    print(f"revocation_propagation_ms={propagation_s * 1000:.0f}")
    assert propagation_s < PROPAGATION_LIMIT_S

    history = await officer.stub.GetAgreement(
        pb.GetAgreementRequest(agreement_id=agreement_id), metadata=officer.md, timeout=10
    )
    assert [h.state for h in history.agreement.history] == [
        pb.AGREEMENT_STATE_REQUESTED,
        pb.AGREEMENT_STATE_ACTIVE,
        pb.AGREEMENT_STATE_REVOKED,
    ]
    assert history.agreement.history[-1].reason == "contract ended"
    assert history.agreement.history[-1].actor == "lyon-data-office"

    events = await consent_events_for(kafka.bootstrap, agreement_id, expected=3)
    states = [e.parse(ev.AgreementStateChanged).agreement.state for e in events]
    assert states == [
        pb.AGREEMENT_STATE_REQUESTED,
        pb.AGREEMENT_STATE_ACTIVE,
        pb.AGREEMENT_STATE_REVOKED,
    ]
    assert all(columns["user_id"]["salt"].encode() not in e.data for e in events), (
        "the salt never leaves in an event"
    )


async def test_suspended_party_is_denied_everywhere(
    consent_caller: CallerFactory[ConsentCaller], policy: PolicyClient
) -> None:
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    officer = consent_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    org, app_id = await partner_with_app(admin)
    app = consent_caller(app_id, org)
    subject = {"party": app_id, "org": org, "roles": []}
    write = {
        "subject": subject,
        "dataset": {"id": dataset.id, "publisher": LYON, "status": "published"},
    }

    producer = await app.stub.RequestAccess(
        pb.RequestAccessRequest(
            dataset_id=dataset.id,
            kind=pb.ACCESS_KIND_WRITE,
            purposes=["service-operation"],
            legal_basis=pb.LEGAL_BASIS_CONTRACT,
        ),
        metadata=app.md,
        timeout=10,
    )
    await officer.stub.ApproveAccess(
        pb.ApproveAccessRequest(
            agreement_id=producer.agreement.id,
            conditions=pb.Conditions(
                commitments=pb.DeliveryCommitments(
                    max_freshness_lag_s=3600, completeness_pct=95, validity_rate_pct=99
                )
            ),
        ),
        metadata=officer.md,
        timeout=10,
    )

    async def may_write() -> bool:
        return bool((await policy.decide(DecisionPath.WRITE, write))["allow"])

    async def may_read() -> bool:
        decision = await policy.decide(
            DecisionPath.READ, read_input(dataset, subject, "mobility-planning")
        )
        return bool(decision["allow"])

    await until(may_write, timeout_s=PROPAGATION_LIMIT_S)
    assert await may_read(), "an open dataset needs no agreement"
    grants = await app.stub.ListProducerGrants(
        pb.ListProducerGrantsRequest(dataset_id=dataset.id), metadata=app.md, timeout=10
    )
    assert [g.party for g in grants.grants] == [LYON, app_id]
    assert grants.grants[1].commitments.completeness_pct == 95

    await admin.stub.SuspendParty(
        pb.SuspendPartyRequest(id=org, reason="unpaid fees"), metadata=admin.md, timeout=10
    )

    async def cut_off() -> bool:
        return not await may_write() and not await may_read()

    await until(cut_off, timeout_s=PROPAGATION_LIMIT_S)
    with pytest.raises(Exception) as catalog_refusal:
        await app.catalog.GetDataset(
            cpb.GetDatasetRequest(id=dataset.id), metadata=app.md, timeout=10
        )
    assert catalog_refusal.value.code().name == "PERMISSION_DENIED"  # type: ignore[attr-defined]
    assert f"party '{org}' is suspended" in catalog_refusal.value.details()  # type: ignore[attr-defined]
    with pytest.raises(Exception) as consent_refusal:
        await app.stub.ListPurposes(pb.ListPurposesRequest(), metadata=app.md, timeout=10)
    assert consent_refusal.value.code().name == "PERMISSION_DENIED"  # type: ignore[attr-defined]

    await admin.stub.ReinstateParty(pb.ReinstatePartyRequest(id=org), metadata=admin.md, timeout=10)
    await until(may_write, timeout_s=PROPAGATION_LIMIT_S)
    assert await may_read()


async def test_consents_are_reflected_in_the_subject_set(
    consent_caller: CallerFactory[ConsentCaller], kafka: KafkaBroker
) -> None:
    import pyarrow as pa

    officer = consent_caller("lyon-data-office", LYON, "data-officer")
    portal = consent_caller("citizen-portal", "tdg-platform", "consent-registrar")
    query = consent_caller("tdg-query", "tdg-platform", "platform-service")
    dataset = await published(officer, "household-energy-meters")
    run = uuid.uuid4().hex[:6]
    alice, bob, carol = (f"{name}-{run}" for name in ("alice", "bob", "carol"))
    purpose = "energy-planning"

    async def give(subject: str, dataset_id: str = "") -> pb.Consent:
        response = await portal.stub.GiveConsent(
            pb.GiveConsentRequest(
                subject_id=subject, purpose=purpose, dataset_id=dataset_id, source="portal"
            ),
            metadata=portal.md,
            timeout=10,
        )
        consent: pb.Consent = response.consent
        return consent

    async def subject_set(since: int = 0) -> tuple[pa.Table, int]:
        batches, revision = [], 0
        async for chunk in query.stub.StreamSubjectSet(
            pb.StreamSubjectSetRequest(
                dataset_id=dataset.id, purpose=purpose, since_revision=since
            ),
            metadata=query.md,
            timeout=10,
        ):
            batches.extend(pa.ipc.open_stream(chunk.arrow_ipc).read_all().to_batches())
            revision = chunk.revision
        return pa.Table.from_batches(batches), revision

    first = await give(alice)
    assert first.receipt_id.startswith("rcpt-")
    await give(bob, dataset.id)
    await give(carol)
    # Carol's general consent, withdrawn for this dataset only.
    await portal.stub.WithdrawConsent(
        pb.WithdrawConsentRequest(
            subject_id=carol, purpose=purpose, dataset_id=dataset.id, source="portal"
        ),
        metadata=portal.md,
        timeout=10,
    )
    snapshot, revision = await subject_set()
    mine = {s for s in snapshot.column("subject_id").to_pylist() if s.endswith(run)}
    assert mine == {alice, bob}

    withdrawn = await portal.stub.WithdrawConsent(
        pb.WithdrawConsentRequest(subject_id=alice, purpose=purpose, source="portal"),
        metadata=portal.md,
        timeout=10,
    )
    assert withdrawn.consent.state == pb.CONSENT_STATE_WITHDRAWN
    changes, newer = await subject_set(since=revision)
    assert newer > revision
    assert dict(
        zip(
            changes.column("subject_id").to_pylist(),
            changes.column("active").to_pylist(),
            strict=True,
        )
    ) == {alice: False}
    after, _ = await subject_set()
    assert {s for s in after.column("subject_id").to_pylist() if s.endswith(run)} == {bob}

    listed = await portal.stub.ListConsents(
        pb.ListConsentsRequest(subject_id=alice), metadata=portal.md, timeout=10
    )
    assert [(c.purpose, c.state) for c in listed.consents] == [
        (purpose, pb.CONSENT_STATE_WITHDRAWN)
    ]
    events = await consent_events_for(kafka.bootstrap, alice, expected=2)
    assert [e.parse(ev.ConsentChanged).consent.state for e in events] == [
        pb.CONSENT_STATE_GIVEN,
        pb.CONSENT_STATE_WITHDRAWN,
    ]

    erasure = await portal.stub.RequestErasure(
        pb.RequestErasureRequest(subject_id=bob, dataset_id=dataset.id, source="portal"),
        metadata=portal.md,
        timeout=10,
    )
    assert erasure.erasure.state == pb.ERASURE_STATE_RECEIVED
    status = await portal.stub.GetErasure(
        pb.GetErasureRequest(id=erasure.erasure.id), metadata=portal.md, timeout=10
    )
    assert status.erasure.subject_id == bob
    erasure_events = await consent_events_for(kafka.bootstrap, bob, expected=2)
    assert erasure_events[-1].type == "tdg.events.v1.ErasureRequested"
