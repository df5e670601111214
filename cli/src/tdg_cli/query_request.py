"""`tdg query` options → a structured QueryRequest: columns, the --where filter (parsed by
`query_where`: no SQL text is ever sent), groups and aggregates, a time range, an order, a limit,
an earlier snapshot; an OptionError names the option at fault, before any call."""

from __future__ import annotations

from collections.abc import Sequence

from tdg.query.v1 import query_pb2 as pb

from tdg_cli.agreement_conditions import parse_time
from tdg_cli.query_where import COLUMN_NAME, parse_where
from tdg_cli.vocabulary import OptionError

AGGREGATES = {
    "count": pb.AGGREGATE_FUNCTION_COUNT,
    "sum": pb.AGGREGATE_FUNCTION_SUM,
    "min": pb.AGGREGATE_FUNCTION_MIN,
    "max": pb.AGGREGATE_FUNCTION_MAX,
    "avg": pb.AGGREGATE_FUNCTION_AVG,
    "count_distinct": pb.AGGREGATE_FUNCTION_COUNT_DISTINCT,
}
AGGREGATE_NAMES = {value: name for name, value in AGGREGATES.items()}


def column_list(texts: Sequence[str], option: str) -> list[str]:
    """Column names, comma-separated and/or the option repeated; OptionError on a bad or
    repeated one."""
    names: list[str] = []
    for text in texts:
        for part in text.split(","):
            name = part.strip()
            if not name:
                continue
            if not COLUMN_NAME.fullmatch(name):
                raise OptionError(option, f"{name!r} is not a column name ([a-z_][a-z0-9_]*)")
            if name in names:
                raise OptionError(option, f"{name!r} is named twice")
            names.append(name)
    return names


def parse_aggregate(text: str) -> pb.Aggregate:
    """`function[:column][:alias]`, e.g. `count`, `sum:count`, `count_distinct:counter_id:n`,
    `count::rows`; OptionError on --agg otherwise."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) > 3:
        raise OptionError("--agg", f"{text!r}: give FUNCTION[:COLUMN][:ALIAS]")
    function, column, alias = [*parts, "", ""][:3]
    name = function.lower()
    if name not in AGGREGATES:
        raise OptionError(
            "--agg", f"{text!r}: unknown function {function!r}; one of {', '.join(AGGREGATES)}"
        )
    if not column and name != "count":
        raise OptionError("--agg", f"{text!r}: {name} needs a column, e.g. {name}:count")
    for what, value in (("column", column), ("alias", alias)):
        if value and not COLUMN_NAME.fullmatch(value):
            raise OptionError("--agg", f"{text!r}: the {what} {value!r} is not [a-z_][a-z0-9_]*")
    return pb.Aggregate(function=AGGREGATES[name], column=column, alias=alias)


def aggregate_name(aggregate: pb.Aggregate) -> str:
    """The result column's name: the alias, or `<function>_<column>` (`count` alone)."""
    if aggregate.alias:
        return aggregate.alias
    function = AGGREGATE_NAMES.get(aggregate.function, str(aggregate.function))
    return f"{function}_{aggregate.column}" if aggregate.column else function


def parse_order_by(texts: Sequence[str]) -> list[pb.OrderBy]:
    """`column[:asc|:desc]`, comma-separated and/or the option repeated."""
    orders: list[pb.OrderBy] = []
    for text in texts:
        for part in text.split(","):
            item = part.strip()
            if not item:
                continue
            column, _, direction = item.partition(":")
            column, direction = column.strip(), direction.strip().lower()
            if not COLUMN_NAME.fullmatch(column):
                raise OptionError("--order-by", f"{column!r} is not a column name")
            if direction not in ("", "asc", "desc"):
                raise OptionError("--order-by", f"{item!r}: give COLUMN, COLUMN:asc or COLUMN:desc")
            if any(o.column == column for o in orders):
                raise OptionError("--order-by", f"{column!r} is named twice")
            orders.append(pb.OrderBy(column=column, descending=direction == "desc"))
    return orders


def query_request(
    dataset_id: str,
    purpose: str,
    columns: Sequence[str] = (),
    where: str | None = None,
    group_by: Sequence[str] = (),
    aggregates: Sequence[str] = (),
    since: str | None = None,
    until: str | None = None,
    order_by: Sequence[str] = (),
    limit: int | None = None,
    snapshot: int | None = None,
    as_of: str | None = None,
) -> pb.QueryRequest:
    """The options as a request; OptionError naming the option at fault."""
    if not purpose.strip():
        raise OptionError("--purpose", "give the purpose of the read")
    request = pb.QueryRequest(dataset_id=dataset_id.strip(), purpose=purpose.strip())
    request.columns.extend(column_list(columns, "--columns"))
    if where is not None:
        request.filter.CopyFrom(parse_where(where))
    request.group_by.extend(column_list(group_by, "--group-by"))
    request.aggregates.extend(parse_aggregate(a) for a in aggregates)
    if request.aggregates and request.columns:
        raise OptionError(
            "--columns", "not with --agg: the result is the --group-by columns then the aggregates"
        )
    names = list(request.group_by)
    for aggregate in request.aggregates:
        name = aggregate_name(aggregate)
        if name in names:
            raise OptionError(
                "--agg", f"two result columns named {name!r}: give an aggregate an alias (f:col:a)"
            )
        names.append(name)
    if since is not None:
        request.time_range.start.CopyFrom(parse_time(since, "--since"))
    if until is not None:
        request.time_range.end.CopyFrom(parse_time(until, "--until"))
        if since is not None and request.time_range.end.ToNanoseconds() <= (
            request.time_range.start.ToNanoseconds()
        ):
            raise OptionError("--until", "must be after --since")
    request.order_by.extend(parse_order_by(order_by))
    if limit is not None:
        if limit < 1:
            raise OptionError("--limit", "must be at least 1")
        request.limit = limit
    if snapshot is not None and as_of is not None:
        raise OptionError("--as-of", "give --snapshot or --as-of, not both")
    if snapshot is not None:
        request.snapshot_id = snapshot
    if as_of is not None:
        request.as_of_time.CopyFrom(parse_time(as_of, "--as-of"))
    return request
