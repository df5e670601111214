"""What a published dataset needs outside this process: its Kafka topic and its Iceberg table.

Reacts to the catalog view (`DatasetDirectory`): on publication it creates the topic
`tdg.ingest.<dataset>` and the table (partitioned by day of event time); on a schema evolution it
evolves the table. Every step is idempotent and retried until it succeeds, so a replica starting
from the catalog's full history, or a broker down for a while, ends in the same state.
"""

from __future__ import annotations

import asyncio

import structlog
from tdg_core.background import Background, log_failure
from tdg_core.events import TopicSpec, ensure_topics
from tdg_lake.failures import LAKE_FAILURES

from tdg_ingest.datasets import DatasetDirectory, DatasetEntry
from tdg_ingest.warehouse import Warehouse

log = structlog.get_logger("tdg.ingest.provisioner")

# Arrival time is the broker's clock: freshness is measured against it, and a producer cannot
# claim its records arrived earlier than they did.
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


class Provisioner:
    def __init__(
        self,
        directory: DatasetDirectory,
        warehouse: Warehouse,
        bootstrap: str,
        partitions: int,
        replication: int,
    ) -> None:
        self._directory = directory
        self._warehouse = warehouse
        self._bootstrap = bootstrap
        self._partitions = partitions
        self._replication = replication
        self._ready: dict[str, int] = {}  # dataset id -> schema version provisioned
        self._wake = asyncio.Event()
        self._provisioned = asyncio.Condition()
        self.changed = asyncio.Event()  # set whenever a dataset becomes (or changes while) ready
        self._task = Background("provisioner", self._run)
        directory.on_change(lambda _entry: self._wake.set())

    def ready(self, dataset_id: str, schema_version: int = 0) -> bool:
        version = self._ready.get(dataset_id)
        return version is not None and version >= schema_version

    def ready_topics(self) -> set[str]:
        return {e.topic for e in self._directory.entries() if e.has_table and e.id in self._ready}

    async def wait_ready(self, entry: DatasetEntry, timeout_s: float) -> bool:
        """True once the dataset's topic and table exist at its current schema version."""
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                async with self._provisioned:
                    await self._provisioned.wait_for(
                        lambda: self.ready(entry.id, entry.schema.version)
                    )
        except TimeoutError:
            return False
        return True

    async def provision(self, entry: DatasetEntry) -> None:
        await ensure_topics(
            self._bootstrap,
            [TopicSpec(entry.topic, self._partitions, self._replication, dict(TOPIC_CONFIG))],
        )
        await asyncio.to_thread(self._warehouse.ensure_table, entry.schema)
        self._ready[entry.id] = entry.schema.version
        self.changed.set()
        async with self._provisioned:
            self._provisioned.notify_all()
        log.info("dataset provisioned", dataset=entry.id, schema_version=entry.schema.version)

    async def _run(self) -> None:
        await self._directory.caught_up.wait()
        while True:
            self._wake.clear()
            pending = [
                e
                for e in self._directory.entries()
                if e.has_table and not self.ready(e.id, e.schema.version)
            ]
            failed = False
            for entry in pending:
                try:
                    await self.provision(entry)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed = True
                    log_failure(
                        log,
                        "provisioning failed, will retry",
                        exc,
                        dependencies=LAKE_FAILURES,
                        dataset=entry.id,
                    )
            try:
                async with asyncio.timeout(1.0 if failed else 5.0):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
