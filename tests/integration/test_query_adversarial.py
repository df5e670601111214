"""Requests an attacker would send to the query service. Each gets a clear INVALID_ARGUMENT (the
field named), NOT_FOUND, UNAUTHENTICATED or PERMISSION_DENIED: never a row the caller should not
see, never a crash (the next normal query is answered as before)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import jwt
import pyarrow as pa
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from pyarrow import flight
from tdg.consent.v1 import consent_pb2 as pb
from tdg.query.v1 import query_pb2 as qpb
from tdg.query.v1 import query_pb2_grpc
from tdg_core.service import Service
from tdg_core.testing import KafkaBroker
from tdg_ingest.settings import IngestSettings
from tdg_ingest.warehouse import Warehouse

from tests.integration.fixtures.callers import CallerFactory, ConsentCaller, QueryCaller
from tests.integration.fixtures.tokens import TokenMaker
from tests.integration.helpers import granted_application, published
from tests.integration.ingest_helpers import eventually, produce, settled
from tests.integration.query_helpers import read_batches

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"
PURPOSE = "mobility-planning"
K = 5  # the aggregate-only agreement's minimum group size
TERRITORY = "69123"
COMMUNES = ("69123", "69266", "69381")
Code = grpc.StatusCode


def session(i: int) -> dict[str, Any]:
    """The i-th charging session. Charging point CP-BUSY is used by 20 people (200 sessions),
    CP-FEW by 3 (30 sessions), CP-LONE by one person only (10 sessions)."""
    if i < 200:
        point, user = "CP-BUSY", f"u-{i % 20}"
    elif i < 230:
        point, user = "CP-FEW", f"u-{100 + i % 3}"
    else:
        point, user = "CP-LONE", "u-200"
    return {
        "session_id": f"S-{i:05d}",
        "ref_ev_charging_station": "ST-1",
        "charging_point_id": point,
        "socket_type": "Type2",
        "session_start": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        "session_end": None,
        "energy_kwh": f"{i % 50}.500",
        "max_power_kw": 22.0,
        "user_id": user,
        "commune_code": COMMUNES[i % 3],
    }


ROWS = 240
IN_TERRITORY = sum(1 for i in range(ROWS) if COMMUNES[i % 3] == TERRITORY)


@dataclass
class Party:
    """A caller of the query service: its token, for gRPC and Arrow Flight."""

    stub: query_pb2_grpc.QueryServiceStub
    flight_location: str
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass
class World:
    dataset_id: str
    household_id: str  # household-energy-meters: published, no rows (for date/int32/bool types)
    officer: Party  # the publisher: everything clear
    reader: Party  # an agreement with masks and a territory filter
    aggregator: Party  # an aggregate-only agreement (k = K), the subject column clear


async def agreement(
    consent_caller: CallerFactory[ConsentCaller], dataset_id: str, conditions: pb.Conditions
) -> tuple[str, str, str]:
    """A fresh partner's application with an active read agreement: (org, app, agreement id)."""
    return await granted_application(consent_caller, dataset_id, PURPOSE, conditions, LYON)


def request(dataset_id: str, **fields: Any) -> qpb.QueryRequest:
    fields.setdefault("purpose", PURPOSE)
    return qpb.QueryRequest(dataset_id=dataset_id, **fields)


async def answer(party: Party, req: qpb.QueryRequest) -> pa.Table:
    responses = [r async for r in party.stub.Query(req, metadata=party.md, timeout=30)]
    return read_batches(responses)


