"""A data officer registers, evolves, publishes, finds and exports a dataset; every change is
an event on Kafka."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg.events.v1 import catalog_events_pb2 as ev
from tdg_core import topics
from tdg_core.testing import KafkaBroker

from tests.integration.fixtures.callers import Caller, CallerFactory
from tests.integration.helpers import events_for, evolution, example

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"


async def test_register_evolve_publish_search_export(caller: CallerFactory[Caller]) -> None:
    officer = caller("lyon-data-office", LYON, "data-officer")
    reader = caller("mobility-app", "velo-start", "application")
    request = example("bike-counters")

    registered = await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    assert registered.dataset.status == pb.DATASET_STATUS_DRAFT
    assert registered.dataset.schema.version == 1
    assert registered.dataset.publisher == LYON

    evolved = await officer.stub.EvolveSchema(
        pb.EvolveSchemaRequest(
            id=request.id, schema=evolution("bike-counters-v2"), expected_version=1
        ),
        metadata=officer.md,
        timeout=10,
    )
    assert evolved.dataset.latest_schema_version == 2
    new_columns = {c.name for c in evolved.dataset.schema.columns} - {
        c.name for c in request.schema.columns
    }
    assert new_columns, "the evolution adds a column"

    published = await officer.stub.PublishDataset(
        pb.PublishDatasetRequest(id=request.id), metadata=officer.md, timeout=10
    )
    assert published.dataset.status == pb.DATASET_STATUS_PUBLISHED

    # Every version stays readable.
    v1 = await reader.stub.GetDataset(
        pb.GetDatasetRequest(id=request.id, schema_version=1), metadata=reader.md, timeout=10
    )
    # Whole columns, value ranges included, come back as registered.
    assert list(v1.dataset.schema.columns) == list(request.schema.columns)
    latest = await reader.stub.GetDataset(
        pb.GetDatasetRequest(id=request.id), metadata=reader.md, timeout=10
    )
    assert latest.dataset.schema.version == 2

    # Accent- and case-insensitive: the title's words written without accents find it.
    title_word = request.metadata.title.split()[0]
    hits = await reader.stub.SearchDatasets(
        pb.SearchDatasetsRequest(query=_strip_accents(title_word).upper()),
        metadata=reader.md,
        timeout=10,
    )
    assert request.id in [h.dataset.id for h in hits.hits]

    export = await reader.stub.ExportDcat(pb.ExportDcatRequest(), metadata=reader.md, timeout=10)
    document = json.loads(export.json_ld)
    assert request.id in json.dumps(document)
    assert "dcat" in json.dumps(document["@context"])


async def test_changes_are_events_in_order_with_cloudevents_headers(
    caller: CallerFactory[Caller], kafka: KafkaBroker
) -> None:
    officer = caller("lyon-data-office", LYON, "data-officer")
    request = example("bike-counters")
    await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    await officer.stub.UpdateMetadata(
        pb.UpdateMetadataRequest(
            id=request.id,
            metadata=pb.DatasetMetadata(description="Comptages horaires des vélos, mis à jour."),
            update_mask=FieldMask(paths=["description"]),
        ),
        metadata=officer.md,
        timeout=10,
    )
    await officer.stub.EvolveSchema(
        pb.EvolveSchemaRequest(id=request.id, schema=evolution("bike-counters-v2")),
        metadata=officer.md,
        timeout=10,
    )
    await officer.stub.PublishDataset(
        pb.PublishDatasetRequest(id=request.id), metadata=officer.md, timeout=10
    )
    await officer.stub.DeprecateDataset(
        pb.DeprecateDatasetRequest(id=request.id, reason="replaced by v3 counters"),
        metadata=officer.md,
        timeout=10,
    )

    events = await events_for(kafka.bootstrap, request.id, expected=5)
    assert [e.type for e in events] == [
        "tdg.events.v1.DatasetRegistered",
        "tdg.events.v1.MetadataUpdated",
        "tdg.events.v1.SchemaEvolved",
        "tdg.events.v1.DatasetPublished",
        "tdg.events.v1.DatasetDeprecated",
    ]
    assert len({e.id for e in events}) == 5
    assert all(e.source == "tdg/catalog" and e.subject == request.id for e in events)
    registered = events[0].parse(ev.DatasetRegistered)
    assert registered.dataset.id == request.id
    assert events[2].parse(ev.SchemaEvolved).schema.version == 2
    assert events[4].parse(ev.DatasetDeprecated).reason == "replaced by v3 counters"


async def test_headers_are_cloudevents_binary_mode(
    caller: CallerFactory[Caller], kafka: KafkaBroker
) -> None:
    from aiokafka import AIOKafkaConsumer

    officer = caller("lyon-data-office", LYON, "data-officer")
    request = example("waste-bin-fill-levels")
    await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    await events_for(kafka.bootstrap, request.id, expected=1)
    consumer = AIOKafkaConsumer(
        topics.CATALOG_EVENTS, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000)
        record = next(
            r for rs in batches.values() for r in rs if (r.key or b"").decode() == request.id
        )
    finally:
        await consumer.stop()
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"tdg.events.v1.DatasetRegistered"
    assert headers["content-type"] == b"application/protobuf"
    assert {"ce_id", "ce_source", "ce_time"} <= headers.keys()


async def test_health_and_reflection_answer_without_token(channel: grpc.aio.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(
        health_pb2.HealthCheckRequest(service="tdg.catalog.v1.CatalogService"), timeout=5
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo(timeout=5)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = [s.name for s in response.list_services_response.service]
    assert "tdg.catalog.v1.CatalogService" in names


def _strip_accents(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
