"""A household asks to be erased: its rows leave the dataset's Iceberg table (and only its rows),
and the consent service records which snapshot deleted them."""

from __future__ import annotations

import asyncio
import json

import pytest
from tdg.consent.v1 import consent_pb2 as pb
from tdg_ingest.warehouse import Warehouse

from tests.integration.helpers import published
from tests.integration.ingest_helpers import eventually, produce, settled, table_rows

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"


def reading(household: str, day: int) -> bytes:
    return json.dumps(
        {
            "household_id": household,
            "meter_id": f"{abs(hash(household)) % 10**14:014d}",
            "date_observed": f"2026-11-{day:02d}",
            "consumption_kwh": 7.25 + day,
            "subscribed_power_kva": 6,
            "commune_code": "69123",
        }
    ).encode()


async def test_erasure_removes_exactly_one_subjects_rows_and_is_recorded(
    ingest_caller, ingest_app, consent_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    portal = ingest_caller("citizens-portal", "metropole-lyon", "consent-registrar")
    dataset = await published(officer, "household-energy-meters")
    households = ["hh-alice", "hh-bob", "hh-chloe"]
    values = [reading(h, day) for day in range(1, 21) for h in households]
    await produce(kafka.bootstrap, dataset.id, values, LYON)
    rows, letters = await settled(
        ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, len(values)
    )
    assert letters == [] and rows.num_rows == 60

    requested = await portal.consent.RequestErasure(
        pb.RequestErasureRequest(subject_id="hh-bob", dataset_id=dataset.id, source="portal"),
        metadata=portal.md,
        timeout=10,
    )

    async def done() -> bool:
        got = await portal.consent.GetErasure(
            pb.GetErasureRequest(id=requested.erasure.id), metadata=portal.md, timeout=10
        )
        return bool(got.erasure.state == pb.ERASURE_STATE_COMPLETED)

    await eventually(done, 60, "erasure completed")
    rows = await asyncio.to_thread(table_rows, ingest_app.part(Warehouse), dataset.id)
    remaining = rows["household_id"].to_pylist()
    assert "hh-bob" not in remaining
    assert sorted(set(remaining)) == ["hh-alice", "hh-chloe"] and len(remaining) == 40

    got = await portal.consent.GetErasure(
        pb.GetErasureRequest(id=requested.erasure.id), metadata=portal.md, timeout=10
    )
    (entry,) = got.erasure.datasets
    assert entry.dataset_id == dataset.id and entry.rows_deleted == 20
    table = ingest_app.part(Warehouse).load(dataset.id)
    assert entry.snapshot_id in {s.snapshot_id for s in table.snapshots()}
    # The snapshot before the deletion still has them (time travel) until it is expired.
    assert table.current_snapshot().snapshot_id == entry.snapshot_id