async def refusal(
    party: Party, req: qpb.QueryRequest, md: Sequence[tuple[str, str]] | None = None
) -> grpc.aio.AioRpcError:
    """The error the query ends with; fails the test if a single row came back first."""
    got: list[qpb.QueryResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for response in party.stub.Query(
            req, metadata=party.md if md is None else md, timeout=30
        ):
            got.append(response)
    assert not [r for r in got if r.WhichOneof("part") == "arrow_batch"], "rows came back"
    error: grpc.aio.AioRpcError = caught.value
    return error


def eq(column: str, **literal: Any) -> qpb.Expression:
    return qpb.Expression(
        comparison=qpb.Comparison(
            column=column, op=qpb.COMPARISON_OPERATOR_EQ, value=qpb.Literal(**literal)
        )
    )


def junction(kind: str, operands: Sequence[qpb.Expression]) -> qpb.Expression:
    """AND or OR (`and`/`or` are Python keywords: no keyword arguments for them)."""
    expr = qpb.Expression()
    getattr(expr, kind).SetInParent()
    getattr(expr, kind).operands.extend(operands)
    return expr


def negated(operand: qpb.Expression) -> qpb.Expression:
    expr = qpb.Expression()
    getattr(expr, "not").CopyFrom(operand)
    return expr


def ts(value: str) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(datetime.fromisoformat(value).replace(tzinfo=UTC))
    return t


def agg(
    function: qpb.AggregateFunction.ValueType, column: str = "", alias: str = ""
) -> qpb.Aggregate:
    return qpb.Aggregate(function=function, column=column, alias=alias)


COUNT = qpb.AGGREGATE_FUNCTION_COUNT


@pytest.fixture(scope="module")
async def world(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
    make_token: TokenMaker,
) -> World:
    publisher = query_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(publisher, "ev-charging-sessions")
    household = await published(publisher, "household-energy-meters")
    await produce(
        kafka.bootstrap,
        dataset.id,
        [json.dumps(session(i)).encode() for i in range(ROWS)],
        LYON,
    )
    rows, letters = await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, ROWS)
    assert rows.num_rows == ROWS and not letters
    reader_org, reader_app, _ = await agreement(
        consent_caller,
        dataset.id,
        pb.Conditions(
            masks=[
                pb.ColumnMask(column="user_id", method=pb.MASK_METHOD_HASH),
                pb.ColumnMask(
                    column="session_start",
                    method=pb.MASK_METHOD_GENERALISE,
                    generalisation=pb.Generalisation(truncate_to="day"),
                ),
                pb.ColumnMask(
                    column="commune_code",
                    method=pb.MASK_METHOD_GENERALISE,
                    generalisation=pb.Generalisation(commune_to_epci=True),
                ),
                pb.ColumnMask(column="max_power_kw", method=pb.MASK_METHOD_NULL),
            ],
            territory_filter=pb.TerritoryFilter(column="commune_code", codes=[TERRITORY]),
        ),
    )
    aggregator_org, aggregator_app, _ = await agreement(
        consent_caller,
        dataset.id,
        pb.Conditions(
            masks=[pb.ColumnMask(column="user_id", method=pb.MASK_METHOD_CLEAR)],
            aggregate_only=True,
            min_group_size=K,
        ),
    )
    location = publisher.flight_location
    officer = Party(publisher.stub, location, publisher.token)
    reader = Party(publisher.stub, location, make_token(reader_app, reader_org, ()))
    aggregator = Party(publisher.stub, location, make_token(aggregator_app, aggregator_org, ()))

    async def granted() -> bool:
        try:
            await answer(reader, request(dataset.id, columns=["session_id"]))
            await answer(aggregator, request(dataset.id, aggregates=[agg(COUNT)]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != Code.PERMISSION_DENIED:
                raise
            return False
        return True

    await eventually(granted, 10, "the agreements reach OPA")
    return World(dataset.id, household.id, officer, reader, aggregator)


async def still_serving(world: World) -> None:
    """The next normal query: the reader's rows, masked as agreed."""
    table = await answer(
        world.reader,
        request(
            world.dataset_id,
            columns=["session_id", "user_id", "session_start", "commune_code", "max_power_kw"],
        ),
    )
    assert table.num_rows == IN_TERRITORY
    assert all(len(h) == 64 and not h.startswith("u-") for h in table["user_id"].to_pylist())
    assert set(table["commune_code"].to_pylist()) == {"200046977"}
    starts = table["session_start"].to_pylist()
    assert all((s.hour, s.minute) == (0, 0) for s in starts)
    assert table["max_power_kw"].null_count == IN_TERRITORY


# --- inferring masked values ----------------------------------------------------------------


MASKED = ("user_id", "session_start", "commune_code", "max_power_kw")
MASKED_USES: dict[str, dict[str, Any]] = {
    "filter on a hashed column": dict(filter=eq("user_id", string_value="u-1")),
    "IN on a generalised commune": dict(
        filter=qpb.Expression(
            in_list=qpb.InList(
                column="commune_code",
                values=[qpb.Literal(string_value=c) for c in COMMUNES],
            )
        )
    ),
    "BETWEEN on a truncated timestamp": dict(
        filter=qpb.Expression(
            between=qpb.Between(
                column="session_start",
                low=qpb.Literal(timestamp_value=ts("2026-11-02T01:00:00")),
                high=qpb.Literal(timestamp_value=ts("2026-11-02T01:59:00")),
            )
        )
    ),
    "time range on a truncated event time": dict(
        time_range=qpb.TimeRange(start=ts("2026-11-02T01:00:00"), end=ts("2026-11-02T02:00:00"))
    ),
    "IS NULL on a nulled column": dict(
        filter=qpb.Expression(is_null=qpb.IsNull(column="max_power_kw"))
    ),
    "masked column deep in NOT/OR": dict(
        filter=junction(
            "or",
            [eq("session_id", string_value="S-00000"), negated(eq("user_id", string_value="u-1"))],
        )
    ),
    "order by a hashed column": dict(
        columns=["session_id", "user_id"], order_by=[qpb.OrderBy(column="user_id")]
    ),
    "order by a generalised column": dict(
        columns=["session_id", "commune_code"], order_by=[qpb.OrderBy(column="commune_code")]
    ),
    "count_distinct of a hashed column": dict(
        aggregates=[agg(qpb.AGGREGATE_FUNCTION_COUNT_DISTINCT, "user_id")]
    ),
    "min of a truncated timestamp": dict(
        aggregates=[agg(qpb.AGGREGATE_FUNCTION_MIN, "session_start")]
    ),
    "max of a generalised commune": dict(
        aggregates=[agg(qpb.AGGREGATE_FUNCTION_MAX, "commune_code")]
    ),
    "group by the (hashed) subject column": dict(group_by=["user_id"], aggregates=[agg(COUNT)]),
}


@pytest.mark.parametrize("case", list(MASKED_USES))
async def test_masked_columns_cannot_be_used_to_infer_values(world: World, case: str) -> None:
    error = await refusal(world.reader, request(world.dataset_id, **MASKED_USES[case]))
    assert error.code() == Code.PERMISSION_DENIED, error.details()
    details = error.details() or ""
    assert "must be clear" in details, details
    assert any(f"column '{name}'" in details for name in MASKED), details
    await still_serving(world)


async def test_row_filters_cannot_be_widened_by_the_callers_filter(world: World) -> None:
    """A tautology, a NOT, an OR: the territory filter is applied first, on the raw values."""
    tautology = junction(
        "or",
        [
            eq("session_id", string_value="S-00001"),
            negated(eq("session_id", string_value="S-00001")),
            qpb.Expression(is_null=qpb.IsNull(column="session_id")),
        ],
    )
    table = await answer(world.reader, request(world.dataset_id, filter=tautology))
    assert table.num_rows == IN_TERRITORY
    # S-00001 is in another commune: as if it did not exist.
    outside = await answer(
        world.reader, request(world.dataset_id, filter=eq("session_id", string_value="S-00001"))
    )
    assert outside.num_rows == 0


# --- aggregate-only: small groups are suppressed ------------------------------------------


def in_users(users: Sequence[str]) -> qpb.Expression:
    return qpb.Expression(
        in_list=qpb.InList(column="user_id", values=[qpb.Literal(string_value=u) for u in users])
    )


async def test_aggregate_only_suppresses_groups_smaller_than_k(world: World) -> None:
    count = [agg(COUNT, alias="n")]
    by_point = await answer(
        world.aggregator,
        request(world.dataset_id, group_by=["charging_point_id"], aggregates=count),
    )
    # CP-FEW has 30 sessions but 3 people; CP-LONE 10 sessions of one person: both suppressed
    # (groups are counted in data subjects, not rows).
    assert by_point.to_pylist() == [{"charging_point_id": "CP-BUSY", "n": 200}]
    # Groups that would each be one person.
    for isolating in (["user_id"], ["session_id"], ["charging_point_id", "user_id"]):
        table = await answer(
            world.aggregator, request(world.dataset_id, group_by=isolating, aggregates=count)
        )
        assert table.num_rows == 0, isolating
    # A filter down to one person, or to fewer than K: the one (global) group is suppressed.
    one = await answer(
        world.aggregator,
        request(world.dataset_id, filter=eq("user_id", string_value="u-1"), aggregates=count),
    )
    assert one.num_rows == 0
    few = [f"u-{i}" for i in range(K - 1)]
    for users in (few, ["u-200"], ["u-100", "u-101", "u-102"]):
        table = await answer(
            world.aggregator,
            request(
                world.dataset_id,
                filter=in_users(users),
                group_by=["charging_point_id"],
                aggregates=count,
            ),
        )
        assert table.num_rows == 0, users
    enough = await answer(
        world.aggregator,
        request(world.dataset_id, filter=in_users([*few, "u-4"]), aggregates=count),
    )
    assert enough.to_pylist() == [{"n": 10 * K}]
    # Rows are never served under aggregate-only access.
    error = await refusal(world.aggregator, request(world.dataset_id, columns=["session_id"]))
    assert error.code() == Code.PERMISSION_DENIED
    assert "aggregate-only" in (error.details() or "")
    await still_serving(world)


# --- malformed and hostile requests ---------------------------------------------------------


def nested(kind: str, depth: int) -> qpb.Expression:
    expr = eq("session_id", string_value="S-00000")
    for _ in range(depth):
        expr = negated(expr) if kind == "not" else junction(kind, [expr])
    return expr


def values(n: int, column: str = "session_id") -> qpb.Expression:
    return qpb.Expression(
        in_list=qpb.InList(
            column=column, values=[qpb.Literal(string_value=f"S-{i}") for i in range(n)]
        )
    )


def comparison(
    column: str,
    op: qpb.ComparisonOperator.ValueType = qpb.COMPARISON_OPERATOR_EQ,
    **literal: Any,
) -> qpb.Expression:
    return qpb.Expression(
        comparison=qpb.Comparison(column=column, op=op, value=qpb.Literal(**literal))
    )


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    # name: (request fields, the field the details must name)
    "10,001 IN values": (dict(filter=values(10_001)), "filter.in_list.values"),
    "1,001 IN values": (dict(filter=values(1_001)), "filter.in_list.values"),
    "NOT nested 40 deep": (dict(filter=nested("not", 40)), "filter.not.not"),
    "AND nested 40 deep": (dict(filter=nested("and", 40)), "filter.and.operands[0]"),
    "OR nested 40 deep": (dict(filter=nested("or", 40)), "filter.or.operands[0]"),
    "1,001 expression nodes": (
        dict(filter=junction("or", [eq("session_id", string_value=str(i)) for i in range(1_001)])),
        "filter",
    ),
    "10,001 literals": (
        dict(filter=junction("and", [values(1_000)] * 11)),
        "filter",
    ),
    "a 100 kB string": (dict(filter=eq("session_id", string_value="x" * 100_000)), "filter"),
    "unknown column": (dict(columns=["session_id", "password"]), "columns[1]"),
    "unknown column in the filter": (
        dict(filter=eq("password", string_value="x")),
        "filter.comparison.column",
    ),
    "unknown column deep in the filter": (
        dict(
            filter=junction(
                "and",
                [
                    eq("session_id", string_value="x"),
                    negated(qpb.Expression(is_null=qpb.IsNull(column="secret"))),
                ],
            )
        ),
        "filter.and.operands[1].not.is_null.column",
    ),
    "column name with quotes": (dict(columns=['session_id" FROM t; --']), "columns[0]"),
    "column name with a quote in the filter": (
        dict(filter=eq("session_id' OR '1'='1", string_value="x")),
        "filter.comparison.column",
    ),
    "unknown column in group_by": (
        dict(group_by=["nope"], aggregates=[agg(COUNT)]),
        "group_by[0]",
    ),
    "unknown column in order_by": (
        dict(order_by=[qpb.OrderBy(column="nope")]),
        "order_by[0].column",
    ),
    "order_by a column not returned": (
        dict(columns=["session_id"], order_by=[qpb.OrderBy(column="energy_kwh")]),
        "order_by[0].column",
    ),
    "unknown column in aggregates": (
        dict(aggregates=[agg(qpb.AGGREGATE_FUNCTION_SUM, "nope")]),
        "aggregates[0].column",
    ),
    "alias with SQL": (
        dict(aggregates=[agg(COUNT, alias='n" FROM base; DROP TABLE x; --')]),
        "aggregates[0].alias",
    ),
    "aggregate without a function": (
        dict(aggregates=[agg(qpb.AGGREGATE_FUNCTION_UNSPECIFIED, "energy_kwh")]),
        "function",
    ),
    "sum of a string": (
        dict(aggregates=[agg(qpb.AGGREGATE_FUNCTION_SUM, "session_id")]),
        "aggregates[0].column",
    ),
    "a column listed twice": (dict(columns=["session_id", "session_id"]), "columns[1]"),
    "group_by without aggregates": (dict(group_by=["charging_point_id"]), "group_by"),
    "comparison without operator": (
        dict(
            filter=comparison("session_id", qpb.COMPARISON_OPERATOR_UNSPECIFIED, string_value="x")
        ),
        "filter.comparison.op",
    ),
    "comparison without value": (
        dict(
            filter=qpb.Expression(
                comparison=qpb.Comparison(column="session_id", op=qpb.COMPARISON_OPERATOR_EQ)
            )
        ),
        "filter.comparison.value",
    ),
    "an empty expression": (dict(filter=qpb.Expression()), "filter"),
    "an empty AND": (dict(filter=junction("and", [])), "filter.and"),
    "an int for a string": (dict(filter=eq("session_id", int_value=7)), "filter.comparison.value"),
    "a string for a decimal": (
        dict(filter=eq("energy_kwh", string_value="1 OR 1=1")),
        "filter.comparison.value",
    ),
    "bad decimal text": (
        dict(filter=eq("energy_kwh", decimal_value="1; DROP TABLE x")),
        "filter.comparison.value",
    ),
    "NaN decimal": (dict(filter=eq("energy_kwh", decimal_value="NaN")), "comparison.value"),
    "NaN double": (dict(filter=eq("max_power_kw", double_value=float("nan"))), "value"),
    "infinite double": (dict(filter=eq("max_power_kw", double_value=float("inf"))), "value"),
    "an int for a timestamp": (
        dict(filter=eq("session_start", int_value=1_700_000_000)),
        "filter.comparison.value",
    ),
    "a string for a timestamp": (
        dict(filter=eq("session_start", string_value="2026-11-01")),
        "filter.comparison.value",
    ),
    "time range ending before it starts": (
        dict(time_range=qpb.TimeRange(start=ts("2026-11-02T00:00:00"), end=ts("2026-11-01"))),
        "time_range.end",
    ),
    "limit 0": (dict(limit=0), "limit"),
    "negative limit": (dict(limit=-5), "limit"),
    "most negative limit": (dict(limit=-(2**63)), "limit"),
    "negative snapshot": (dict(snapshot_id=-1), "snapshot_id"),
    "empty purpose": (dict(purpose=""), "purpose"),
}


# Timestamps that protobuf's JSON mapping cannot print: refused, and audited all the same.
INVALID_TIMESTAMPS: dict[str, tuple[dict[str, Any], str]] = {
    "a timestamp beyond year 9999": (
        dict(filter=eq("session_start", timestamp_value=Timestamp(seconds=2**40))),
        "filter.comparison.value",
    ),
    "a timestamp with nanos out of range": (
        dict(filter=eq("session_start", timestamp_value=Timestamp(seconds=0, nanos=2 * 10**9))),
        "filter.comparison.value",
    ),
    "a timestamp with negative nanos": (
        dict(filter=eq("session_start", timestamp_value=Timestamp(seconds=0, nanos=-1))),
        "filter.comparison.value",
    ),
    "a time range starting before year 1": (
        dict(time_range=qpb.TimeRange(start=Timestamp(seconds=-(2**40)))),
        "time_range.start",
    ),
    "as of a time beyond year 9999": (
        dict(as_of_time=Timestamp(seconds=2**40)),
        "as_of_time",
    ),
}


@pytest.mark.parametrize(
    "case",
    [
        *INVALID,
        *INVALID_TIMESTAMPS,
    ],
)
async def test_malformed_requests_are_invalid_arguments_naming_the_field(
    world: World, case: str
) -> None:
    fields, field = {**INVALID, **INVALID_TIMESTAMPS}[case]
    for party in (world.reader, world.officer):
        error = await refusal(party, request(world.dataset_id, **fields))
        assert error.code() == Code.INVALID_ARGUMENT, (case, error.code(), error.details())
        assert field in (error.details() or ""), error.details()
    await still_serving(world)


HOUSEHOLD_INVALID: dict[str, tuple[qpb.Expression, str]] = {
    "bad date text": (eq("date_observed", date_value="2026-02-30"), "filter.comparison.value"),
    "date as free text": (eq("date_observed", date_value="'; DROP --"), "comparison.value"),
    "a timestamp for a date": (
        eq("date_observed", timestamp_value=ts("2026-11-01T00:00:00")),
        "filter.comparison.value",
    ),
    "int32 overflow": (eq("subscribed_power_kva", int_value=2**31), "filter.comparison.value"),
    "a string for a bool": (eq("renovation_done", string_value="true"), "comparison.value"),
    "an int for a bool": (eq("renovation_done", int_value=1), "filter.comparison.value"),
}


@pytest.mark.parametrize("case", list(HOUSEHOLD_INVALID))
async def test_literals_must_fit_their_column_type(world: World, case: str) -> None:
    expr, field = HOUSEHOLD_INVALID[case]
    error = await refusal(world.reader, request(world.household_id, filter=expr))
    assert error.code() == Code.INVALID_ARGUMENT, (error.code(), error.details())
    assert field in (error.details() or ""), error.details()


@pytest.mark.parametrize(
    "dataset_id",
    ["../etc.passwd", "a.b/../../c", "metropole-lyon/../../etc/passwd", "", "x" * 10_000],
)
async def test_dataset_ids_that_are_not_ids_are_invalid(world: World, dataset_id: str) -> None:
    error = await refusal(world.reader, request(dataset_id))
    assert error.code() == Code.INVALID_ARGUMENT, (error.code(), error.details())
    assert "dataset_id" in (error.details() or "")
    await still_serving(world)


async def test_an_unknown_dataset_is_not_found(world: World) -> None:
    error = await refusal(world.reader, request(f"{LYON}.no-such-{uuid.uuid4().hex[:6]}"))
    assert error.code() == Code.NOT_FOUND, error.details()
    assert "is not in the catalog" in (error.details() or "")


async def test_an_unknown_purpose_is_refused_naming_it(world: World) -> None:
    error = await refusal(world.reader, request(world.dataset_id, purpose="world-domination"))
    assert error.code() == Code.PERMISSION_DENIED, error.details()
    assert "purpose 'world-domination' is not a known purpose" in (error.details() or "")


async def test_an_unknown_snapshot_is_not_found(world: World) -> None:
    error = await refusal(world.officer, request(world.dataset_id, snapshot_id=2**62))
    assert error.code() == Code.NOT_FOUND, error.details()
    error = await refusal(
        world.officer, request(world.dataset_id, as_of_time=ts("2000-01-01T00:00:00"))
    )
    assert error.code() == Code.NOT_FOUND, error.details()


INJECTIONS = [
    "x'); DROP TABLE base; --",
    "' OR '1'='1",
    '" OR "1"="1',
    "S-00000' --",
    "$1",
    "\\'; SELECT * FROM read_parquet('/etc/passwd'); --",
    "\x00",
    "S-00000\x00' OR 1=1",
    "🙂" * 1000,
]


async def test_sql_in_literals_is_only_a_value(world: World) -> None:
    for text in INJECTIONS:
        for expr in (
            eq("session_id", string_value=text),
            qpb.Expression(
                in_list=qpb.InList(
                    column="session_id",
                    values=[qpb.Literal(string_value=text), qpb.Literal(string_value=text * 2)],
                )
            ),
            qpb.Expression(
                between=qpb.Between(
                    column="session_id",
                    low=qpb.Literal(string_value=text),
                    high=qpb.Literal(string_value=text),
                )
            ),
        ):
            table = await answer(world.reader, request(world.dataset_id, filter=expr))
            assert table.num_rows == 0, text
    # NOT of one: every row the reader may see, and no more.
    table = await answer(
        world.reader,
        request(
            world.dataset_id,
            filter=negated(eq("session_id", string_value=INJECTIONS[0])),
        ),
    )
    assert table.num_rows == IN_TERRITORY
    await still_serving(world)


async def test_a_request_near_the_message_limit_is_refused_cleanly(world: World) -> None:
    limit = 4 * 1024 * 1024
    # Over the server's limit: gRPC itself refuses it.
    big = qpb.Expression(
        in_list=qpb.InList(
            column="session_id",
            values=[qpb.Literal(string_value="x" * 60_000)] * 80,
        )
    )
    req = request(world.dataset_id, filter=big)
    assert req.ByteSize() > limit
    error = await refusal(world.reader, req)
    assert error.code() in (Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT), error.details()
    # Just under it: one huge string (refused by the service, naming the field)…
    req = request(world.dataset_id, filter=eq("session_id", string_value="y" * (limit - 1024)))
    assert limit - 4096 < req.ByteSize() < limit
    error = await refusal(world.reader, req)
    assert error.code() == Code.INVALID_ARGUMENT, error.details()
    assert "filter.comparison.value" in (error.details() or "")
    # …or many strings each within bounds: a valid query, which matches nothing.
    many = qpb.Expression(
        in_list=qpb.InList(
            column="session_id",
            values=[qpb.Literal(string_value=f"{i:04d}" + "z" * 60_000) for i in range(68)],
        )
    )
    req = request(world.dataset_id, filter=many)
    assert limit - 200_000 < req.ByteSize() < limit
    assert (await answer(world.reader, req)).num_rows == 0
    await still_serving(world)


# --- authentication ---------------------------------------------------------------------------


def forged_tokens(make_token: TokenMaker) -> dict[str, str]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "sub": "platform-ops",
        "org": "tdg-platform",
        "roles": ["platform-admin"],
    }
    claims |= {"iss": "tdg", "aud": "tdg", "iat": now - 5, "exp": now + 600}
    return {
        "another secret": make_token(
            "platform-ops", "tdg-platform", ("platform-admin",), key="not-the-secret" * 3
        ),
        "alg none": jwt.encode(claims, "", algorithm="none"),
        "expired": make_token("lyon-data-office", LYON, ("data-officer",), ttl_s=-60),
        "garbage": "not.a.jwt",
    }


