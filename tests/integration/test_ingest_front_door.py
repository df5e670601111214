"""Partners load records through the gRPC front door, and data officers follow delivery: Publish
(JSON and Arrow), Status, dead letters replayed after a schema fix, delivery indicators, table
compaction while records keep arriving."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import grpc
import pyarrow as pa
import pytest
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg.consent.v1 import consent_pb2 as cpb
from tdg.ingest.v1 import ingest_pb2 as ipb
from tdg_ingest.warehouse import Warehouse

from tests.integration.helpers import evolution, partner_with_app, published
from tests.integration.ingest_helpers import bike_record, eventually, produce, settled, table_rows

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"


async def _stream(
    dataset_id: str, *payloads: list[bytes] | pa.Table
) -> AsyncIterator[ipb.PublishRequest]:
    for n, payload in enumerate(payloads):
        request = ipb.PublishRequest(dataset_id=dataset_id if n == 0 else "")
        if isinstance(payload, pa.Table):
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, payload.schema) as writer:
                writer.write_table(payload)
            request.arrow_ipc = sink.getvalue()
        else:
            request.json.records.extend(payload)
        yield request


async def test_publish_over_grpc_stores_json_and_arrow_records_and_reports_problems(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    arrow = pa.table(
        {
            "counter_id": [f"ARW-{i}" for i in range(50)],
            "date_observed": pa.array(
                [1_764_000_000_000_000 + i for i in range(50)], pa.timestamp("us", tz="UTC")
            ),
            "lane_direction": ["forward"] * 50,
            "intensity": pa.array(range(50), pa.int64()),  # cast to int32 by the front door
        }
    )
    json_records = [bike_record(i) for i in range(100)] + [b'{"counter_id": 7}']

    answer = await officer.stub.Publish(
        _stream(dataset.id, json_records, arrow), metadata=officer.md, timeout=30
    )

    assert (answer.received, answer.queued, answer.refused) == (151, 150, 1)
    assert answer.problems[0].index == 100
    assert answer.problems[0].reason.category == "schema"
    assert "counter_id" in answer.problems[0].reason.message
    rows, letters = await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 150)
    assert rows.num_rows == 150 and letters == []
    assert sorted(rows["counter_id"].to_pylist())[:2] == ["ARW-0", "ARW-1"]

    status = await officer.stub.Status(
        ipb.StatusRequest(dataset_id=dataset.id), metadata=officer.md, timeout=10
    )
    (figures,) = status.datasets
    assert figures.rows_stored == 150 and figures.lag_records == 0
    assert figures.state == "accepting" and figures.schema_version == 1
    assert figures.last_event_time.ToDatetime().year == 2026


async def test_publish_refuses_what_it_must_with_the_right_status(
    ingest_caller, ingest_app
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    stranger = ingest_caller("intruder-app", "intruder-co")

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stranger.stub.Publish(
            _stream(dataset.id, [bike_record(1)]), metadata=stranger.md, timeout=10
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await officer.stub.Publish(
            _stream("metropole-lyon.nothing-here", [bike_record(1)]),
            metadata=officer.md,
            timeout=15,
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await officer.stub.Publish(
            _stream("../etc.passwd", [bike_record(1)]), metadata=officer.md, timeout=10
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dataset_id" in (malformed.value.details() or "")

    bad_arrow = ipb.PublishRequest(dataset_id=dataset.id, arrow_ipc=b"not arrow")

    async def one() -> AsyncIterator[ipb.PublishRequest]:
        yield bad_arrow

    with pytest.raises(grpc.aio.AioRpcError) as not_arrow:
        await officer.stub.Publish(one(), metadata=officer.md, timeout=10)
    assert not_arrow.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "arrow_ipc" in (not_arrow.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await officer.stub.Publish(_stream(dataset.id, [bike_record(1)]), timeout=10)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_partner_with_a_write_agreement_publishes_and_its_delivery_is_measured(
    ingest_caller, consent_caller, ingest_app, kafka
) -> None:
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    org, app = await partner_with_app(admin)
    partner = ingest_caller(app, org)
    requested = await partner.consent.RequestAccess(
        cpb.RequestAccessRequest(
            dataset_id=dataset.id,
            kind=cpb.ACCESS_KIND_WRITE,
            purposes=["service-operation"],
            legal_basis=cpb.LEGAL_BASIS_CONTRACT,
            justification="counter maintenance contractor",
        ),
        metadata=partner.md,
        timeout=10,
    )
    await officer.consent.ApproveAccess(
        cpb.ApproveAccessRequest(
            agreement_id=requested.agreement.id,
            conditions=cpb.Conditions(
                commitments=cpb.DeliveryCommitments(
                    max_freshness_lag_s=3600, completeness_pct=90, validity_rate_pct=99
                )
            ),
        ),
        metadata=officer.md,
        timeout=10,
    )

    async def allowed() -> bool:
        try:
            answer = await partner.stub.Publish(
                _stream(dataset.id, [bike_record(i) for i in range(20)] + [b"{broken"]),
                metadata=partner.md,
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
            return False
        assert answer.queued == 20
        return True

    await eventually(allowed, 20, "the write agreement reached OPA")
    # A record of the partner straight to Kafka, invalid: dead-lettered under its name.
    await produce(kafka.bootstrap, dataset.id, [b'{"counter_id": 1}'], producer=app)
    await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 21)

    indicators = await officer.stub.GetDeliveryIndicators(
        ipb.GetDeliveryIndicatorsRequest(dataset_id=dataset.id, producer=app, period="hour"),
        metadata=officer.md,
        timeout=20,
    )
    current = [i for i in indicators.indicators if i.received]
    assert len(current) == 1
    (hour,) = current
    assert (hour.received, hour.accepted, hour.rejected) == (21, 20, 1)
    assert hour.commitments.validity_rate_pct == 99
    assert hour.validity_met is False  # 95 % valid against 99 % promised
    assert sum(hour.rejected_by_reason.values()) == 1

    # The partner sees its own delivery; another partner does not.
    own = await partner.stub.GetDeliveryIndicators(
        ipb.GetDeliveryIndicatorsRequest(dataset_id=dataset.id, producer=app, period="day"),
        metadata=partner.md,
        timeout=20,
    )
    assert any(i.accepted == 20 for i in own.indicators)
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await partner.stub.GetDeliveryIndicators(
            ipb.GetDeliveryIndicatorsRequest(dataset_id=dataset.id, producer=LYON),
            metadata=partner.md,
            timeout=10,
        )
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_rejects_are_listed_and_replayed_after_the_schema_is_fixed(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    with_speed = [bike_record(i, average_vehicle_speed=12.0) for i in range(30)]
    await produce(kafka.bootstrap, dataset.id, with_speed, LYON)
    _, letters = await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 30)
    assert {x.code for x in letters} == {"unknown_field"}

    listed = await officer.stub.ListRejects(
        ipb.ListRejectsRequest(filter=ipb.RejectFilter(dataset_id=dataset.id), page_size=10),
        metadata=officer.md,
        timeout=20,
    )
    assert len(listed.rejects) == 10 and listed.next_page_token
    shown = await officer.stub.GetReject(
        ipb.GetRejectRequest(id=listed.rejects[0].id), metadata=officer.md, timeout=20
    )
    assert shown.reject.value in with_speed
    assert "average_vehicle_speed" in shown.reject.reason.message

    await officer.catalog.EvolveSchema(
        pb.EvolveSchemaRequest(
            id=dataset.id, schema=evolution("bike-counters-v2"), expected_version=1
        ),
        metadata=officer.md,
        timeout=10,
    )
    replayed = await officer.stub.ReplayRejects(
        ipb.ReplayRejectsRequest(
            filter=ipb.RejectFilter(dataset_id=dataset.id, code="unknown_field")
        ),
        metadata=officer.md,
        timeout=30,
    )
    assert replayed.replayed == 30

    async def stored() -> bool:
        rows = await asyncio.to_thread(table_rows, ingest_app.part(Warehouse), dataset.id)
        return bool(rows.num_rows == 30)

    await eventually(stored, 30, "replayed records stored")
    rows = await asyncio.to_thread(table_rows, ingest_app.part(Warehouse), dataset.id)
    assert set(rows["average_vehicle_speed"].to_pylist()) == {12.0}

    other_officer = ingest_caller("grenoble-data-office", "grenoble-alpes", "data-officer")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await other_officer.stub.ListRejects(
            ipb.ListRejectsRequest(filter=ipb.RejectFilter(dataset_id=dataset.id)),
            metadata=other_officer.md,
            timeout=10,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_compaction_while_records_arrive_loses_and_duplicates_nothing(
    ingest_caller, ingest_app, kafka
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    for n in range(5):  # several small snapshots, many small files
        await produce(
            kafka.bootstrap, dataset.id, [bike_record(n * 100 + i) for i in range(100)], LYON
        )
        await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, (n + 1) * 100)
    files_before = len(list(ingest_app.part(Warehouse).load(dataset.id).scan().plan_files()))

    more = produce(kafka.bootstrap, dataset.id, [bike_record(500 + i) for i in range(500)], LYON)
    compacted, _ = await asyncio.gather(
        officer.stub.CompactTable(
            ipb.CompactTableRequest(dataset_id=dataset.id), metadata=officer.md, timeout=120
        ),
        more,
    )
    assert compacted.files_rewritten > 0
    rows, _ = await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 1000)
    ids = rows["counter_id"].to_pylist()
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert (
        len(list(ingest_app.part(Warehouse).load(dataset.id).scan().plan_files()))
        < files_before + 28
    )
    assert json.loads(bike_record(0))["counter_id"] in ids
