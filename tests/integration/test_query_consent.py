"""Reads resting on consent: an application under a consent-based agreement gets the rows of the
households that consented to the purpose, and of no other; a withdrawal reaches the next queries
within a second (measured)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from tdg.consent.v1 import consent_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.service import Service
from tdg_core.testing import KafkaBroker
from tdg_ingest.settings import IngestSettings
from tdg_ingest.warehouse import Warehouse
from tdg_query.settings import QuerySettings

from tests.integration.fixtures.callers import CallerFactory, ConsentCaller, QueryCaller
from tests.integration.helpers import partner_with_app, published
from tests.integration.ingest_helpers import eventually, produce, settled
from tests.integration.query_helpers import (
    Answer,
    agg,
    agreement,
    clear,
    query,
    reading,
)

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"
PURPOSE = "energy-planning"
DAYS = 5
WITHDRAWAL_LIMIT_S = 1.0


class Households:
    """household-energy-meters with DAYS readings of households A, B, C and D, and an application
    reading it under a consent-based agreement (household_id served in clear, so that the test
    sees whose rows come back)."""

    def __init__(
        self,
        query_caller: CallerFactory[QueryCaller],
        consent_caller: CallerFactory[ConsentCaller],
        query_app: Service[QuerySettings],
    ) -> None:
        self._query_caller = query_caller
        self.query_app = query_app
        self.officer = query_caller("lyon-data-office", LYON, "data-officer")
        self.admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
        self.portal = query_caller("citizen-portal", "tdg-platform", "consent-registrar")
        run = uuid.uuid4().hex[:6]
        self.a, self.b, self.c, self.d = (f"hh-{run}-{x}" for x in "abcd")
        self.dataset_id = ""
        self._app: QueryCaller | None = None
        self.agreement_id = ""

    async def setup(self, ingest_app: Service[IngestSettings], kafka: KafkaBroker) -> None:
        dataset = await published(self.officer, "household-energy-meters")
        self.dataset_id = dataset.id
        values = [
            reading(h, day) for h in (self.a, self.b, self.c, self.d) for day in range(1, DAYS + 1)
        ]
        await produce(kafka.bootstrap, dataset.id, values, LYON)
        rows, letters = await settled(
            ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, len(values)
        )
        assert letters == [] and rows.num_rows == len(values)
        org, app_id = await partner_with_app(self.admin)
        self._app = self._query_caller(app_id, org)
        self.agreement_id = await agreement(
            self.officer,
            self.app,
            dataset.id,
            [PURPOSE, "research"],
            cpb.Conditions(masks=[clear("household_id")]),
            legal_basis=cpb.LEGAL_BASIS_CONSENT,
        )

    @property
    def app(self) -> QueryCaller:
        """The application under the agreement (once `setup` registered it)."""
        assert self._app is not None, "setup() first"
        return self._app

    async def give(
        self, subject: str, dataset_id: str | None = None, purpose: str = PURPOSE
    ) -> int:
        response = await self.portal.consent.GiveConsent(
            cpb.GiveConsentRequest(
                subject_id=subject,
                purpose=purpose,
                dataset_id=self.dataset_id if dataset_id is None else dataset_id,
                source="portal",
            ),
            metadata=self.portal.md,
            timeout=10,
        )
        assert response.consent.state == cpb.CONSENT_STATE_GIVEN
        return int(response.consent.revision)

    async def withdraw(self, subject: str, dataset_id: str | None = None) -> int:
        response = await self.portal.consent.WithdrawConsent(
            cpb.WithdrawConsentRequest(
                subject_id=subject,
                purpose=PURPOSE,
                dataset_id=self.dataset_id if dataset_id is None else dataset_id,
                source="portal",
            ),
            metadata=self.portal.md,
            timeout=10,
        )
        assert response.consent.state == cpb.CONSENT_STATE_WITHDRAWN
        return int(response.consent.revision)

    async def read(self) -> Answer:
        return await query(self.app, qpb.QueryRequest(dataset_id=self.dataset_id, purpose=PURPOSE))

    async def households(self) -> set[str]:
        return set((await self.read()).column("household_id"))


@pytest.fixture
async def homes(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    query_app: Service[QuerySettings],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> Households:
    homes = Households(query_caller, consent_caller, query_app)
    await homes.setup(ingest_app, kafka)
    return homes


async def until_households(homes: Households, wanted: set[str], limit_s: float) -> float:
    """Seconds until a query returns exactly `wanted`'s rows, querying as fast as it answers."""
    start = time.perf_counter()
    seen: set[str] = set()
    while time.perf_counter() - start < limit_s + 2.0:
        seen = await homes.households()
        if seen == wanted:
            return time.perf_counter() - start
    raise AssertionError(f"still {sorted(seen)} after {limit_s + 2.0}s, expected {sorted(wanted)}")


async def at_revision(homes: Households, revision: int) -> set[str]:
    """The households a query returns once its consent set includes `revision`."""
    for _ in range(200):
        answer = await homes.read()
        if answer.header.consent_revision >= revision:
            return set(answer.column("household_id"))
        await asyncio.sleep(0.02)
    raise AssertionError(f"consent revision {revision} not reached")


