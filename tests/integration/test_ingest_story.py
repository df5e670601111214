"""A partner streams records into a published dataset: every record is stored once or
dead-lettered with its reason, on the real Kafka, OPA and Iceberg tables."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg_ingest.warehouse import Warehouse

from tests.integration.helpers import evolution, published
from tests.integration.ingest_helpers import bike_record, produce, settled

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"

BAD = [
    (bike_record(0, intensity="twelve"), "schema"),
    (b"not json at all", "format"),
    (
        b'{"counter_id": "X", "date_observed": "2026-11-01T10:00:00", "lane_direction": "f", '
        b'"intensity": 1}',
        "schema",
    ),
    (b"", "format"),
    (b'{"counter_id": "X"}{"counter_id": "Y"}', "format"),
    (bike_record(0, intensity=-3), "schema"),
    (bike_record(0, colour="red"), "schema"),
    (b"\xff\xfe\x00", "format"),
]


async def test_valid_and_invalid_records_are_each_stored_or_dead_lettered_once(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    good = [bike_record(i) for i in range(2000)]
    bad = [value for value, _ in BAD] * 5
    mixed = good[:1000] + bad[:20] + good[1000:] + bad[20:]

    await produce(kafka.bootstrap, dataset.id, mixed, producer=LYON)

    rows, letters = await settled(
        ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, len(mixed)
    )
    assert rows.num_rows == len(good)
    assert len(letters) == len(bad)
    assert sorted(rows["counter_id"].to_pylist()) == sorted(
        json.loads(v)["counter_id"] for v in good
    )
    # Byte for byte, with the reason a data officer can act on.
    assert sorted(letter.value for letter in letters) == sorted(bad)
    categories = {letter.value: letter.category for letter in letters}
    for value, category in BAD:
        assert categories[value] == category, value
    twelve = next(letter for letter in letters if b"twelve" in letter.value)
    assert twelve.code and "intensity" in twelve.message and "twelve" in twelve.message
    assert all(letter.producer == LYON and letter.dataset_id == dataset.id for letter in letters)
    # Timestamps with a zone offset are stored as UTC instants.
    assert rows.schema.field("date_observed").type == pa.timestamp("us", tz="UTC")


async def test_schema_evolved_mid_stream_keeps_every_record(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(300)], LYON)
    await officer.catalog.EvolveSchema(
        pb.EvolveSchemaRequest(
            id=dataset.id, schema=evolution("bike-counters-v2"), expected_version=1
        ),
        metadata=officer.md,
        timeout=10,
    )
    # Sent at once after the evolution: the worker may not have seen it yet, and must look.
    newer = [bike_record(i, average_vehicle_speed=17.5) for i in range(300, 600)]
    await produce(kafka.bootstrap, dataset.id, newer, LYON)

    rows, letters = await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 600)
    assert letters == []
    assert rows.num_rows == 600
    speeds = dict(
        zip(rows["counter_id"].to_pylist(), rows["average_vehicle_speed"].to_pylist(), strict=True)
    )
    assert speeds["CPT-0000001"] is None
    assert speeds["CPT-0000450"] == 17.5


async def test_a_producer_without_a_grant_is_dead_lettered_with_the_policy_reason(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(10)], "intruder-co")
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(10, 15)], "")
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(15, 20)], LYON)

    rows, letters = await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 20)
    assert rows.num_rows == 5
    by_code: dict[str, list[Any]] = {}
    for letter in letters:
        by_code.setdefault(letter.code, []).append(letter)
    assert len(by_code["write_denied"]) == 10
    assert len(by_code["no_producer"]) == 5
    assert all(letter.category == "policy" for letter in letters)
    assert "intruder-co" in by_code["write_denied"][0].message


async def test_records_to_a_deprecated_dataset_are_dead_lettered(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(5)], LYON)
    await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 5)
    await officer.catalog.DeprecateDataset(
        pb.DeprecateDatasetRequest(id=dataset.id, reason="replaced by v2 counters"),
        metadata=officer.md,
        timeout=10,
    )
    await asyncio.sleep(0.5)
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(5, 8)], LYON)

    rows, letters = await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 8)
    assert rows.num_rows == 5
    assert [(x.category, x.code) for x in letters] == [("deprecated", "dataset_deprecated")] * 3
    assert "replaced by v2 counters" in letters[0].message


async def test_stored_rows_are_partitioned_by_day_of_event_time(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(56)], LYON)
    await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 56)
    table = ingest_app.part(Warehouse).load(dataset.id)
    assert [f.transform.__class__.__name__ for f in table.spec().fields] == ["DayTransform"]
    days = {
        task.file.partition[0]
        for task in table.scan(
            row_filter="date_observed >= '2026-11-03T00:00:00+00:00'"
        ).plan_files()
    }
    assert len(days) == 26  # pruned: the first two days' files are not planned
    assert pc.min(table.scan().to_arrow()["date_observed"]).as_py().day == 1
