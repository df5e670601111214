"""Reading every partition of a topic without a consumer group, from positions the caller keeps.

Services that follow another service's events to build their own view (the consent service's and
the ingest service's catalog followers, caches invalidated by consent events) do not share the
work between replicas: each replica reads everything, from where its own state says it stopped.
No group means no rebalance to wait for. The reader reconnects by itself after any failure (Kafka
down, the topic not created yet) and asks for the positions again each time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from tdg_core.background import Background, log_failure
from tdg_core.events import topic_partitions

log = structlog.get_logger("tdg.core.topic_reader")

# Next offset per partition; a partition absent starts at the beginning (or the end, see below).
Positions = Callable[[], Awaitable[Mapping[int, int]]]
# Reads from the assigned, positioned consumer until it fails or is cancelled.
Consume = Callable[[AIOKafkaConsumer], Awaitable[None]]


class TopicReader:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        client_id: str,
        positions: Positions,
        consume: Consume,
        from_end: bool = False,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.topic = topic
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._positions = positions
        self._consume = consume
        self._from_end = from_end
        self._on_connect = on_connect
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()  # set while a consumer is assigned and positioned
        self._task = Background(f"reader:{topic}", self._run)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def end_offsets(self) -> dict[int, int]:
        """The topic's end offset per partition, now (the reader must be ready)."""
        consumer = self.consumer
        if consumer is None:
            raise RuntimeError(f"no consumer reads {self.topic}")
        tps = list(consumer.assignment())
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: end for tp, end in ends.items()}

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id=self._client_id,
            )
            try:
                await consumer.start()
                await self._assign(consumer)
                self.consumer = consumer
                self.ready.set()
                if self._on_connect is not None:
                    self._on_connect()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "reading failed, will retry", exc, topic=self.topic)
                await asyncio.sleep(1.0)
            finally:
                self.ready.clear()
                self.consumer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Every partition of the topic, from the caller's positions (waits for the topic)."""
        partitions = await topic_partitions(self._bootstrap, self.topic)
        while not partitions:  # its producer has not created the topic yet
            await asyncio.sleep(1.0)
            partitions = await topic_partitions(self._bootstrap, self.topic)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        stored = await self._positions()
        for tp in tps:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
            elif self._from_end:
                await consumer.seek_to_end(tp)
            else:
                await consumer.seek_to_beginning(tp)
