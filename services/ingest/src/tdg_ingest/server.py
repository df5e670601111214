"""Wires the ingest service: the catalog view, provisioning of topics and tables, the worker, the
eraser, the indicator roll-up and the gRPC front door. The worker may be turned off
(`TDG_INGEST_RUN_WORKER=false`) on replicas that only serve the front door."""

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
from tdg_ingest.front_door import FrontDoor
from tdg_ingest.indicators import Indicators
from tdg_ingest.locks import TableLocks
from tdg_ingest.maintenance import compact
from tdg_ingest.provisioner import Provisioner
from tdg_ingest.servicer import (
    DEFAULT_TARGET_FILE_BYTES,
    SERVICE_NAME,
    IngestServicer,
    ResourceFinder,
)
from tdg_ingest.settings import IngestSettings
from tdg_ingest.status import StatusReader
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
    indicators: Indicators
    locks: TableLocks
    background: list[Background] = field(default_factory=list)

    def start_background(self) -> None:
        self.background = [
            Background("ingest-topics", self._ensure_own_topics),
            Background("indicator-roll-up", self._roll_up),
            Background("table-maintenance", self._maintain),
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
                log.warning("cannot create the ingest topics yet", error=str(exc))
                await asyncio.sleep(1.0)

    async def _roll_up(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ingest_indicators_every_s)
            ids = [e.id for e in self.directory.entries() if e.has_table]
            try:
                await asyncio.to_thread(self.indicators.roll_up, ids)
            except Exception as exc:
                log.warning("indicator roll-up failed, will retry", error=str(exc))

    async def _maintain(self) -> None:
        retention = timedelta(hours=self.settings.ingest_snapshot_retention_h)
        while True:
            await asyncio.sleep(self.settings.ingest_maintenance_every_s)
            ids = [e.id for e in self.directory.entries() if e.has_table]
            try:
                # Indicators come from the snapshots' summaries: rolled up before any expires.
                await asyncio.to_thread(self.indicators.roll_up, ids)
                for dataset_id in ids:
                    async with self.locks.of(dataset_id):
                        await asyncio.to_thread(
                            compact,
                            self.warehouse,
                            dataset_id,
                            DEFAULT_TARGET_FILE_BYTES,
                            retention,
                        )
            except Exception as exc:
                log.warning("table maintenance failed, will retry", error=str(exc))

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
    reader = DeadLetterReader(settings.kafka_bootstrap)

    front_door = FrontDoor(directory, provisioner, writes, sender, settings.ingest_max_record_bytes)
    servicer = IngestServicer(
        directory,
        front_door,
        StatusReader(settings.kafka_bootstrap, warehouse),
        reader,
        sender,
        indicators,
        warehouse,
        locks,
    )

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
        resource_of=ResourceFinder(directory, reader),
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
        indicators,
        locks,
    )
