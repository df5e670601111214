"""`tdg.query.v1.QueryService`: Query (server streaming of Arrow IPC), ListReadable, SearchAudit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pyarrow as pa
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.catalog_view import CatalogView
from tdg_core.errors import DomainError, InvalidArgument, Unavailable
from tdg_core.grpc.context import current_principal

from tdg_query.audit_table import AuditTable
from tdg_query.engine import Cancelled, Engine, Entry, Execution, Prepared
from tdg_query.readable import Readable

SERVICE_NAME = "tdg.query.v1.QueryService"
MAX_AUDIT_RESULTS = 1000


class ResourceFinder:
    """The `resource` of tdg.rpc: the dataset a call names (its publisher decides who audits)."""

    def __init__(self, datasets: CatalogView[Entry]) -> None:
        self._datasets = datasets

    def __call__(self, rpc: str, request: Any) -> dict[str, Any]:
        dataset_id = getattr(request, "dataset_id", "") if request is not None else ""
        if not dataset_id:
            return {}
        entry = self._datasets.get(dataset_id)
        publisher = entry.dataset.publisher if entry else dataset_id.partition(".")[0]
        return {"dataset_id": dataset_id, "dataset": {"id": dataset_id, "publisher": publisher}}


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


async def stream(engine: Engine, prepared: Prepared) -> AsyncIterator[Answer]:
    """The answer of a prepared query, batch by batch, audited when it ends however it ends."""
    cursor = engine.cursor()
    try:
        execution = await asyncio.to_thread(engine.open, prepared, cursor)
    except asyncio.CancelledError:
        cursor.interrupt()  # the worker thread stops DuckDB, then closes the cursor
        engine.finish(prepared, None, Cancelled("the caller cancelled the query"))
        raise
    except BaseException as exc:
        engine.finish(prepared, None, exc)
        raise
    error: BaseException | None = None
    try:
        yield qpb.QueryResponse(header=prepared.header(execution.schema))
        while True:
            batch = await asyncio.to_thread(execution.next_batch)
            if batch is None:
                break
            yield encode_batch(batch)
        yield qpb.QueryResponse(summary=summary(prepared, execution))
    except asyncio.CancelledError:
        error = Cancelled("the caller cancelled the query or its deadline passed")
        execution.interrupt()
        raise
    except GeneratorExit:
        error = Cancelled("the caller stopped reading")
        execution.interrupt()
        raise
    except DomainError as exc:
        error = exc
        raise
    except Exception as exc:
        error = exc
        raise Unavailable(f"the query failed: {exc}") from exc
    finally:
        execution.close()
        engine.finish(prepared, execution, error)


def summary(prepared: Prepared, execution: Execution) -> qpb.QuerySummary:
    return qpb.QuerySummary(
        rows=execution.rows,
        bytes=execution.bytes,
        duration_ms=int((time.monotonic() - prepared.started) * 1000),
    )


def read_batches(responses: list[qpb.QueryResponse]) -> pa.Table:
    """A whole answer as one table (for tests and tools holding the messages)."""
    schema: pa.Schema | None = None
    batches = []
    for response in responses:
        if response.HasField("header"):
            schema = pa.ipc.read_schema(pa.py_buffer(response.header.arrow_schema))
        elif response.WhichOneof("part") == "arrow_batch":
            assert schema is not None
            batches.append(pa.ipc.read_record_batch(pa.py_buffer(response.arrow_batch), schema))
    assert schema is not None
    return pa.Table.from_batches(batches, schema=schema)


class QueryServicer:
    def __init__(self, engine: Engine, readable: Readable, audit_table: AuditTable) -> None:
        self._engine = engine
        self._readable = readable
        self._audit_table = audit_table

    async def Query(
        self, request: qpb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Answer]:
        prepared = await self._engine.prepare(current_principal(), request, "grpc")
        async for response in stream(self._engine, prepared):
            yield response

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

        def when(ts: Timestamp, present: bool) -> datetime | None:
            return ts.ToDatetime().replace(tzinfo=UTC) if present else None

        records = await asyncio.to_thread(
            self._audit_table.search,
            dataset_id=request.dataset_id,
            party=request.party,
            purpose=request.purpose,
            agreement_id=request.agreement_id,
            query_id=request.query_id,
            since=when(request.since, request.HasField("since")),
            until=when(request.until, request.HasField("until")),
            limit=limit,
        )
        return qpb.SearchAuditResponse(records=records)