async def test_only_the_households_that_consented_are_read(homes: Households) -> None:
    # Nobody consented yet: nothing, though the agreement is active.
    empty = await homes.read()
    assert empty.table.num_rows == 0 and empty.header.agreement_id == homes.agreement_id
    await homes.give(homes.a)
    await homes.give(homes.b)
    await homes.give(homes.c, dataset_id="")  # every dataset, for the purpose
    await homes.give(homes.d, purpose="research")  # another purpose: does not count

    await until_households(homes, {homes.a, homes.b, homes.c}, WITHDRAWAL_LIMIT_S)
    answer = await homes.read()
    assert answer.header.consent_revision > 0
    assert answer.table.num_rows == answer.summary.rows == 3 * DAYS
    assert answer.treatments()["household_id"] == "clear"
    assert answer.treatments()["meter_id"] == "hash"  # personal, no mask: hashed by default
    assert homes.d.encode() not in answer.raw
    # Aggregates count the consenting households only.
    counted = await query(
        homes.app,
        qpb.QueryRequest(
            dataset_id=homes.dataset_id,
            purpose=PURPOSE,
            group_by=["household_id"],
            aggregates=[agg("count")],
        ),
    )
    assert dict(zip(counted.column("household_id"), counted.column("count"), strict=True)) == {
        homes.a: DAYS,
        homes.b: DAYS,
        homes.c: DAYS,
    }
    # Consent is per purpose: for research, D's rows only.
    research = await query(
        homes.app, qpb.QueryRequest(dataset_id=homes.dataset_id, purpose="research")
    )
    assert set(research.column("household_id")) == {homes.d}
    # The audit trail says the rows were filtered by consent, and at which revision.
    found: list[qpb.AuditRecord] = []

    async def audited() -> bool:
        response = await homes.officer.stub.SearchAudit(
            qpb.SearchAuditRequest(dataset_id=homes.dataset_id, query_id=answer.header.query_id),
            metadata=homes.officer.md,
            timeout=30,
        )
        found[:] = response.records
        return bool(found)

    await eventually(audited, 30, "the audit record of the query")
    (record,) = found
    assert record.consent_required and record.consent_revision == answer.header.consent_revision
    assert record.rows == 3 * DAYS and record.purpose == PURPOSE
    # The publisher reads every household, consent or not.
    own = await query(homes.officer, qpb.QueryRequest(dataset_id=homes.dataset_id, purpose=PURPOSE))
    assert set(own.column("household_id")) == {homes.a, homes.b, homes.c, homes.d}
    assert own.header.consent_revision == 0


async def test_a_withdrawal_reaches_the_next_queries_within_a_second(homes: Households) -> None:
    for subject in (homes.a, homes.b):
        await homes.give(subject)
    await homes.give(homes.c, dataset_id="")
    await until_households(homes, {homes.a, homes.b, homes.c}, WITHDRAWAL_LIMIT_S)
    before = await homes.read()

    await homes.withdraw(homes.b)
    elapsed = await until_households(homes, {homes.a, homes.c}, WITHDRAWAL_LIMIT_S)
    print(f"\nconsent_withdrawal_to_query_ms={elapsed * 1000:.0f}")
    assert elapsed < WITHDRAWAL_LIMIT_S, (
        f"B's rows still returned {elapsed * 1000:.0f} ms after WithdrawConsent answered"
    )
    after = await homes.read()
    assert after.header.consent_revision > before.header.consent_revision
    assert after.table.num_rows == 2 * DAYS

    # A consent for every dataset is withdrawn for every dataset.
    await homes.withdraw(homes.c, dataset_id="")
    elapsed_all = await until_households(homes, {homes.a}, WITHDRAWAL_LIMIT_S)
    print(f"consent_withdrawal_all_datasets_to_query_ms={elapsed_all * 1000:.0f}")
    assert elapsed_all < WITHDRAWAL_LIMIT_S

    # Given back: the rows come back.
    await homes.give(homes.b)
    elapsed_back = await until_households(homes, {homes.a, homes.b}, WITHDRAWAL_LIMIT_S)
    print(f"consent_given_back_to_query_ms={elapsed_back * 1000:.0f}")
    assert elapsed_back < WITHDRAWAL_LIMIT_S
    assert (await homes.read()).table.num_rows == 2 * DAYS


async def test_a_consent_for_the_dataset_overrides_the_one_for_every_dataset(
    homes: Households,
) -> None:
    await homes.give(homes.a, dataset_id="")
    await homes.give(homes.a)
    revision = await homes.give(homes.d, dataset_id="")
    assert await at_revision(homes, revision) == {homes.a, homes.d}
    # A withdraws its consent for every dataset, but keeps the one for this dataset.
    revision = await homes.withdraw(homes.a, dataset_id="")
    assert await at_revision(homes, revision) == {homes.a, homes.d}
    # D withdraws for this dataset only: its consent for every dataset no longer covers it.
    revision = await homes.withdraw(homes.d)
    assert await at_revision(homes, revision) == {homes.a}
    revision = await homes.give(homes.d)
    assert await at_revision(homes, revision) == {homes.a, homes.d}
    revision = await homes.withdraw(homes.a)
    assert await at_revision(homes, revision) == {homes.d}
