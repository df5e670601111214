"""A `QueryRequest` checked against the dataset's schema: the proto side of a query.

Everything the caller sends is checked here, before OPA is asked: names must be columns of the
dataset, literals must fit their column's type, expressions are bounded in depth and size (the
filter's expression tree is checked in `tdg_query.request_filter`). What
comes out is plain data (`tdg_query.model.Query`); the engine and the SQL builder only ever see
that, never the message. Until the dataset is known, the message travels as an `Asked`: what the
engine may read of it (the dataset, the purpose, the text the audit trail keeps) and its check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, text_format
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.errors import InvalidArgument

from tdg_query.model import Aggregate, Column, Comparison, Expr, Junction, Order, Query
from tdg_query.request_filter import FilterChecker, checked_column, instant

# Bounds on what one request may ask besides its filter (bounded in tdg_query.request_filter).
MAX_COLUMNS = 500
_ALIAS = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_FUNCTIONS = {
    qpb.AGGREGATE_FUNCTION_COUNT: "count",
    qpb.AGGREGATE_FUNCTION_SUM: "sum",
    qpb.AGGREGATE_FUNCTION_MIN: "min",
    qpb.AGGREGATE_FUNCTION_MAX: "max",
    qpb.AGGREGATE_FUNCTION_AVG: "avg",
    qpb.AGGREGATE_FUNCTION_COUNT_DISTINCT: "count_distinct",
}

_NUMERIC = ("int32", "int64", "float32", "float64")


def is_numeric(type_text: str) -> bool:
    return type_text in _NUMERIC or type_text.startswith("decimal(")


def request_json(request: qpb.QueryRequest) -> str:
    """The request as the audit trail keeps it (protobuf text when JSON cannot hold it: an
    out-of-range timestamp, refused as such, must still be audited)."""
    try:
        return json_format.MessageToJson(request, indent=None, sort_keys=True)
    except (ValueError, json_format.Error):
        return text_format.MessageToString(request, as_one_line=True)


@dataclass(frozen=True)
class Asked:
    """A request as it arrived, not yet checked (the dataset it names may not even exist): the
    engine reads what it names and the text the audit trail keeps; the message stays inside."""

    _request: qpb.QueryRequest = field(repr=False)

    @property
    def dataset_id(self) -> str:
        return self._request.dataset_id

    @property
    def purpose(self) -> str:
        return self._request.purpose

    def text(self) -> str:
        return request_json(self._request)

    def check(self, dataset: cpb.Dataset) -> Query:
        return check_request(self._request, dataset)


def check_request(request: qpb.QueryRequest, dataset: cpb.Dataset) -> Query:
    """The typed query, or InvalidArgument naming the first field that is wrong."""
    types = {c.name: c.type.strip() for c in dataset.schema.columns}
    checker = _Checker(types)
    if not request.purpose:
        raise InvalidArgument(
            "purpose", "is required: why the data is read, e.g. 'mobility-planning'"
        )
    columns = checker.names(request.columns, "columns")
    group_by = checker.names(request.group_by, "group_by")
    aggregates = checker.aggregates(request.aggregates, grouped=set(group_by))
    if group_by and not aggregates:
        raise InvalidArgument("group_by", "needs at least one aggregate")
    if aggregates and columns:
        extra = [c for c in columns if c not in group_by]
        if extra:
            raise InvalidArgument(
                "columns",
                f"{extra[0]!r} is neither grouped nor aggregated: with aggregates, the result is "
                "the group-by columns then the aggregates",
            )
    expr = (
        FilterChecker(types).expression(request.filter, "filter", 0)
        if request.HasField("filter")
        else None
    )
    time_filter = _time_range(request, dataset.schema.event_time_column, types)
    if time_filter is not None:
        expr = time_filter if expr is None else Junction("AND", (expr, time_filter))
    result_names = (
        set(group_by) | {a.alias for a in aggregates}
        if aggregates
        else (set(columns) if columns else set(types))
    )
    order_by = []
    for i, order in enumerate(request.order_by):
        name = order.column
        if name not in result_names:
            raise InvalidArgument(
                f"order_by[{i}].column",
                f"{name!r} is not a column of the result"
                + (" (order by a group-by column or an aggregate's alias)" if aggregates else ""),
            )
        order_by.append(Order(name, order.descending))
    limit: int | None = None
    if request.HasField("limit"):
        if request.limit <= 0:
            raise InvalidArgument(
                "limit", f"must be a positive number of rows, got {request.limit}"
            )
        limit = request.limit
    snapshot_id: int | None = None
    as_of: datetime | None = None
    which = request.WhichOneof("as_of")
    if which == "snapshot_id":
        if request.snapshot_id <= 0:
            raise InvalidArgument("snapshot_id", "must be a snapshot id of the table (positive)")
        snapshot_id = request.snapshot_id
    elif which == "as_of_time":
        as_of = instant(request.as_of_time, "as_of_time")
    return Query(
        dataset_id=request.dataset_id,
        purpose=request.purpose,
        columns=tuple(columns),
        filter=expr,
        group_by=tuple(group_by),
        aggregates=tuple(aggregates),
        order_by=tuple(order_by),
        limit=limit,
        snapshot_id=snapshot_id,
        as_of=as_of,
        schema=tuple(Column(n, t) for n, t in types.items()),
        event_time_column=dataset.schema.event_time_column,
    )


def _time_range(request: qpb.QueryRequest, column: str, types: dict[str, str]) -> Expr | None:
    if not request.HasField("time_range"):
        return None
    if not column or column not in types:
        raise InvalidArgument("time_range", "the dataset has no event-time column")
    parts: list[Expr] = []
    tr = request.time_range
    daily = types[column] == "date"
    if tr.HasField("start"):
        start = instant(tr.start, "time_range.start")
        parts.append(Comparison(column, ">=", start.date() if daily else start))
    if tr.HasField("end"):
        end = instant(tr.end, "time_range.end")
        # A day is kept when it overlaps the range: the end's day too, unless it ends at 0:00.
        if daily:
            midnight = end == datetime.combine(end.date(), datetime.min.time(), tzinfo=UTC)
            day = end.date() if midnight else end.date() + timedelta(days=1)
            parts.append(Comparison(column, "<", day))
        else:
            parts.append(Comparison(column, "<", end))
    if (
        tr.HasField("start")
        and tr.HasField("end")
        and tr.end.ToNanoseconds() <= tr.start.ToNanoseconds()
    ):
        raise InvalidArgument("time_range.end", "must be after time_range.start")
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Junction("AND", tuple(parts))


class _Checker:
    """The result's columns: listed names, group-by columns and aggregates."""

    def __init__(self, types: dict[str, str]) -> None:
        self._types = types

    def _column(self, name: str, field_name: str) -> str:
        return checked_column(self._types, name, field_name)

    def names(self, names: Any, field_name: str) -> list[str]:
        if len(names) > MAX_COLUMNS:
            raise InvalidArgument(field_name, f"at most {MAX_COLUMNS} columns")
        seen: list[str] = []
        for i, name in enumerate(names):
            self._column(name, f"{field_name}[{i}]")
            if name in seen:
                raise InvalidArgument(f"{field_name}[{i}]", f"{name!r} is listed twice")
            seen.append(name)
        return seen

    def aggregates(self, aggregates: Any, grouped: set[str]) -> list[Aggregate]:
        """Checked aggregates; an alias may not take a group-by column's name (`grouped`)."""
        out: list[Aggregate] = []
        aliases: set[str] = set()
        if len(aggregates) > MAX_COLUMNS:
            raise InvalidArgument("aggregates", f"at most {MAX_COLUMNS} aggregates")
        for i, agg in enumerate(aggregates):
            f = f"aggregates[{i}]"
            function = _FUNCTIONS.get(agg.function)
            if function is None:
                raise InvalidArgument(
                    f"{f}.function", f"one of {', '.join(_FUNCTIONS.values())} is required"
                )
            column = agg.column
            if column in ("", "*"):
                if function != "count":
                    raise InvalidArgument(f"{f}.column", f"{function} needs a column")
                column = ""
            else:
                self._column(column, f"{f}.column")
                kind = self._types[column]
                if function in ("sum", "avg") and not is_numeric(kind):
                    raise InvalidArgument(
                        f"{f}.column", f"{function} needs a number, {column!r} is {kind}"
                    )
                if function in ("min", "max") and kind.startswith("list<"):
                    raise InvalidArgument(f"{f}.column", f"{function} of a list is not supported")
            alias = agg.alias or (f"{function}_{column}" if column else function)
            if agg.alias and not _ALIAS.fullmatch(alias):
                raise InvalidArgument(
                    f"{f}.alias",
                    "up to 63 lowercase letters, digits or underscores, not starting with a digit",
                )
            if alias in aliases or alias in grouped:
                raise InvalidArgument(f"{f}.alias", f"{alias!r} is already a result column name")
            aliases.add(alias)
            out.append(Aggregate(function, column, alias))
        return out
