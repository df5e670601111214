"""planner.pruning: what pyiceberg may skip files with.

Only conjuncts that are safe to prune with are translated (the policy's row filters, the caller's
top-level AND conjuncts); OR and NOT are left to DuckDB, and so is float equality. Leaving out is
always safe (DuckDB applies the exact filter); translating wrongly would drop rows silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import pytest
from pyiceberg import expressions
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
)
from pyiceberg.expressions.visitors import bind
from pyiceberg.schema import Schema
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_query import model
from tdg_query import request as rq
from tdg_query.decision import Decision, RowFilter, Treatment
from tdg_query.planner import local_path, pruning

Op: TypeAlias = qpb.ComparisonOperator.ValueType
Function: TypeAlias = qpb.AggregateFunction.ValueType

# pyiceberg predicates are pydantic models the mypy plugin reads as keyword-only.
ice: Any = expressions

COLUMNS = {
    "name": ("string", StringType()),
    "flag": ("bool", BooleanType()),
    "small": ("int32", IntegerType()),
    "big": ("int64", LongType()),
    "ratio": ("float64", DoubleType()),
    "amount": ("decimal(10,2)", DecimalType(10, 2)),
    "day": ("date", DateType()),
    "ts": ("timestamp", TimestamptzType()),
    "commune": ("string", StringType()),
    "code": ("int32", IntegerType()),
}

ICEBERG = Schema(
    *(
        NestedField(i + 1, name, kind, required=False)
        for i, (name, (_, kind)) in enumerate(COLUMNS.items())
    )
)

DATASET = cpb.Dataset(
    id="lyon.trips",
    schema=cpb.Schema(
        columns=[cpb.Column(name=n, type=t) for n, (t, _) in COLUMNS.items()],
        event_time_column="ts",
    ),
)


def query(expr: qpb.Expression | None = None, **fields: Any) -> model.Query:
    if expr is not None:
        fields["filter"] = expr
    return rq.check_request(
        qpb.QueryRequest(dataset_id="lyon.trips", purpose="mobility-planning", **fields), DATASET
    )


def decision(*row_filters: RowFilter) -> Decision:
    return Decision(
        allow=True,
        reasons=(),
        agreement_id="agr-1",
        columns={n: Treatment("clear") for n in COLUMNS},
        row_filters=row_filters,
        consent_required=False,
        consent_purpose="",
        subject_column="",
        aggregate_only=False,
        min_group_size=0,
    )


def lit(**value: Any) -> qpb.Literal:
    return qpb.Literal(**value)


def cmp(column: str, value: qpb.Literal, op: Op = qpb.COMPARISON_OPERATOR_EQ) -> qpb.Expression:
    return qpb.Expression(comparison=qpb.Comparison(column=column, op=op, value=value))


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


def conjuncts(expr: BooleanExpression) -> list[BooleanExpression]:
    if isinstance(expr, And):
        return conjuncts(expr.left) + conjuncts(expr.right)
    return [expr]


def same_conjuncts(actual: BooleanExpression, *expected: BooleanExpression) -> None:
    parts = conjuncts(actual)
    assert len(parts) == len(expected), parts
    for e in expected:
        assert e in parts, (e, parts)


def bindable(expr: BooleanExpression) -> None:
    """pyiceberg can bind it to the table's schema (else plan_files fails: UNAVAILABLE)."""
    bind(ICEBERG, expr, case_sensitive=True)


def test_nothing_to_prune_with_is_always_true() -> None:
    assert pruning(query(), decision()) == AlwaysTrue()


def test_row_filters_become_in() -> None:
    expr = pruning(
        query(),
        decision(RowFilter("commune", ("69123", "69266")), RowFilter("name", ("a", "b", "c"))),
    )
    same_conjuncts(expr, ice.In("commune", {"69123", "69266"}), ice.In("name", {"a", "b", "c"}))
    bindable(expr)


def test_an_empty_row_filter_is_not_a_pruning_filter() -> None:
    # It still keeps every row out (sql: `false`); pruning simply has nothing to say.
    assert pruning(query(), decision(RowFilter("commune", ()))) == AlwaysTrue()


def test_a_row_filter_on_an_integer_column_binds() -> None:
    expr = pruning(query(), decision(RowFilter("code", ("69123", "69266"))))
    bindable(expr)


