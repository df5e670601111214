"""One execution behind both ways in, on local servers whose engine reads DuckDB's `range` (no
Kafka, OPA nor Iceberg): the Arrow Flight server's own parts (tickets: single use, bound to a party,
expiring; the errors clients get, status codes through pyarrow.flight), and one audit record per
query however it ends, over Flight and gRPC; a fault of the service is INTERNAL, its text masked."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any, cast

import duckdb
import grpc
import pyarrow as pa
import pytest
from pyarrow import flight
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg.query.v1 import query_pb2_grpc
from tdg_core.auth import Principal, TokenVerifier, issue_token
from tdg_core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from tdg_core.grpc import GrpcService, build_server
from tdg_core.policy import DecisionPath
from tdg_core.settings import ServiceSettings, TdgSettings
from tdg_query import sql
from tdg_query.decision import Decision
from tdg_query.engine import Decided, Engine, Limits, Prepared
from tdg_query.execution import Execution
from tdg_query.failures import Cancelled
from tdg_query.flight import QueryFlightServer, flight_error, purpose_of, query_request
from tdg_query.model import Query
from tdg_query.planner import Plan
from tdg_query.readable import ReadableDataset
from tdg_query.request import Asked
from tdg_query.revocations import Revocations
from tdg_query.servicer import SERVICE_NAME, QueryServicer, dataset_resource, register
from tdg_query.tickets import TICKET_GONE, Tickets

# Tickets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def expired() -> list[str]:
    return []


@pytest.fixture
def tickets(clock: Clock, expired: list[str]) -> Tickets[str]:
    return Tickets(60.0, expired.append, clock)


def test_a_ticket_is_claimed_once(tickets: Tickets[str], expired: list[str]) -> None:
    ticket = tickets.issue("alice", "query-1")
    assert tickets.claim(ticket, "alice") == "query-1"
    with pytest.raises(NotFound, match=TICKET_GONE):
        tickets.claim(ticket, "alice")
    assert expired == []


def test_tickets_are_random_and_unknown_ones_are_not_found(tickets: Tickets[str]) -> None:
    assert len({tickets.issue("alice", str(i)) for i in range(100)}) == 100
    with pytest.raises(NotFound, match="call GetFlightInfo again"):
        tickets.claim(b"made-up", "alice")


def test_another_party_cannot_claim_a_ticket_and_does_not_burn_it(tickets: Tickets[str]) -> None:
    ticket = tickets.issue("alice", "query-1")
    with pytest.raises(PermissionDenied, match="issued to another party"):
        tickets.claim(ticket, "mallory")
    assert tickets.claim(ticket, "alice") == "query-1"


def test_an_expired_ticket_is_not_found_and_its_item_expired_once(
    tickets: Tickets[str], clock: Clock, expired: list[str]
) -> None:
    ticket = tickets.issue("alice", "query-1")
    clock.now += 60.0
    with pytest.raises(NotFound, match=TICKET_GONE):
        tickets.claim(ticket, "alice")
    with pytest.raises(NotFound):
        tickets.claim(ticket, "alice")
    tickets.sweep()
    tickets.close()
    assert expired == ["query-1"]


def test_sweep_expires_only_the_old_tickets(
    tickets: Tickets[str], clock: Clock, expired: list[str]
) -> None:
    old = tickets.issue("alice", "old")
    clock.now += 30.0
    young = tickets.issue("alice", "young")
    clock.now += 30.0
    tickets.sweep()
    tickets.sweep()
    assert expired == ["old"]
    assert len(tickets) == 1
    with pytest.raises(NotFound):
        tickets.claim(old, "alice")
    assert tickets.claim(young, "alice") == "young"


def test_close_expires_every_ticket_held(tickets: Tickets[str], expired: list[str]) -> None:
    tickets.issue("alice", "a")
    tickets.issue("bob", "b")
    tickets.close()
    assert sorted(expired) == ["a", "b"]
    assert len(tickets) == 0


# Errors


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (InvalidArgument("limit", "must be positive"), pa.ArrowInvalid, "limit: must be positive"),
        (NotFound("dataset 'a.b' is not in the catalog"), pa.ArrowKeyError, "dataset 'a.b' is not"),
        (
            PermissionDenied(["r1", "r2"]),
            flight.FlightUnauthorizedError,
            "permission denied: r1; r2",
        ),
        (Unauthenticated("token expired"), flight.FlightUnauthenticatedError, "token expired"),
        (Unavailable("OPA unreachable"), flight.FlightUnavailableError, "OPA unreachable"),
        (ResourceExhausted("too many rows"), flight.FlightServerError, "RESOURCE_EXHAUSTED: too"),
        (FailedPrecondition("not now"), flight.FlightServerError, "FAILED_PRECONDITION: not now"),
        (
            Cancelled("the caller stopped reading"),
            flight.FlightCancelledError,
            "the caller stopped",
        ),
        (RuntimeError("secret detail"), flight.FlightInternalError, "internal error (see"),
    ],
)
def test_errors_become_flight_errors(error: Exception, kind: type, message: str) -> None:
    mapped = flight_error(error)
    assert type(mapped) is kind
    assert str(mapped).startswith(message)
    assert "secret" not in str(mapped)


def test_flight_errors_pass_through() -> None:
    error = flight.FlightUnavailableError("as is")
    assert flight_error(error) is error


def test_the_descriptor_must_be_a_serialized_query_request() -> None:
    request = qpb.QueryRequest(dataset_id="lyon.bikes", purpose="mobility", columns=["n"])
    parsed = query_request(flight.FlightDescriptor.for_command(request.SerializeToString()))
    assert parsed == request
    with pytest.raises(InvalidArgument, match="must be a command"):
        query_request(flight.FlightDescriptor.for_path("lyon", "bikes"))
    with pytest.raises(InvalidArgument, match=r"descriptor\.cmd: is not a serialized"):
        query_request(flight.FlightDescriptor.for_command(b"\xff\xff\xff"))


def test_resources_and_purposes() -> None:
    assert dataset_resource("lyon.bikes") == {
        "dataset_id": "lyon.bikes",
        "dataset": {"id": "lyon.bikes", "publisher": "lyon"},
    }
    assert dataset_resource("") == {}
    assert purpose_of(b" mobility ") == "mobility"
    assert purpose_of(b"") == ""
    with pytest.raises(InvalidArgument, match="criteria"):
        purpose_of(b"\xff")


# A local server


class Audit:
    def __init__(self) -> None:
        self.records: list[qpb.AuditRecord] = []
        self.changed = threading.Condition()

    def accepting(self) -> bool:
        return True

    def record(self, record: qpb.AuditRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def outcomes(self, count: int, timeout: float = 10.0) -> list[str]:
        """The outcomes once `count` records are written (and a little time for any extra)."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.records) >= count, timeout)
        time.sleep(0.1)
        return [r.outcome for r in self.records]


