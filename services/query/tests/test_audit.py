"""The audit trail end to end: AuditLog queues and sends (fail closed when it cannot), AuditSink
stores each record of `tdg.audit` exactly once in `tdg_ops.query_audit`.

The first tests use a stand-in producer; those marked `integration` run on the session's Kafka.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pyiceberg.catalog.sql import SqlCatalog
from tdg.events.v1.query_events_pb2 import QueryAudited
from tdg.query.v1.query_pb2 import AuditRecord
from tdg_core import topics
from tdg_core.events import CloudEvent, ensure_topics
from tdg_core.testing import KafkaBroker
from tdg_query.audit import MAX_RECORD_BYTES, AuditLog, audit_event, audit_topic_spec, fit
from tdg_query.audit_table import AuditSink, AuditTable

PARTITIONS = 3


def audit(query_id: str, dataset_id: str = "lyon.bike-counters", **fields: Any) -> AuditRecord:
    record = AuditRecord(
        query_id=query_id, dataset_id=dataset_id, party="acme", outcome="ok", **fields
    )
    record.time.FromDatetime(datetime.now(UTC))
    return record


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


class FakeProducer:
    """Records what is sent; fails while `down` is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, CloudEvent]] = []
        self.down = False
        self.gate: asyncio.Event | None = None  # when set: sends wait for it
        self.failures = 0
        self.stops = 0

    async def send_many(self, topic: str, items: Sequence[tuple[str, CloudEvent]]) -> None:
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            self.failures += 1
            raise ConnectionError("Kafka unreachable")
        self.sent.extend((topic, key, event) for key, event in items)

    async def stop(self) -> None:
        self.stops += 1

    def query_ids(self) -> list[str]:
        return [e.parse(QueryAudited).record.query_id for _, _, e in self.sent]


# --- the log, with a stand-in producer --------------------------------------------------------


async def test_records_are_sent_in_order_keyed_by_dataset() -> None:
    producer = FakeProducer()
    log = AuditLog("", producer=producer)
    log.record(audit("q0"))  # before start: sent once started
    log.start()
    try:
        for i in range(1, 5):
            log.record(audit(f"q{i}", dataset_id=f"lyon.ds{i % 2}"))
        await eventually(lambda: log.sent == 5)
        assert producer.query_ids() == ["q0", "q1", "q2", "q3", "q4"]
        topic, key, event = producer.sent[1]
        assert (topic, key) == (topics.AUDIT, "lyon.ds1")
        assert event.type == "tdg.events.v1.QueryAudited"
        assert event.id == "q1"  # the same on every send: copies can be dropped by id
        assert event.subject == "lyon.ds1"
        assert log.pending() == 0 and log.accepting() and log.healthy
    finally:
        await log.stop()


