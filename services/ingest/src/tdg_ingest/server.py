"""Wires the ingest service: the catalog view, provisioning of topics and tables, the worker, the
eraser, the table upkeep loops, and the gRPC servicer over its use cases (front door, reports,
rejects, upkeep). The worker may be turned off (`TDG_INGEST_RUN_WORKER=false`) on replicas that
only serve the front door.

Started in this order, stopped in reverse: OPA client, events producer, front-door producer,
warehouse, its own topics (created in the background), catalog view, provisioner, write
permissions, eraser, worker, indicator roll-up, table maintenance, gRPC. The server stops first,
so no call meets a stopped part; the producers stop last, after everything that sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from tdg.ingest.v1 import ingest_pb2_grpc
from tdg_core import topics
from tdg_core.auth import TokenVerifier
from tdg_core.background import Background
from tdg_core.errors import Unavailable
from tdg_core.events import EventProducer, TopicSpec
from tdg_core.grpc import GrpcService, build_server
from tdg_core.policy import PolicyClient
from tdg_core.service import Component, Service, kafka_probe, topics_to_create
from tdg_lake.probe import iceberg_probe

from tdg_ingest.datasets import DatasetDirectory
from tdg_ingest.dlq import DeadLetterReader
from tdg_ingest.erasure import Eraser
from tdg_ingest.front_door import FrontDoor
from tdg_ingest.indicators import Indicators
from tdg_ingest.locks import TableLocks
from tdg_ingest.provisioner import Provisioner
from tdg_ingest.rejects import Rejects
from tdg_ingest.reports import Reports
from tdg_ingest.servicer import SERVICE_NAME, IngestServicer, ResourceFinder
from tdg_ingest.settings import IngestSettings
from tdg_ingest.status import StatusReader
from tdg_ingest.upkeep import TableUpkeep
from tdg_ingest.warehouse import Warehouse
from tdg_ingest.worker import IngestWorker
from tdg_ingest.writes import WritePermissions


def own_topics(settings: IngestSettings) -> list[TopicSpec]:
    """The topics this service writes besides the dataset topics."""
    # A dead letter carries a whole record (up to the record limit) plus its headers.
    dlq_bytes = str(2 * settings.ingest_max_record_bytes + 65536)
    return [
        TopicSpec(
            topics.INGEST_DLQ,
            settings.ingest_topic_partitions,
            settings.ingest_topic_replication,
            {"max.message.bytes": dlq_bytes, "retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
        TopicSpec(
            topics.INGEST_EVENTS,
            settings.ingest_topic_partitions,
            settings.ingest_topic_replication,
            {"retention.ms": "-1"},
        ),
    ]


class KafkaSender:
    """A producer started on first use (Kafka may be down when the service starts)."""

    def __init__(self, settings: IngestSettings) -> None:
        self._options = {
            "bootstrap_servers": settings.kafka_bootstrap,
            "client_id": "tdg-ingest-front-door",
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "max_batch_size": 1024 * 1024,
            "max_request_size": 2 * settings.ingest_max_record_bytes + 65536,
        }
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._options)
                try:
                    await producer.start()
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise Unavailable(f"Kafka unreachable: {exc}") from exc
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def upkeep_loops(upkeep: TableUpkeep, settings: IngestSettings) -> list[Component]:
    """Indicators rolled up and tables compacted on their own schedules, forever."""
    retention = timedelta(hours=settings.ingest_snapshot_retention_h)
    return [
        Component.running(
            "indicator-roll-up",
            Background(
                "indicator-roll-up",
                lambda: upkeep.keep_rolled_up(settings.ingest_indicators_every_s),
            ),
        ),
        Component.running(
            "table-maintenance",
            Background(
                "table-maintenance",
                lambda: upkeep.keep_compacted(settings.ingest_maintenance_every_s, retention),
            ),
        ),
    ]


async def build_service(settings: IngestSettings) -> Service[IngestSettings]:
    warehouse = await asyncio.to_thread(Warehouse, settings.iceberg_properties())
    directory = DatasetDirectory(settings.kafka_bootstrap, topics.CATALOG_EVENTS)
    provisioner = Provisioner(
        directory,
        warehouse,
        settings.kafka_bootstrap,
        settings.ingest_topic_partitions,
        settings.ingest_topic_replication,
    )
    policy = PolicyClient(settings.opa_url, settings.opa_timeout_s)
    writes = WritePermissions(
        policy, settings.ingest_write_cache_s, settings.kafka_bootstrap, topics.CONSENT_EVENTS
    )
    locks = TableLocks()
    events = EventProducer(settings.kafka_bootstrap, client_id="tdg-ingest")
    eraser = Eraser(settings.kafka_bootstrap, directory, warehouse, locks, events)
    sender = KafkaSender(settings)
    indicators = Indicators(warehouse)
    upkeep = TableUpkeep(directory, warehouse, indicators, locks)
    reports = Reports(
        directory, StatusReader(settings.kafka_bootstrap, warehouse), indicators, upkeep
    )
    rejects = Rejects(DeadLetterReader(settings.kafka_bootstrap), sender)
    front_door = FrontDoor(directory, provisioner, writes, sender, settings.ingest_max_record_bytes)
    servicer = IngestServicer(front_door, reports, rejects, upkeep)
    service = GrpcService(
        name=SERVICE_NAME,
        register=lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(
            servicer, server
        ),
        resource_of=ResourceFinder(directory, rejects),
        dependencies={
            "kafka": kafka_probe(settings.kafka_bootstrap),
            "iceberg-catalog": iceberg_probe(warehouse.catalog),
        },
    )
    grpc = build_server(settings, [service], TokenVerifier(settings), policy)
    worker = (
        [
            Component.running(
                "ingest-worker",
                IngestWorker(settings, directory, provisioner, warehouse, writes, locks),
            )
        ]
        if settings.ingest_run_worker
        else []
    )
    return Service(
        settings,
        grpc,
        [
            Component.resource("opa", policy, policy.close),
            Component.resource("events-producer", events, events.stop),
            Component.resource("front-door-producer", sender, sender.stop),
            Component.resource("warehouse", warehouse),
            topics_to_create(settings.kafka_bootstrap, own_topics(settings)),
            Component.running("catalog-view", directory),
            Component.running("provisioner", provisioner),
            Component.running("write-permissions", writes),
            Component.running("eraser", eraser),
            *worker,
            *upkeep_loops(upkeep, settings),
        ],
    )
