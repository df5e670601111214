"""The answer of the query service, read: a QueryHeader (with the Arrow schema), Arrow record
batches, a QuerySummary, checked against that contract and passed to a sink a batch at a time."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass

import grpc
import pyarrow as pa
from tdg.query.v1 import query_pb2 as pb
from tdg.query.v1 import query_pb2_grpc

from tdg_cli.client import call_stream
from tdg_cli.query_sinks import Sink
from tdg_cli.settings import CliSettings


class QueryStreamError(Exception):
    """The stream is not what the contract promises (parts out of order, undecodable Arrow)."""


@dataclass(frozen=True)
class Received:
    header: pb.QueryHeader
    summary: pb.QuerySummary
    rows: int
    bytes: int
    batches: int


def no_progress(rows: int, size: int) -> None:
    pass


def receive(
    responses: Iterable[pb.QueryResponse],
    sink: Sink,
    progress: Callable[[int, int], None] = no_progress,
) -> Received:
    """Read the stream into the sink, a batch at a time; `progress(rows, bytes)` after each batch.
    On any failure (the stream's, the sink's, an interrupt) the sink is aborted, then the error
    raised again."""
    header: pb.QueryHeader | None = None
    summary: pb.QuerySummary | None = None
    schema: pa.Schema | None = None
    rows = size = batches = 0
    try:
        for n, response in enumerate(responses):
            part = response.WhichOneof("part")
            if summary is not None:
                raise QueryStreamError(f"message {n} ({part}) came after the summary")
            if part == "header":
                if header is not None:
                    raise QueryStreamError(f"message {n} is a second header")
                header = response.header
                schema = _schema(header.arrow_schema)
                sink.start(schema)
            elif part == "arrow_batch":
                if schema is None:
                    raise QueryStreamError(f"message {n} is a batch before the header")
                batch = _batch(response.arrow_batch, schema, batches)
                sink.write(batch)
                rows += batch.num_rows
                size += len(response.arrow_batch)
                batches += 1
                progress(rows, size)
            elif part == "summary":
                if header is None:
                    raise QueryStreamError(f"message {n} is the summary, before any header")
                summary = response.summary
            else:
                raise QueryStreamError(f"message {n} is empty")
        if header is None:
            raise QueryStreamError("the stream ended without a header")
        if summary is None:
            raise QueryStreamError(
                f"the stream ended without a summary after {rows} rows: the result is incomplete"
            )
        if summary.rows != rows:
            raise QueryStreamError(f"the summary counts {summary.rows} rows, {rows} were received")
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    return Received(header=header, summary=summary, rows=rows, bytes=size, batches=batches)


def _schema(payload: bytes) -> pa.Schema:
    try:
        return pa.ipc.read_schema(pa.py_buffer(payload))
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise QueryStreamError(f"the header's schema is not an Arrow IPC schema: {exc}") from exc


def _batch(payload: bytes, schema: pa.Schema, index: int) -> pa.RecordBatch:
    try:
        return pa.ipc.read_record_batch(pa.py_buffer(payload), schema)
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise QueryStreamError(
            f"batch {index} is not an Arrow record batch of the header's schema: {exc}"
        ) from exc


def query_stream(request: pb.QueryRequest) -> Generator[pb.QueryResponse, None, None]:
    """The Query stream, with the query's own deadline and message size; a failed status (before
    or mid-stream) printed and exit 1, as every command."""
    settings = CliSettings()
    options = [("grpc.max_receive_message_length", settings.query_max_message_bytes)]
    # call_stream's deadline is the settings' call timeout: a query's is its own.
    whole_query = settings.model_copy(update={"call_timeout_s": settings.query_timeout_s})
    with grpc.insecure_channel(settings.query_addr, options=options) as ch:
        stub = query_pb2_grpc.QueryServiceStub(ch)
        yield from call_stream(whole_query, stub.Query, request)
