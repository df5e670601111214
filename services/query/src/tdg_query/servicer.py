"""`tdg.query.v1.QueryService`: Query (server streaming of Arrow IPC), ListReadable, SearchAudit.

A Query is one `Execution` (the same as an Arrow Flight query's): the request goes in as an `Asked`,
the answer comes out as a header, the batches (encoded once, `encode_batch`) and a summary."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pyarrow as pa
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.catalog_view import CatalogView
from tdg_core.errors import InvalidArgument
from tdg_core.grpc.context import current_principal
from tdg_core.timestamps import from_timestamp

from tdg_query.audit_table import AuditTable
from tdg_query.engine import Engine, Entry, Prepared
from tdg_query.execution import Execution
from tdg_query.readable import Readable
from tdg_query.request import Asked

SERVICE_NAME = "tdg.query.v1.QueryService"
MAX_AUDIT_RESULTS = 1000


def dataset_resource(dataset_id: str, publisher: str | None = None) -> dict[str, Any]:
    """tdg.rpc's `resource` for a call on a dataset, for gRPC and Arrow Flight alike (its publisher
    decides who audits; when not given, the one its id names: `<publisher>.<name>`)."""
    if not dataset_id:
        return {}
    if publisher is None:
        publisher = dataset_id.partition(".")[0]
    return {"dataset_id": dataset_id, "dataset": {"id": dataset_id, "publisher": publisher}}


class ResourceFinder:
    """The `resource` of tdg.rpc: the dataset a call names, its publisher from the catalog."""

    def __init__(self, datasets: CatalogView[Entry]) -> None:
        self._datasets = datasets

    def __call__(self, rpc: str, request: Any) -> dict[str, Any]:
        dataset_id = getattr(request, "dataset_id", "") if request is not None else ""
        entry = self._datasets.get(dataset_id) if dataset_id else None
        return dataset_resource(dataset_id, entry.dataset.publisher if entry else None)


# A QueryResponse whose `arrow_batch` (field 2, length-delimited) is the bytes that follow.
_ARROW_BATCH_TAG = b"\x12"

Answer = qpb.QueryResponse | bytes


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """The QueryResponse carrying `batch`, encoded directly: one copy of the Arrow IPC body
    instead of three (to bytes, into the message, out of it), which halves an export's cost."""
    body = batch.serialize()
    size = body.size
    prefix = bytearray(_ARROW_BATCH_TAG)
    while True:  # protobuf varint of the length
        low, size = size & 0x7F, size >> 7
        prefix.append(low | (0x80 if size else 0))
        if not size:
            break
    return b"".join((prefix, body))


def _serialize(answer: Answer) -> bytes:
    return answer if isinstance(answer, bytes) else answer.SerializeToString()


def register(servicer: QueryServicer, server: grpc.aio.Server) -> None:
    """As the generated `add_QueryServiceServicer_to_server`, except that Query's answers may be
    already encoded (`encode_batch`)."""
    handlers = {
        "Query": grpc.unary_stream_rpc_method_handler(
            servicer.Query,
            request_deserializer=qpb.QueryRequest.FromString,
            response_serializer=_serialize,
        ),
        "ListReadable": grpc.unary_unary_rpc_method_handler(
            servicer.ListReadable,
            request_deserializer=qpb.ListReadableRequest.FromString,
            response_serializer=qpb.ListReadableResponse.SerializeToString,
        ),
        "SearchAudit": grpc.unary_unary_rpc_method_handler(
            servicer.SearchAudit,
            request_deserializer=qpb.SearchAuditRequest.FromString,
            response_serializer=qpb.SearchAuditResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


async def stream(execution: Execution) -> AsyncIterator[Answer]:
    """The answer of a query: header, batches, summary. The execution ends with the stream,
    however it ends (the caller cancelling or its deadline passing included)."""
    async with execution:
        prepared = await execution.prepare()
        # DuckDB runs in worker threads; cancelled here, the execution interrupts it.
        schema = await asyncio.to_thread(execution.open)
        yield qpb.QueryResponse(header=header(execution, prepared, schema))
        while (batch := await asyncio.to_thread(execution.next_batch)) is not None:
            yield encode_batch(batch)
        yield qpb.QueryResponse(summary=summary(execution))


def header(execution: Execution, prepared: Prepared, schema: pa.Schema) -> qpb.QueryHeader:
    decided = prepared.decided
    return qpb.QueryHeader(
        query_id=execution.query_id,
        dataset_id=execution.asked.dataset_id,
        snapshot_id=prepared.plan.snapshot_id,
        arrow_schema=schema.serialize().to_pybytes(),
        agreement_id=decided.decision.agreement_id,
        treatments=[
            qpb.ColumnTreatment(column=c, treatment=t) for c, t in prepared.statement.output
        ],
        consent_revision=decided.consent.revision if decided.consent else 0,
    )


def summary(execution: Execution) -> qpb.QuerySummary:
    return qpb.QuerySummary(
        rows=execution.rows, bytes=execution.bytes, duration_ms=execution.duration_ms
    )


class QueryServicer:
    def __init__(self, engine: Engine, readable: Readable, audit_table: AuditTable) -> None:
        self._engine = engine
        self._readable = readable
        self._audit_table = audit_table

    async def Query(
        self, request: qpb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Answer]:
        execution = Execution(self._engine, current_principal(), Asked(request), "grpc")
        async for answer in stream(execution):
            yield answer

    async def ListReadable(
        self, request: qpb.ListReadableRequest, context: grpc.aio.ServicerContext
    ) -> qpb.ListReadableResponse:
        found = await self._readable.datasets(current_principal(), request.purpose)
        return qpb.ListReadableResponse(
            datasets=[
                qpb.ReadableDataset(dataset_id=d.dataset_id, title=d.title, purposes=d.purposes)
                for d in found
            ]
        )

    async def SearchAudit(
        self, request: qpb.SearchAuditRequest, context: grpc.aio.ServicerContext
    ) -> qpb.SearchAuditResponse:
        limit = request.limit or 100
        if not 0 < limit <= MAX_AUDIT_RESULTS:
            raise InvalidArgument("limit", f"between 1 and {MAX_AUDIT_RESULTS}")

        records = await asyncio.to_thread(
            self._audit_table.search,
            dataset_id=request.dataset_id,
            party=request.party,
            purpose=request.purpose,
            agreement_id=request.agreement_id,
            query_id=request.query_id,
            since=from_timestamp(request, "since"),
            until=from_timestamp(request, "until"),
            limit=limit,
        )
        return qpb.SearchAuditResponse(records=records)
