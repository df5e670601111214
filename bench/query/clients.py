"""The three ways to run a query, each returning the whole answer as one Arrow table: the
service over gRPC (read as `tdg query` reads it) and over Arrow Flight, and bare DuckDB on the
table's data files."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import grpc
import pyarrow as pa
from common import Metadata
from pyarrow import flight
from tdg.query.v1 import query_pb2 as qpb
from tdg.query.v1 import query_pb2_grpc
from tdg_cli.query_stream import receive

from .scenario import DUCKDB_SQL, TERRITORY, THE_COUNTER


@dataclass
class Batches:
    """A sink of `receive` keeping every batch (the answer is consumed whole client-side)."""

    schema: pa.Schema | None = None
    batches: list[pa.RecordBatch] = field(default_factory=list)

    def start(self, schema: pa.Schema) -> None:
        self.schema = schema

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=self.schema)


@dataclass
class Clients:
    grpc_channel: grpc.Channel
    flight_client: flight.FlightClient
    files: list[str]
    duck: duckdb.DuckDBPyConnection
    # ms from the last gRPC call to its first message (the header: the query prepared and its
    # statement opened, no batch yet)
    header_ms: float = 0.0

    def grpc(self, request: qpb.QueryRequest, md: Metadata) -> pa.Table:
        stub = query_pb2_grpc.QueryServiceStub(self.grpc_channel)
        t0 = time.perf_counter()
        responses = stub.Query(request, metadata=md, timeout=300)
        first = next(responses)
        self.header_ms = (time.perf_counter() - t0) * 1000
        answer = Batches()
        receive(itertools.chain([first], responses), answer)
        return answer.table()

    def flight(self, request: qpb.QueryRequest, md: Metadata) -> pa.Table:
        options = flight.FlightCallOptions(
            headers=[(k.encode(), v.encode()) for k, v in md], timeout=300
        )
        descriptor = flight.FlightDescriptor.for_command(request.SerializeToString())
        info = self.flight_client.get_flight_info(descriptor, options)
        return self.flight_client.do_get(info.endpoints[0].ticket, options).read_all()

    def duckdb(self, kind: str) -> pa.Table:
        params: dict[str, Any] = {"files": self.files}
        if kind == "filter":
            params["counter"] = THE_COUNTER
        if kind == "masked_aggregate":
            params["territory"] = TERRITORY
        return self.duck.sql(DUCKDB_SQL[kind], params=params).to_arrow_table()


def timed(call: Callable[[], pa.Table]) -> tuple[float, pa.Table]:
    t0 = time.perf_counter()
    result = call()
    return (time.perf_counter() - t0) * 1000, result


def sorted_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return sorted(zip(*columns, strict=True))
