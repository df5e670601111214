"""Ingest benchmark: records per second from Kafka to a committed Iceberg snapshot for one worker,
beside the same run's bare aiokafka consume-only rate, and the time from produce to queryable.

1. A dataset of 10 columns is published (its DatasetPublished event on tdg.catalog.events), and
   N records of about 200 bytes are produced to its topic, 1 % of them invalid.
2. Bare: aiokafka reads the N records back and does nothing with them (the ratio's denominator).
3. The ingest service starts in its own process (one worker) and drains the backlog: the rate is
   measured between its first and last snapshot (Iceberg commit times), so start-up is excluded.
4. Latency: records are produced at a steady rate, in small batches; each batch counts as
   queryable when the table's committed offsets cover it (what a reader of the table then sees).

    python bench/ingest_bench.py            # 1,000,000 records
    python bench/ingest_bench.py --quick    # 100,000 records, a smoke run under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import statistics
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common import kafka_and_opa, launch, percentile, python_service, report, say, workdir
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg_core import topics
from tdg_core.devstack import free_port
from tdg_core.events import CloudEvent, EventProducer, TopicSpec, ensure_topics
from tdg_ingest.warehouse import Warehouse, offsets_in

DATASET = "metropole-lyon.air-sensors-bench"
PUBLISHER = "metropole-lyon"
PARTITIONS = 3
COLUMNS = [
    ("sensor_id", "string", False),
    ("observed_at", "timestamp", False),
    ("pm10", "float64", True),
    ("pm25", "float64", True),
    ("no2", "int32", True),
    ("o3", "int32", True),
    ("temperature", "float32", True),
    ("humidity_pct", "int32", True),
    ("commune_code", "string", True),
    ("calibrated", "bool", True),
]


def dataset() -> cpb.Dataset:
    return cpb.Dataset(
        id=DATASET,
        publisher=PUBLISHER,
        status=cpb.DATASET_STATUS_PUBLISHED,
        metadata=cpb.DatasetMetadata(title="Air sensors", access_level=cpb.ACCESS_LEVEL_OPEN),
        schema=cpb.Schema(
            version=1,
            columns=[cpb.Column(name=n, type=t, nullable=z) for n, t, z in COLUMNS],
            event_time_column="observed_at",
        ),
    )


def record(i: int, rng: random.Random) -> bytes:
    if i % 100 == 99:  # 1 % invalid, spread evenly
        return b'{"sensor_id": "S-bad", "observed_at": "yesterday", "pm10": "high"}'
    return json.dumps(
        {
            "sensor_id": f"S-{i % 5000:05d}",
            "observed_at": f"2026-11-29T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:"
            f"{i % 60:02d}.{i % 1000:03d}Z",
            "pm10": round(rng.uniform(2, 80), 2),
            "pm25": round(rng.uniform(1, 50), 2),
            "no2": rng.randrange(0, 200),
            "o3": rng.randrange(0, 180),
            "temperature": round(rng.uniform(-5, 35), 1),
            "humidity_pct": rng.randrange(10, 100),
            "commune_code": "69123",
            "calibrated": i % 2 == 0,
        }
    ).encode()


async def produce(bootstrap: str, values: list[bytes]) -> dict[int, int]:
    """Send and await every ack; the last offset + 1 per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024
    )
    await producer.start()
    headers = [("tdg-producer", PUBLISHER.encode())]
    ends: dict[int, int] = {}
    try:
        for start in range(0, len(values), 20_000):
            futures = [
                await producer.send(topics.dataset_topic(DATASET), value=v, headers=headers)
                for v in values[start : start + 20_000]
            ]
            for meta in await asyncio.gather(*futures):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def bare_consume(bootstrap: str, n: int) -> float:
    """Records per second of aiokafka reading the topic and doing nothing else."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topics.dataset_topic(DATASET), p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = first = 0
        t0 = time.perf_counter()
        while seen < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            got = sum(len(b) for b in batches.values())
            if got and not seen:  # from the first fetch on, as for the worker
                t0, first = time.perf_counter(), got
            seen += got
        return (seen - first) / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def committed(warehouse: Warehouse) -> tuple[dict[int, int], list[tuple[int, int]]]:
    """The table's offsets, and (commit time ms, records added) of every snapshot."""
    table = warehouse.load(DATASET)
    snapshots = [
        (s.timestamp_ms, int(s.summary.get("added-records") or 0) if s.summary else 0)
        for s in table.metadata.snapshots
    ]
    return offsets_in(table, topics.dataset_topic(DATASET)), sorted(snapshots)


