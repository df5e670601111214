"""Faults during a stream: the worker killed with SIGKILL at random moments and restarted, the
Kafka broker restarted. At the end every record is in the table exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from tdg_ingest.warehouse import Warehouse

from tests.integration.helpers import published
from tests.integration.ingest_helpers import bike_record, eventually, produce, settled, table_rows

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"
ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IngestProcess:
    """The ingest service as its own process, with its own consumer group and warehouse, so that
    it can be killed without touching the session's in-process service."""

    def __init__(self, tmp: Path, kafka: str, opa: str, secret: str) -> None:
        self.log = tmp / "ingest.log"
        self.catalog_url = f"sqlite:///{tmp / 'iceberg-catalog.db'}"
        self.warehouse_dir = tmp / "warehouse"
        self.env = {
            **os.environ,
            "TDG_KAFKA_BOOTSTRAP": kafka,
            "TDG_OPA_URL": opa,
            "TDG_AUTH_HS256_SECRET": secret,
            "TDG_GRPC_PORT": str(_free_port()),
            "TDG_LAKE_CATALOG_URL": self.catalog_url,
            "TDG_LAKE_WAREHOUSE": str(self.warehouse_dir),
            "TDG_INGEST_CONSUMER_GROUP": f"tdg-ingest-kill-{tmp.name}",
            "TDG_INGEST_BATCH_MAX_WAIT_S": "0.3",
            "TDG_INGEST_BATCH_MAX_RECORDS": "20000",
            "TDG_LOG_FORMAT": "json",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tdg_ingest"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def warehouse(self) -> Warehouse:
        return Warehouse(
            {"type": "sql", "uri": self.catalog_url, "warehouse": self.warehouse_dir.as_uri()}
        )


async def test_worker_killed_at_random_moments_stores_each_record_exactly_once(
    ingest_caller, ingest_app, kafka, opa, secret, tmp_path
) -> None:
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    total, chunk = 200_000, 10_000
    bad = {i for i in range(0, total, 9_973)}  # a few rejects, spread over the stream
    worker = IngestProcess(tmp_path, kafka.bootstrap, opa.url, secret)
    rng = random.Random(4)
    worker.start()

    async def stream() -> None:
        for start in range(0, total, chunk):
            values = [
                b'{"counter_id": "broken", "intensity": "x"}' if i in bad else bike_record(i)
                for i in range(start, start + chunk)
            ]
            await produce(kafka.bootstrap, dataset.id, values, LYON)
            await asyncio.sleep(0.1)

    async def chaos() -> None:
        for _ in range(4):
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            await asyncio.to_thread(worker.kill)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            worker.start()

    try:
        await asyncio.gather(stream(), chaos())
        warehouse = await asyncio.to_thread(worker.warehouse)

        async def all_there() -> bool:
            try:
                rows = await asyncio.to_thread(table_rows, warehouse, dataset.id)
            except Exception:
                return False
            return bool(rows.num_rows >= total - len(bad))

        await eventually(all_there, 240, "every valid record stored by the restarted worker")
        rows, letters = await settled(warehouse, kafka.bootstrap, dataset.id, total, 60)
    finally:
        worker.stop()
    assert worker.kills == 4
    ids = rows["counter_id"]
    assert rows.num_rows == total - len(bad)
    assert pc.count_distinct(ids).as_py() == rows.num_rows  # no duplicate key
    assert len(letters) == len(bad)  # read back deduplicated by source position
    assert len({(x.source_partition, x.source_offset) for x in letters}) == len(bad)
    assert all(x.category == "schema" and b"broken" in x.value for x in letters)


async def test_kafka_restarted_mid_stream_loses_and_duplicates_nothing(
    ingest_caller, ingest_app, kafka
) -> None:
    if not kafka.owned:
        pytest.fail("this story stops the broker: run it against the session's own Kafka")
    officer = ingest_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(5_000)], LYON)

    await asyncio.to_thread(kafka.stop)
    try:
        await ingest_app.monitor.check_once()
        assert "kafka" in ingest_app.monitor.down  # health says NOT_SERVING meanwhile
        await asyncio.sleep(2.0)
    finally:
        await asyncio.to_thread(kafka.start)
    await produce(kafka.bootstrap, dataset.id, [bike_record(i) for i in range(5_000, 10_000)], LYON)

    rows, letters = await settled(
        ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 10_000, 120
    )
    assert letters == []
    assert rows.num_rows == 10_000
    assert pc.count_distinct(rows["counter_id"]).as_py() == 10_000

    async def serving() -> bool:
        await ingest_app.monitor.check_once()
        return not ingest_app.monitor.down

    await eventually(serving, 30, "health back to SERVING by itself")
