"""The dead-letter topic `tdg.ingest.dlq`: rejected records written, listed, read back and replayed.

The format of a dead letter is a contract for every tool that reads the topic:

- **value**: the rejected record's value, byte for byte, never re-encoded (a record without a value
  becomes an empty value, never a null one: a null value would be a compaction tombstone).
- **key**: `<source topic>/<source partition>/<source offset>` in UTF-8. It is unique per source
  record, so a record rejected again has the same key: the worker is exactly-once for its tables
  but re-sends the rejects of a batch when it dies between sending them and committing the
  snapshot. Readers therefore deduplicate by key and keep the first copy (lowest offset; equal keys
  land in the same partition), and the topic may be compacted (`cleanup.policy=compact`).
- **headers**, UTF-8 text unless said otherwise:
  `tdg-dataset`, `tdg-source-topic`, `tdg-source-partition`, `tdg-source-offset`,
  `tdg-source-key` (the original key's bytes as they were, not necessarily UTF-8; absent when the
  record had no key), `tdg-producer` (the producing party, may be empty), `tdg-reason-category`
  (format | schema | policy | deprecated), `tdg-reason-code` (e.g. invalid_json),
  `tdg-reason-message` (at most 1000 characters), `tdg-schema-version` (the schema it was checked
  against), `tdg-rejected-at` (ISO 8601, UTC). Then every header of the original record under its
  own name (`tdg-producer-org`, a partner's trace id, …), except those named like ours: ours win.

A message without these headers (written by some other tool) is read with empty fields and
partition and offset -1; it is listed, never fatal to a reader, and never replayed.

Readers take no consumer group and read up to the end offsets taken when the call starts, within a
deadline. A dead letter's id is `<dlq partition>:<dlq offset>`. Listing is oldest first: the
partitions are merged by record timestamp, each partition in offset order. Each page reads the
partitions from their start, because deduplication needs every earlier key (retention or
compaction bound that cost); the page token holds the next offset of every partition.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from tdg_core import paging, topics
from tdg_core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tdg_core.events import topic_partitions
from tdg_core.identifiers import check_party_id, parse_dataset_id

from tdg_ingest.contract import (
    DLQ_HEADERS,
    H_CATEGORY,
    H_CODE,
    H_DATASET,
    H_MESSAGE,
    H_PRODUCER,
    H_REJECTED_AT,
    H_REPLAY_OF,
    H_SCHEMA_VERSION,
    H_SOURCE_KEY,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
)

CATEGORIES = ("format", "schema", "policy", "deprecated")
MAX_MESSAGE_CHARS = 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


_REJECT_ID = re.compile(r"(0|[1-9][0-9]{0,8}):(0|[1-9][0-9]{0,18})")
_CODE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class DeadLetter:
    dataset_id: str
    source_topic: str
    source_partition: int
    source_offset: int
    producer: str
    category: str
    code: str
    message: str
    value: bytes
    source_key: bytes | None
    schema_version: int
    rejected_at: datetime
    extra_headers: tuple[tuple[str, bytes], ...] = ()
    id: str = ""  # "<dlq partition>:<dlq offset>" once read back


@dataclass(frozen=True)
class RejectFilter:
    """Which dead letters to list; an empty field matches everything."""

    dataset_id: str = ""
    category: str = ""
    code: str = ""
    producer: str = ""
    since: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.dataset_id or letter.dataset_id == self.dataset_id)
            and (not self.category or letter.category == self.category)
            and (not self.code or letter.code == self.code)
            and (not self.producer or letter.producer == self.producer)
            and (self.since is None or letter.rejected_at >= self.since)
        )

    def check(self, field: str = "filter") -> RejectFilter:
        """The filter itself if well formed; InvalidArgument names the offending field, e.g.
        `filter.category`."""
        if self.dataset_id:
            parse_dataset_id(self.dataset_id, f"{field}.dataset_id")
        if self.category and self.category not in CATEGORIES:
            raise InvalidArgument(
                f"{field}.category", f"{self.category!r} is not one of {', '.join(CATEGORIES)}"
            )
        if self.code and not _CODE.fullmatch(self.code):
            raise InvalidArgument(f"{field}.code", f"{self.code!r} is not a reason code")
        if self.producer:
            check_party_id(self.producer, f"{field}.producer")
        return self

    def fingerprint(self) -> str:
        """Ties a page token to the filter it was returned for."""
        since = "" if self.since is None else self.since.isoformat()
        text = "\0".join((self.dataset_id, self.category, self.code, self.producer, since))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the format ------------------------------------------------------------------------------


def dlq_key(source_topic: str, source_partition: int, source_offset: int) -> bytes:
    return f"{source_topic}/{source_partition}/{source_offset}".encode()


def encode(letter: DeadLetter) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The key and headers of a dead letter; its value is `letter.value` itself."""
    message = letter.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    headers = [
        (H_DATASET, letter.dataset_id.encode()),
        (H_SOURCE_TOPIC, letter.source_topic.encode()),
        (H_SOURCE_PARTITION, str(letter.source_partition).encode()),
        (H_SOURCE_OFFSET, str(letter.source_offset).encode()),
    ]
    if letter.source_key is not None:
        headers.append((H_SOURCE_KEY, letter.source_key))
    headers += [
        (H_PRODUCER, letter.producer.encode()),
        (H_CATEGORY, letter.category.encode()),
        (H_CODE, letter.code.encode()),
        (H_MESSAGE, message.encode()),
        (H_SCHEMA_VERSION, str(letter.schema_version).encode()),
        (H_REJECTED_AT, _utc(letter.rejected_at).isoformat().encode()),
    ]
    headers += [(k, v) for k, v in letter.extra_headers if k not in DLQ_HEADERS]
    key = dlq_key(letter.source_topic, letter.source_partition, letter.source_offset)
    return key, headers


