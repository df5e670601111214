"""Helpers of the ingestion stories: records of the example datasets, producing them the way a
partner does, and reading back the table and the dead-letter topic."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pyarrow as pa
from aiokafka import AIOKafkaProducer
from pyiceberg.exceptions import NoSuchTableError
from tdg_core import topics
from tdg_ingest.dlq import DeadLetter, DeadLetterReader, RejectFilter
from tdg_ingest.warehouse import Warehouse


def bike_record(i: int, **overrides: Any) -> bytes:
    """A valid record of metropole-lyon.bike-counters, the i-th of a stream."""
    record: dict[str, Any] = {
        "counter_id": f"CPT-{i:07d}",  # unique per record, so a duplicate would show
        "date_observed": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        "lane_direction": "forward" if i % 2 else "backward",
        "intensity": i % 500,
        "lane_id": 1 + i % 3,
        "vehicle_type": "bicycle",
        "ref_road_segment": f"SEG-{i % 13}",
        "commune_code": "69123",
        "latitude": 45.75,
        "longitude": 4.85,
    }
    record.update(overrides)
    return json.dumps(record).encode()


async def produce(
    bootstrap: str,
    dataset_id: str,
    values: Sequence[bytes],
    producer: str,
    org: str = "",
) -> None:
    """Send records to the dataset's topic as a partner system does (acks from every replica)."""
    kafka = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await kafka.start()
    headers = [("tdg-producer", producer.encode())] if producer else []
    if org:
        headers.append(("tdg-producer-org", org.encode()))
    try:
        futures = [
            await kafka.send(topics.dataset_topic(dataset_id), value=v, headers=headers)
            for v in values
        ]
        await asyncio.gather(*futures)
    finally:
        await kafka.stop()


def table_rows(warehouse: Warehouse, dataset_id: str) -> pa.Table:
    return warehouse.load(dataset_id).scan().to_arrow()


async def dead_letters(bootstrap: str, dataset_id: str) -> list[DeadLetter]:
    return await DeadLetterReader(bootstrap).list_all(RejectFilter(dataset_id=dataset_id))


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s: {what}")


async def settled(
    warehouse: Warehouse, bootstrap: str, dataset_id: str, expected: int, timeout_s: float = 60.0
) -> tuple[pa.Table, list[DeadLetter]]:
    """The table's rows and the dataset's dead letters once they account for `expected`
    records (and stay so for a moment: nothing more arrives)."""
    found: dict[str, Any] = {}

    async def accounted() -> bool:
        try:
            rows = await asyncio.to_thread(table_rows, warehouse, dataset_id)
        except NoSuchTableError:  # not provisioned yet
            return False
        letters = await dead_letters(bootstrap, dataset_id)
        found["rows"], found["letters"] = rows, letters
        return bool(rows.num_rows + len(letters) >= expected)

    await eventually(accounted, timeout_s, f"{expected} records of {dataset_id} accounted for")
    await asyncio.sleep(1.0)
    await accounted()
    return found["rows"], found["letters"]
