"""check_request: a QueryRequest checked against the catalog's schema, before OPA is asked.

Every refusal is an InvalidArgument naming the request field at fault, so a caller knows what to
fix; what passes is the typed `Query` the SQL builder plans from.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeAlias

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.errors import InvalidArgument
from tdg_query import request as rq
from tdg_query.model import Between, Comparison, InList, IsNull, Junction, Not, Query
from tdg_query.request import check_request
from tdg_query.request_filter import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_LITERALS,
    MAX_NODES,
    MAX_STRING_BYTES,
)

Op: TypeAlias = qpb.ComparisonOperator.ValueType
Function: TypeAlias = qpb.AggregateFunction.ValueType

COLUMNS = {
    "name": "string",
    "flag": "bool",
    "small": "int32",
    "big": "int64",
    "ratio": "float64",
    "amount": "decimal(10,2)",
    "day": "date",
    "ts": "timestamp",
    "tags": "list<string>",
    "subject": "string",
    "commune": "string",
}


def dataset(
    columns: dict[str, str] | None = None, event_time: str = "ts", subject: str = "subject"
) -> cpb.Dataset:
    return cpb.Dataset(
        id="lyon.trips",
        publisher="lyon",
        schema=cpb.Schema(
            columns=[
                cpb.Column(name=n, type=t, nullable=True)
                for n, t in (COLUMNS if columns is None else columns).items()
            ],
            event_time_column=event_time,
            subject_column=subject,
        ),
    )


def ts(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def lit(**value: Any) -> qpb.Literal:
    return qpb.Literal(**value)


def cmp(column: str, value: qpb.Literal, op: Op = qpb.COMPARISON_OPERATOR_EQ) -> qpb.Expression:
    return qpb.Expression(comparison=qpb.Comparison(column=column, op=op, value=value))


def in_list(column: str, values: list[qpb.Literal], negated: bool = False) -> qpb.Expression:
    return qpb.Expression(in_list=qpb.InList(column=column, values=values, negated=negated))


def junction(kind: str, operands: Iterable[qpb.Expression]) -> qpb.Expression:
    expr = qpb.Expression()
    getattr(expr, kind).CopyFrom(qpb.Junction(operands=list(operands)))
    return expr


def and_(*operands: qpb.Expression) -> qpb.Expression:
    return junction("and", operands)


def or_(*operands: qpb.Expression) -> qpb.Expression:
    return junction("or", operands)


def not_(operand: qpb.Expression) -> qpb.Expression:
    expr = qpb.Expression()
    getattr(expr, "not").CopyFrom(operand)
    return expr


def agg(function: Function, column: str = "", alias: str = "") -> qpb.Aggregate:
    return qpb.Aggregate(function=function, column=column, alias=alias)


COUNT = qpb.AGGREGATE_FUNCTION_COUNT
SUM = qpb.AGGREGATE_FUNCTION_SUM
MIN = qpb.AGGREGATE_FUNCTION_MIN
AVG = qpb.AGGREGATE_FUNCTION_AVG
COUNT_DISTINCT = qpb.AGGREGATE_FUNCTION_COUNT_DISTINCT

OK_NAME = cmp("name", lit(string_value="x"))


def request(**fields: Any) -> qpb.QueryRequest:
    fields.setdefault("dataset_id", "lyon.trips")
    fields.setdefault("purpose", "mobility-planning")
    return qpb.QueryRequest(**fields)


def check(ds: cpb.Dataset | None = None, **fields: Any) -> Query:
    return check_request(request(**fields), ds or dataset())


def refused(ds: cpb.Dataset | None = None, **fields: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        check(ds, **fields)
    return info.value


# --- what passes ------------------------------------------------------------------------------


def test_a_plain_request_is_typed() -> None:
    query = check(
        columns=["name", "small"],
        filter=and_(
            cmp("small", lit(int_value=5), qpb.COMPARISON_OPERATOR_GE),
            in_list("commune", [lit(string_value="69123"), lit(string_value="69266")]),
            qpb.Expression(
                between=qpb.Between(
                    column="amount",
                    low=lit(decimal_value="1.50"),
                    high=lit(int_value=10),
                )
            ),
            qpb.Expression(is_null=qpb.IsNull(column="tags", negated=True)),
        ),
        order_by=[qpb.OrderBy(column="small", descending=True)],
        limit=10,
    )
    assert query.columns == ("name", "small")
    assert query.filter == Junction(
        "AND",
        (
            Comparison("small", ">=", 5),
            InList("commune", ("69123", "69266"), False),
            Between("amount", Decimal("1.50"), Decimal(10)),
            IsNull("tags", True),
        ),
    )
    assert query.limit == 10
    assert [(o.column, o.descending) for o in query.order_by] == [("small", True)]
    assert query.filter_columns() == ["amount", "commune", "small", "tags"]
    assert not query.aggregating
    assert query.column_type("amount") == "decimal(10,2)"
    assert query.event_time_column == "ts"
    assert query.snapshot_id is None and query.as_of is None


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("name", lit(string_value="Bellecour"), "Bellecour"),
        ("flag", lit(bool_value=True), True),
        ("small", lit(int_value=2**31 - 1), 2**31 - 1),
        ("small", lit(int_value=-(2**31)), -(2**31)),
        ("big", lit(int_value=2**63 - 1), 2**63 - 1),
        ("ratio", lit(double_value=0.25), 0.25),
        ("ratio", lit(int_value=3), 3.0),
        ("amount", lit(decimal_value="12.34"), Decimal("12.34")),
        ("amount", lit(int_value=7), Decimal(7)),
        ("day", lit(date_value="2024-02-29"), date(2024, 2, 29)),
        (
            "ts",
            lit(timestamp_value=ts(datetime(2024, 3, 1, 8, 30, 0, 123456, tzinfo=UTC))),
            datetime(2024, 3, 1, 8, 30, 0, 123456, tzinfo=UTC),
        ),
    ],
)
def test_literals_take_their_column_type(column: str, value: qpb.Literal, expected: Any) -> None:
    query = check(filter=cmp(column, value))
    assert isinstance(query.filter, Comparison)
    assert query.filter.value == expected
    assert type(query.filter.value) is type(expected)


def test_is_null_applies_to_a_list_column() -> None:
    query = check(filter=qpb.Expression(is_null=qpb.IsNull(column="tags")))
    assert query.filter == IsNull("tags", False)


def test_an_or_and_a_not_are_kept() -> None:
    query = check(filter=not_(or_(OK_NAME, cmp("flag", lit(bool_value=False)))))
    assert query.filter == Not(
        Junction("OR", (Comparison("name", "=", "x"), Comparison("flag", "=", False)))
    )


# --- unknown columns, in every field -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"columns": ["name", "nope"]}, "columns[1]"),
        ({"group_by": ["nope"], "aggregates": [agg(COUNT)]}, "group_by[0]"),
        ({"aggregates": [agg(COUNT), agg(SUM, "nope")]}, "aggregates[1].column"),
        ({"order_by": [qpb.OrderBy(column="nope")]}, "order_by[0].column"),
        ({"filter": cmp("nope", lit(int_value=1))}, "filter.comparison.column"),
        (
            {"filter": and_(OK_NAME, cmp("nope", lit(int_value=1)))},
            "filter.and.operands[1].comparison.column",
        ),
        (
            {"filter": or_(in_list("nope", [lit(string_value="a")]))},
            "filter.or.operands[0].in_list.column",
        ),
        (
            {"filter": not_(qpb.Expression(is_null=qpb.IsNull(column="nope")))},
            "filter.not.is_null.column",
        ),
        (
            {
                "filter": and_(
                    OK_NAME,
                    not_(
                        qpb.Expression(
                            between=qpb.Between(
                                column="nope", low=lit(int_value=1), high=lit(int_value=2)
                            )
                        )
                    ),
                )
            },
            "filter.and.operands[1].not.between.column",
        ),
    ],
)
def test_an_unknown_column_is_named_by_its_field(fields: dict[str, Any], path: str) -> None:
    error = refused(**fields)
    assert error.field == path
    assert "'nope' is not a column of the dataset" in error.problem or "nope" in error.problem


def test_an_empty_column_name_is_refused() -> None:
    assert refused(columns=[""]).field == "columns[0]"


def test_a_column_listed_twice_is_refused() -> None:
    error = refused(columns=["name", "small", "name"])
    assert error.field == "columns[2]"
    assert "twice" in error.problem


def test_too_many_columns_are_refused() -> None:
    columns = {f"c{i}": "int64" for i in range(rq.MAX_COLUMNS + 1)}
    error = refused(dataset(columns, event_time="", subject=""), columns=list(columns))
    assert error.field == "columns"


# --- literals that do not fit their column -----------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("big", lit(string_value="12"), "column 'big' is int64, got a string"),
        ("small", lit(int_value=2**31), "out of the int32 range"),
        ("small", lit(int_value=-(2**31) - 1), "out of the int32 range"),
        ("small", lit(double_value=1.0), "got a double"),
        ("ratio", lit(double_value=float("nan")), "finite"),
        ("ratio", lit(double_value=float("inf")), "finite"),
        ("ratio", lit(string_value="1.0"), "got a string"),
        ("day", lit(date_value="2024-13-01"), "is not a date"),
        ("day", lit(date_value="01/03/2024"), "is not a date"),
        ("day", lit(string_value="2024-03-01"), "got a string"),
        ("amount", lit(decimal_value="12,50"), "is not a decimal number"),
        ("amount", lit(decimal_value="NaN"), "finite"),
        ("amount", lit(decimal_value="-Infinity"), "finite"),
        ("amount", lit(double_value=1.5), "got a double"),
        ("name", lit(int_value=1), "got a int"),
        ("name", lit(string_value="x" * (MAX_STRING_BYTES + 1)), "at most"),
        ("flag", lit(string_value="true"), "got a string"),
        ("ts", lit(date_value="2024-03-01"), "got a date"),
        ("ts", lit(string_value="2024-03-01T00:00:00Z"), "got a string"),
        ("small", lit(), "a value is required"),
    ],
)
def test_a_literal_must_fit_its_column(column: str, value: qpb.Literal, needle: str) -> None:
    error = refused(filter=and_(OK_NAME, cmp(column, value)))
    assert error.field == "filter.and.operands[1].comparison.value"
    assert needle in error.problem


def test_a_bad_literal_in_a_list_is_named_by_its_index() -> None:
    error = refused(
        filter=in_list("small", [lit(int_value=1), lit(int_value=2), lit(string_value="3")])
    )
    assert error.field == "filter.in_list.values[2]"


def test_a_bad_between_bound_is_named() -> None:
    error = refused(
        filter=qpb.Expression(
            between=qpb.Between(
                column="day", low=lit(date_value="2024-01-01"), high=lit(date_value="2024-02-30")
            )
        )
    )
    assert error.field == "filter.between.high"


@pytest.mark.parametrize(
    "expr",
    [
        cmp("tags", lit(string_value="a")),
        in_list("tags", [lit(string_value="a")]),
        qpb.Expression(
            between=qpb.Between(
                column="tags", low=lit(string_value="a"), high=lit(string_value="b")
            )
        ),
    ],
)
def test_a_list_column_is_only_tested_for_null(expr: qpb.Expression) -> None:
    error = refused(filter=expr)
    assert error.field == f"filter.{expr.WhichOneof('kind')}.column"
    assert "list" in error.problem


def test_a_comparison_needs_an_operator() -> None:
    error = refused(filter=cmp("small", lit(int_value=1), qpb.COMPARISON_OPERATOR_UNSPECIFIED))
    assert error.field == "filter.comparison.op"


def test_an_empty_expression_is_refused() -> None:
    assert refused(filter=qpb.Expression()).field == "filter"
    assert refused(filter=and_(OK_NAME, qpb.Expression())).field == "filter.and.operands[1]"


# --- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, -(2**63)])
def test_limit_must_be_positive(limit: int) -> None:
    error = refused(limit=limit)
    assert error.field == "limit"
    assert str(limit) in error.problem


def test_limit_one_and_no_limit() -> None:
    assert check(limit=1).limit == 1
    assert check().limit is None


def test_an_in_list_holds_at_most_max_in_values() -> None:
    values = [lit(int_value=i) for i in range(MAX_IN_VALUES)]
    query = check(filter=in_list("big", values))
    assert isinstance(query.filter, InList) and len(query.filter.values) == MAX_IN_VALUES
    error = refused(filter=in_list("big", [*values, lit(int_value=-1)]))
    assert error.field == "filter.in_list.values"
    assert str(MAX_IN_VALUES) in error.problem


def test_an_empty_in_list_is_refused() -> None:
    assert refused(filter=in_list("big", [])).field == "filter.in_list.values"


def test_literals_are_bounded_in_total() -> None:
    lists = MAX_LITERALS // MAX_IN_VALUES
    chunk = [lit(int_value=i) for i in range(MAX_IN_VALUES)]
    check(filter=or_(*(in_list("big", chunk) for _ in range(lists))))
    error = refused(filter=or_(*(in_list("big", chunk) for _ in range(lists + 1))))
    assert error.field == "filter"
    assert f"at most {MAX_LITERALS} literals" in error.problem


def test_expression_nodes_are_bounded() -> None:
    leaves = [cmp("big", lit(int_value=i)) for i in range(MAX_NODES)]
    check(filter=or_(*leaves[:-1]))  # the junction and its operands: MAX_NODES nodes
    error = refused(filter=or_(*leaves))
    assert error.field == "filter"
    assert f"at most {MAX_NODES} expression nodes" in error.problem


def nested_nots(depth: int) -> qpb.Expression:
    expr = cmp("big", lit(int_value=1))
    for _ in range(depth):
        expr = not_(expr)
    return expr


def nested_ands(depth: int) -> qpb.Expression:
    expr = cmp("big", lit(int_value=1))
    for _ in range(depth):
        expr = and_(expr)
    return expr


def test_expressions_nest_at_most_max_depth() -> None:
    assert MAX_DEPTH == 32
    query = check(filter=nested_nots(MAX_DEPTH))
    depth = 0
    node: Any = query.filter
    while isinstance(node, Not):
        node, depth = node.operand, depth + 1
    assert depth == MAX_DEPTH and isinstance(node, Comparison)

    error = refused(filter=nested_nots(MAX_DEPTH + 1))
    assert error.field == "filter" + ".not" * (MAX_DEPTH + 1)
    assert f"at most {MAX_DEPTH} deep" in error.problem

    check(filter=nested_ands(MAX_DEPTH))
    error = refused(filter=nested_ands(MAX_DEPTH + 1))
    assert error.field == "filter" + ".and.operands[0]" * (MAX_DEPTH + 1)


def test_a_very_deep_expression_is_refused_quickly() -> None:
    # Far deeper than Python's recursion limit would allow to walk: refused at MAX_DEPTH + 1.
    error = refused(filter=nested_nots(90))
    assert error.field.count(".not") == MAX_DEPTH + 1


@pytest.mark.parametrize("kind", ["and", "or"])
def test_an_empty_junction_is_refused(kind: str) -> None:
    error = refused(filter=junction(kind, []))
    assert error.field == f"filter.{kind}.operands"


# --- aggregates --------------------------------------------------------------------------------


def test_group_by_needs_an_aggregate() -> None:
    error = refused(group_by=["commune"])
    assert error.field == "group_by"


def test_aggregates_are_typed_with_default_aliases() -> None:
    query = check(
        group_by=["commune"],
        aggregates=[
            agg(COUNT),
            agg(COUNT, "*", alias="rows"),
            agg(SUM, "amount"),
            agg(AVG, "small"),
            agg(MIN, "day"),
            agg(COUNT_DISTINCT, "subject"),
            agg(COUNT_DISTINCT, "tags"),
        ],
        columns=["commune"],
        order_by=[qpb.OrderBy(column="sum_amount", descending=True)],
    )
    assert query.aggregating
    assert [(a.function, a.column, a.alias) for a in query.aggregates] == [
        ("count", "", "count"),
        ("count", "", "rows"),
        ("sum", "amount", "sum_amount"),
        ("avg", "small", "avg_small"),
        ("min", "day", "min_day"),
        ("count_distinct", "subject", "count_distinct_subject"),
        ("count_distinct", "tags", "count_distinct_tags"),
    ]
    assert query.policy_aggregates()[:3] == [
        {"function": "count", "column": "*"},
        {"function": "count", "column": "*"},
        {"function": "sum", "column": "amount"},
    ]
    # An aggregate's alias is not a dataset column: the policy is not asked about it.
    assert query.order_columns() == []


@pytest.mark.parametrize(
    ("aggregate", "path", "needle"),
    [
        (agg(SUM, "name"), "aggregates[0].column", "sum needs a number, 'name' is string"),
        (agg(AVG, "day"), "aggregates[0].column", "avg needs a number"),
        (agg(SUM, "flag"), "aggregates[0].column", "needs a number"),
        (agg(SUM), "aggregates[0].column", "sum needs a column"),
        (agg(MIN, "*"), "aggregates[0].column", "min needs a column"),
        (agg(MIN, "tags"), "aggregates[0].column", "list"),
        (agg(qpb.AGGREGATE_FUNCTION_UNSPECIFIED, "big"), "aggregates[0].function", "one of"),
    ],
)
def test_an_aggregate_must_fit_its_column(aggregate: qpb.Aggregate, path: str, needle: str) -> None:
    error = refused(aggregates=[aggregate])
    assert error.field == path
    assert needle in error.problem


def test_an_alias_may_not_take_a_group_by_column_name() -> None:
    error = refused(group_by=["name"], aggregates=[agg(COUNT, alias="name")])
    assert error.field == "aggregates[0].alias"


@pytest.mark.parametrize(
    ("aggregates", "path"),
    [
        ([agg(COUNT), agg(COUNT)], "aggregates[1].alias"),  # both default to "count"
        ([agg(SUM, "big", "total"), agg(SUM, "small", "total")], "aggregates[1].alias"),
        ([agg(SUM, "big", "sum_small"), agg(SUM, "small")], "aggregates[1].alias"),
    ],
)
def test_aliases_must_not_collide(aggregates: list[qpb.Aggregate], path: str) -> None:
    error = refused(aggregates=aggregates)
    assert error.field == path
    assert "already a result column name" in error.problem


@pytest.mark.parametrize(
    "alias", ["Total", "1st", "a-b", "a b", "é", 'x"; drop', "x" * 64, "total\n"]
)
def test_a_bad_alias_is_refused(alias: str) -> None:
    error = refused(aggregates=[agg(COUNT, alias=alias)])
    assert error.field == "aggregates[0].alias"


def test_an_alias_of_63_characters_is_accepted() -> None:
    assert check(aggregates=[agg(COUNT, alias="a" * 63)]).aggregates[0].alias == "a" * 63


def test_the_default_alias_of_a_long_column_is_accepted() -> None:
    long_name = "average_weekday_bicycle_traffic_per_counter_point"  # 49 characters, valid
    ds = dataset({long_name: "int64", "ts": "timestamp"})
    query = check(ds, aggregates=[agg(COUNT_DISTINCT, long_name)])
    assert len(query.aggregates) == 1


def test_with_aggregates_columns_are_the_group_by_columns() -> None:
    error = refused(columns=["commune", "name"], group_by=["commune"], aggregates=[agg(COUNT)])
    assert error.field == "columns"
    assert "'name' is neither grouped nor aggregated" in error.problem


# --- order by ----------------------------------------------------------------------------------


def test_order_by_must_name_a_result_column() -> None:
    error = refused(columns=["name"], order_by=[qpb.OrderBy(column="big")])
    assert error.field == "order_by[0].column"
    error = refused(
        group_by=["commune"],
        aggregates=[agg(COUNT)],
        order_by=[qpb.OrderBy(column="count"), qpb.OrderBy(column="big")],
    )
    assert error.field == "order_by[1].column"
    assert "group-by column or an aggregate's alias" in error.problem


def test_order_by_any_column_when_every_column_is_asked() -> None:
    query = check(order_by=[qpb.OrderBy(column="big"), qpb.OrderBy(column="ts", descending=True)])
    assert query.order_columns() == ["big", "ts"]


# --- time range and snapshots ------------------------------------------------------------------

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 8, tzinfo=UTC)


def test_a_time_range_filters_the_event_time_column() -> None:
    query = check(time_range=qpb.TimeRange(start=ts(START), end=ts(END)))
    assert query.filter == Junction(
        "AND", (Comparison("ts", ">=", START), Comparison("ts", "<", END))
    )
    assert query.filter_columns() == ["ts"]


def test_a_time_range_is_anded_with_the_filter() -> None:
    query = check(filter=OK_NAME, time_range=qpb.TimeRange(start=ts(START)))
    assert query.filter == Junction(
        "AND", (Comparison("name", "=", "x"), Comparison("ts", ">=", START))
    )


@pytest.mark.parametrize("end", [START, datetime(2024, 2, 1, tzinfo=UTC)])
def test_a_time_range_must_end_after_it_starts(end: datetime) -> None:
    error = refused(time_range=qpb.TimeRange(start=ts(START), end=ts(end)))
    assert error.field == "time_range.end"


def test_a_time_range_needs_an_event_time_column() -> None:
    error = refused(dataset(event_time=""), time_range=qpb.TimeRange(start=ts(START)))
    assert error.field == "time_range"
    assert "no event-time column" in error.problem


def test_a_time_range_on_a_date_column_compares_dates() -> None:
    ds = dataset(event_time="day")
    query = check(ds, time_range=qpb.TimeRange(start=ts(START), end=ts(END)))
    assert query.filter == Junction(
        "AND", (Comparison("day", ">=", START.date()), Comparison("day", "<", END.date()))
    )


def test_a_time_range_within_one_day_keeps_that_day() -> None:
    ds = dataset(event_time="day")
    start = datetime(2024, 3, 1, 6, tzinfo=UTC)
    end = datetime(2024, 3, 1, 18, tzinfo=UTC)
    query = check(ds, time_range=qpb.TimeRange(start=ts(start), end=ts(end)))
    assert isinstance(query.filter, Junction)
    low, high = query.filter.operands
    assert isinstance(low, Comparison) and isinstance(high, Comparison)
    day = date(2024, 3, 1)
    assert low.value <= day  # type: ignore[operator]
    assert (high.op == "<" and high.value > day) or (high.op == "<=" and high.value >= day)  # type: ignore[operator]


@pytest.mark.parametrize("snapshot_id", [0, -5])
def test_a_snapshot_id_must_be_positive(snapshot_id: int) -> None:
    assert refused(snapshot_id=snapshot_id).field == "snapshot_id"


def test_a_snapshot_id_or_a_time() -> None:
    assert check(snapshot_id=7).snapshot_id == 7
    query = check(as_of_time=ts(datetime(2024, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)))
    assert query.as_of == datetime(2024, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
    assert query.snapshot_id is None


@pytest.mark.parametrize(
    "when",
    [Timestamp(seconds=10**13), Timestamp(seconds=1, nanos=-1), Timestamp(seconds=-(10**13))],
)
def test_an_unrepresentable_time_is_refused(when: Timestamp) -> None:
    assert refused(as_of_time=when).field == "as_of_time"


def test_purpose_is_required_and_checked_first() -> None:
    error = refused(purpose="", columns=["nope"], limit=0)
    assert error.field == "purpose"


def test_the_request_json_keeps_the_request() -> None:
    text = rq.request_json(request(columns=["name"], limit=3))
    assert '"columns": ["name"]' in text and '"limit": "3"' in text
