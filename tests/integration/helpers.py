"""Small helpers of the integration stories: example datasets and reading events back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg_cli.dataset_file import load_register_request, load_schema
from tdg_core.events import CloudEvent

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str, publisher: str = "", suffix: bool = True) -> pb.RegisterDatasetRequest:
    """An example dataset file, renamed so that every test owns its dataset."""
    request = load_register_request(EXAMPLES / f"{name}.yaml")
    pub, _, ds = request.id.partition(".")
    request.id = f"{publisher or pub}.{ds}" + (f"-{uuid.uuid4().hex[:8]}" if suffix else "")
    return request


def evolution(name: str) -> pb.Schema:
    return load_schema(EXAMPLES / "evolutions" / f"{name}.yaml")


async def events_for(
    bootstrap: str, dataset_id: str, expected: int, timeout_s: float = 20.0
) -> list[CloudEvent]:
    """Every event of tdg.catalog.events keyed by the dataset, once at least `expected` arrived
    and the topic has nothing more for now."""
    consumer = AIOKafkaConsumer(
        "tdg.catalog.events",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    found: list[CloudEvent] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        if (r.key or b"").decode() == dataset_id:
                            found.append(CloudEvent.from_headers(r.headers, r.value or b""))
                if not batch and len(found) >= expected:
                    return found
    except TimeoutError:
        return found
    finally:
        await consumer.stop()