async def test_no_token_or_a_forged_one_is_unauthenticated(
    world: World, make_token: TokenMaker
) -> None:
    req = request(world.dataset_id)
    mds: dict[str, Sequence[tuple[str, str]]] = {
        "no token": (),
        "empty bearer": (("authorization", "Bearer "),),
        "basic": (("authorization", "Basic dXNlcjpwYXNz"),),
    }
    for name, token in forged_tokens(make_token).items():
        mds[name] = (("authorization", f"Bearer {token}"),)
    for name, md in mds.items():
        error = await refusal(world.reader, req, md=md)
        assert error.code() == Code.UNAUTHENTICATED, (name, error.code(), error.details())
    await still_serving(world)


def flight_read(location: str, token: str | None, req: qpb.QueryRequest) -> pa.Table:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    options = flight.FlightCallOptions(headers=headers, timeout=30)
    with flight.connect(location) as client:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(req.SerializeToString()), options
        )
        return client.do_get(info.endpoints[0].ticket, options).read_all()


async def test_flight_refuses_missing_and_forged_tokens(
    world: World, make_token: TokenMaker
) -> None:
    req = request(world.dataset_id, columns=["session_id"])
    tokens: dict[str, str | None] = {"no token": None, **forged_tokens(make_token)}
    for token in tokens.values():
        with pytest.raises(flight.FlightUnauthenticatedError):
            await asyncio.to_thread(flight_read, world.reader.flight_location, token, req)
    with (
        flight.connect(world.reader.flight_location) as client,
        pytest.raises(flight.FlightUnauthenticatedError),
    ):
        await asyncio.to_thread(lambda: list(client.list_flights()))
    # The same query with the reader's own token: its rows, masked.
    table = await asyncio.to_thread(
        flight_read, world.reader.flight_location, world.reader.token, req
    )
    assert table.num_rows == IN_TERRITORY