def test_and_conjuncts_are_translated() -> None:
    expr = pruning(
        query(
            and_(
                cmp("big", lit(int_value=5), qpb.COMPARISON_OPERATOR_GE),
                and_(
                    cmp("name", lit(string_value="Bellecour")),
                    qpb.Expression(is_null=qpb.IsNull(column="day")),
                ),
                qpb.Expression(
                    in_list=qpb.InList(
                        column="commune",
                        values=[lit(string_value="69123"), lit(string_value="69381")],
                    )
                ),
            )
        ),
        decision(RowFilter("commune", ("69123",))),
    )
    same_conjuncts(
        expr,
        ice.In("commune", {"69123"}),
        ice.GreaterThanOrEqual("big", 5),
        ice.EqualTo("name", "Bellecour"),
        ice.IsNull("day"),
        ice.In("commune", {"69123", "69381"}),
    )
    bindable(expr)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (qpb.COMPARISON_OPERATOR_EQ, ice.EqualTo("small", 3)),
        (qpb.COMPARISON_OPERATOR_NE, ice.NotEqualTo("small", 3)),
        (qpb.COMPARISON_OPERATOR_LT, ice.LessThan("small", 3)),
        (qpb.COMPARISON_OPERATOR_LE, ice.LessThanOrEqual("small", 3)),
        (qpb.COMPARISON_OPERATOR_GT, ice.GreaterThan("small", 3)),
        (qpb.COMPARISON_OPERATOR_GE, ice.GreaterThanOrEqual("small", 3)),
    ],
)
def test_each_comparison(op: Op, expected: BooleanExpression) -> None:
    assert pruning(query(cmp("small", lit(int_value=3), op)), decision()) == expected


def test_between_and_is_not_null() -> None:
    expr = pruning(
        query(
            and_(
                qpb.Expression(
                    between=qpb.Between(
                        column="amount",
                        low=lit(decimal_value="1.50"),
                        high=lit(decimal_value="10.00"),
                    )
                ),
                qpb.Expression(is_null=qpb.IsNull(column="name", negated=True)),
            )
        ),
        decision(),
    )
    # Decimal bounds are left to DuckDB (pyiceberg binds only the column's exact scale).
    same_conjuncts(expr, ice.NotNull("name"))
    bindable(expr)


@pytest.mark.parametrize("value", [lit(decimal_value="1.5"), lit(int_value=10)])
def test_a_decimal_literal_of_another_scale_binds(value: qpb.Literal) -> None:
    expr = pruning(query(cmp("amount", value, qpb.COMPARISON_OPERATOR_GE)), decision())
    bindable(expr)


def test_dates_and_timestamps_bind_to_their_types() -> None:
    start = datetime(2024, 3, 1, 6, 30, tzinfo=UTC)
    end = datetime(2024, 3, 8, tzinfo=UTC)
    start_pb = qpb.TimeRange().start
    start_pb.FromDatetime(start)
    end_pb = qpb.TimeRange().end
    end_pb.FromDatetime(end)
    expr = pruning(
        query(
            cmp("day", lit(date_value="2024-03-02"), qpb.COMPARISON_OPERATOR_LT),
            time_range=qpb.TimeRange(start=start_pb, end=end_pb),
        ),
        decision(),
    )
    assert len(conjuncts(expr)) == 3
    bound = bind(ICEBERG, expr, case_sensitive=True)
    text = repr(bound)
    # The instants keep their meaning once bound (microseconds since the epoch, UTC).
    assert str(int(start.timestamp() * 1_000_000)) in text
    assert str(int(end.timestamp() * 1_000_000)) in text
    assert str((date(2024, 3, 2) - date(1970, 1, 1)).days) in text


@pytest.mark.parametrize(
    "expr",
    [
        or_(cmp("big", lit(int_value=1)), cmp("big", lit(int_value=2))),
        not_(cmp("big", lit(int_value=1))),
        qpb.Expression(in_list=qpb.InList(column="big", values=[lit(int_value=1)], negated=True)),
        cmp("ratio", lit(double_value=0.1)),
        cmp("ratio", lit(double_value=0.1), qpb.COMPARISON_OPERATOR_NE),
        cmp("ratio", lit(int_value=3)),  # an integer literal on a float column is a float
    ],
)
def test_what_cannot_prune_safely_is_left_out(expr: qpb.Expression) -> None:
    assert pruning(query(expr), decision()) == AlwaysTrue()


def test_left_out_conjuncts_do_not_drop_the_others() -> None:
    expr = pruning(
        query(
            and_(
                or_(cmp("big", lit(int_value=1)), cmp("small", lit(int_value=2))),
                cmp("ratio", lit(double_value=0.5)),
                cmp("ratio", lit(double_value=0.5), qpb.COMPARISON_OPERATOR_GT),
            )
        ),
        decision(),
    )
    assert expr == ice.GreaterThan("ratio", 0.5)


def test_an_or_under_and_under_not_is_left_out_whole() -> None:
    # NOT (a AND b) must not be flattened into a AND b.
    expr = pruning(
        query(not_(and_(cmp("big", lit(int_value=1)), cmp("small", lit(int_value=2))))),
        decision(),
    )
    assert expr == AlwaysTrue()


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        (
            "file:///var/lib/tdg/warehouse/a%20b/data.parquet",
            "/var/lib/tdg/warehouse/a b/data.parquet",
        ),
        ("/tmp/x.parquet", "/tmp/x.parquet"),
        ("s3://bucket/key/x.parquet", "s3://bucket/key/x.parquet"),
    ],
)
def test_local_path(uri: str, path: str) -> None:
    assert local_path(uri) == path
