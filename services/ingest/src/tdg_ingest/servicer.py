"""tdg.ingest.v1.IngestService: proto ⇄ the ingest modules (access is OPA's: `tdg.rpc` per call,
`tdg.write` per dataset for Publish)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.ingest.v1 import ingest_pb2 as pb
from tdg.ingest.v1 import ingest_pb2_grpc
from tdg_core.errors import InvalidArgument, NotFound
from tdg_core.grpc import current_principal
from tdg_core.identifiers import check_party_id, parse_dataset_id

from tdg_ingest import dlq
from tdg_ingest.datasets import DatasetDirectory, DatasetEntry
from tdg_ingest.front_door import FrontDoor
from tdg_ingest.indicators import Indicators, to_proto
from tdg_ingest.locks import TableLocks
from tdg_ingest.maintenance import compact
from tdg_ingest.status import DatasetFigures, StatusReader
from tdg_ingest.warehouse import Warehouse

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
DEFAULT_EXPIRE_H = 24
DEFAULT_TARGET_FILE_BYTES = 64 * 1024 * 1024
MAX_REPLAY = 100_000


def _ts(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


class ResourceFinder:
    """The `resource` of each call for `tdg.rpc`: the dataset it concerns, looked up in the
    catalog view so that OPA decides on its publisher."""

    def __init__(self, directory: DatasetDirectory, reader: dlq.DeadLetterReader) -> None:
        self._directory = directory
        self._reader = reader

    async def _dataset(self, dataset_id: str, field: str) -> dict[str, Any]:
        parse_dataset_id(dataset_id, field)
        entry = await self._directory.fresh(dataset_id)
        if entry is None:
            return {"dataset_id": dataset_id, "dataset": {"id": dataset_id}}
        return {"dataset_id": dataset_id, "dataset": entry.policy_input()}

    async def __call__(self, rpc: str, request: Any) -> dict[str, Any]:
        if rpc == "Status":
            if request.dataset_id:
                return await self._dataset(request.dataset_id, "dataset_id")
            return {"dataset": {"publisher": current_principal().org}}
        if rpc == "GetDeliveryIndicators":
            found = await self._dataset(request.dataset_id, "dataset_id")
            return {**found, "producer": request.producer}
        if rpc in ("CompactTable",):
            return await self._dataset(request.dataset_id, "dataset_id")
        if rpc == "ListRejects":
            return await self._dataset(request.filter.dataset_id, "filter.dataset_id")
        if rpc == "GetReject":
            letter = await self._reader.get(request.id)
            return await self._dataset(letter.dataset_id, "id")
        if rpc == "ReplayRejects":
            if request.ids:
                letter = await self._reader.get(request.ids[0], "ids[0]")
                return await self._dataset(letter.dataset_id, "ids")
            return await self._dataset(request.filter.dataset_id, "filter.dataset_id")
        return {}


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self,
        directory: DatasetDirectory,
        front_door: FrontDoor,
        status: StatusReader,
        reader: dlq.DeadLetterReader,
        replay_producer: Callable[[], Awaitable[AIOKafkaProducer]],
        indicators: Indicators,
        warehouse: Warehouse,
        locks: TableLocks,
    ) -> None:
        self._directory = directory
        self._front_door = front_door
        self._status = status
        self._reader = reader
        self._replay_producer = replay_producer
        self._indicators = indicators
        self._warehouse = warehouse
        self._locks = locks

    async def _entry(self, dataset_id: str, field: str = "dataset_id") -> DatasetEntry:
        parse_dataset_id(dataset_id, field)
        entry = await self._directory.fresh(dataset_id)
        if entry is None or not entry.has_table:
            raise NotFound(f"dataset '{dataset_id}' is not a published dataset")
        return entry

    async def Publish(
        self, request_iterator: AsyncIterator[pb.PublishRequest], context: grpc.aio.ServicerContext
    ) -> pb.PublishResponse:
        totals = await self._front_door.publish(current_principal(), request_iterator)
        return pb.PublishResponse(
            received=totals.received,
            queued=totals.queued,
            refused=totals.refused,
            topic=totals.topic,
            problems=[
                pb.RecordProblem(
                    index=index,
                    reason=pb.Reason(category=r.category, code=r.code, message=r.message),
                )
                for index, r in totals.problems
            ],
        )

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        if request.dataset_id:
            entries = [await self._entry(request.dataset_id)]
        else:
            org = current_principal().org
            entries = [e for e in self._directory.entries() if e.has_table and e.publisher == org]
        figures = await asyncio.gather(*(self._status.figures(e) for e in entries))
        return pb.StatusResponse(datasets=[_status_pb(f) for f in figures])

    async def ListRejects(
        self, request: pb.ListRejectsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRejectsResponse:
        if not request.filter.dataset_id:
            raise InvalidArgument("filter.dataset_id", "is required")
        found = dlq.filter_from_proto(request.filter)
        letters, token = await self._reader.list(found, request.page_size, request.page_token)
        return pb.ListRejectsResponse(
            rejects=[dlq.to_proto(letter) for letter in letters], next_page_token=token
        )

    async def GetReject(
        self, request: pb.GetRejectRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRejectResponse:
        return pb.GetRejectResponse(reject=dlq.to_proto(await self._reader.get(request.id)))

    async def ReplayRejects(
        self, request: pb.ReplayRejectsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayRejectsResponse:
        if request.ids and request.filter.dataset_id:
            raise InvalidArgument("ids", "give either ids or a filter, not both")
        if request.ids:
            letters = [await self._reader.get(i, f"ids[{n}]") for n, i in enumerate(request.ids)]
            datasets = {letter.dataset_id for letter in letters}
            if len(datasets) > 1:
                raise InvalidArgument("ids", f"name rejects of one dataset, not {sorted(datasets)}")
        else:
            if not request.filter.dataset_id:
                raise InvalidArgument("filter.dataset_id", "is required without ids")
            letters = await self._reader.list_all(dlq.filter_from_proto(request.filter), MAX_REPLAY)
        producer = await self._replay_producer()
        return pb.ReplayRejectsResponse(replayed=await self._reader.replay(letters, producer))

    async def GetDeliveryIndicators(
        self, request: pb.GetDeliveryIndicatorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDeliveryIndicatorsResponse:
        entry = await self._entry(request.dataset_id)
        if request.producer:
            check_party_id(request.producer, "producer")
        period = request.period or "day"
        if period not in ("hour", "day"):
            raise InvalidArgument("period", f"must be hour or day, not {period!r}")
        since = request.since.ToDatetime() if request.HasField("since") else None
        until = request.until.ToDatetime() if request.HasField("until") else None
        if since and until and since >= until:
            raise InvalidArgument("since", "must be before until")
        await asyncio.to_thread(self._indicators.roll_up, [entry.id])
        found = await asyncio.to_thread(
            self._indicators.query,
            entry.id,
            request.producer,
            since.replace(tzinfo=UTC) if since else None,
            until.replace(tzinfo=UTC) if until else None,
            period,
        )
        return pb.GetDeliveryIndicatorsResponse(indicators=[to_proto(i) for i in found])

    async def CompactTable(
        self, request: pb.CompactTableRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompactTableResponse:
        entry = await self._entry(request.dataset_id)
        if request.expire_older_than_h < 0:
            raise InvalidArgument("expire_older_than_h", "must be 0 (default) or more")
        if request.target_file_bytes < 0:
            raise InvalidArgument("target_file_bytes", "must be 0 (default) or more")
        expire = timedelta(hours=request.expire_older_than_h or DEFAULT_EXPIRE_H)
        target = request.target_file_bytes or DEFAULT_TARGET_FILE_BYTES
        # Indicators come from the snapshots' summaries: roll them up before expiring any.
        await asyncio.to_thread(self._indicators.roll_up, [entry.id])
        async with self._locks.of(entry.id):
            result = await asyncio.to_thread(compact, self._warehouse, entry.id, target, expire)
        return pb.CompactTableResponse(
            files_rewritten=result.files_rewritten,
            files_written=result.files_written,
            snapshots_expired=result.snapshots_expired,
            snapshot_id=result.snapshot_id,
        )


def _status_pb(f: DatasetFigures) -> pb.DatasetStatus:
    return pb.DatasetStatus(
        dataset_id=f.dataset_id,
        topic=f.topic,
        state=f.state,
        lag_records=f.lag_records,
        records_per_s=f.records_per_s,
        last_event_time=_ts(f.last_event_time),
        last_commit_time=_ts(f.last_commit_time),
        rows_stored=f.rows_stored,
        records_rejected=f.records_rejected,
        snapshot_id=f.snapshot_id,
        schema_version=f.schema_version,
    )
