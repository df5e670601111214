"""Print the CloudEvents of a topic from its beginning (for the demo and for debugging)."""

from __future__ import annotations

import argparse
import asyncio

from aiokafka import AIOKafkaConsumer
from tdg_core.events import CloudEvent
from tdg_core.settings import TdgSettings


async def tail(topic: str, limit: int) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=TdgSettings().kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000, max_records=limit)
        for records in batches.values():
            for r in records:
                e = CloudEvent.from_headers(r.headers, r.value or b"")
                print(f"{r.partition}@{r.offset}  {e.time:%H:%M:%S}  {e.type:<36} {e.subject}")
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("topic")
    parser.add_argument("--max", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(tail(args.topic, args.max))


if __name__ == "__main__":
    main()
