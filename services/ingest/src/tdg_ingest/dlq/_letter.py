"""A dead letter and its encoding on the topic (the contract in `tdg_ingest.dlq`), the filter a
data officer lists them by, and their ids."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tdg_core.errors import InvalidArgument
from tdg_core.identifiers import check_party_id, parse_dataset_id

from tdg_ingest.contract import (
    DLQ_HEADERS,
    H_CATEGORY,
    H_CODE,
    H_DATASET,
    H_MESSAGE,
    H_PRODUCER,
    H_REJECTED_AT,
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
