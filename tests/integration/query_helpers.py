"""Helpers of the query stories: requests, answers over gRPC and Arrow Flight, agreements approved
and seen by OPA, and records of the example datasets with personal columns."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pyarrow as pa
from google.protobuf.timestamp_pb2 import Timestamp
from pyarrow import flight
from tdg.consent.v1 import consent_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.service import Service
from tdg_query.flight import QueryFlightServer
from tdg_query.settings import QuerySettings

if TYPE_CHECKING:  # the callers' fixtures import `flight_location` from here
    from tests.integration.fixtures.callers import Bearer, QueryCaller


def flight_location(service: Service[QuerySettings]) -> str:
    """Where the service's Arrow Flight server listens (on a free port, in the tests)."""
    return f"grpc+tcp://127.0.0.1:{service.part(QueryFlightServer).port}"


# --- requests -----------------------------------------------------------------------------------


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


def lit(value: Any) -> qpb.Literal:
    if isinstance(value, bool):
        return qpb.Literal(bool_value=value)
    if isinstance(value, int):
        return qpb.Literal(int_value=value)
    if isinstance(value, float):
        return qpb.Literal(double_value=value)
    if isinstance(value, Decimal):
        return qpb.Literal(decimal_value=str(value))
    if isinstance(value, datetime):
        return qpb.Literal(timestamp_value=ts(value))
    return qpb.Literal(string_value=str(value))


_OPS = {
    "=": qpb.COMPARISON_OPERATOR_EQ,
    "!=": qpb.COMPARISON_OPERATOR_NE,
    "<": qpb.COMPARISON_OPERATOR_LT,
    "<=": qpb.COMPARISON_OPERATOR_LE,
    ">": qpb.COMPARISON_OPERATOR_GT,
    ">=": qpb.COMPARISON_OPERATOR_GE,
}


def cmp(column: str, op: str, value: Any) -> qpb.Expression:
    return qpb.Expression(comparison=qpb.Comparison(column=column, op=_OPS[op], value=lit(value)))


def both(*operands: qpb.Expression) -> qpb.Expression:
    expression = qpb.Expression()
    getattr(expression, "and").operands.extend(operands)  # `and` is a Python keyword
    return expression


_FUNCTIONS = {
    "count": qpb.AGGREGATE_FUNCTION_COUNT,
    "sum": qpb.AGGREGATE_FUNCTION_SUM,
    "min": qpb.AGGREGATE_FUNCTION_MIN,
    "max": qpb.AGGREGATE_FUNCTION_MAX,
    "avg": qpb.AGGREGATE_FUNCTION_AVG,
    "count_distinct": qpb.AGGREGATE_FUNCTION_COUNT_DISTINCT,
}


def agg(function: str, column: str = "", alias: str = "") -> qpb.Aggregate:
    return qpb.Aggregate(function=_FUNCTIONS[function], column=column, alias=alias)


def order(column: str, descending: bool = False) -> qpb.OrderBy:
    return qpb.OrderBy(column=column, descending=descending)


# --- answers ------------------------------------------------------------------------------------


def read_batches(responses: Sequence[qpb.QueryResponse]) -> pa.Table:
    """A whole gRPC answer as one table."""
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


@dataclass
class Answer:
    header: qpb.QueryHeader
    table: pa.Table
    summary: qpb.QuerySummary
    responses: list[qpb.QueryResponse]

    @property
    def raw(self) -> bytes:
        """Every message of the answer, as it travelled."""
        return b"".join(r.SerializeToString() for r in self.responses)

    def column(self, name: str) -> list[Any]:
        return list(self.table.column(name).to_pylist())

    def treatments(self) -> dict[str, str]:
        return {t.column: t.treatment for t in self.header.treatments}


async def query(caller: QueryCaller, request: qpb.QueryRequest, deadline_s: float = 30.0) -> Answer:
    """The whole gRPC answer: header, the batches as one table, summary."""
    responses = [
        r async for r in caller.stub.Query(request, metadata=caller.md, timeout=deadline_s)
    ]
    assert responses[0].HasField("header") and responses[-1].HasField("summary")
    assert all(r.WhichOneof("part") == "arrow_batch" for r in responses[1:-1])
    return Answer(responses[0].header, read_batches(responses), responses[-1].summary, responses)


async def refused(
    caller: QueryCaller,
    request: qpb.QueryRequest,
    code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED,
) -> str:
    """The details of the error the query ends with, which must have `code`."""
    try:
        await query(caller, request)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == code, f"{exc.code().name}: {exc.details()}"
        return str(exc.details())
    raise AssertionError(f"query answered, {code.name} expected: {request}")


def _options(caller: Bearer) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {caller.token}".encode())], timeout=30.0
    )