async def test_records_from_other_threads_are_sent() -> None:
    producer = FakeProducer()
    log = AuditLog("", producer=producer)
    log.start()
    try:

        def flight_thread(n: int) -> None:
            for i in range(50):
                log.record(audit(f"t{n}-{i}"))

        threads = [threading.Thread(target=flight_thread, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.to_thread(t.join)
        await eventually(lambda: log.sent == 200)
        sent = producer.query_ids()
        assert sorted(sent) == sorted(f"t{n}-{i}" for n in range(4) for i in range(50))
        for n in range(4):  # each thread's records in the order it recorded them
            mine = [q for q in sent if q.startswith(f"t{n}-")]
            assert mine == [f"t{n}-{i}" for i in range(50)]
    finally:
        await log.stop()


async def test_kafka_down_retries_and_drops_nothing() -> None:
    producer = FakeProducer()
    producer.down = True
    log = AuditLog("", capacity=3, producer=producer)
    log.start()
    try:
        for i in range(2):
            log.record(audit(f"q{i}"))
        await eventually(lambda: producer.failures >= 2)
        assert not log.healthy
        assert log.accepting()  # 2 of 3
        log.record(audit("q2"))
        assert not log.accepting()  # full: the service refuses new queries
        log.record(audit("q3"))  # a query admitted before still gets its record
        assert log.pending() == 4 and not log.accepting()
        producer.down = False
        await eventually(lambda: log.sent == 4, timeout_s=10)
        assert producer.query_ids() == ["q0", "q1", "q2", "q3"]
        assert log.accepting() and log.healthy
        assert producer.stops >= 1  # a fresh producer after a failure
    finally:
        await log.stop()


async def test_a_send_waiting_for_kafka_is_waited_for() -> None:
    producer = FakeProducer()
    producer.gate = asyncio.Event()
    log = AuditLog("", producer=producer, stall_s=0.1)
    log.start()
    try:
        log.record(audit("q0"))
        await eventually(lambda: not log.healthy)
        assert log.pending() == 1 and producer.sent == []
        producer.gate.set()
        await eventually(lambda: log.sent == 1)
        assert producer.query_ids() == ["q0"] and log.healthy
    finally:
        await log.stop()


async def test_stop_sends_what_it_can_within_the_grace_period(
    capsys: pytest.CaptureFixture[str],
) -> None:
    producer = FakeProducer()
    log = AuditLog("", producer=producer, grace_s=5.0)
    log.start()
    for i in range(3):
        log.record(audit(f"q{i}"))
    await log.stop()
    assert producer.query_ids() == ["q0", "q1", "q2"]
    assert not log.accepting()  # stopped: nothing more can be audited

    down = FakeProducer()
    down.down = True
    log = AuditLog("", producer=down, grace_s=0.3)
    log.start()
    log.record(audit("lost-1"))
    started = time.monotonic()
    await log.stop()
    assert time.monotonic() - started < 3
    assert log.pending() == 0
    log.record(audit("late-1"))  # a query that ended after stop()
    assert log.pending() == 0
    out = capsys.readouterr().out
    assert "lost-1" in out and "late-1" in out  # the last trace of them, in the log


def test_an_oversized_record_is_cut_down_to_fit() -> None:
    huge = json.dumps({"filter": {"in_list": {"values": ["x" * 20] * 60_000}}})
    record = audit("q1", request_json=huge, error="e" * 100_000, reasons=["r"] * 5_000)
    cut = fit(record)
    assert cut.ByteSize() <= MAX_RECORD_BYTES
    assert (cut.query_id, cut.dataset_id, cut.party) == ("q1", record.dataset_id, "acme")
    request = json.loads(cut.request_json)
    assert request["truncated"] is True and request["bytes"] == len(huge)
    assert huge.startswith(request["head"])
    assert record.request_json == huge  # the caller's record is left alone
    small = audit("q2", request_json='{"columns":[]}')
    assert fit(small) is small


def test_the_topic_is_kept_for_more_than_a_year() -> None:
    spec = audit_topic_spec(6, 3)
    assert (spec.name, spec.partitions, spec.replication_factor) == (topics.AUDIT, 6, 3)
    assert int(spec.config["retention.ms"]) >= 365 * 24 * 3600 * 1000
    assert spec.config["min.insync.replicas"] == "2"
    assert "min.insync.replicas" not in audit_topic_spec(1, 1).config


def test_the_event_carries_the_record() -> None:
    record = audit("q1")
    event = audit_event(record)
    assert event.parse(QueryAudited).record == record
    assert event.time == record.time.ToDatetime(tzinfo=UTC)


# --- on Kafka ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Trail:
    """A topic, table and consumer group of the test's own."""

    bootstrap: str
    topic: str
    group: str
    table: AuditTable

    def log(self, **options: Any) -> AuditLog:
        return AuditLog(self.bootstrap, topic=self.topic, **options)

    def sink(self, **options: Any) -> AuditSink:
        options = {"flush_every_s": 0.2, "flush_records": 20, **options}
        return AuditSink(self.bootstrap, self.table, group_id=self.group, **options)

    def stored(self) -> Counter[str]:
        """Query id → rows in the table (not `search`, which shows each id once)."""
        iceberg = self.table.table()
        if iceberg.current_snapshot() is None:
            return Counter()
        rows = iceberg.scan(selected_fields=("query_id",)).to_arrow()
        return Counter(rows.column("query_id").to_pylist())

    async def rows(self) -> int:
        return sum((await asyncio.to_thread(self.stored)).values())


@pytest.fixture
async def trail(kafka: KafkaBroker, tmp_path: Path) -> Trail:
    suffix = uuid.uuid4().hex[:8]
    topic = f"{topics.AUDIT}.test-{suffix}"
    spec = dataclasses.replace(audit_topic_spec(PARTITIONS, 1), name=topic)
    await ensure_topics(kafka.bootstrap, [spec])
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    return Trail(kafka.bootstrap, topic, f"tdg-query-audit-{suffix}", AuditTable(catalog, topic))


@pytest.mark.integration
async def test_each_query_is_found_once(trail: Trail) -> None:
    log = trail.log()
    sink = trail.sink()
    log.start()
    sink.start()
    try:
        expected = {f"q{i}" for i in range(30)}
        for i in range(20):
            log.record(audit(f"q{i}", dataset_id=f"lyon.ds{i % 4}"))

        def flight_thread() -> None:
            for i in range(20, 30):
                log.record(audit(f"q{i}", dataset_id="lyon.flight"))

        await asyncio.to_thread(flight_thread)
        log.record(audit("q3", dataset_id="lyon.ds3"))  # the same record sent twice
        await eventually(lambda: log.sent == 31)
        await eventually(lambda: sink.committed >= 30)
        await asyncio.sleep(0.5)  # a duplicate would be committed by now
        stored = await asyncio.to_thread(trail.stored)
        assert set(stored) == expected
        assert set(stored.values()) == {1}
        found = await asyncio.to_thread(trail.table.search, dataset_id="lyon.ds1")
        assert {r.query_id for r in found} == {"q1", "q5", "q9", "q13", "q17"}
        one = await asyncio.to_thread(trail.table.search, query_id="q22")
        assert [r.dataset_id for r in one] == ["lyon.flight"]
    finally:
        await sink.stop()
        await log.stop()


@pytest.mark.integration
async def test_a_restarted_sink_neither_loses_nor_duplicates(trail: Trail) -> None:
    log = trail.log()
    log.start()
    first = trail.sink(flush_records=7)
    try:
        for i in range(60):
            log.record(audit(f"q{i}", dataset_id=f"lyon.ds{i % 5}"))
        first.start()
        await eventually(lambda: first.committed >= 14)
        await first.stop()  # a crash, mid-way: what it read and did not commit is lost with it
        # The group's offsets (advisory) pushed back to 0: only the table's may count.
        await rewind_group(trail)
        for i in range(60, 90):
            log.record(audit(f"q{i}", dataset_id=f"lyon.ds{i % 5}"))
        second = trail.sink()
        second.start()
        try:
            await eventually(lambda: log.sent == 90)
            await eventually(lambda: _rows_at_least(trail, 90))
            await asyncio.sleep(1.0)  # a duplicate would be committed by now
        finally:
            await second.stop()
        stored = await asyncio.to_thread(trail.stored)
        assert set(stored) == {f"q{i}" for i in range(90)}
        assert set(stored.values()) == {1}
        assert sum((await asyncio.to_thread(trail.table.committed_offsets)).values()) == 90
    finally:
        await log.stop()


@pytest.mark.integration
async def test_two_sinks_share_the_topic_and_one_leaves(trail: Trail) -> None:
    log = trail.log()
    log.start()
    a, b = trail.sink(flush_records=5), trail.sink(flush_records=5)
    try:
        a.start()
        b.start()
        for i in range(40):
            log.record(audit(f"q{i}", dataset_id=f"lyon.ds{i % 7}"))
        await eventually(lambda: a.committed + b.committed >= 10)
        await a.stop()  # b takes its partitions over from the table's offsets
        for i in range(40, 80):
            log.record(audit(f"q{i}", dataset_id=f"lyon.ds{i % 7}"))
        await eventually(lambda: _rows_at_least(trail, 80), timeout_s=60)
        await asyncio.sleep(1.0)
        stored = await asyncio.to_thread(trail.stored)
        assert set(stored) == {f"q{i}" for i in range(80)}
        assert set(stored.values()) == {1}
    finally:
        await a.stop()
        await b.stop()
        await log.stop()


@pytest.mark.integration
async def test_malformed_messages_are_skipped(trail: Trail) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=trail.bootstrap, acks="all")
    await producer.start()
    try:
        other = CloudEvent.of(AuditRecord(query_id="x"), "someone")
        await producer.send_and_wait(trail.topic, b"not a cloud event", key=b"k", partition=0)
        await producer.send_and_wait(
            trail.topic, other.data, key=b"k", partition=0, headers=other.headers()
        )
        good = audit_event(audit("q1"))
        await producer.send_and_wait(
            trail.topic, good.data, key=b"k", partition=0, headers=good.headers()
        )
    finally:
        await producer.stop()
    sink = trail.sink()
    sink.start()
    try:
        await eventually(lambda: sink.committed == 1)
        offsets = await asyncio.to_thread(trail.table.committed_offsets)
        assert offsets.get(0) == 3
        assert [r.query_id for r in await asyncio.to_thread(trail.table.search)] == ["q1"]
    finally:
        await sink.stop()


@pytest.mark.integration
async def test_records_made_during_a_kafka_outage_arrive_once(
    kafka: KafkaBroker, trail: Trail
) -> None:
    if not kafka.owned:
        pytest.skip("this story stops the broker: run it against the session's own Kafka")
    log = trail.log(capacity=5, stall_s=0.5)
    log.start()
    sink = trail.sink()
    sink.start()
    try:
        log.record(audit("before"))
        await eventually(lambda: log.sent == 1)
        await kafka.stop_async()
        try:
            for i in range(5):
                log.record(audit(f"during-{i}"))
            assert not log.accepting()  # the service refuses queries: fail closed
            await eventually(lambda: not log.healthy, timeout_s=60)
            assert log.pending() == 5
        finally:
            await kafka.start_async()
        await eventually(lambda: log.sent == 6, timeout_s=120)
        assert log.accepting()
        await eventually(lambda: _rows_at_least(trail, 6), timeout_s=60)
        await asyncio.sleep(1.0)
        stored = await asyncio.to_thread(trail.stored)
        assert set(stored) == {"before", *(f"during-{i}" for i in range(5))}
        assert set(stored.values()) == {1}
    finally:
        await sink.stop()
        await log.stop()


async def _rows_at_least(trail: Trail, n: int) -> bool:
    return await trail.rows() >= n


async def rewind_group(trail: Trail) -> None:
    """Commit offset 0 for the group on every partition, as a sink that crashed before its
    advisory commit would leave it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=trail.bootstrap, group_id=trail.group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(trail.topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.commit({tp: 0 for tp in tps})
    finally:
        await consumer.stop()
