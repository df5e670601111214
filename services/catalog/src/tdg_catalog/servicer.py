"""tdg.catalog.v1.CatalogService: proto ⇄ domain and nothing else (rules live in catalog.py,
access in OPA)."""

from __future__ import annotations

import json
from typing import Any

import grpc
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg.catalog.v1 import catalog_pb2_grpc
from tdg_core.errors import InvalidArgument
from tdg_core.grpc import current_decision
from tdg_core.identifiers import parse_dataset_id

from tdg_catalog.catalog import Catalog
from tdg_catalog.convert import (
    access_level_from_pb,
    dataset_to_pb,
    metadata_from_pb,
    schema_from_pb,
    status_from_pb,
)
from tdg_catalog.model import DraftScope
from tdg_catalog.store import ListFilter

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CatalogService"].full_name


def resource_of(rpc: str, request: Any) -> dict[str, Any]:
    """The policy input's resource: the dataset and its publisher (the id's prefix)."""
    dataset_id = getattr(request, "id", "") if request is not None else ""
    if not dataset_id:
        return {}
    publisher, _, _ = dataset_id.partition(".")
    return {"dataset_id": dataset_id, "publisher": publisher}


def _draft_scope() -> DraftScope:
    scope = current_decision().get("draft_scope") or {}
    return DraftScope(
        all=bool(scope.get("all", False)), publishers=frozenset(scope.get("publishers", []))
    )


def _require_id(dataset_id: str) -> str:
    parse_dataset_id(dataset_id)
    return dataset_id


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, catalog: Catalog, public_base_uri: str) -> None:
        self._catalog = catalog
        self._base_uri = public_base_uri

    async def RegisterDataset(
        self, request: pb.RegisterDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterDatasetResponse:
        if not request.HasField("metadata"):
            raise InvalidArgument("metadata", "required")
        if not request.HasField("schema"):
            raise InvalidArgument("schema", "required")
        dataset = await self._catalog.register(
            _require_id(request.id),
            metadata_from_pb(request.metadata),
            schema_from_pb(request.schema),
        )
        return pb.RegisterDatasetResponse(dataset=dataset_to_pb(dataset))

    async def UpdateMetadata(
        self, request: pb.UpdateMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateMetadataResponse:
        if not request.HasField("metadata"):
            raise InvalidArgument("metadata", "required")
        fields = list(request.update_mask.paths)
        metadata = request.metadata
        if fields and "access_level" not in fields and not metadata.access_level:
            # A partial update need not repeat the access level.
            metadata = pb.DatasetMetadata()
            metadata.CopyFrom(request.metadata)
            metadata.access_level = pb.ACCESS_LEVEL_OPEN
        dataset = await self._catalog.update_metadata(
            _require_id(request.id), metadata_from_pb(metadata), fields
        )
        return pb.UpdateMetadataResponse(dataset=dataset_to_pb(dataset))

    async def EvolveSchema(
        self, request: pb.EvolveSchemaRequest, context: grpc.aio.ServicerContext
    ) -> pb.EvolveSchemaResponse:
        if not request.HasField("schema"):
            raise InvalidArgument("schema", "required")
        dataset = await self._catalog.evolve_schema(
            _require_id(request.id), schema_from_pb(request.schema), request.expected_version
        )
        return pb.EvolveSchemaResponse(dataset=dataset_to_pb(dataset))

    async def PublishDataset(
        self, request: pb.PublishDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishDatasetResponse:
        dataset = await self._catalog.publish(_require_id(request.id))
        return pb.PublishDatasetResponse(dataset=dataset_to_pb(dataset))

    async def DeprecateDataset(
        self, request: pb.DeprecateDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeprecateDatasetResponse:
        dataset = await self._catalog.deprecate(_require_id(request.id), request.reason)
        return pb.DeprecateDatasetResponse(dataset=dataset_to_pb(dataset))

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        dataset = await self._catalog.get(
            _require_id(request.id), request.schema_version, _draft_scope()
        )
        return pb.GetDatasetResponse(dataset=dataset_to_pb(dataset))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        f = ListFilter(
            publisher=request.publisher,
            theme=request.theme,
            access_level=access_level_from_pb(request.access_level, "access_level")
            if request.access_level
            else None,
            status=status_from_pb(request.status, "status") if request.status else None,
        )
        page, token = await self._catalog.list_datasets(
            f, _draft_scope(), request.page_size, request.page_token
        )
        return pb.ListDatasetsResponse(
            datasets=[dataset_to_pb(d) for d in page], next_page_token=token
        )

    async def SearchDatasets(
        self, request: pb.SearchDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchDatasetsResponse:
        hits = await self._catalog.search(request.query, request.limit, _draft_scope())
        return pb.SearchDatasetsResponse(
            hits=[pb.SearchHit(dataset=dataset_to_pb(d), score=score) for d, score in hits]
        )

    async def ExportDcat(
        self, request: pb.ExportDcatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportDcatResponse:
        base_uri = request.base_uri or self._base_uri
        if not base_uri.startswith(("https://", "http://")):
            raise InvalidArgument("base_uri", "must be an http(s) IRI")
        document, count = await self._catalog.export_dcat(base_uri.rstrip("/"))
        return pb.ExportDcatResponse(
            json_ld=json.dumps(document, ensure_ascii=False), dataset_count=count
        )
