"""tdg.ingest.v1.IngestService: proto ⇄ the use cases and nothing else (rules live in the use-case
modules: `front_door`, `reports`, `rejects`, `upkeep`; access is OPA's: `tdg.rpc` per call,
`tdg.write` per dataset for Publish)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tdg.ingest.v1 import ingest_pb2 as pb
from tdg.ingest.v1 import ingest_pb2_grpc
from tdg_core.errors import InvalidArgument
from tdg_core.grpc import current_principal
from tdg_core.identifiers import parse_dataset_id

from tdg_ingest import convert
from tdg_ingest.datasets import DatasetDirectory
from tdg_ingest.front_door import FrontDoor
from tdg_ingest.rejects import Rejects
from tdg_ingest.reports import Reports
from tdg_ingest.upkeep import TableUpkeep

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name


class ResourceFinder:
    """The `resource` of each call for `tdg.rpc`: the dataset it concerns, looked up in the
    catalog view so that OPA decides on its publisher."""

    def __init__(self, directory: DatasetDirectory, rejects: Rejects) -> None:
        self._directory = directory
        self._rejects = rejects

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
            letter = await self._rejects.get(request.id)
            return await self._dataset(letter.dataset_id, "id")
        if rpc == "ReplayRejects":
            if request.ids:
                letter = await self._rejects.get(request.ids[0], "ids[0]")
                return await self._dataset(letter.dataset_id, "ids")
            return await self._dataset(request.filter.dataset_id, "filter.dataset_id")
        return {}


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self, front_door: FrontDoor, reports: Reports, rejects: Rejects, upkeep: TableUpkeep
    ) -> None:
        self._front_door = front_door
        self._reports = reports
        self._rejects = rejects
        self._upkeep = upkeep

    async def Publish(
        self, request_iterator: AsyncIterator[pb.PublishRequest], context: grpc.aio.ServicerContext
    ) -> pb.PublishResponse:
        batches = convert.record_batches(request_iterator)
        totals = await self._front_door.publish(current_principal(), batches)
        return convert.publish_response(totals)

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        figures = await self._reports.status(request.dataset_id, current_principal().org)
        return pb.StatusResponse(datasets=[convert.status_to_pb(f) for f in figures])

    async def ListRejects(
        self, request: pb.ListRejectsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRejectsResponse:
        if not request.filter.dataset_id:
            raise InvalidArgument("filter.dataset_id", "is required")
        found = convert.reject_filter_from_pb(request.filter)
        letters, token = await self._rejects.list_page(found, request.page_size, request.page_token)
        return pb.ListRejectsResponse(
            rejects=[convert.reject_to_pb(letter) for letter in letters], next_page_token=token
        )

    async def GetReject(
        self, request: pb.GetRejectRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRejectResponse:
        return pb.GetRejectResponse(
            reject=convert.reject_to_pb(await self._rejects.get(request.id))
        )

    async def ReplayRejects(
        self, request: pb.ReplayRejectsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayRejectsResponse:
        if request.ids and request.filter.dataset_id:
            raise InvalidArgument("ids", "give either ids or a filter, not both")
        if request.ids:
            replayed = await self._rejects.replay_ids(list(request.ids))
        else:
            if not request.filter.dataset_id:
                raise InvalidArgument("filter.dataset_id", "is required without ids")
            found = convert.reject_filter_from_pb(request.filter)
            replayed = await self._rejects.replay_matching(found)
        return pb.ReplayRejectsResponse(replayed=replayed)

    async def GetDeliveryIndicators(
        self, request: pb.GetDeliveryIndicatorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDeliveryIndicatorsResponse:
        since, until = convert.delivery_window(request)
        found = await self._reports.delivery_indicators(
            request.dataset_id, request.producer, request.period, since, until
        )
        return pb.GetDeliveryIndicatorsResponse(
            indicators=[convert.indicator_to_pb(i) for i in found]
        )

    async def CompactTable(
        self, request: pb.CompactTableRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompactTableResponse:
        result = await self._upkeep.compact_table(
            request.dataset_id, request.expire_older_than_h, request.target_file_bytes
        )
        return convert.compaction_to_pb(result)