async def test_flight_masked_filters_and_others_tickets_are_refused(world: World) -> None:
    location = world.reader.flight_location
    masked = request(world.dataset_id, filter=eq("user_id", string_value="u-1"))
    with pytest.raises(flight.FlightUnauthorizedError, match="must be clear"):
        await asyncio.to_thread(flight_read, location, world.reader.token, masked)
    with pytest.raises(pa.ArrowInvalid, match=r"filter\.in_list\.values"):
        await asyncio.to_thread(
            flight_read,
            location,
            world.reader.token,
            request(world.dataset_id, filter=values(10_001)),
        )

    def steal() -> None:
        """The officer's ticket, redeemed by the reader."""
        req = request(world.dataset_id, columns=["session_id", "user_id", "commune_code"])
        with flight.connect(location) as client:
            officer = flight.FlightCallOptions(
                headers=[(b"authorization", f"Bearer {world.officer.token}".encode())]
            )
            reader = flight.FlightCallOptions(
                headers=[(b"authorization", f"Bearer {world.reader.token}".encode())]
            )
            info = client.get_flight_info(
                flight.FlightDescriptor.for_command(req.SerializeToString()), officer
            )
            ticket = info.endpoints[0].ticket
            with pytest.raises(flight.FlightUnauthorizedError, match="another party"):
                client.do_get(ticket, reader).read_all()
            with pytest.raises(pa.ArrowKeyError, match="ticket unknown"):
                client.do_get(flight.Ticket(b"forged-" + ticket.ticket), reader).read_all()
            # The ticket is still its owner's, once.
            assert client.do_get(ticket, officer).read_all().num_rows == ROWS

    await asyncio.to_thread(steal)
    await still_serving(world)


