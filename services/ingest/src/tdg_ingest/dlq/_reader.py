"""Dead letters read back: listed oldest first a page at a time, got by id, and replayed (see the
reading rules in `tdg_ingest.dlq`)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from tdg_core import paging, topics
from tdg_core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tdg_core.events import topic_partitions

from tdg_ingest.dlq._letter import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    DeadLetter,
    RejectFilter,
    decode,
    parse_reject_id,
)
from tdg_ingest.dlq._send import replayed, send_all


def _encode_token(positions: dict[int, int], filter: RejectFilter) -> str:
    body = {"f": filter.fingerprint(), "p": {str(p): o for p, o in sorted(positions.items())}}
    return paging.encode_page_token(json.dumps(body, separators=(",", ":")))


def _decode_token(token: str, filter: RejectFilter) -> dict[int, int]:
    if not token:
        return {}
    text = paging.decode_page_token(token, "ListRejects")
    try:
        body = json.loads(text)
        positions = {int(p): int(o) for p, o in body["p"].items()}
        fingerprint = body["f"]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidArgument("page_token", "not a token returned by ListRejects") from exc
    if any(p < 0 or o < 0 for p, o in positions.items()):
        raise InvalidArgument("page_token", "not a token returned by ListRejects")
    if fingerprint != filter.fingerprint():
        raise InvalidArgument("page_token", "was returned for another filter")
    return positions


async def _oldest_first(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
) -> AsyncGenerator[Any, None]:
    """The records of the assigned partitions below `ends`, merged by timestamp; each partition
    keeps its offset order (so the first copy of a key always comes first)."""
    buffers: dict[TopicPartition, deque[Any]] = {tp: deque() for tp in ends}
    open_ = set(ends)
    while True:
        for tp in builtins.list(open_):
            # The position, not the last offset seen: transaction markers occupy offsets too.
            if not buffers[tp] and await consumer.position(tp) >= ends[tp]:
                open_.discard(tp)
        needy = [tp for tp in open_ if not buffers[tp]]
        if needy:
            batches = await consumer.getmany(*needy, timeout_ms=500)
            for tp, records in batches.items():
                buffers[tp].extend(r for r in records if r.offset < ends[tp])
            continue
        ready = [tp for tp in ends if buffers[tp]]
        if not ready:
            return
        first = min(ready, key=lambda tp: (buffers[tp][0].timestamp, tp.partition))
        yield buffers[first].popleft()


class DeadLetterReader:
    """Lists, gets and replays dead letters. Kafka failures and timeouts raise Unavailable."""

    def __init__(
        self, bootstrap: str, topic: str = topics.INGEST_DLQ, timeout_s: float = 30.0
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._timeout_s = timeout_s

    async def list(
        self, filter: RejectFilter | None = None, page_size: int = 0, page_token: str = ""
    ) -> tuple[builtins.list[DeadLetter], str]:
        """One page, oldest first, duplicates dropped; the token is "" after the last page.
        page_size 0 means 50, at most 1000."""
        filter = filter or RejectFilter()
        size = paging.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        start = _decode_token(page_token, filter)
        letters, positions, more = await self._scan(filter, start, size)
        return letters, (_encode_token(positions, filter) if more else "")

    async def list_all(
        self, filter: RejectFilter | None = None, limit: int = 100_000
    ) -> builtins.list[DeadLetter]:
        """Every matching letter in one scan (for a replay by filter), at most `limit`."""
        letters, _, more = await self._scan(filter or RejectFilter(), {}, limit)
        if more:
            raise FailedPrecondition(f"more than {limit} rejects match: narrow the filter")
        return letters

    async def get(self, reject_id: str, field: str = "id") -> DeadLetter:
        partition, offset = parse_reject_id(reject_id, field)
        not_found = NotFound(f"reject {reject_id!r} not found in {self._topic}")
        async with self._reading() as consumer:
            if partition not in await topic_partitions(self._bootstrap, self._topic):
                raise not_found
            tp = TopicPartition(self._topic, partition)
            consumer.assign([tp])
            first = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if not first <= offset < end:
                raise not_found
            consumer.seek(tp, offset)
            async with contextlib.aclosing(_oldest_first(consumer, {tp: end})) as records:
                async for record in records:
                    if record.offset == offset:
                        return decode(record)
                    break  # compacted away, or a transaction marker
        raise not_found

    async def replay(self, letters: Sequence[DeadLetter], producer: AIOKafkaProducer) -> int:
        """Each letter's record back onto its source topic as it arrived (value, key, headers,
        `tdg-producer` restored) plus `tdg-replay-of: <dlq id>`; the key's partition is chosen by
        the producer's partitioner, as for the original. A source record listed twice is sent
        once. Returns how many were sent, all acknowledged."""
        unique: dict[tuple[str, int, int], DeadLetter] = {}
        for letter in letters:
            # Only to the dataset's own topic: a forged header must not aim a replay elsewhere.
            if not letter.dataset_id or letter.source_topic != topics.dataset_topic(
                letter.dataset_id
            ):
                raise FailedPrecondition(
                    f"reject {letter.id!r} cannot be replayed",
                    ["it names no dataset topic as its source"],
                )
            key = (letter.source_topic, letter.source_partition, letter.source_offset)
            unique.setdefault(key, letter)
        outgoing = [replayed(letter) for letter in unique.values()]
        await send_all(producer, outgoing, "replayed records")
        return len(outgoing)

    async def _scan(
        self, filter: RejectFilter, start: dict[int, int], limit: int
    ) -> tuple[builtins.list[DeadLetter], dict[int, int], bool]:
        """Up to `limit` letters at or after `start`, the positions to resume from, and whether
        another matching letter follows."""
        found: builtins.list[DeadLetter] = []
        positions = dict(start)
        seen: set[bytes] = set()
        async with self._reading() as consumer:
            partitions = await topic_partitions(self._bootstrap, self._topic)
            if not partitions:
                return [], positions, False
            tps = [TopicPartition(self._topic, p) for p in partitions]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)  # every earlier key, for deduplication
            async with contextlib.aclosing(_oldest_first(consumer, ends)) as records:
                async for record in records:
                    duplicate = record.key is not None and record.key in seen
                    if record.key is not None:
                        seen.add(record.key)
                    if record.offset < start.get(record.partition, 0):
                        continue  # on an earlier page
                    if not duplicate:
                        letter = decode(record)
                        if filter.matches(letter):
                            if len(found) >= limit:
                                return found, positions, True
                            found.append(letter)
                    positions[record.partition] = record.offset + 1
        return found, positions, False

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AIOKafkaConsumer]:
        """A group-less consumer for one call, within the call's deadline; Kafka errors and the
        deadline become Unavailable."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",  # no letters of an aborted transaction
            client_id="tdg-ingest-dlq-reader",
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    await consumer.start()
                    yield consumer
                finally:
                    await consumer.stop()
        except TimeoutError as exc:
            raise Unavailable(
                f"reading {self._topic} took more than {self._timeout_s:g} s"
            ) from exc
        except KafkaError as exc:
            raise Unavailable(f"cannot read {self._topic}: {exc}") from exc