def decode(record: Any) -> DeadLetter:
    """A dead letter from an aiokafka `ConsumerRecord`; missing or malformed headers read as empty
    (or -1, or the record's own timestamp) so that a foreign message cannot stop a reader."""
    ours: dict[str, bytes] = {}
    extra: list[tuple[str, bytes]] = []
    for name, raw in record.headers or ():
        value = bytes(raw or b"")
        if name not in DLQ_HEADERS:
            extra.append((name, value))
        else:
            ours.setdefault(name, value)

    def text(name: str) -> str:
        return ours.get(name, b"").decode("utf-8", errors="replace")

    return DeadLetter(
        dataset_id=text(H_DATASET),
        source_topic=text(H_SOURCE_TOPIC),
        source_partition=_int(text(H_SOURCE_PARTITION), -1),
        source_offset=_int(text(H_SOURCE_OFFSET), -1),
        producer=text(H_PRODUCER),
        category=text(H_CATEGORY),
        code=text(H_CODE),
        message=text(H_MESSAGE),
        value=bytes(record.value or b""),
        source_key=ours.get(H_SOURCE_KEY),
        schema_version=_int(text(H_SCHEMA_VERSION), 0),
        rejected_at=_rejected_at(text(H_REJECTED_AT), record.timestamp),
        extra_headers=tuple(extra),
        id=f"{record.partition}:{record.offset}",
    )


def _utc(moment: datetime) -> datetime:
    # A naive datetime is taken as UTC: the worker stamps rejects with datetime.now(UTC).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _rejected_at(text: str, record_ms: int | None) -> datetime:
    try:
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        ms = record_ms if record_ms is not None and record_ms >= 0 else 0
        return datetime.fromtimestamp(ms / 1000, UTC)


def parse_reject_id(reject_id: str, field: str = "id") -> tuple[int, int]:
    """(partition, offset) of an id `<partition>:<offset>`."""
    match = _REJECT_ID.fullmatch(reject_id)
    if match is None:
        raise InvalidArgument(field, f"{reject_id!r} is not a reject id '<partition>:<offset>'")
    return int(match[1]), int(match[2])


# --- writing and replaying -------------------------------------------------------------------

_Outgoing = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


async def _send_all(producer: AIOKafkaProducer, outgoing: Sequence[_Outgoing], what: str) -> None:
    """Queue every record, then await every acknowledgement: one batch, not a round trip each."""
    futures: list[asyncio.Future[Any]] = []
    try:
        for topic, key, value, headers in outgoing:
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
    except KafkaError as exc:
        await asyncio.gather(*futures, return_exceptions=True)  # no unretrieved exceptions
        raise Unavailable(f"cannot send {what}: {exc}") from exc
    results = await asyncio.gather(*futures, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise Unavailable(
            f"{len(failures)} of {len(futures)} {what} not acknowledged: {failures[0]}"
        ) from failures[0]


class DeadLetterWriter:
    """Sends the rejects of a batch; the caller commits its offsets only once this returned."""

    def __init__(self, producer: AIOKafkaProducer, topic: str = topics.INGEST_DLQ) -> None:
        self._producer = producer
        self._topic = topic

    async def send_all(self, letters: Sequence[DeadLetter]) -> None:
        """Raises Unavailable unless every letter was acknowledged."""
        outgoing = []
        for letter in letters:
            key, headers = encode(letter)
            outgoing.append((self._topic, key, letter.value, headers))
        await _send_all(self._producer, outgoing, "dead letters")


def _replayed(letter: DeadLetter) -> _Outgoing:
    headers = [(k, v) for k, v in letter.extra_headers if k not in (H_PRODUCER, H_REPLAY_OF)]
    if letter.producer:
        headers.append((H_PRODUCER, letter.producer.encode()))
    if letter.id:
        headers.append((H_REPLAY_OF, letter.id.encode()))
    return letter.source_topic, letter.source_key, letter.value, headers


# --- reading ---------------------------------------------------------------------------------


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
        outgoing = [_replayed(letter) for letter in unique.values()]
        await _send_all(producer, outgoing, "replayed records")
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
