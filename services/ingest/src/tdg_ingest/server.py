"""Wires the ingest service: the catalog view, provisioning of topics and tables, the worker, the
eraser, the table upkeep loops, and the gRPC servicer over its use cases (front door, reports,
rejects, upkeep). The worker may be turned off (`TDG_INGEST_RUN_WORKER=false`) on replicas that
only serve the front door."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import structlog
from aiokafka import AIOKafkaProducer
from tdg.ingest.v1 import ingest_pb2_grpc
from tdg_core import topics
from tdg_core.auth import TokenVerifier
from tdg_core.background import Background
from tdg_core.errors import Unavailable
from tdg_core.events import EventProducer, TopicSpec, ensure_topics, kafka_reachable
from tdg_core.grpc import GrpcService, build_server
from tdg_core.grpc.server import HealthMonitor
from tdg_core.policy import PolicyClient

from tdg_ingest.datasets import DatasetDirectory
from tdg_ingest.dlq import DeadLetterReader
from tdg_ingest.erasure import Eraser
from tdg_ingest.failures import log_failed_round
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

log = structlog.get_logger("tdg.ingest.server")


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


@dataclass
class IngestApp:
    server: grpc.aio.Server
    monitor: HealthMonitor
    port: int
    settings: IngestSettings
    directory: DatasetDirectory
    provisioner: Provisioner
    warehouse: Warehouse
    worker: IngestWorker | None
    eraser: Eraser
    writes: WritePermissions
    policy: PolicyClient
    events: EventProducer
    sender: KafkaSender
    upkeep: TableUpkeep
    background: list[Background] = field(default_factory=list)

    def start_background(self) -> None:
        s = self.settings
        retention = timedelta(hours=s.ingest_snapshot_retention_h)
        self.background = [
            Background("ingest-topics", self._ensure_own_topics),
            Background(
                "indicator-roll-up", lambda: self.upkeep.keep_rolled_up(s.ingest_indicators_every_s)
            ),
            Background(
                "table-maintenance",
                lambda: self.upkeep.keep_compacted(s.ingest_maintenance_every_s, retention),
            ),
        ]
        for task in self.background:
            task.start()
        self.directory.start()
        self.provisioner.start()
        self.writes.start()
        self.eraser.start()
        if self.worker is not None:
            self.worker.start()

    async def start(self) -> None:
        self.start_background()
        await self.server.start()
        self.monitor.start()

    async def _ensure_own_topics(self) -> None:
        while True:
            try:
                await ensure_topics(self.settings.kafka_bootstrap, own_topics(self.settings))
                return
            except Exception as exc:
                log_failed_round(log, "cannot create the ingest topics yet", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        await self.eraser.stop()
        await self.writes.stop()
        await self.provisioner.stop()
        await self.directory.stop()
        for task in self.background:
            await task.stop()
        await self.sender.stop()
        await self.events.stop()
        await self.policy.close()


async def build_app(settings: IngestSettings) -> IngestApp:
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
    worker = (
        IngestWorker(settings, directory, provisioner, warehouse, writes, locks)
        if settings.ingest_run_worker
        else None
    )
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

    async def iceberg_up() -> bool:
        try:
            await asyncio.wait_for(asyncio.to_thread(warehouse.catalog.list_namespaces), 2.0)
        except Exception:
            return False
        return True

    async def kafka_up() -> bool:
        return await kafka_reachable(settings.kafka_bootstrap)

    service = GrpcService(
        name=SERVICE_NAME,
        register=lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(
            servicer, server
        ),
        resource_of=ResourceFinder(directory, rejects),
        dependencies={"kafka": kafka_up, "iceberg-catalog": iceberg_up},
    )
    server, monitor, port = build_server(settings, [service], TokenVerifier(settings), policy)
    return IngestApp(
        server,
        monitor,
        port,
        settings,
        directory,
        provisioner,
        warehouse,
        worker,
        eraser,
        writes,
        policy,
        events,
        sender,
        upkeep,
    )
