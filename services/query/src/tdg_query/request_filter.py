"""The filter of a `QueryRequest` checked against the dataset's columns: the expression tree.

A `FilterChecker` walks the tree recursively into `tdg_query.model` expressions: every name must be
a column, every literal must fit its column's type, and the tree is bounded (depth, nodes, IN-list
values, literals, string bytes). `tdg_query.request` checks the rest of the request and calls it.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tdg.query.v1 import query_pb2 as qpb
from tdg_core.errors import InvalidArgument

from tdg_query.model import Between, Comparison, Expr, InList, IsNull, Junction, Not, Value

# Bounds on what one filter may ask; generous for real use, small enough that a hostile request
# cannot make the planner or DuckDB's parser work for long.
MAX_DEPTH = 32
MAX_NODES = 1_000
MAX_IN_VALUES = 1_000
MAX_LITERALS = 10_000
MAX_STRING_BYTES = 64 * 1024
INT32 = (-(2**31), 2**31 - 1)

_COMPARISONS = {
    qpb.COMPARISON_OPERATOR_EQ: "=",
    qpb.COMPARISON_OPERATOR_NE: "!=",
    qpb.COMPARISON_OPERATOR_LT: "<",
    qpb.COMPARISON_OPERATOR_LE: "<=",
    qpb.COMPARISON_OPERATOR_GT: ">",
    qpb.COMPARISON_OPERATOR_GE: ">=",
}


def checked_column(types: dict[str, str], name: str, field_name: str) -> str:
    if not name:
        raise InvalidArgument(field_name, "names no column")
    if name not in types:
        raise InvalidArgument(field_name, f"{name[:100]!r} is not a column of the dataset")
    return name


def instant(ts: Any, field_name: str) -> datetime:
    try:
        return datetime.fromtimestamp(ts.seconds, tz=UTC).replace(microsecond=ts.nanos // 1000)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidArgument(field_name, "is not a representable instant") from exc


class FilterChecker:
    """Checks one request's filter; the node and literal counts run over the whole tree."""

    def __init__(self, types: dict[str, str]) -> None:
        self._types = types
        self._nodes = 0
        self._literals = 0

    def _column(self, name: str, field_name: str) -> str:
        return checked_column(self._types, name, field_name)

    def expression(self, expr: qpb.Expression, f: str, depth: int) -> Expr:
        self._nodes += 1
        if depth > MAX_DEPTH:
            raise InvalidArgument(f, f"expressions nest at most {MAX_DEPTH} deep")
        if self._nodes > MAX_NODES:
            raise InvalidArgument("filter", f"at most {MAX_NODES} expression nodes")
        kind = expr.WhichOneof("kind")
        if kind == "comparison":
            c = expr.comparison
            column = self._column(c.column, f"{f}.comparison.column")
            op = _COMPARISONS.get(c.op)
            if op is None:
                raise InvalidArgument(
                    f"{f}.comparison.op", "an operator is required (EQ, NE, LT, LE, GT, GE)"
                )
            self._comparable(column, f"{f}.comparison.column")
            return Comparison(column, op, self.literal(c.value, column, f"{f}.comparison.value"))
        if kind == "in_list":
            c2 = expr.in_list
            column = self._column(c2.column, f"{f}.in_list.column")
            self._comparable(column, f"{f}.in_list.column")
            if not c2.values:
                raise InvalidArgument(f"{f}.in_list.values", "needs at least one value")
            if len(c2.values) > MAX_IN_VALUES:
                raise InvalidArgument(
                    f"{f}.in_list.values", f"at most {MAX_IN_VALUES} values, got {len(c2.values)}"
                )
            values = tuple(
                self.literal(v, column, f"{f}.in_list.values[{i}]") for i, v in enumerate(c2.values)
            )
            return InList(column, values, c2.negated)
        if kind == "between":
            b = expr.between
            column = self._column(b.column, f"{f}.between.column")
            self._comparable(column, f"{f}.between.column")
            return Between(
                column,
                self.literal(b.low, column, f"{f}.between.low"),
                self.literal(b.high, column, f"{f}.between.high"),
            )
        if kind == "is_null":
            return IsNull(
                self._column(expr.is_null.column, f"{f}.is_null.column"), expr.is_null.negated
            )
        if kind in ("and", "or"):
            junction = getattr(expr, kind)
            if not junction.operands:
                raise InvalidArgument(f"{f}.{kind}.operands", "needs at least one operand")
            return Junction(
                kind.upper(),
                tuple(
                    self.expression(o, f"{f}.{kind}.operands[{i}]", depth + 1)
                    for i, o in enumerate(junction.operands)
                ),
            )
        if kind == "not":
            return Not(self.expression(getattr(expr, "not"), f"{f}.not", depth + 1))
        raise InvalidArgument(
            f, "an expression is required (comparison, in_list, between, is_null, and, or, not)"
        )

    def _comparable(self, column: str, f: str) -> None:
        if self._types[column].startswith("list<"):
            raise InvalidArgument(f, f"{column!r} is a list: only IS NULL applies to it")

    def literal(self, lit: qpb.Literal, column: str, f: str) -> Value:
        self._literals += 1
        if self._literals > MAX_LITERALS:
            raise InvalidArgument("filter", f"at most {MAX_LITERALS} literals")
        kind = self._types[column]
        which = lit.WhichOneof("value")
        if which is None:
            raise InvalidArgument(f, f"a value is required (column {column!r} is {kind})")
        value = getattr(lit, which)

        def wrong() -> InvalidArgument:
            return InvalidArgument(
                f, f"column {column!r} is {kind}, got a {which.removesuffix('_value')}"
            )

        if kind == "string":
            if which != "string_value":
                raise wrong()
            if len(value.encode()) > MAX_STRING_BYTES:
                raise InvalidArgument(f, f"strings are at most {MAX_STRING_BYTES} bytes")
            return str(value)
        if kind == "bool":
            if which != "bool_value":
                raise wrong()
            return bool(value)
        if kind in ("int32", "int64"):
            if which != "int_value":
                raise wrong()
            if kind == "int32" and not INT32[0] <= value <= INT32[1]:
                raise InvalidArgument(f, f"{value} is out of the int32 range of column {column!r}")
            return int(value)
        if kind in ("float32", "float64"):
            if which == "int_value":
                return float(value)
            if which != "double_value":
                raise wrong()
            if not math.isfinite(value):
                raise InvalidArgument(f, "must be a finite number")
            return float(value)
        if kind.startswith("decimal("):
            if which == "int_value":
                return Decimal(value)
            if which != "decimal_value":
                raise wrong()
            try:
                number = Decimal(value)
            except InvalidOperation as exc:
                raise InvalidArgument(f, f"{value[:40]!r} is not a decimal number") from exc
            if not number.is_finite():
                raise InvalidArgument(f, "must be a finite number")
            return number
        if kind == "date":
            if which != "date_value":
                raise wrong()
            try:
                return date.fromisoformat(value)
            except ValueError as exc:
                raise InvalidArgument(f, f"{value[:40]!r} is not a date YYYY-MM-DD") from exc
        if kind == "timestamp":
            if which != "timestamp_value":
                raise wrong()
            return instant(value, f)
        raise InvalidArgument(f, f"column {column!r} of type {kind} cannot be compared")
