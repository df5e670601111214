"""sql.build, run by DuckDB over real Parquet files: every treatment checked on the data returned.

The table is a small trip log of the Métropole de Lyon (and a few Paris rows): 200 trips of 40
data subjects over three communes, with a timestamp, a date, integers, floats with NULLs, a
decimal, a boolean and a list. Each test builds the query as the service does (`check_request`,
then `parse_decision` of an OPA-shaped result) and reads what DuckDB answers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.column_types import parse_type
from tdg_core.errors import PermissionDenied
from tdg_query import epci, sql
from tdg_query.decision import Decision, parse_decision
from tdg_query.model import Query
from tdg_query.request import check_request

Op: TypeAlias = qpb.ComparisonOperator.ValueType
Function: TypeAlias = qpb.AggregateFunction.ValueType

COLUMNS = {
    "trip_id": "string",
    "subject": "string",
    "commune": "string",
    "ts": "timestamp",
    "day": "date",
    "small": "int32",
    "big": "int64",
    "ratio": "float64",
    "amount": "decimal(10,2)",
    "flag": "bool",
    "tags": "list<string>",
}
SCHEMA = pa.schema([(n, parse_type(t)) for n, t in COLUMNS.items()])
DATASET = cpb.Dataset(
    id="lyon.trips",
    publisher="lyon",
    schema=cpb.Schema(
        columns=[cpb.Column(name=n, type=t, nullable=True) for n, t in COLUMNS.items()],
        event_time_column="ts",
        subject_column="subject",
    ),
)
ROWS = 200
START = datetime(2024, 2, 20, tzinfo=UTC)
LYON = "200046977"  # SIREN of the Métropole de Lyon
SALT = "c2f1-agreement-salt"


def commune_of(i: int) -> str:
    # 60% Lyon, 30% Villeurbanne, 10% Paris (not in the built-in EPCI reference).
    return "69123" if i % 10 < 6 else "69266" if i % 10 < 9 else "75056"


def make_rows() -> pa.Table:
    ts = [START + timedelta(hours=3 * i, minutes=17) for i in range(ROWS)]
    return pa.table(
        {
            "trip_id": [f"t{i:03d}" for i in range(ROWS)],
            "subject": [f"s{i % 40:02d}" for i in range(ROWS)],
            "commune": [commune_of(i) for i in range(ROWS)],
            "ts": ts,
            "day": [t.date() for t in ts],
            "small": [(i * 37) % 1000 for i in range(ROWS)],
            "big": [i * 1_000_003 for i in range(ROWS)],
            "ratio": [None if i % 13 == 0 else i * 1.5 + 0.25 for i in range(ROWS)],
            "amount": [
                (Decimal(i * 123 % 10000) / 100).quantize(Decimal("0.01")) for i in range(ROWS)
            ],
            "flag": [i % 2 == 0 for i in range(ROWS)],
            "tags": [["bike", f"zone{i % 3}"] for i in range(ROWS)],
        },
        schema=SCHEMA,
    )


TABLE = make_rows()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("warehouse") / "00000-trips.parquet"
    pq.write_table(TABLE, path)
    return str(path)


@pytest.fixture(scope="module")
def source(data_file: str) -> sql.Source:
    return sql.Source((data_file,), frozenset(COLUMNS), True)


@pytest.fixture(scope="module")
def database() -> Iterator[duckdb.DuckDBPyConnection]:
    # As the service opens it (server.open_database), UTC for every cursor.
    connection = duckdb.connect(":memory:")
    connection.execute("SET GLOBAL TimeZone = 'UTC'")
    epci.install(connection, epci.load_reference(None))
    yield connection
    connection.close()


def query(**fields: Any) -> Query:
    return check_request(
        qpb.QueryRequest(dataset_id="lyon.trips", purpose="mobility-planning", **fields), DATASET
    )


def decide(
    treatments: dict[str, dict[str, Any]] | None = None,
    row_filters: list[dict[str, Any]] | None = None,
    consent: bool = False,
    min_group_size: int = 0,
) -> Decision:
    """An OPA-shaped allow: every column clear unless `treatments` says otherwise."""
    columns: dict[str, Any] = {n: {"treatment": "clear"} for n in COLUMNS}
    columns.update(treatments or {})
    return parse_decision(
        {
            "allow": True,
            "reasons": [],
            "agreement_id": "agr-1",
            "columns": columns,
            "row_filters": row_filters or [],
            "consent": {
                "required": consent,
                "purpose": "mobility-planning" if consent else "",
                "subject_column": "subject" if consent else "",
            },
            "aggregate_only": min_group_size > 0,
            "min_group_size": min_group_size,
        }
    )


def run(
    database: duckdb.DuckDBPyConnection,
    q: Query,
    decision: Decision,
    source: sql.Source,
    consent: pa.Table | None = None,
    subject_column: str = "subject",
) -> pa.Table:
    statement = sql.build(
        q, decision, source, subject_column, sql.CONSENT_TABLE if consent is not None else None
    )
    cursor = database.cursor()
    try:
        if consent is not None:
            cursor.register(sql.CONSENT_TABLE, consent)
        reader = cursor.sql(statement.sql, params=statement.params).to_arrow_reader(64)
        return reader.read_all()
    finally:
        cursor.close()


def by_trip(table: pa.Table) -> pa.Table:
    return table.sort_by("trip_id")


def column(table: pa.Table, name: str) -> list[Any]:
    values: list[Any] = table.column(name).to_pylist()
    return values


def sha(value: str, salt: str = SALT) -> str:
    return hashlib.sha256((salt + value).encode()).hexdigest()


def ts_pb(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def lit(**value: Any) -> qpb.Literal:
    return qpb.Literal(**value)


def cmp(column: str, value: qpb.Literal, op: Op = qpb.COMPARISON_OPERATOR_EQ) -> qpb.Expression:
    return qpb.Expression(comparison=qpb.Comparison(column=column, op=op, value=value))


def or_(*operands: qpb.Expression) -> qpb.Expression:
    expr = qpb.Expression()
    getattr(expr, "or").CopyFrom(qpb.Junction(operands=list(operands)))
    return expr


def not_(operand: qpb.Expression) -> qpb.Expression:
    expr = qpb.Expression()
    getattr(expr, "not").CopyFrom(operand)
    return expr


def agg(function: Function, column: str = "", alias: str = "") -> qpb.Aggregate:
    return qpb.Aggregate(function=function, column=column, alias=alias)


COUNT = qpb.AGGREGATE_FUNCTION_COUNT
SUM = qpb.AGGREGATE_FUNCTION_SUM
MIN = qpb.AGGREGATE_FUNCTION_MIN
MAX = qpb.AGGREGATE_FUNCTION_MAX
AVG = qpb.AGGREGATE_FUNCTION_AVG
COUNT_DISTINCT = qpb.AGGREGATE_FUNCTION_COUNT_DISTINCT

ARROW_TYPES = {
    "trip_id": pa.string(),
    "subject": pa.string(),
    "commune": pa.string(),
    "ts": pa.timestamp("us", tz="UTC"),
    "day": pa.date32(),
    "small": pa.int32(),
    "big": pa.int64(),
    "ratio": pa.float64(),
    "amount": pa.decimal128(10, 2),
    "flag": pa.bool_(),
}


def assert_types(table: pa.Table, names: list[str] | None = None) -> None:
    for name in names or [n for n in table.column_names if n in ARROW_TYPES]:
        assert table.schema.field(name).type == ARROW_TYPES[name], name
    if "tags" in table.column_names and (names is None or "tags" in names):
        tags = table.schema.field("tags").type
        assert pa.types.is_list(tags) and tags.value_type == pa.string()


# --- clear ------------------------------------------------------------------------------------


def test_clear_returns_the_rows_as_written(database: Any, source: sql.Source) -> None:
    result = run(database, query(), decide(), source)
    assert result.column_names == list(COLUMNS)
    assert result.num_rows == ROWS
    assert_types(result)
    assert by_trip(result).to_pylist() == by_trip(TABLE).to_pylist()


def test_selected_columns_in_the_requested_order(database: Any, source: sql.Source) -> None:
    statement = sql.build(query(columns=["big", "trip_id"]), decide(), source, "subject", None)
    assert statement.output == [("big", "clear"), ("trip_id", "clear")]
    result = run(database, query(columns=["big", "trip_id"]), decide(), source)
    assert result.column_names == ["big", "trip_id"]
    assert sorted(column(result, "big")) == sorted(column(TABLE, "big"))


# --- null -------------------------------------------------------------------------------------


def test_null_keeps_the_type_and_no_value(database: Any, source: sql.Source) -> None:
    nulled = ["subject", "ts", "day", "small", "ratio", "amount", "flag", "tags"]
    result = run(database, query(), decide({n: {"treatment": "null"} for n in nulled}), source)
    assert result.num_rows == ROWS
    assert_types(result)
    for name in nulled:
        assert result.column(name).null_count == ROWS, name
    assert sorted(column(result, "trip_id")) == sorted(column(TABLE, "trip_id"))


# --- hash -------------------------------------------------------------------------------------


def test_hash_is_the_salted_sha256_of_the_value(database: Any, source: sql.Source) -> None:
    hashed = {"treatment": "hash", "salt": SALT}
    decision = decide({"subject": hashed, "small": hashed, "ratio": hashed})
    result = by_trip(run(database, query(), decision, source))
    raw = by_trip(TABLE)
    assert result.schema.field("subject").type == pa.string()
    assert column(result, "subject") == [sha(s) for s in column(raw, "subject")]
    assert column(result, "small") == [sha(str(v)) for v in column(raw, "small")]
    # NULL stays NULL: nothing to link.
    assert [v is None for v in column(result, "ratio")] == [v is None for v in column(raw, "ratio")]
    # Equal values hash equal: counting distinct subjects still works.
    assert len(set(column(result, "subject"))) == 40
    # The clear value is nowhere in the answer.
    subjects = set(column(raw, "subject"))
    for name in result.column_names:
        for value in column(result, name):
            if isinstance(value, str):
                assert not any(s in value for s in subjects), (name, value)


def test_hash_depends_on_the_salt(database: Any, source: sql.Source) -> None:
    one = run(
        database,
        query(columns=["trip_id", "subject"]),
        decide({"subject": {"treatment": "hash", "salt": SALT}}),
        source,
    )
    other = run(
        database,
        query(columns=["trip_id", "subject"]),
        decide({"subject": {"treatment": "hash", "salt": "another-agreement"}}),
        source,
    )
    assert set(column(one, "subject")).isdisjoint(column(other, "subject"))
    assert column(by_trip(other), "subject") == [
        sha(s, "another-agreement") for s in column(by_trip(TABLE), "subject")
    ]


def test_the_salt_is_a_parameter_never_text(source: sql.Source) -> None:
    statement = sql.build(
        query(), decide({"subject": {"treatment": "hash", "salt": SALT}}), source, "subject", None
    )
    assert SALT not in statement.sql
    assert SALT in statement.params
    assert ("subject", "hash") in statement.output


# --- generalise -------------------------------------------------------------------------------


def test_truncate_timestamps_and_dates(database: Any, source: sql.Source) -> None:
    decision = decide(
        {
            "ts": {"treatment": "generalise", "generalise": {"truncate_to": "day"}},
            "day": {"treatment": "generalise", "generalise": {"truncate_to": "month"}},
        }
    )
    result = by_trip(run(database, query(columns=["trip_id", "ts", "day"]), decision, source))
    raw = by_trip(TABLE)
    assert_types(result, ["ts", "day"])
    assert column(result, "ts") == [
        t.replace(hour=0, minute=0, second=0, microsecond=0) for t in column(raw, "ts")
    ]
    assert column(result, "day") == [d.replace(day=1) for d in column(raw, "day")]
    assert set(column(result, "day")) == {date(2024, 2, 1), date(2024, 3, 1)}


def test_truncate_a_timestamp_to_the_month_in_utc(database: Any, source: sql.Source) -> None:
    decision = decide({"ts": {"treatment": "generalise", "generalise": {"truncate_to": "month"}}})
    result = run(database, query(columns=["ts"]), decision, source)
    assert set(column(result, "ts")) == {
        datetime(2024, 2, 1, tzinfo=UTC),
        datetime(2024, 3, 1, tzinfo=UTC),
    }


def half_away_from_zero(value: float, step: float) -> float:
    return math.copysign(math.floor(abs(value) / step + 0.5), value) * step


def test_round_numbers(database: Any, source: sql.Source) -> None:
    step = {"treatment": "generalise", "generalise": {"round_to": 100}}
    result = by_trip(
        run(
            database,
            query(columns=["trip_id", "small", "ratio"]),
            decide({"small": step, "ratio": step}),
            source,
        )
    )
    raw = by_trip(TABLE)
    assert_types(result, ["small", "ratio"])
    assert column(result, "small") == [
        int(half_away_from_zero(v, 100)) for v in column(raw, "small")
    ]
    assert column(result, "ratio") == [
        None if v is None else half_away_from_zero(v, 100) for v in column(raw, "ratio")
    ]
    assert all(v % 100 == 0 for v in column(result, "small"))


def test_commune_to_epci(database: Any, source: sql.Source) -> None:
    decision = decide(
        {"commune": {"treatment": "generalise", "generalise": {"commune_to_epci": True}}}
    )
    result = by_trip(run(database, query(columns=["trip_id", "commune"]), decision, source))
    expected = [
        LYON if c in ("69123", "69266") else None for c in column(by_trip(TABLE), "commune")
    ]
    assert column(result, "commune") == expected
    # Paris is not in the built-in reference: NULL, never the commune in clear.
    assert "75056" not in column(result, "commune")
    assert ("commune", "generalise(commune_to_epci)") in sql.build(
        query(columns=["commune"]), decision, source, "subject", None
    ).output


# --- deny -------------------------------------------------------------------------------------


def test_a_denied_column_is_absent(database: Any, source: sql.Source) -> None:
    decision = decide({"subject": {"treatment": "deny"}, "tags": {"treatment": "deny"}})
    result = run(database, query(), decision, source)
    assert result.column_names == [n for n in COLUMNS if n not in ("subject", "tags")]
    assert result.num_rows == ROWS


def test_a_column_the_decision_omits_is_denied(database: Any, source: sql.Source) -> None:
    decision = decide()
    del decision.columns["amount"]
    assert "amount" not in run(database, query(), decision, source).column_names


def test_asking_for_a_denied_column_is_refused(source: sql.Source) -> None:
    with pytest.raises(PermissionDenied) as info:
        sql.build(
            query(columns=["trip_id", "subject"]),
            decide({"subject": {"treatment": "deny"}}),
            source,
            "subject",
            None,
        )
    assert info.value.reasons == ["column 'subject' is not granted"]


# --- row filters ------------------------------------------------------------------------------


def test_row_filters_apply_to_raw_values(database: Any, source: sql.Source) -> None:
    decision = decide(
        {"commune": {"treatment": "generalise", "generalise": {"commune_to_epci": True}}},
        row_filters=[{"column": "commune", "op": "in", "values": ["69266"]}],
    )
    result = run(database, query(columns=["trip_id", "commune"]), decision, source)
    expected = {
        t
        for t, c in zip(column(TABLE, "trip_id"), column(TABLE, "commune"), strict=True)
        if c == "69266"
    }
    assert set(column(result, "trip_id")) == expected
    assert len(expected) == 60
    assert set(column(result, "commune")) == {LYON}


def test_a_row_filter_on_a_commune_outside_the_reference(database: Any, source: sql.Source) -> None:
    decision = decide(
        {"commune": {"treatment": "generalise", "generalise": {"commune_to_epci": True}}},
        row_filters=[{"column": "commune", "op": "in", "values": ["75056"]}],
    )
    result = run(database, query(columns=["commune"]), decision, source)
    assert result.num_rows == 20
    assert column(result, "commune") == [None] * 20


def test_a_row_filter_on_a_hashed_column(database: Any, source: sql.Source) -> None:
    decision = decide(
        {"subject": {"treatment": "hash", "salt": SALT}},
        row_filters=[{"column": "subject", "op": "in", "values": ["s01", "s02"]}],
    )
    result = run(database, query(columns=["subject"]), decision, source)
    assert sorted(column(result, "subject")) == sorted([sha("s01")] * 5 + [sha("s02")] * 5)


def test_several_row_filters_all_apply(database: Any, source: sql.Source) -> None:
    decision = decide(
        row_filters=[
            {"column": "commune", "op": "in", "values": ["69123", "75056"]},
            {"column": "small", "op": "in", "values": [0, 37, 74, 111]},  # non-string column
        ]
    )
    result = run(database, query(columns=["trip_id", "commune", "small"]), decision, source)
    expected = [
        r["trip_id"]
        for r in TABLE.to_pylist()
        if r["commune"] in ("69123", "75056") and r["small"] in (0, 37, 74, 111)
    ]
    assert sorted(column(result, "trip_id")) == sorted(expected)
    assert expected


def test_a_row_filter_without_values_keeps_no_row(database: Any, source: sql.Source) -> None:
    decision = decide(row_filters=[{"column": "commune", "op": "in", "values": []}])
    assert run(database, query(), decision, source).num_rows == 0


def test_a_row_filter_on_an_unknown_column_is_refused(source: sql.Source) -> None:
    decision = decide(row_filters=[{"column": "nope", "op": "in", "values": ["x"]}])
    with pytest.raises(PermissionDenied):
        sql.build(query(), decision, source, "subject", None)


# --- consent ----------------------------------------------------------------------------------


def consent_set(*subjects: str) -> pa.Table:
    return pa.table({"subject_id": list(subjects)}, schema=pa.schema([("subject_id", pa.string())]))


def test_only_subjects_with_consent(database: Any, source: sql.Source) -> None:
    decision = decide(consent=True)
    result = run(
        database, query(columns=["subject"]), decision, source, consent_set("s01", "s07", "s99")
    )
    assert sorted(column(result, "subject")) == ["s01"] * 5 + ["s07"] * 5


def test_consent_applies_to_raw_subjects_when_hashed(database: Any, source: sql.Source) -> None:
    decision = decide({"subject": {"treatment": "hash", "salt": SALT}}, consent=True)
    result = run(
        database, query(columns=["subject", "trip_id"]), decision, source, consent_set("s03")
    )
    assert column(result, "subject") == [sha("s03")] * 5


def test_an_empty_consent_set_keeps_no_row(database: Any, source: sql.Source) -> None:
    result = run(database, query(), decide(consent=True), source, consent_set())
    assert result.num_rows == 0


def test_consent_without_a_subject_set_is_refused(source: sql.Source) -> None:
    with pytest.raises(PermissionDenied):
        sql.build(query(), decide(consent=True), source, "subject", None)


# --- aggregate-only: k suppression ------------------------------------------------------------


def count_by_commune(**fields: Any) -> Query:
    return query(group_by=["commune"], aggregates=[agg(COUNT, alias="trips")], **fields)


def as_dict(table: pa.Table, key: str, value: str) -> dict[Any, Any]:
    return dict(zip(column(table, key), column(table, value), strict=True))


def test_small_groups_are_suppressed_by_distinct_subjects(
    database: Any, source: sql.Source
) -> None:
    # Paris: 20 trips but only 4 distinct subjects.
    result = run(database, count_by_commune(), decide(min_group_size=10), source)
    assert as_dict(result, "commune", "trips") == {"69123": 120, "69266": 60}


def test_small_groups_without_a_subject_column_count_rows(
    database: Any, source: sql.Source
) -> None:
    result = run(database, count_by_commune(), decide(min_group_size=10), source, subject_column="")
    assert as_dict(result, "commune", "trips") == {"69123": 120, "69266": 60, "75056": 20}
    result = run(database, count_by_commune(), decide(min_group_size=21), source, subject_column="")
    assert as_dict(result, "commune", "trips") == {"69123": 120, "69266": 60}


def test_a_global_aggregate_is_suppressed_below_k(database: Any, source: sql.Source) -> None:
    paris = query(filter=cmp("commune", lit(string_value="75056")), aggregates=[agg(COUNT)])
    assert run(database, paris, decide(min_group_size=5), source).num_rows == 0
    assert column(run(database, paris, decide(min_group_size=4), source), "count") == [20]
    everything = query(aggregates=[agg(SUM, "small")])
    assert column(run(database, everything, decide(min_group_size=40), source), "sum_small") == [
        pc.sum(TABLE.column("small")).as_py()
    ]
    assert run(database, everything, decide(min_group_size=41), source).num_rows == 0


def test_k_counts_subjects_after_the_row_filters_and_consent(
    database: Any, source: sql.Source
) -> None:
    decision = parse_decision(
        {
            "allow": True,
            "columns": {n: {"treatment": "clear"} for n in COLUMNS},
            "row_filters": [{"column": "commune", "op": "in", "values": ["69123", "69266"]}],
            "consent": {"required": True, "purpose": "p", "subject_column": "subject"},
            "aggregate_only": True,
            "min_group_size": 3,
        }
    )
    # s00..s02 have consent: Lyon trips of s00, s01, s02 (3 subjects); Villeurbanne none
    # (i % 40 in 0..2 → i % 10 in 0..2, Lyon).
    result = run(database, count_by_commune(), decision, source, consent_set("s00", "s01", "s02"))
    assert as_dict(result, "commune", "trips") == {"69123": 15}
    result = run(database, count_by_commune(), decision, source, consent_set("s00", "s01"))
    assert result.num_rows == 0


def test_aggregate_only_never_returns_rows(database: Any, source: sql.Source) -> None:
    # OPA refuses a raw read of an aggregate-only dataset; should it not, the plan must not
    # answer rows either (today DuckDB refuses HAVING without GROUP BY: fail closed).
    q = query(columns=["trip_id", "subject"])
    with pytest.raises((PermissionDenied, duckdb.Error)):
        run(database, q, decide(min_group_size=2), source)


# --- the plan's own guard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "treatments"),
    [
        (
            {"filter": cmp("subject", lit(string_value="s01"))},
            {"subject": {"treatment": "hash", "salt": SALT}},
        ),
        ({"filter": cmp("ratio", lit(double_value=1.0))}, {"ratio": {"treatment": "null"}}),
        ({"filter": cmp("trip_id", lit(string_value="t001"))}, {"trip_id": {"treatment": "deny"}}),
        (
            {"time_range": qpb.TimeRange(start=ts_pb(START))},
            {"ts": {"treatment": "generalise", "generalise": {"truncate_to": "day"}}},
        ),
        (
            {"group_by": ["commune"], "aggregates": [agg(COUNT)]},
            {"commune": {"treatment": "generalise", "generalise": {"commune_to_epci": True}}},
        ),
        ({"aggregates": [agg(SUM, "small")]}, {"small": {"treatment": "null"}}),
        (
            {"aggregates": [agg(COUNT_DISTINCT, "subject")]},
            {"subject": {"treatment": "hash", "salt": SALT}},
        ),
        ({"order_by": [qpb.OrderBy(column="ratio")]}, {"ratio": {"treatment": "null"}}),
        (
            {"columns": ["trip_id", "ts"], "order_by": [qpb.OrderBy(column="ts")]},
            {"ts": {"treatment": "generalise", "generalise": {"truncate_to": "month"}}},
        ),
    ],
)
def test_masked_columns_cannot_be_filtered_grouped_ordered_or_aggregated(
    source: sql.Source, fields: dict[str, Any], treatments: dict[str, dict[str, Any]]
) -> None:
    with pytest.raises(PermissionDenied) as info:
        sql.build(query(**fields), decide(treatments), source, "subject", None)
    assert any("must be clear" in r for r in info.value.reasons)


# --- aggregates -------------------------------------------------------------------------------


def test_aggregates_match_pyarrow(database: Any, source: sql.Source) -> None:
    q = query(
        group_by=["commune"],
        aggregates=[
            agg(COUNT, alias="trips"),
            agg(COUNT, "ratio"),
            agg(SUM, "small"),
            agg(SUM, "big"),
            agg(SUM, "amount"),
            agg(SUM, "ratio"),
            agg(MIN, "ts"),
            agg(MAX, "day"),
            agg(MIN, "small"),
            agg(MAX, "amount"),
            agg(AVG, "ratio"),
            agg(AVG, "small"),
            agg(COUNT_DISTINCT, "subject"),
        ],
        order_by=[qpb.OrderBy(column="commune")],
    )
    result = run(database, q, decide(), source)
    expected = (
        TABLE.group_by("commune")
        .aggregate(
            [
                ([], "count_all"),
                ("ratio", "count"),
                ("small", "sum"),
                ("big", "sum"),
                ("amount", "sum"),
                ("ratio", "sum"),
                ("ts", "min"),
                ("day", "max"),
                ("small", "min"),
                ("amount", "max"),
                ("ratio", "mean"),
                ("small", "mean"),
                ("subject", "count_distinct"),
            ]
        )
        .sort_by("commune")
    )
    assert column(result, "commune") == ["69123", "69266", "75056"]
    pairs = {
        "trips": "count_all",
        "count_ratio": "ratio_count",
        "sum_small": "small_sum",
        "sum_big": "big_sum",
        "sum_amount": "amount_sum",
        "min_ts": "ts_min",
        "max_day": "day_max",
        "min_small": "small_min",
        "max_amount": "amount_max",
        "count_distinct_subject": "subject_count_distinct",
    }
    for mine, theirs in pairs.items():
        assert column(result, mine) == column(expected, theirs), mine
    for mine, theirs in {
        "sum_ratio": "ratio_sum",
        "avg_ratio": "ratio_mean",
        "avg_small": "small_mean",
    }.items():
        assert column(result, mine) == pytest.approx(column(expected, theirs)), mine
    assert column(result, "count_ratio") != column(result, "trips")  # NULLs are not counted
    # Types a client can use as they are.
    types = {f.name: f.type for f in result.schema}
    assert types["trips"] == pa.int64()
    assert types["sum_small"] == pa.int64()  # not DuckDB's HUGEINT (decimal(38,0))
    assert types["sum_big"] == pa.int64()
    assert pa.types.is_decimal(types["sum_amount"]) and types["sum_amount"].scale == 2
    assert types["sum_ratio"] == pa.float64()
    assert types["avg_small"] == pa.float64()
    assert types["min_ts"] == pa.timestamp("us", tz="UTC")
    assert types["max_day"] == pa.date32()
    assert types["min_small"] == pa.int32()


def test_aggregate_output_is_described(source: sql.Source) -> None:
    statement = sql.build(
        query(group_by=["commune"], aggregates=[agg(SUM, "small", "total")]),
        decide(),
        source,
        "subject",
        None,
    )
    assert statement.output == [("commune", "clear"), ("total", "aggregate")]


def test_group_by_a_list_and_count_distinct_of_a_list(database: Any, source: sql.Source) -> None:
    result = run(
        database,
        query(
            group_by=["flag"],
            aggregates=[agg(COUNT_DISTINCT, "tags")],
            order_by=[qpb.OrderBy(column="flag")],
        ),
        decide(),
        source,
    )
    assert column(result, "flag") == [False, True]
    assert column(result, "count_distinct_tags") == [3, 3]


# --- order and limit --------------------------------------------------------------------------


def test_order_by_descending_with_a_limit(database: Any, source: sql.Source) -> None:
    q = query(
        columns=["trip_id", "ratio"],
        order_by=[qpb.OrderBy(column="ratio", descending=True)],
        limit=5,
    )
    result = run(database, q, decide(), source)
    values = sorted((v for v in column(TABLE, "ratio") if v is not None), reverse=True)
    assert column(result, "ratio") == values[:5]


def test_nulls_come_last(database: Any, source: sql.Source) -> None:
    q = query(columns=["ratio"], order_by=[qpb.OrderBy(column="ratio")])
    values = column(run(database, q, decide(), source), "ratio")
    nulls = TABLE.column("ratio").null_count
    assert nulls > 0
    assert values[-nulls:] == [None] * nulls
    assert values[:-nulls] == sorted(v for v in values if v is not None)


def test_order_by_an_aggregate_with_a_limit(database: Any, source: sql.Source) -> None:
    q = query(
        group_by=["subject"],
        aggregates=[agg(SUM, "big", "total")],
        order_by=[qpb.OrderBy(column="total", descending=True), qpb.OrderBy(column="subject")],
        limit=3,
    )
    result = run(database, q, decide(), source)
    totals: dict[str, int] = {}
    for s, b in zip(column(TABLE, "subject"), column(TABLE, "big"), strict=True):
        totals[s] = totals.get(s, 0) + b
    best = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert list(zip(column(result, "subject"), column(result, "total"), strict=True)) == best


# --- filters and time range -------------------------------------------------------------------


def count_where(database: Any, source: sql.Source, **fields: Any) -> int:
    return int(run(database, query(columns=["trip_id"], **fields), decide(), source).num_rows)


def test_filters_of_each_type(database: Any, source: sql.Source) -> None:
    rows = TABLE.to_pylist()
    cases: list[tuple[qpb.Expression, Any]] = [
        (
            cmp("amount", lit(decimal_value="50.00"), qpb.COMPARISON_OPERATOR_GE),
            lambda r: r["amount"] >= Decimal("50.00"),
        ),
        (
            cmp("amount", lit(decimal_value="1.5"), qpb.COMPARISON_OPERATOR_LT),
            lambda r: r["amount"] < Decimal("1.5"),
        ),
        (cmp("small", lit(int_value=500), qpb.COMPARISON_OPERATOR_GT), lambda r: r["small"] > 500),
        (
            cmp("big", lit(int_value=50_000_150), qpb.COMPARISON_OPERATOR_LE),
            lambda r: r["big"] <= 50_000_150,
        ),
        (
            cmp("ratio", lit(int_value=100), qpb.COMPARISON_OPERATOR_LT),
            lambda r: r["ratio"] is not None and r["ratio"] < 100,
        ),
        (cmp("flag", lit(bool_value=True)), lambda r: r["flag"]),
        (
            cmp("commune", lit(string_value="69266"), qpb.COMPARISON_OPERATOR_NE),
            lambda r: r["commune"] != "69266",
        ),
        (cmp("day", lit(date_value="2024-03-01")), lambda r: r["day"] == date(2024, 3, 1)),
        (
            cmp("ts", lit(timestamp_value=ts_pb(START + timedelta(hours=30, minutes=17)))),
            lambda r: r["ts"] == START + timedelta(hours=30, minutes=17),
        ),
        (
            qpb.Expression(
                between=qpb.Between(
                    column="day",
                    low=lit(date_value="2024-02-28"),
                    high=lit(date_value="2024-03-01"),
                )
            ),
            lambda r: date(2024, 2, 28) <= r["day"] <= date(2024, 3, 1),
        ),
        (
            qpb.Expression(
                in_list=qpb.InList(
                    column="commune",
                    values=[lit(string_value="69266"), lit(string_value="75056")],
                    negated=True,
                )
            ),
            lambda r: r["commune"] not in ("69266", "75056"),
        ),
        (qpb.Expression(is_null=qpb.IsNull(column="ratio")), lambda r: r["ratio"] is None),
        (
            not_(cmp("flag", lit(bool_value=True))),
            lambda r: not r["flag"],
        ),
        (
            or_(cmp("small", lit(int_value=0)), cmp("commune", lit(string_value="75056"))),
            lambda r: r["small"] == 0 or r["commune"] == "75056",
        ),
    ]
    for expr, predicate in cases:
        expected = sum(1 for r in rows if predicate(r))
        assert count_where(database, source, filter=expr) == expected, expr
        assert 0 < expected < ROWS, expr


@pytest.mark.parametrize(
    ("op", "predicate"),
    [
        (qpb.COMPARISON_OPERATOR_EQ, lambda a: a == Decimal("1.225")),
        (qpb.COMPARISON_OPERATOR_LE, lambda a: a <= Decimal("1.225")),
        (qpb.COMPARISON_OPERATOR_GT, lambda a: a > Decimal("1.225")),
    ],
    ids=["eq", "le", "gt"],
)
def test_a_decimal_literal_finer_than_the_column_compares_exactly(
    database: Any, source: sql.Source, op: Op, predicate: Any
) -> None:
    assert Decimal("1.23") in column(TABLE, "amount")
    expected = sum(1 for a in column(TABLE, "amount") if predicate(a))
    got = count_where(database, source, filter=cmp("amount", lit(decimal_value="1.225"), op))
    assert got == expected


def test_a_time_range(database: Any, source: sql.Source) -> None:
    start = datetime(2024, 2, 25, 12, tzinfo=UTC)
    end = datetime(2024, 3, 2, tzinfo=UTC)
    got = count_where(
        database, source, time_range=qpb.TimeRange(start=ts_pb(start), end=ts_pb(end))
    )
    assert got == sum(1 for t in column(TABLE, "ts") if start <= t < end)
    assert got > 0


def test_values_are_parameters(database: duckdb.DuckDBPyConnection, source: sql.Source) -> None:
    database.execute("CREATE OR REPLACE TABLE x AS SELECT 1 AS a")
    hostile = "'); DROP TABLE x; --"
    q = query(
        filter=or_(
            cmp("trip_id", lit(string_value=hostile)),
            qpb.Expression(
                in_list=qpb.InList(column="commune", values=[lit(string_value="' OR 1=1 --")])
            ),
        )
    )
    decision = decide(
        row_filters=[{"column": "commune", "op": "in", "values": ["69123", "x') OR true --"]}]
    )
    statement = sql.build(q, decision, source, "subject", None)
    assert hostile not in statement.sql and "OR true" not in statement.sql
    assert run(database, q, decision, source).num_rows == 0
    assert database.sql("SELECT a FROM x").fetchall() == [(1,)]


# --- files of a table whose schema evolved ----------------------------------------------------


def test_a_column_added_later_reads_as_null_in_older_files(database: Any, tmp_path: Path) -> None:
    old = tmp_path / "old.parquet"
    new = tmp_path / "new.parquet"
    pq.write_table(TABLE.slice(0, 100).drop_columns(["ratio"]), old)
    pq.write_table(TABLE.slice(100), new)
    source = sql.Source((str(old), str(new)), frozenset(COLUMNS), uniform=False)
    result = by_trip(run(database, query(columns=["trip_id", "ratio"]), decide(), source))
    assert result.num_rows == ROWS
    assert_types(result, ["ratio"])
    assert column(result, "ratio") == [None] * 100 + column(TABLE, "ratio")[100:]


def test_a_column_in_no_file_reads_as_null(database: Any, tmp_path: Path) -> None:
    path = tmp_path / "no-tags.parquet"
    pq.write_table(TABLE.drop_columns(["tags", "amount"]), path)
    source = sql.Source((str(path),), frozenset(COLUMNS) - {"tags", "amount"}, uniform=True)
    result = run(database, query(), decide(), source)
    assert result.num_rows == ROWS
    assert result.column_names == list(COLUMNS)
    assert_types(result)
    assert result.column("tags").null_count == ROWS
    assert result.column("amount").null_count == ROWS


def test_no_files_is_an_empty_result_of_the_right_schema(database: Any) -> None:
    empty = sql.Source((), frozenset(), True)
    result = run(database, query(), decide(), empty)
    assert result.num_rows == 0
    assert result.column_names == list(COLUMNS)
    assert_types(result)
    counted = run(database, query(aggregates=[agg(COUNT)]), decide(), empty)
    assert column(counted, "count") == [0]
    # Aggregate-only: an empty count is a group smaller than k.
    assert (
        run(database, query(aggregates=[agg(COUNT)]), decide(min_group_size=5), empty).num_rows == 0
    )


@pytest.mark.parametrize(
    ("type_text", "duck"),
    [
        ("string", "VARCHAR"),
        ("int32", "INTEGER"),
        ("timestamp", "TIMESTAMPTZ"),
        ("decimal(38,10)", "DECIMAL(38,10)"),
        ("list<list<int64>>", "BIGINT[][]"),
    ],
)
def test_duck_type(type_text: str, duck: str) -> None:
    assert sql.duck_type(type_text) == duck


def test_quote() -> None:
    assert sql.quote('a"b') == '"a""b"'
