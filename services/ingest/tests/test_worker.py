"""The ingest worker on a real broker, a real OPA and a local Iceberg warehouse, with faults
injected into its commits: records keep flowing whatever a batch went through."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaProducer
from pyiceberg.exceptions import NoSuchTableError
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg_core import topics
from tdg_core.errors import Unavailable
from tdg_core.events import CloudEvent, EventProducer, TopicSpec, ensure_topics
from tdg_core.policy import PolicyClient
from tdg_core.testing import KafkaBroker, OpaEndpoint
from tdg_ingest.contract import PRODUCER_HEADER
from tdg_ingest.datasets import DatasetDirectory
from tdg_ingest.locks import TableLocks
from tdg_ingest.provisioner import Provisioner
from tdg_ingest.settings import IngestSettings
from tdg_ingest.warehouse import Warehouse
from tdg_ingest.worker import IngestWorker
from tdg_ingest.writes import WritePermissions

pytestmark = pytest.mark.integration

PUBLISHER = "metropole-lyon"


class FaultyWarehouse(Warehouse):
    """The real warehouse, with a fault planned for each of the first commits: `fail` (the
    catalog is down), `overtaken` (another replica commits the same batch first, so this one
    meets StaleOffsets). Later commits go through."""

    def __init__(self, properties: dict[str, str], faults: list[str]) -> None:
        super().__init__(properties)
        self._properties = properties
        self.faults = list(faults)
        self.injected: list[str] = []

    def commit_batch(
        self,
        dataset_id: str,
        topic: str,
        data: pa.Table,
        start: dict[int, int],
        end: dict[int, int],
        properties: dict[str, str],
    ) -> int:
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            self.injected.append(fault)
        if fault == "fail":
            raise Unavailable("the Iceberg catalog is down (injected)")
        if fault == "overtaken":
            other = Warehouse(self._properties)
            other.commit_batch(dataset_id, topic, data, start, end, properties)
        return super().commit_batch(dataset_id, topic, data, start, end, properties)


@dataclass
class Stack:
    bootstrap: str
    dataset_id: str
    warehouse: FaultyWarehouse

    @property
    def topic(self) -> str:
        return topics.dataset_topic(self.dataset_id)

    def rows(self) -> list[str]:
        try:
            table = self.warehouse.load(self.dataset_id)
        except NoSuchTableError:  # not provisioned yet
            return []
        if table.current_snapshot() is None:
            return []
        return sorted(
            table.scan(selected_fields=("reading_id",)).to_arrow()["reading_id"].to_pylist()
        )

    async def send(self, ids: range) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for i in ids:
                value = (
                    f'{{"reading_id": "r{i:03d}", "observed_at": "2026-11-29T10:00:{i % 60:02d}Z"}}'
                )
                await producer.send_and_wait(
                    self.topic, value.encode(), headers=[(PRODUCER_HEADER, PUBLISHER.encode())]
                )
        finally:
            await producer.stop()


def dataset(dataset_id: str) -> cpb.Dataset:
    return cpb.Dataset(
        id=dataset_id,
        publisher=PUBLISHER,
        status=cpb.DATASET_STATUS_PUBLISHED,
        metadata=cpb.DatasetMetadata(title="Readings", access_level=cpb.ACCESS_LEVEL_OPEN),
        schema=cpb.Schema(
            version=1,
            columns=[
                cpb.Column(name="reading_id", type="string", nullable=False),
                cpb.Column(name="observed_at", type="timestamp", nullable=False),
            ],
            event_time_column="observed_at",
        ),
    )


async def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def faulty(
    kafka: KafkaBroker, opa: OpaEndpoint, tmp_path: Path
) -> AsyncIterator[Callable[[list[str]], Stack]]:
    """A worker of its own (catalog topic, dataset, consumer group, warehouse), started with the
    faults given."""
    suffix = uuid.uuid4().hex[:8]
    catalog_topic = f"{topics.CATALOG_EVENTS}.test-{suffix}"
    dataset_id = f"{PUBLISHER}.readings-{suffix}"
    await ensure_topics(kafka.bootstrap, [TopicSpec(catalog_topic, 1)])
    events = EventProducer(kafka.bootstrap, "test")
    await events.send(
        catalog_topic,
        dataset_id,
        CloudEvent.of(cev.DatasetPublished(dataset=dataset(dataset_id)), "test"),
    )
    await events.stop()
    settings = IngestSettings(
        _env_file=None,
        kafka_bootstrap=kafka.bootstrap,
        opa_url=opa.url,
        lake_catalog_url=f"sqlite:///{tmp_path / 'iceberg-catalog.db'}",
        lake_warehouse=str(tmp_path / "warehouse"),
        ingest_consumer_group=f"tdg-ingest-{suffix}",
        ingest_topic_partitions=2,
        ingest_batch_max_wait_s=0.2,
    )
    stops: list[Callable[[], Awaitable[None]]] = []
    policy = PolicyClient(opa.url, 5.0)

    def start(faults: list[str]) -> Stack:
        warehouse = FaultyWarehouse(settings.iceberg_properties(), faults)
        directory = DatasetDirectory(kafka.bootstrap, catalog_topic)
        provisioner = Provisioner(directory, warehouse, kafka.bootstrap, 2, 1)
        writes = WritePermissions(policy, 10.0)
        worker = IngestWorker(settings, directory, provisioner, warehouse, writes, TableLocks())
        for part in (directory, provisioner, worker):
            part.start()
            stops.insert(0, part.stop)
        return Stack(kafka.bootstrap, dataset_id, warehouse)

    yield start
    for stop in stops:
        await stop()
    await policy.close()


async def test_a_batch_that_failed_then_was_overtaken_does_not_stop_its_topic(
    faulty: Callable[[list[str]], Stack],
) -> None:
    # The failure pauses the topic while the batch waits to be retried; the retry finds that
    # another replica stored it meanwhile, and the worker rewinds to the table's offsets.
    stack = faulty(["fail", "overtaken"])
    await stack.send(range(5))
    await eventually(lambda: len(stack.rows()) == 5, 60, "the first records stored")
    assert stack.warehouse.injected == ["fail", "overtaken"]
    await stack.send(range(5, 10))
    await eventually(lambda: len(stack.rows()) == 10, 20, "records sent after the rewind stored")
    assert stack.rows() == [f"r{i:03d}" for i in range(10)]  # each once