class RangeEngine(Engine):
    """Plans `SELECT … FROM range(<limit or 100>)` for any request on a dataset of one column;
    OPA's stand-in denies dataset 'x.denied'. Purpose 'broken' is a bug while planning,
    'breaks-mid-stream' a bug at the first batch, 'catalog-down' a dependency's failure."""

    breaking: list[pa.RecordBatchReader]

    async def dataset(self, dataset_id: str) -> cpb.Dataset:
        columns = [cpb.Column(name="n", type="int64")]
        return cpb.Dataset(id=dataset_id, schema=cpb.Schema(columns=columns))

    async def decide(self, caller: Principal, query: Query, dataset: cpb.Dataset) -> Decided:
        denied = query.dataset_id == "x.denied"
        decision = Decision(
            allow=not denied,
            reasons=("no agreement covers purpose 'x'",) if denied else (),
            agreement_id="",
            columns={},
            row_filters=(),
            consent_required=False,
            consent_purpose="",
            subject_column="",
            aggregate_only=False,
            min_group_size=0,
        )
        return Decided(query, dataset, decision)

    async def plan(self, decided: Decided, caller: Principal) -> Prepared:
        query = decided.query
        if query.purpose == "broken":
            raise KeyError("secret detail")
        if query.purpose == "catalog-down":
            raise ConnectionError("the Iceberg catalog is unreachable")
        statement = sql.Statement(
            "SELECT range AS n, 'row ' || range AS label FROM range($1)", [query.limit or 100]
        )
        if query.purpose == "endless":  # minutes of work for DuckDB, streamed as it goes
            statement.sql = "SELECT range AS n, md5(range::VARCHAR) AS h FROM range($1)"
        if query.group_by:
            statement.sql = f"SELECT n % 3 AS k, count(*) AS c FROM ({statement.sql}) GROUP BY k"
        watch = Revocations().watch("", caller.party, caller.org)
        return Prepared(decided, Plan(0, sql.Source((), frozenset(), True)), statement, watch)

    def open(self, prepared: Prepared, cursor: duckdb.DuckDBPyConnection) -> pa.RecordBatchReader:
        reader = super().open(prepared, cursor)
        if prepared.decided.query.purpose == "breaks-mid-stream":
            self.breaking.append(reader)
        return reader

    def read(self, reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
        if any(r is reader for r in self.breaking):
            raise ZeroDivisionError("secret detail")
        return super().read(reader)


class Policy:
    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []

    async def healthy(self) -> bool:
        return True

    async def decide(self, path: DecisionPath, input_data: dict[str, Any]) -> dict[str, Any]:
        assert path is DecisionPath.RPC
        self.inputs.append(input_data)
        if input_data["subject"]["party"] == "mallory":
            return {"allow": False, "reasons": ["party mallory is suspended", "second reason"]}
        return {"allow": True, "reasons": []}


class Datasets:
    async def datasets(self, principal: Principal, purpose: str = "") -> list[ReadableDataset]:
        return [
            ReadableDataset("lyon.bikes", "Bike counters", [purpose or "mobility", "research"]),
            ReadableDataset("lyon.parking", "Parking", ["research"]),
        ]


SETTINGS = TdgSettings(auth_hs256_secret="a-test-secret-that-is-long-enough-for-hs256")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def policy() -> Policy:
    return Policy()


def range_engine(audit: Audit, max_rows: int = 1_000_000) -> RangeEngine:
    unused = cast(Any, None)  # what only the real steps need
    engine = RangeEngine(
        unused,
        unused,
        unused,
        unused,
        unused,
        cast(Any, audit),
        duckdb.connect(":memory:"),
        Limits(max_rows=max_rows, max_bytes=1 << 30, batch_rows=1000),
    )
    engine.breaking = []
    return engine


def start(
    loop: asyncio.AbstractEventLoop,
    audit: Audit,
    policy: Policy,
    ttl_s: float = 60.0,
    max_rows: int = 1_000_000,
) -> QueryFlightServer:
    server = QueryFlightServer(
        "grpc+tcp://127.0.0.1:0",
        range_engine(audit, max_rows),
        cast(Any, Datasets()),
        TokenVerifier(SETTINGS),
        cast(Any, policy),
        loop,
        ttl_s,
    )
    threading.Thread(target=server.serve, daemon=True).start()
    return server


@pytest.fixture
def server(
    loop: asyncio.AbstractEventLoop, audit: Audit, policy: Policy
) -> Iterator[QueryFlightServer]:
    server = start(loop, audit, policy)
    yield server
    server.shutdown()


def client(server: QueryFlightServer) -> flight.FlightClient:
    return flight.FlightClient(f"grpc+tcp://127.0.0.1:{server.port}")


def as_party(party: str) -> flight.FlightCallOptions:
    token = issue_token(SETTINGS, party, "acme", [])
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


ALICE = as_party("alice")
COUNT = qpb.Aggregate(function=qpb.AGGREGATE_FUNCTION_COUNT, alias="c")


def command(
    limit: int = 100, dataset_id: str = "lyon.bikes", purpose: str = "mobility", **fields: Any
) -> Any:
    request = qpb.QueryRequest(dataset_id=dataset_id, purpose=purpose, limit=limit, **fields)
    return flight.FlightDescriptor.for_command(request.SerializeToString())


def test_a_query_is_answered_once_and_audited(server: QueryFlightServer, audit: Audit) -> None:
    c = client(server)
    info = c.get_flight_info(command(2500), ALICE)
    assert info.schema == pa.schema([("n", pa.int64()), ("label", pa.string())])
    assert audit.records == []  # prepared, not yet run
    ticket = info.endpoints[0].ticket
    table = c.do_get(ticket, ALICE).read_all()
    assert table.num_rows == 2500
    assert table.column("n").to_pylist()[-1] == 2499
    with pytest.raises(pa.ArrowKeyError, match=TICKET_GONE):
        c.do_get(ticket, ALICE).read_all()
    assert audit.outcomes(1) == ["ok"]
    assert (audit.records[0].rows, audit.records[0].channel) == (2500, "flight")


def test_every_call_is_authorized_as_a_grpc_call(server: QueryFlightServer, policy: Policy) -> None:
    c = client(server)
    c.do_get(c.get_flight_info(command(), ALICE).endpoints[0].ticket, ALICE).read_all()
    list(c.list_flights(b"", ALICE))
    assert [(i["method"], i["service"], i["rpc"], i["resource"]) for i in policy.inputs] == [
        (
            "/arrow.flight.protocol.FlightService/GetFlightInfo",
            "arrow.flight.protocol.FlightService",
            "GetFlightInfo",
            dataset_resource("lyon.bikes"),
        ),
        (
            "/arrow.flight.protocol.FlightService/DoGet",
            "arrow.flight.protocol.FlightService",
            "DoGet",
            dataset_resource("lyon.bikes"),
        ),
        (
            "/arrow.flight.protocol.FlightService/ListFlights",
            "arrow.flight.protocol.FlightService",
            "ListFlights",
            {},
        ),
    ]
    assert policy.inputs[0]["subject"] == {"party": "alice", "org": "acme", "roles": []}


def test_the_schema_is_had_without_running_the_query(
    server: QueryFlightServer, audit: Audit
) -> None:
    c = client(server)
    # Five hundred million rows to group: the schema comes at once all the same.
    started = time.monotonic()
    grouped = command(500_000_000, group_by=["n"], aggregates=[COUNT])
    info = c.get_flight_info(grouped, ALICE)
    schema = c.get_schema(grouped, ALICE).schema
    assert time.monotonic() - started < 5.0
    assert info.schema == schema == pa.schema([("k", pa.int64()), ("c", pa.int64())])
    assert audit.outcomes(1) == ["ok"]  # GetSchema: answered, no rows
    assert audit.records[0].rows == 0


def test_callers_without_a_valid_token_are_unauthenticated(server: QueryFlightServer) -> None:
    c = client(server)
    with pytest.raises(flight.FlightUnauthenticatedError, match="missing authorization"):
        c.get_flight_info(command())
    bad = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer nope")])
    with pytest.raises(flight.FlightUnauthenticatedError, match="malformed token"):
        list(c.list_flights(b"", bad))


def test_a_call_tdg_rpc_denies_is_unauthorized_with_its_reasons(
    server: QueryFlightServer, audit: Audit
) -> None:
    with pytest.raises(
        flight.FlightUnauthorizedError,
        match="permission denied: party mallory is suspended; second reason",
    ):
        client(server).get_flight_info(command(), as_party("mallory"))
    assert audit.records == []  # refused before any query was prepared


def test_a_query_tdg_read_denies_is_unauthorized_and_audited(
    server: QueryFlightServer, audit: Audit
) -> None:
    with pytest.raises(flight.FlightUnauthorizedError, match="no agreement covers"):
        client(server).get_flight_info(command(dataset_id="x.denied"), ALICE)
    assert audit.outcomes(1) == ["denied"]


def test_bad_descriptors_are_invalid_arguments(server: QueryFlightServer) -> None:
    c = client(server)
    with pytest.raises(pa.ArrowInvalid, match="must be a command"):
        c.get_flight_info(flight.FlightDescriptor.for_path("lyon.bikes"), ALICE)
    with pytest.raises(pa.ArrowInvalid, match=r"is not a serialized tdg\.query\.v1\.QueryRequest"):
        c.get_schema(flight.FlightDescriptor.for_command(b"SELECT * FROM bikes"), ALICE)


def test_a_ticket_is_good_for_its_party_only(server: QueryFlightServer, audit: Audit) -> None:
    c = client(server)
    ticket = c.get_flight_info(command(10), ALICE).endpoints[0].ticket
    with pytest.raises(flight.FlightUnauthorizedError, match="issued to another party"):
        c.do_get(ticket, as_party("bob")).read_all()
    assert c.do_get(ticket, ALICE).read_all().num_rows == 10
    assert audit.outcomes(1) == ["ok"]


def test_a_limit_reached_mid_stream_is_resource_exhausted(
    loop: asyncio.AbstractEventLoop, audit: Audit, policy: Policy
) -> None:
    server = start(loop, audit, policy, max_rows=1500)
    try:
        c = client(server)
        ticket = c.get_flight_info(command(5000), ALICE).endpoints[0].ticket
        with pytest.raises(flight.FlightServerError, match="RESOURCE_EXHAUSTED: the result has"):
            c.do_get(ticket, ALICE).read_all()
        assert audit.outcomes(1) == ["limit_exceeded"]
        assert audit.records[0].rows == 1000
    finally:
        server.shutdown()


def test_a_ticket_never_fetched_is_audited_when_it_expires(
    loop: asyncio.AbstractEventLoop, audit: Audit, policy: Policy
) -> None:
    server = start(loop, audit, policy, ttl_s=0.2)
    try:
        c = client(server)
        c.get_flight_info(command(), ALICE)
        assert audit.outcomes(1) == ["cancelled"]
        assert audit.records[0].error == "the ticket expired before DoGet"
        late = c.get_flight_info(command(), ALICE).endpoints[0].ticket
        time.sleep(0.3)
        with pytest.raises(pa.ArrowKeyError, match=TICKET_GONE):
            c.do_get(late, ALICE).read_all()
        assert audit.outcomes(2) == ["cancelled", "cancelled"]
    finally:
        server.shutdown()


def test_tickets_still_held_at_shutdown_are_audited(
    loop: asyncio.AbstractEventLoop, audit: Audit, policy: Policy
) -> None:
    server = start(loop, audit, policy)
    client(server).get_flight_info(command(), ALICE)
    server.shutdown()
    assert audit.outcomes(1) == ["cancelled"]


def test_a_caller_that_stops_reading_cancels_its_query(
    server: QueryFlightServer, audit: Audit
) -> None:
    c = client(server)
    ticket = c.get_flight_info(command(50_000_000), ALICE).endpoints[0].ticket
    reader = c.do_get(ticket, ALICE)
    assert reader.read_chunk().data.num_rows == 1000
    reader.cancel()
    c.close()
    assert audit.outcomes(1, timeout=30.0) == ["cancelled"]
    assert 1000 <= audit.records[0].rows < 50_000_000


def test_a_caller_that_leaves_an_endless_query_stops_duckdb(
    server: QueryFlightServer, audit: Audit
) -> None:
    c = client(server)
    ticket = c.get_flight_info(command(1_000_000_000, purpose="endless"), ALICE).endpoints[0].ticket
    reader = c.do_get(ticket, ALICE)
    assert reader.read_chunk().data.num_rows == 1000
    reader.cancel()
    assert audit.outcomes(1, timeout=30.0) == ["cancelled"]
    assert audit.records[0].rows < 10_000_000


def test_queries_running_at_shutdown_end_unavailable_and_audited(
    loop: asyncio.AbstractEventLoop, audit: Audit, policy: Policy
) -> None:
    server = start(loop, audit, policy)
    c = client(server)
    ticket = c.get_flight_info(command(1_000_000_000, purpose="endless"), ALICE).endpoints[0].ticket
    reader = c.do_get(ticket, ALICE)
    reader.read_chunk()
    stopping = threading.Thread(target=server.shutdown)
    stopping.start()
    with pytest.raises(flight.FlightUnavailableError, match="the query service is stopping"):
        reader.read_all()
    stopping.join(30.0)
    assert not stopping.is_alive()
    assert audit.outcomes(1) == ["cancelled"]
    assert audit.records[0].error == "the query service stopped while the query ran"


def test_list_flights_names_the_readable_datasets(server: QueryFlightServer) -> None:
    flights = list(client(server).list_flights(b"mobility", ALICE))
    assert [json.loads(f.app_metadata) for f in flights] == [
        {
            "dataset_id": "lyon.bikes",
            "title": "Bike counters",
            "purposes": ["mobility", "research"],
        },
        {"dataset_id": "lyon.parking", "title": "Parking", "purposes": ["research"]},
    ]
    requests = [qpb.QueryRequest.FromString(f.descriptor.command) for f in flights]
    assert [(r.dataset_id, r.purpose) for r in requests] == [
        ("lyon.bikes", "mobility"),
        ("lyon.parking", "research"),
    ]


# A fault of the service: INTERNAL, its text masked, audited once


def masked(message: str, record: qpb.AuditRecord) -> bool:
    told = f"internal error, query id {record.query_id} (see the query service's log)"
    return message.startswith(told) and "secret" not in message and record.error == told


@pytest.mark.parametrize("purpose", ["broken", "breaks-mid-stream"])
def test_a_fault_of_the_service_is_internal_over_flight_masked_and_audited_once(
    server: QueryFlightServer, audit: Audit, purpose: str
) -> None:
    c = client(server)
    with pytest.raises(flight.FlightInternalError) as caught:
        info = c.get_flight_info(command(5000, purpose=purpose), ALICE)
        c.do_get(info.endpoints[0].ticket, ALICE).read_all()
    assert audit.outcomes(1) == ["failed"]
    assert masked(str(caught.value), audit.records[0]), str(caught.value)


@pytest.fixture
async def grpc_address(audit: Audit) -> AsyncIterator[str]:
    """The gRPC QueryService, with every tdg interceptor, on the same engine."""
    servicer = QueryServicer(range_engine(audit), cast(Any, Datasets()), cast(Any, None))
    service = GrpcService(SERVICE_NAME, partial(register, servicer), lambda rpc, request: {})
    settings = ServiceSettings(auth_hs256_secret=SETTINGS.auth_hs256_secret, grpc_port=0)
    server, _, port = build_server(
        settings, [service], TokenVerifier(SETTINGS), cast(Any, Policy())
    )
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def grpc_query(address: str, purpose: str) -> list[qpb.QueryResponse]:
    token = issue_token(SETTINGS, "alice", "acme", [])
    request = qpb.QueryRequest(dataset_id="lyon.bikes", purpose=purpose, limit=2500)
    async with grpc.aio.insecure_channel(address) as channel:
        call = query_pb2_grpc.QueryServiceStub(channel).Query(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=30
        )
        return [response async for response in call]


async def test_a_grpc_query_is_answered_and_audited_once(grpc_address: str, audit: Audit) -> None:
    responses = await grpc_query(grpc_address, "mobility")
    assert responses[-1].summary.rows == 2500
    assert await asyncio.to_thread(audit.outcomes, 1) == ["ok"]
    assert (audit.records[0].query_id, audit.records[0].channel) == (
        responses[0].header.query_id,
        "grpc",
    )


@pytest.mark.parametrize("purpose", ["broken", "breaks-mid-stream"])
async def test_a_fault_of_the_service_is_internal_over_grpc_masked_and_audited_once(
    grpc_address: str, audit: Audit, purpose: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await grpc_query(grpc_address, purpose)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert await asyncio.to_thread(audit.outcomes, 1) == ["failed"]
    assert masked(caught.value.details() or "", audit.records[0]), caught.value.details()


def test_a_dependency_failing_is_unavailable_with_its_cause_and_audited_once(
    server: QueryFlightServer, audit: Audit
) -> None:
    with pytest.raises(flight.FlightUnavailableError, match="the Iceberg catalog is unreachable"):
        client(server).get_flight_info(command(purpose="catalog-down"), ALICE)
    assert audit.outcomes(1) == ["failed"]
    assert audit.records[0].error == (
        "the query could not be planned: the Iceberg catalog is unreachable"
    )


async def test_an_execution_ends_once_however_often_it_is_closed(audit: Audit) -> None:
    principal = Principal("alice", "acme", ())
    asked = Asked(qpb.QueryRequest(dataset_id="lyon.bikes", purpose="mobility", limit=10))
    with Execution(range_engine(audit), principal, asked, "grpc") as execution:
        await execution.prepare()
        execution.open()
        execution.close(Cancelled("the caller stopped reading"))
        execution.close(None)
        with pytest.raises(Cancelled):
            execution.next_batch()
    assert [(r.outcome, r.error) for r in audit.records] == [
        ("cancelled", "the caller stopped reading")
    ]
