"""The gRPC front door: a partner's records onto the dataset's topic, after the same checks the
worker makes, so that the partner hears about a bad record at once instead of in the dead-letter
topic. The worker still validates everything it reads (the schema may evolve in between).

Records keep the partner's bytes (JSON) or become one JSON object per row (Arrow IPC); each goes
out with the producer's identity in headers the worker trusts (`tdg-producer`,
`tdg-producer-org`), set here from the verified token, never from the request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tdg_core.auth import Principal
from tdg_core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tdg_core.identifiers import parse_dataset_id

from tdg_ingest.contract import PRODUCER_HEADER, PRODUCER_ORG_HEADER
from tdg_ingest.datasets import DatasetDirectory, DatasetEntry
from tdg_ingest.provisioner import Provisioner
from tdg_ingest.records import RecordValidator, Reject
from tdg_ingest.writes import WritePermissions

MAX_PROBLEMS = 100


@dataclass(frozen=True)
class RecordBatch:
    """One message of a Publish stream: records as JSON objects, or as the rows of an Arrow IPC
    stream; neither when the partner sent no payload (refused once the dataset is known)."""

    dataset_id: str  # may be "" after the first message, which names the stream's dataset
    json_records: list[bytes] | None = None
    arrow_ipc: bytes | None = None


@dataclass
class PublishTotals:
    topic: str = ""
    received: int = 0
    queued: int = 0
    refused: int = 0
    problems: list[tuple[int, Reject]] = field(default_factory=list)


class FrontDoor:
    def __init__(
        self,
        directory: DatasetDirectory,
        provisioner: Provisioner,
        writes: WritePermissions,
        producer: Callable[[], Awaitable[AIOKafkaProducer]],
        max_record_bytes: int,
    ) -> None:
        self._directory = directory
        self._provisioner = provisioner
        self._writes = writes
        self._producer = producer
        self._max_record_bytes = max_record_bytes
        self._validators: dict[tuple[str, int], RecordValidator] = {}

    async def publish(
        self, caller: Principal, requests: AsyncIterator[RecordBatch]
    ) -> PublishTotals:
        totals = PublishTotals()
        entry: DatasetEntry | None = None
        pending: list[asyncio.Future[Any]] = []
        async for request in requests:
            if entry is None:
                entry = await self._open(caller, request.dataset_id)
                totals.topic = entry.topic
            elif request.dataset_id and request.dataset_id != entry.id:
                raise InvalidArgument(
                    "dataset_id", f"must name '{entry.id}' in every message of one stream"
                )
            values = self._values(request, entry)
            validated = await asyncio.to_thread(self._validator(entry).validate, values)
            for reject in validated.rejects:
                if len(totals.problems) < MAX_PROBLEMS:
                    totals.problems.append((totals.received + reject.index, reject))
            headers = [
                (PRODUCER_HEADER, caller.party.encode()),
                (PRODUCER_ORG_HEADER, caller.org.encode()),
            ]
            keys = _keys(validated.table, entry.schema.key_columns)
            producer = await self._producer()
            try:
                for row, index in enumerate(validated.indexes.to_pylist()):
                    pending.append(
                        await producer.send(
                            entry.topic,
                            value=values[index],
                            key=keys[row] if keys else None,
                            headers=headers,
                        )
                    )
            except KafkaError as exc:
                raise Unavailable(f"Kafka unreachable, nothing more queued: {exc}") from exc
            totals.received += len(values)
            totals.queued += validated.table.num_rows
            totals.refused += len(validated.rejects)
        if entry is None:
            raise InvalidArgument("dataset_id", "the stream carried no message")
        try:
            await asyncio.gather(*pending)
        except KafkaError as exc:
            raise Unavailable(f"Kafka did not acknowledge every record: {exc}") from exc
        return totals

    async def _open(self, caller: Principal, dataset_id: str) -> DatasetEntry:
        parse_dataset_id(dataset_id, "dataset_id")
        entry = await self._directory.fresh(dataset_id)
        if entry is None:
            raise NotFound(f"dataset '{dataset_id}' not found in the catalog")
        if not entry.accepting:
            raise FailedPrecondition(
                f"dataset '{dataset_id}' is {entry.status}: it accepts records only when published"
            )
        decision = await self._writes.decide(
            caller.party, entry.policy_input(), org=caller.org, roles=caller.roles
        )
        if not decision.allow:
            raise PermissionDenied(list(decision.reasons) or ["write denied"])
        if not await self._provisioner.wait_ready(entry, 10.0):
            raise Unavailable(f"the topic or table of '{dataset_id}' is not ready yet; retry")
        return entry

    def _values(self, request: RecordBatch, entry: DatasetEntry) -> list[bytes]:
        if request.json_records is not None:
            return request.json_records
        if request.arrow_ipc is not None:
            return arrow_to_json(request.arrow_ipc, entry)
        raise InvalidArgument("payload", "each message needs json or arrow_ipc records")

    def _validator(self, entry: DatasetEntry) -> RecordValidator:
        key = (entry.id, entry.schema.version)
        if key not in self._validators:
            self._validators[key] = RecordValidator(entry.schema, self._max_record_bytes)
        return self._validators[key]


def _keys(table: pa.Table, key_columns: Sequence[str]) -> list[bytes]:
    """Records of one entity go to one partition (their order is kept) when the schema has keys."""
    if not key_columns or table.num_rows == 0:
        return []
    parts = [pc.cast(table[c], pa.string()).fill_null("").to_pylist() for c in key_columns]
    return ["\x1f".join(row).encode() for row in zip(*parts, strict=True)]


def arrow_to_json(ipc: bytes, entry: DatasetEntry) -> list[bytes]:
    """One JSON object per row of an Arrow IPC stream, its columns cast to the schema's types."""
    try:
        table = pa.ipc.open_stream(ipc).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidArgument("arrow_ipc", f"is not an Arrow IPC stream: {exc}") from exc
    known = {c.name: c for c in entry.schema.columns}
    unknown = [n for n in table.column_names if n not in known]
    if unknown:
        raise InvalidArgument(
            "arrow_ipc",
            f"columns {unknown} are not in schema version {entry.schema.version} of '{entry.id}'",
        )
    columns = {}
    for name in table.column_names:
        try:
            columns[name] = pc.cast(table[name], known[name].arrow_type).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidArgument(
                "arrow_ipc", f"column '{name}' cannot be read as {known[name].type}: {exc}"
            ) from exc
    names = list(columns)
    return [
        json.dumps(dict(zip(names, row, strict=True)), default=_json_value).encode()
        for row in zip(*columns.values(), strict=True)
    ]


def _json_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
