"""The audit trail's first half: every query's AuditRecord, queued, then sent to Kafka.

`AuditLog.record` is called once per query, from the gRPC handlers (the event loop) and from the
Arrow Flight server's threads alike; it never blocks and never drops: the record joins an
in-memory queue that a background task sends, in order, to `tdg.audit` as a CloudEvent
(`tdg.events.v1.QueryAudited`, keyed by dataset id, the query id as CloudEvent id), with an
idempotent acks=all producer, for as long as Kafka is down: a send in flight is waited for (the
producer retries it without duplicates), a failed one is retried with backoff. The sink
(tdg_query.audit_table) stores the topic in the Iceberg table `tdg_ops.query_audit`.

Fail closed: while the queue holds `capacity` records, `accepting()` is False and the service
refuses new queries (UNAVAILABLE, "the audit trail cannot be written") rather than answer
queries it cannot audit. A query admitted before the queue filled is still recorded when it ends
(the queue may exceed its capacity by the queries in flight): an answer given is never unaudited.

The queue lives in memory: records not sent when the process stops (after `stop`'s grace period)
are written to the log, one error line each, as the last trace of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Protocol

import structlog
from google.protobuf import json_format
from tdg.events.v1.query_events_pb2 import QueryAudited
from tdg.query.v1.query_pb2 import AuditRecord
from tdg_core import topics
from tdg_core.background import Background, log_failure
from tdg_core.events import CloudEvent, EventProducer, TopicSpec

from tdg_query.failures import DEPENDENCY_FAILURES

log = structlog.get_logger("tdg.query.audit")

AUDIT_SOURCE = "tdg-query"
# The topic outlives the table's need of it (the sink commits within seconds) on purpose: it is
# the second copy of the trail. Kept 400 days — a year of accountability (GDPR art. 5(2), 30:
# who read what, for which purpose, under which agreement), with a month's margin for the yearly
# audit — the table can be rebuilt from it, or a sink left down for long catch up, without loss.
AUDIT_RETENTION = timedelta(days=400)
# Kafka refuses messages over ~1 MiB (the broker's and the producer's default): a larger record
# has its request, row filters and error cut down to fit, or it would block the queue for ever.
MAX_RECORD_BYTES = 512 * 1024
_HEAD_CHARS = 16 * 1024
_MAX_REASONS = 100


def audit_topic_spec(partitions: int = 3, replication: int = 1) -> TopicSpec:
    """`tdg.audit`: partitioned by dataset id (the key), retained AUDIT_RETENTION."""
    config = {
        "cleanup.policy": "delete",
        "retention.ms": str(int(AUDIT_RETENTION.total_seconds() * 1000)),
    }
    if replication >= 3:
        # acks=all then means two copies at least: a record acknowledged survives a broker.
        config["min.insync.replicas"] = "2"
    return TopicSpec(topics.AUDIT, partitions, replication, config)


def audit_event(record: AuditRecord, source: str = AUDIT_SOURCE) -> CloudEvent:
    """The CloudEvent of a record; the same for every send of it (id: the query id)."""
    payload = QueryAudited(record=record)
    return CloudEvent(
        type=QueryAudited.DESCRIPTOR.full_name,
        source=source,
        data=payload.SerializeToString(),
        id=record.query_id,
        time=record.time.ToDatetime(tzinfo=UTC),
        subject=record.dataset_id,
    )


class AuditProducer(Protocol):
    """What the log needs of a producer (tdg_core.events.EventProducer fits)."""

    async def send_many(self, topic: str, items: Sequence[tuple[str, CloudEvent]]) -> None: ...

    async def stop(self) -> None: ...


class AuditLog:
    def __init__(
        self,
        bootstrap: str,
        capacity: int = 10_000,
        grace_s: float = 5.0,
        *,
        producer: AuditProducer | None = None,
        topic: str = topics.AUDIT,
        source: str = AUDIT_SOURCE,
        batch_size: int = 500,
        stall_s: float = 5.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._producer: AuditProducer = producer or EventProducer(
            bootstrap, "tdg-query-audit", request_timeout_ms=5_000
        )
        self._capacity = capacity
        self._grace_s = grace_s
        self._topic = topic
        self._source = source
        self._batch_size = batch_size
        self._stall_s = stall_s
        self._pending: deque[AuditRecord] = deque()
        self._lock = threading.Lock()  # record() is called from the Flight server's threads too
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._sent_some = asyncio.Event()
        self._closed = False  # no new queries: stopping
        self._stopped = False  # nothing sends any more
        self._task = Background("audit-log", self._run)
        self.healthy = True  # False while sends fail or wait longer than `stall_s`
        self.sent = 0  # records acknowledged by Kafka, for metrics and tests

    # --- the query side (any thread) --------------------------------------------------------

    def record(self, record: AuditRecord) -> None:
        """Queue a record for sending; never blocks, never drops (see `accepting`)."""
        fitted = fit(record)
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._pending.append(fitted)
        if stopped:  # a query that ended after stop(): nothing will send it any more
            _unsent(fitted)
            return
        self._wake()

    def accepting(self) -> bool:
        """False while the queue is full (Kafka down for long): refuse new queries then."""
        with self._lock:
            return not self._closed and len(self._pending) < self._capacity

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            return  # not started: start() sends what was queued
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            self._wakeup.set()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: stop() logs what is left
            loop.call_soon_threadsafe(self._wakeup.set)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        with self._lock:
            self._closed = self._stopped = False
        self._wakeup.set()  # records queued before start
        self._task.start()

    async def stop(self, grace_s: float | None = None) -> None:
        """Refuse new queries, send what is queued for up to the grace period, then stop; what
        could not be sent is logged, record by record."""
        with self._lock:
            self._closed = True
        if self._task.running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._grace_s if grace_s is None else grace_s):
                    while self.pending():
                        self._sent_some.clear()
                        if self.pending():
                            await self._sent_some.wait()
        await self._task.stop()
        with self._lock:
            self._stopped = True
            left = list(self._pending)
            self._pending.clear()
        for record in left:
            _unsent(record)
        # Bounded: with Kafka away the producer would wait for ever to flush what it holds.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(max(self._grace_s, 1.0)):
                await self._producer.stop()
        self._loop = None

    # --- sending --------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            with self._lock:
                batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
            if not batch:
                self._wakeup.clear()
                if self.pending():
                    continue  # queued between the look and the clear
                await self._wakeup.wait()
                continue
            items = [(r.dataset_id, audit_event(r, self._source)) for r in batch]
            try:
                await self._send(items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.healthy = False
                delay = min(0.2 * 2**failures, 5.0)
                # Kafka away is expected; anything else is a fault, told with its traceback.
                # Either way the records stay queued: an answer given is never unaudited.
                log_failure(
                    log,
                    "audit records not sent yet, will retry",
                    exc,
                    dependencies=DEPENDENCY_FAILURES,
                    pending=self.pending(),
                    retry_in_s=delay,
                )
                # A fresh producer for the retry; sent again, a record keeps its CloudEvent id
                # (the query id), by which the sink drops a copy.
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("audit records sent again", after_failures=failures)
            failures = 0
            self.healthy = True
            with self._lock:  # only this task removes: the batch is still the queue's head
                for _ in batch:
                    self._pending.popleft()
            self.sent += len(batch)
            self._sent_some.set()

    async def _send(self, items: list[tuple[str, CloudEvent]]) -> None:
        """Send and wait for every acknowledgement, however long Kafka is away: the idempotent
        producer retries a batch until the broker takes it, without duplicates, so a send in
        flight is never given up; past `stall_s` the log only reports itself unhealthy."""
        send = asyncio.ensure_future(self._producer.send_many(self._topic, items))
        try:
            while not (await asyncio.wait({send}, timeout=self._stall_s))[0]:
                if self.healthy:
                    log.warning("audit records waiting for Kafka", pending=self.pending())
                self.healthy = False
        except asyncio.CancelledError:
            send.cancel()
            raise
        send.result()


def _unsent(record: AuditRecord) -> None:
    log.error(
        "audit record not acknowledged by Kafka at shutdown",
        record=json_format.MessageToDict(record),
    )


def fit(record: AuditRecord) -> AuditRecord:
    """The record itself, or a copy cut down to MAX_RECORD_BYTES: the JSON fields replaced by
    their size, digest and beginning (still JSON), the error and the reasons shortened."""
    if record.ByteSize() <= MAX_RECORD_BYTES:
        return record
    cut = AuditRecord()
    cut.CopyFrom(record)
    cut.request_json = _cut_json(record.request_json)
    cut.row_filters_json = _cut_json(record.row_filters_json)
    if len(cut.error) > _HEAD_CHARS:
        cut.error = cut.error[:_HEAD_CHARS] + " …[truncated]"
    if len(cut.reasons) > _MAX_REASONS or cut.ByteSize() > MAX_RECORD_BYTES:
        kept = [r[:1024] for r in record.reasons[:_MAX_REASONS]]
        del cut.reasons[:]
        cut.reasons.extend(kept)
    log.warning("audit record cut down to fit Kafka", query_id=record.query_id)
    return cut


def _cut_json(text: str) -> str:
    if len(text) <= _HEAD_CHARS:
        return text
    data = text.encode()
    return json.dumps(
        {
            "truncated": True,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "head": text[:_HEAD_CHARS],
        }
    )