GARBAGE = {
    "no protobuf": b"\xff\xff\xff\xff",
    "invalid UTF-8 in dataset_id": b"\x0a\x02\xff\xfe\x12\x11mobility-planning",
    "truncated": request("x.y", columns=["a" * 100]).SerializeToString()[:-20],
}


async def test_bytes_that_are_no_request_do_not_crash_the_service(
    world: World, query_channel: grpc.aio.Channel
) -> None:
    call = query_channel.unary_stream(
        "/tdg.query.v1.QueryService/Query",
        request_serializer=None,
        response_deserializer=qpb.QueryResponse.FromString,
    )
    for name, raw in GARBAGE.items():
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for response in call(raw, metadata=world.reader.md, timeout=10):
                got.append(response)
        assert not got, name
        # gRPC's own answer to a message it cannot parse, before any handler runs (grpcio
        # answers UNKNOWN "Unexpected DecodeError"): no handler, no OPA, no DuckDB.
        assert caught.value.code() in (Code.UNKNOWN, Code.INTERNAL, Code.INVALID_ARGUMENT), name
        assert "QueryRequest" in (caught.value.details() or ""), name

    def flight_garbage() -> None:
        options = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {world.reader.token}".encode())], timeout=30
        )
        with flight.connect(world.reader.flight_location) as client:
            with pytest.raises(pa.ArrowInvalid, match=r"descriptor\.cmd"):
                client.get_flight_info(
                    flight.FlightDescriptor.for_command(GARBAGE["no protobuf"]), options
                )
            with pytest.raises(pa.ArrowInvalid, match="descriptor"):
                client.get_flight_info(flight.FlightDescriptor.for_path("../etc/passwd"), options)
            with pytest.raises(pa.ArrowInvalid, match="criteria"):
                list(client.list_flights(b"\xff\xfe", options))

    await asyncio.to_thread(flight_garbage)
    await still_serving(world)
