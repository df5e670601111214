"""A query as the engine plans it: plain, immutable data, checked before it gets here.

`tdg_query.request` makes one from a `QueryRequest` and the dataset's schema (names are columns of
the dataset, literals fit their column's type); `sql` and `planner` read it. Nothing here knows the
wire format.

    Query ── filter: Expr = Comparison | InList | Between | IsNull | Junction(AND/OR, …) | Not(…)
          ├─ aggregates: Aggregate(function, column, alias)…   group_by, order_by: Order…
          └─ schema: Column(name, type)…   (the dataset's, for the types of the columns used)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

Value = bool | int | float | str | date | datetime | Decimal


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the catalog's type text


@dataclass(frozen=True)
class Comparison:
    column: str
    op: str  # = != < <= > >=
    value: Value


@dataclass(frozen=True)
class InList:
    column: str
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True)
class Between:
    column: str
    low: Value
    high: Value


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool


@dataclass(frozen=True)
class Junction:
    op: str  # AND | OR
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    operand: Expr


Expr = Comparison | InList | Between | IsNull | Junction | Not


@dataclass(frozen=True)
class Aggregate:
    function: str  # count sum min max avg count_distinct
    column: str  # "" for count(*)
    alias: str


@dataclass(frozen=True)
class Order:
    column: str
    descending: bool


@dataclass(frozen=True)
class Query:
    dataset_id: str
    purpose: str
    columns: tuple[str, ...]  # empty: every column the caller may see (raw rows only)
    filter: Expr | None
    group_by: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    order_by: tuple[Order, ...]
    limit: int | None
    snapshot_id: int | None
    as_of: datetime | None
    schema: tuple[Column, ...] = field(repr=False)
    event_time_column: str = ""

    @property
    def aggregating(self) -> bool:
        return bool(self.aggregates)

    def column_type(self, name: str) -> str:
        for c in self.schema:
            if c.name == name:
                return c.type
        raise KeyError(name)

    def filter_columns(self) -> list[str]:
        return sorted(set(_columns_of(self.filter))) if self.filter else []

    def order_columns(self) -> list[str]:
        """Order-by names that are dataset columns (aliases of aggregates are not)."""
        names = {c.name for c in self.schema}
        aliases = {a.alias for a in self.aggregates}
        return [o.column for o in self.order_by if o.column in names and o.column not in aliases]

    def policy_aggregates(self) -> list[dict[str, str]]:
        return [{"function": a.function, "column": a.column or "*"} for a in self.aggregates]


def _columns_of(expr: Expr) -> list[str]:
    if isinstance(expr, Junction):
        return [c for operand in expr.operands for c in _columns_of(operand)]
    if isinstance(expr, Not):
        return _columns_of(expr.operand)
    return [expr.column]