async def wait_for(warehouse: Warehouse, ends: dict[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            offsets, _ = await asyncio.to_thread(committed, warehouse)
            if all(offsets.get(p, 0) >= o for p, o in ends.items()):
                return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the worker did not commit up to {ends} in {timeout_s}s")


async def latencies(
    bootstrap: str, warehouse: Warehouse, rate: int, seconds: float, rng: random.Random
) -> list[float]:
    """Produce `rate` records/s in batches of 1/20 s; each batch's time to be covered."""
    per_batch = max(1, rate // 20)
    sent: list[tuple[float, dict[int, int]]] = []
    found: list[float] = []
    base = 10_000_000

    async def sender() -> None:
        for b in range(int(seconds * 20)):
            values = [record(base + b * per_batch + i, rng) for i in range(per_batch)]
            t0 = time.perf_counter()
            ends = await produce(bootstrap, values)
            sent.append((t0, ends))
            await asyncio.sleep(0.05)

    async def watcher() -> None:
        pending = 0
        while not (done_sending.is_set() and pending == len(sent)):
            offsets, _ = await asyncio.to_thread(committed, warehouse)
            now = time.perf_counter()
            while pending < len(sent) and all(
                offsets.get(p, 0) >= o for p, o in sent[pending][1].items()
            ):
                found.append((now - sent[pending][0]) * 1000)
                pending += 1
            await asyncio.sleep(0.01)

    done_sending = asyncio.Event()
    watching = asyncio.create_task(watcher())
    await sender()
    done_sending.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watching, 30)
    return found


async def run(
    n: int, batch_records: int, latency_rate: int, latency_s: float, keep: bool = False
) -> dict[str, float]:
    rng = random.Random(7)
    with workdir("tdg-ingest-bench-", keep) as tmp, contextlib.ExitStack() as processes:
        bootstrap, opa_url = await kafka_and_opa(processes, tmp, wait_kafka=True)
        await ensure_topics(
            bootstrap,
            [
                TopicSpec(topics.CATALOG_EVENTS, 1, config={"retention.ms": "-1"}),
                TopicSpec(
                    topics.dataset_topic(DATASET),
                    PARTITIONS,
                    config={"message.timestamp.type": "LogAppendTime"},
                ),
            ],
        )
        events = EventProducer(bootstrap, "bench")
        await events.send(
            topics.CATALOG_EVENTS,
            DATASET,
            CloudEvent.of(cev.DatasetPublished(dataset=dataset()), "bench"),
        )
        await events.stop()
        values = [record(i, rng) for i in range(n)]
        say(f"records: {n}, {statistics.mean(len(v) for v in values):.0f} bytes on average")
        t0 = time.perf_counter()
        ends = await produce(bootstrap, values)
        say(f"produced in {time.perf_counter() - t0:.1f}s")

        bare = await bare_consume(bootstrap, n)
        say(f"bare aiokafka consume: {bare:,.0f} records/s")

        catalog_url = f"sqlite:///{tmp / 'iceberg.db'}"
        settings = {
            "TDG_KAFKA_BOOTSTRAP": bootstrap,
            "TDG_OPA_URL": opa_url,
            "TDG_AUTH_HS256_SECRET": secrets.token_urlsafe(32),
            "TDG_LAKE_CATALOG_URL": catalog_url,
            "TDG_LAKE_WAREHOUSE": str(tmp / "warehouse"),
            "TDG_INGEST_TOPIC_PARTITIONS": str(PARTITIONS),
            "TDG_INGEST_BATCH_MAX_RECORDS": str(batch_records),
            **({"TDG_LOG_LEVEL": "INFO"} if keep else {}),
        }
        service = python_service(tmp, "ingest", "tdg_ingest", free_port(), settings)
        started = time.perf_counter()
        await launch(processes, service)
        warehouse = Warehouse(
            {"type": "sql", "uri": catalog_url, "warehouse": (tmp / "warehouse").as_uri()}
        )
        await wait_for(warehouse, ends, timeout_s=600)
        wall = time.perf_counter() - started
        _, snapshots = await asyncio.to_thread(committed, warehouse)
        stored = sum(added for _, added in snapshots)
        data = [s for s in snapshots if s[1] > 0]
        span_s = (data[-1][0] - data[0][0]) / 1000 if len(data) > 1 else wall
        # Records (valid or rejected) handled after the first commit, over the commit span.
        handled = n * (stored - data[0][1]) / stored if stored else 0
        rate = handled / span_s if span_s > 0 else 0.0
        say(
            f"ingest: {stored} rows stored, {n - stored} rejected, {len(snapshots)} snapshots; "
            f"{rate:,.0f} records/s between first and last commit ({wall:.1f}s with start-up)"
        )

        found = await latencies(bootstrap, warehouse, latency_rate, latency_s, rng)
        say(f"produce to queryable: {len(found)} batches")
    if not found:
        print("no latency sample", file=sys.stderr)
        found = [float("nan")]
    return {
        "records": n,
        "record_bytes_avg": round(statistics.mean(len(v) for v in values), 1),
        "rows_stored": stored,
        "records_rejected": n - stored,
        "snapshots": len(snapshots),
        "records_per_s": round(rate, 1),
        "wall_s_with_startup": round(wall, 2),
        "bare_consume_records_per_s": round(bare, 1),
        "ratio_vs_bare_consume": round(rate / bare, 3),
        "produce_to_queryable_p50_ms": round(statistics.median(found), 1),
        "produce_to_queryable_p99_ms": round(percentile(found, 0.99), 1),
        "latency_rate_records_per_s": latency_rate,
        "batch_max_records": batch_records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument(
        "--batch-records", type=int, default=None, help="the worker's micro-batch bound"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's directory, the service logging INFO"
    )
    args = parser.parse_args()
    n = args.records or (100_000 if args.quick else 1_000_000)
    batch = args.batch_records or (20_000 if args.quick else 100_000)
    report(run(n, batch, latency_rate=2_000, latency_s=3.0 if args.quick else 15.0, keep=args.keep))


if __name__ == "__main__":
    main()