def _flight_read(
    caller: QueryCaller, request: qpb.QueryRequest
) -> tuple[flight.FlightInfo, pa.Table]:
    client = flight.FlightClient(caller.flight_location)
    try:
        options = _options(caller)
        descriptor = flight.FlightDescriptor.for_command(request.SerializeToString())
        info = client.get_flight_info(descriptor, options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        return info, table
    finally:
        client.close()


async def flight_query(
    caller: QueryCaller, request: qpb.QueryRequest
) -> tuple[flight.FlightInfo, pa.Table]:
    """GetFlightInfo then DoGet with pyarrow.flight, in a thread (the service's Flight handlers
    need this event loop)."""
    return await asyncio.to_thread(_flight_read, caller, request)


def _flight_list(caller: QueryCaller, purpose: str) -> list[dict[str, Any]]:
    client = flight.FlightClient(caller.flight_location)
    try:
        return [
            json.loads(info.app_metadata)
            for info in client.list_flights(purpose.encode(), _options(caller))
        ]
    finally:
        client.close()


async def list_flights(caller: QueryCaller, purpose: str = "") -> list[dict[str, Any]]:
    return await asyncio.to_thread(_flight_list, caller, purpose)


def principal_of(caller: Bearer) -> dict[str, Any]:
    """The caller's subject as tdg.read takes it: party, org and roles of its token."""
    claims = jwt.decode(caller.token, options={"verify_signature": False})
    return {"party": claims["sub"], "org": claims.get("org", ""), "roles": claims.get("roles", [])}


# --- agreements ---------------------------------------------------------------------------------


def hashed(column: str) -> cpb.ColumnMask:
    return cpb.ColumnMask(column=column, method=cpb.MASK_METHOD_HASH)


def clear(column: str) -> cpb.ColumnMask:
    return cpb.ColumnMask(column=column, method=cpb.MASK_METHOD_CLEAR)


def generalised(column: str, **how: Any) -> cpb.ColumnMask:
    return cpb.ColumnMask(
        column=column,
        method=cpb.MASK_METHOD_GENERALISE,
        generalisation=cpb.Generalisation(**how),
    )


async def agreement(
    officer: QueryCaller,
    app: QueryCaller,
    dataset_id: str,
    purposes: Sequence[str],
    conditions: cpb.Conditions,
    legal_basis: int = cpb.LEGAL_BASIS_PUBLIC_TASK,
) -> str:
    """A read agreement requested by `app` and approved by `officer` with `conditions`, once the
    query service's reads rest on it (OPA pulled it from the consent service's bundle)."""
    requested = await app.consent.RequestAccess(
        cpb.RequestAccessRequest(
            dataset_id=dataset_id,
            purposes=list(purposes),
            legal_basis=legal_basis,  # type: ignore[arg-type]
            justification="integration story",
        ),
        metadata=app.md,
        timeout=10,
    )
    agreement_id: str = requested.agreement.id
    await officer.consent.ApproveAccess(
        cpb.ApproveAccessRequest(agreement_id=agreement_id, conditions=conditions),
        metadata=officer.md,
        timeout=10,
    )
    probe = qpb.QueryRequest(dataset_id=dataset_id, purpose=purposes[0])
    if conditions.aggregate_only:
        probe.aggregates.append(agg("count"))
    deadline = time.monotonic() + 10.0
    while True:
        try:
            # An open dataset is read without the agreement until OPA has it.
            if (await query(app, probe)).header.agreement_id == agreement_id:
                return agreement_id
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"agreement {agreement_id} not in force within 10 s")
        await asyncio.sleep(0.1)


# --- records ------------------------------------------------------------------------------------


def session_record(i: int, user: str, commune: str, **overrides: Any) -> bytes:
    """A charging session of metropole-lyon.ev-charging-sessions, the i-th of a stream."""
    day, hour, minute = 1 + i % 20, 6 + i % 15, (7 * i) % 60
    record: dict[str, Any] = {
        "session_id": f"S-{i:06d}",
        "ref_ev_charging_station": f"ST-{i % 5}",
        "charging_point_id": f"PDC-{i % 11:03d}",
        "socket_type": ("Type2", "CCS", "CHAdeMO")[i % 3],
        "session_start": f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:17Z",
        "session_end": f"2026-11-{day:02d}T{hour + 1:02d}:{minute:02d}:00Z",
        "energy_kwh": round(3.5 + (i % 40) * 0.75, 3),
        "max_power_kw": 22.0 if i % 3 == 0 else 50.0,
        "user_id": user,
        "commune_code": commune,
    }
    record.update(overrides)
    return json.dumps(record).encode()


def reading(household: str, day: int, commune: str = "69123", kwh: float = 7.25) -> bytes:
    """A daily reading of metropole-lyon.household-energy-meters."""
    return json.dumps(
        {
            "household_id": household,
            "meter_id": f"{zlib.crc32(household.encode()):014d}",
            "date_observed": f"2026-11-{day:02d}",
            "consumption_kwh": kwh + day,
            "subscribed_power_kva": 6,
            "heating_type": "électrique",
            "commune_code": commune,
        }
    ).encode()


def midnight_utc(value: datetime) -> bool:
    value = value.astimezone(UTC)
    return (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0)
