"""Kafka topics appended to Iceberg tables exactly once, in micro-batches: the consumer loop of the
ingest worker (the datasets' topics) and of the query service's audit sink (`tdg.audit`).

Guarantee: every message of a subscribed topic is committed in exactly one snapshot of its table
(as the rows the table's flush hook makes of it, possibly none), whatever crashes, rebalances,
zombies and failed commits happen; and a batch that could not be committed never stops its topic.
- Positions come from the table, never from the consumer group (whose offsets are only advisory:
  lag monitoring, autoscaling). On assignment (start, rebalance, restart after a crash) each
  partition is sought to the next offset its table's newest snapshot carries (`positions` hook);
  a partition that cannot be positioned yet is not read.
- The flush hook commits the batch and its offsets in one snapshot, from the offsets the batch
  started at (`tdg_lake.offsets.append_exactly_once`). A batch someone else committed first (a
  replica that took the partitions over, a zombie) raises StaleOffsets: it is dropped and its
  topic sought back to the table's offsets.
- A failed flush (a dependency down; anything else is logged with its traceback, as a bug) keeps
  the batch, pauses its topic, so that memory stays bounded, and retries with backoff; nothing is
  skipped because a dependency was down. Whatever drops a batch (its commit, StaleOffsets, a
  revocation) resumes its topic: aiokafka's `seek` does not resume a paused partition.
- A revocation waits for a commit in flight, so that the next owner finds the table settled, and
  drops the batches of the topics concerned; their partitions still assigned are sought back.

Each topic is batched and flushed on its own (one dataset's trouble does not hold up the others),
a batch being due at a number of messages, of bytes, or an age.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar, cast

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from pyiceberg.exceptions import NoSuchTableError
from tdg_core.background import Background, log_failure

from tdg_lake.failures import LAKE_FAILURES
from tdg_lake.offsets import StaleOffsets

log = structlog.get_logger("tdg.lake.sink")

T = TypeVar("T")
Message: TypeAlias = ConsumerRecord[bytes, bytes]

# What the guarantee needs of the consumer; a sink's own settings (fetch sizes...) come on top.
CONSUMER_CONFIG: Mapping[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",  # where a seek to 0 below the log's start lands
    "fetch_max_wait_ms": 100,
    # Partitions and topics added are picked up within seconds, not 5 minutes.
    "metadata_max_age_ms": 10_000,
}
POLL_MS = 50
MAX_POLL_RECORDS = 10_000
# A subscription change waits for the rebalance under way, but not longer than this.
REBALANCE_STALL_S = 60.0


def backoff_s(failures: int) -> float:
    """The wait before retrying a batch that failed `failures` times in a row."""
    return min(0.2 * 2.0**failures, 5.0)


@dataclass(frozen=True)
class BatchBounds:
    """A batch is due when it holds `records` messages, `bytes` bytes of values (None: no
    bound), or is `wait_s` old."""

    records: int
    bytes: int | None = None
    wait_s: float = 1.0


@dataclass
class Batch(Generic[T]):
    """Messages of one topic read since its last commit, in fetch order; `records` what `decode`
    made of them (the messages themselves without one; a message it makes None of is skipped)."""

    topic: str
    decode: Callable[[Message], T | None] | None = None
    records: list[T] = field(default_factory=list)
    messages: int = 0
    nbytes: int = 0
    opened: float = field(default_factory=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0
    last: dict[int, int] = field(default_factory=dict)  # partition -> last offset held

    def add(self, messages: Sequence[Message]) -> None:
        """Messages of one partition, in offset order; any already held are left out (a seek
        back must never put a message twice into one snapshot)."""
        if not messages:
            return
        last = self.last.get(messages[0].partition, -1)
        if messages[0].offset <= last:
            messages = [m for m in messages if m.offset > last]
            if not messages:
                return
        if not self.messages:
            self.opened = time.monotonic()
        self.messages += len(messages)
        self.last[messages[0].partition] = messages[-1].offset
        self.nbytes += sum(len(m.value or b"") for m in messages)
        if self.decode is None:
            self.records.extend(cast(Sequence[T], messages))
            return
        for message in messages:
            record = self.decode(message)
            if record is not None:
                self.records.append(record)

    def ends(self) -> dict[int, int]:
        """The next offset of each partition held: where the table stands once committed."""
        return {partition: last + 1 for partition, last in self.last.items()}

    def due(self, bounds: BatchBounds, now: float) -> bool:
        return (
            self.messages >= bounds.records
            or (bounds.bytes is not None and self.nbytes >= bounds.bytes)
            or now - self.opened >= bounds.wait_s
        )


# The hooks of the tables a sink fills.
Topics = Callable[[], set[str]]  # what to subscribe to now
# The table's next offset per partition of a topic; None: the topic has no table now.
Positions = Callable[[str], Awaitable[dict[int, int] | None]]
# Commit a batch whose partitions start at these offsets (-1: none in the table yet), or raise.
Flush = Callable[[Batch[T], dict[int, int]], Awaitable[None]]


class TableSink(Generic[T]):
    """One consumer (of group `group_id`) on the topics `topics` names, flushed per topic."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        group_id: str,
        *,
        topics: Topics,
        positions: Positions,
        flush: Flush[T],
        bounds: BatchBounds,
        decode: Callable[[Message], T | None] | None = None,
        ready: Callable[[], Awaitable[object]] | None = None,
        session: Callable[[], AbstractAsyncContextManager[None]] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        """`ready` is awaited before each consumer starts; `session` is entered once it has
        started and left when it stops (what the flush hook needs alongside, a producer...)."""
        self.name = name
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._topics = topics
        self._positions = positions
        self._flush = flush
        self._bounds = bounds
        self._decode = decode
        self._ready = ready
        self._session = session
        self._consumer_config = dict(consumer_config or {})
        self._log = log.bind(sink=name)
        self._batches: dict[str, Batch[T]] = {}
        # Per assigned partition: where the table says the next batch starts (None: the table
        # holds no offset for it yet). A partition absent here is not positioned: not used.
        self._starts: dict[TopicPartition, int | None] = {}
        self._flush_lock = asyncio.Lock()
        self._rebalancing = False  # from a subscription change or a revocation to assignment
        self._rebalance_since = 0.0
        self._task = Background(name, self._run)
        self.healthy = False  # reading, and the last flush did not fail

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        """Stops at once: what was read and not committed is read again by the next owner."""
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self._group_id,
                **{**CONSUMER_CONFIG, **self._consumer_config},
            )
            try:
                if self._ready is not None:
                    await self._ready()
                await consumer.start()
                async with self._session() if self._session else contextlib.nullcontext():
                    await self._serve(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(self._log, "sink failed, restarting", exc, dependencies=LAKE_FAILURES)
                await asyncio.sleep(1.0)
            finally:
                self.healthy = False
                self._rebalancing = False
                self._batches.clear()
                self._starts.clear()
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _serve(self, consumer: AIOKafkaConsumer) -> None:
        subscribed: set[str] = set()
        listener = _Rebalance(self, consumer)
        poll = min(MAX_POLL_RECORDS, max(1, self._bounds.records))
        while True:
            wanted = self._topics()
            # Never while a rebalance runs: aiokafka loses track of a subscription changed
            # inside its listeners (seen as a group join that never ends).
            stalled = time.monotonic() - self._rebalance_since > REBALANCE_STALL_S
            if wanted != subscribed and wanted and (not self._rebalancing or stalled):
                self._rebalancing, self._rebalance_since = True, time.monotonic()
                consumer.subscribe(topics=sorted(wanted), listener=listener)
                subscribed = wanted
            if not subscribed:
                await asyncio.sleep(0.2)
                continue
            fetched = await consumer.getmany(timeout_ms=POLL_MS, max_records=poll)
            self.healthy = True
            for tp, messages in fetched.items():
                if tp not in self._starts:
                    # Assigned without a position from its table (the listener failed or was cut
                    # short by another rebalance): position it now; these are read again.
                    await self._position(consumer, {tp})
                    continue
                batch = self._batches.get(tp.topic)
                if batch is None:
                    batch = self._batches[tp.topic] = Batch(tp.topic, self._decode)
                batch.add(messages)
            now = time.monotonic()
            for batch in list(self._batches.values()):
                if batch.messages and batch.due(self._bounds, now) and now >= batch.retry_at:
                    await self._flush_once(consumer, batch)

    # --- partitions -----------------------------------------------------------------------------

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        try:
            await self._position(consumer, partitions)
        finally:
            self._rebalancing = False
        self._log.info("partitions assigned", partitions=len(partitions))

    async def _position(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Seek each partition to the offset its table's newest snapshot carries. One that cannot
        be positioned now (its table unreadable, or the partition no longer assigned) stays
        unpositioned."""
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp)
        for topic, tps in by_topic.items():
            try:
                offsets = await self._positions(topic)
            except NoSuchTableError as exc:
                self._log.info("partition not positioned yet", topic=topic, error=str(exc))
                continue
            except Exception as exc:
                log_failure(
                    self._log,
                    "cannot position partitions",
                    exc,
                    dependencies=LAKE_FAILURES,
                    topic=topic,
                )
                continue
            if offsets is None:
                continue
            assignment = consumer.assignment()
            for tp in tps:
                # Positioned meanwhile (by the other path, while the offsets were read):
                # seeking again would fetch its messages twice.
                if tp in assignment and tp not in self._starts:
                    self._seek(consumer, tp, offsets.get(tp.partition))

    async def revoked(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        self._rebalancing, self._rebalance_since = True, time.monotonic()
        async with self._flush_lock:
            topics = {tp.topic for tp in partitions}
            for topic in topics:
                self._drop(consumer, topic)
            for tp in partitions:
                self._starts.pop(tp, None)
            # The dropped batches held messages of the partitions kept too: rewind those.
            for tp, start in list(self._starts.items()):
                if tp.topic in topics:
                    self._seek(consumer, tp, start)

    def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int | None) -> None:
        """Position a partition where its table says (the beginning: nothing there yet)."""
        try:
            # Synchronous: an awaited seek_to_beginning inside a rebalance listener can wait
            # forever on the fetcher, which waits for the rebalance. Offset 0 below the log's
            # start resets to the earliest (auto_offset_reset).
            consumer.seek(tp, 0 if start is None else start)
        except (IllegalStateError, AssertionError):  # no longer ours: a rebalance is under way
            self._starts.pop(tp, None)
            return
        self._starts[tp] = start

    def _drop(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        """Forget the topic's batch; its partitions fetch again if failed attempts paused them."""
        batch = self._batches.pop(topic, None)
        if batch is not None and batch.failures:
            with contextlib.suppress(Exception):  # reassigned meanwhile: nothing is paused
                consumer.resume(*[tp for tp in consumer.assignment() if tp.topic == topic])

    # --- flushing -------------------------------------------------------------------------------

    async def _flush_once(self, consumer: AIOKafkaConsumer, batch: Batch[T]) -> None:
        try:
            async with self._flush_lock:
                if self._batches.get(batch.topic) is not batch:
                    return  # dropped by a rebalance meanwhile
                ends = batch.ends()
                starts = {p: self._starts.get(TopicPartition(batch.topic, p)) for p in ends}
                await self._flush(batch, {p: -1 if s is None else s for p, s in starts.items()})
                for partition, end in ends.items():
                    tp = TopicPartition(batch.topic, partition)
                    if tp in self._starts:
                        self._starts[tp] = end
                self._drop(consumer, batch.topic)
        except StaleOffsets as exc:
            self._log.warning("another writer committed first; re-reading", error=str(exc))
            await self._rewind(consumer, batch, exc.committed)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.healthy = False
            batch.failures += 1
            delay = backoff_s(batch.failures)
            batch.retry_at = time.monotonic() + delay
            with contextlib.suppress(Exception):  # fetch no more of it meanwhile
                consumer.pause(*[tp for tp in consumer.assignment() if tp.topic == batch.topic])
            log_failure(
                self._log,
                "flush failed, will retry",
                exc,
                dependencies=LAKE_FAILURES,
                topic=batch.topic,
                retry_in_s=delay,
            )
            return
        with contextlib.suppress(Exception):
            # Advisory only (lag, autoscaling): the table's offsets are the truth.
            await consumer.commit({TopicPartition(batch.topic, p): o for p, o in ends.items()})

    async def _rewind(
        self, consumer: AIOKafkaConsumer, batch: Batch[T], committed: dict[int, int]
    ) -> None:
        async with self._flush_lock:
            self._drop(consumer, batch.topic)
            for tp in list(self._starts):
                if tp.topic == batch.topic:
                    self._seek(consumer, tp, committed.get(tp.partition))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: TableSink[Any], consumer: AIOKafkaConsumer) -> None:
        self._sink = sink
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sink.revoked(self._consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._sink.assigned(self._consumer, set(assigned))
