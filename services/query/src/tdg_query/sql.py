"""The one DuckDB statement of a query: the policy's decision applied inside the plan.

    WITH base AS (                       -- what the caller may see, and nothing else
      SELECT <each needed column as its treatment: clear, NULL, salted hash, generalised>
      FROM read_parquet(<the snapshot's pruned data files>) AS t
      WHERE <the policy's row filters> AND <the subject has active consent>   -- on raw values
    )
    SELECT <columns | group-by columns and aggregates> FROM base
    WHERE <the caller's filter and time range>
    GROUP BY … HAVING <group size >= k, for aggregate-only access> ORDER BY … LIMIT …

The caller's filter, grouping and ordering read `base`, where a masked column is already replaced
by its treatment, so no clause can see a value in clear that the caller did not get (and the policy
refuses such clauses anyway). Identifiers come from the catalog's schema and are quoted; every value
from the request or the decision is a bound parameter; the only words written into the text are
from fixed allowlists (operators, truncation units, types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tdg_core.errors import PermissionDenied

from tdg_query.decision import Decision, Treatment
from tdg_query.model import (
    Between,
    Comparison,
    Expr,
    InList,
    IsNull,
    Junction,
    Not,
    Query,
)

CONSENT_TABLE = "tdg_consent_set"  # registered per query: subject_id (string)
EPCI_TABLE = "tdg_epci"  # commune (string) → epci (string), loaded once per database
SUBJECT_ALIAS = "__tdg_subject"  # column names are [a-z]…, so this cannot collide

_SCALARS = {
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
}


def duck_type(type_text: str) -> str:
    """The DuckDB type of a catalog type (the grammar of tdg_core.column_types)."""
    scalar = _SCALARS.get(type_text)
    if scalar is not None:
        return scalar
    if type_text.startswith("decimal("):
        precision, scale = type_text[len("decimal(") : -1].split(",")
        return f"DECIMAL({int(precision)},{int(scale)})"
    if type_text.startswith("list<") and type_text.endswith(">"):
        return duck_type(type_text[len("list<") : -1]) + "[]"
    raise ValueError(f"unknown column type {type_text!r}")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Source:
    """The data files of the snapshot read, and which columns they hold."""

    files: tuple[str, ...]
    present: frozenset[str]  # columns found in at least one file
    uniform: bool  # every file has the same columns (else read by name, missing as NULL)


@dataclass
class Statement:
    sql: str
    params: list[Any] = field(default_factory=list)
    output: list[tuple[str, str]] = field(default_factory=list)  # (column, treatment described)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"


def build(
    query: Query,
    decision: Decision,
    source: Source,
    subject_column: str,
    consent_table: str | None,
) -> Statement:
    """The statement; PermissionDenied if the query would use what the decision does not grant
    (OPA refuses such requests first; this is the plan's own guard)."""
    stmt = Statement("")
    types = {c.name: c.type for c in query.schema}
    visible = [c.name for c in query.schema if decision.treatment(c.name).kind != "deny"]
    result_columns = list(query.group_by) if query.aggregating else list(query.columns) or visible
    used_clear = set(query.group_by) | {a.column for a in query.aggregates if a.column}
    used_clear |= set(query.filter_columns()) | set(query.order_columns())
    _guard(decision, result_columns, used_clear)
    _guard_aggregate_only(decision, query)
    needed = [c.name for c in query.schema if c.name in set(result_columns) | used_clear]
    k_anonymity = decision.aggregate_only and decision.min_group_size > 0
    counted = subject_column if k_anonymity and subject_column in types else ""
    base = _base(stmt, query, decision, source, needed, types, consent_table, counted)
    outer: list[str] = []
    for name in result_columns:
        outer.append(quote(name))
        stmt.output.append((name, decision.treatment(name).describe()))
    for agg in query.aggregates:
        outer.append(f"{_aggregate(agg.function, agg.column, types)} AS {quote(agg.alias)}")
        stmt.output.append((agg.alias, "aggregate"))
    sql = f"WITH base AS ({base}) SELECT {', '.join(outer)} FROM base"
    if query.filter is not None:
        sql += f" WHERE {_expr(stmt, query.filter, types)}"
    if query.group_by:
        sql += " GROUP BY " + ", ".join(quote(g) for g in query.group_by)
    if k_anonymity:
        # Groups are counted in distinct data subjects where the dataset names them.
        size = f"count(DISTINCT {SUBJECT_ALIAS})" if counted else "count(*)"
        sql += f" HAVING {size} >= {stmt.bind(decision.min_group_size)}"
    if query.order_by:
        sql += " ORDER BY " + ", ".join(
            f"{quote(o.column)} {'DESC' if o.descending else 'ASC'} NULLS LAST"
            for o in query.order_by
        )
    if query.limit is not None:
        sql += f" LIMIT {stmt.bind(query.limit)}"
    stmt.sql = sql
    return stmt


def _guard(decision: Decision, result_columns: list[str], used_clear: set[str]) -> None:
    problems = [
        f"column {name!r} is not granted"
        for name in result_columns
        if decision.treatment(name).kind == "deny"
    ] + [
        f"column {name!r} must be clear to be filtered, grouped, ordered or aggregated"
        for name in sorted(used_clear)
        if decision.treatment(name).kind != "clear"
    ]
    if problems:
        raise PermissionDenied(problems)


def _guard_aggregate_only(decision: Decision, query: Query) -> None:
    if decision.aggregate_only and not query.aggregating:
        raise PermissionDenied(["access is aggregate-only: the request must aggregate"])


def _base(
    stmt: Statement,
    query: Query,
    decision: Decision,
    source: Source,
    needed: list[str],
    types: dict[str, str],
    consent_table: str | None,
    counted_subject: str,
) -> str:
    """`base`: the needed columns as treated, the rows the policy and the consents allow."""

    def raw(name: str) -> str:
        if name in source.present:
            return "t." + quote(name)
        return f"CAST(NULL AS {duck_type(types[name])})"  # added after these files were written

    selected = [
        f"{_treated(stmt, raw(n), types[n], decision.treatment(n))} AS {quote(n)}" for n in needed
    ]
    if counted_subject:
        selected.append(f"{raw(counted_subject)} AS {SUBJECT_ALIAS}")
    conditions: list[str] = []
    for row_filter in decision.row_filters:
        if row_filter.column not in types:
            raise PermissionDenied([f"row filter column {row_filter.column!r} is not a column"])
        if not row_filter.values:
            conditions.append("false")
            continue
        column = raw(row_filter.column)
        if types[row_filter.column] != "string":
            column = f"CAST({column} AS VARCHAR)"
        values = ", ".join(stmt.bind(v) for v in row_filter.values)
        conditions.append(f"{column} IN ({values})")
    if decision.consent_required:
        if consent_table is None or decision.subject_column not in types:
            raise PermissionDenied(["consent is required but no subject set applies"])
        subject = raw(decision.subject_column)
        if types[decision.subject_column] != "string":
            subject = f"CAST({subject} AS VARCHAR)"
        conditions.append(f"{subject} IN (SELECT subject_id FROM {consent_table})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    columns = ", ".join(selected) or "1 AS __tdg_row"
    return f"SELECT {columns} FROM {_scan(stmt, source, query)} AS t{where}"


def _scan(stmt: Statement, source: Source, query: Query) -> str:
    if not source.files:
        # No data yet (or nothing left after pruning): an empty relation of the right types.
        columns = ", ".join(
            f"CAST(NULL AS {duck_type(c.type)}) AS {quote(c.name)}" for c in query.schema
        )
        return f"(SELECT {columns} WHERE false)"
    files = stmt.bind(list(source.files))
    union = "false" if source.uniform else "true"
    return f"read_parquet({files}, union_by_name={union}, hive_partitioning=false)"


def _treated(stmt: Statement, raw: str, type_text: str, treatment: Treatment) -> str:
    kind = duck_type(type_text)
    if treatment.kind == "clear":
        return raw
    if treatment.kind == "null":
        return f"CAST(NULL AS {kind})"
    if treatment.kind == "hash":
        # Salted SHA-256 of the value's text: stable within an agreement (joins and counts work),
        # unlinkable across agreements (each has its own secret salt). NULL stays NULL.
        return f"sha256({stmt.bind(treatment.salt)} || CAST({raw} AS VARCHAR))"
    if treatment.kind == "generalise":
        if treatment.truncate_to:
            return f"CAST(date_trunc('{treatment.truncate_to}', {raw}) AS {kind})"
        if treatment.round_to:
            step = stmt.bind(treatment.round_to)
            return f"CAST(round(CAST({raw} AS DOUBLE) / {step}) * {step} AS {kind})"
        if treatment.commune_to_epci:
            # Unknown communes become NULL: never the commune in clear.
            return (
                f"(SELECT e.epci FROM {EPCI_TABLE} AS e WHERE e.commune = CAST({raw} AS VARCHAR))"
            )
    raise PermissionDenied([f"treatment {treatment.kind!r} cannot be applied"])


def _aggregate(function: str, column: str, types: dict[str, str]) -> str:
    if function == "count":
        return f"count({quote(column)})" if column else "count(*)"
    if function == "count_distinct":
        return f"count(DISTINCT {quote(column)})"
    if function == "sum" and types[column] in ("int32", "int64"):
        # DuckDB sums integers as HUGEINT (Arrow decimal(38,0)); a count of things is an int64.
        return f"CAST(sum({quote(column)}) AS BIGINT)"
    if function == "sum" and types[column] == "float32":
        return f"CAST(sum({quote(column)}) AS DOUBLE)"
    return f"{function}({quote(column)})"


def _expr(stmt: Statement, expr: Expr, types: dict[str, str]) -> str:
    if isinstance(expr, Junction):
        return "(" + f" {expr.op} ".join(_expr(stmt, o, types) for o in expr.operands) + ")"
    if isinstance(expr, Not):
        return f"(NOT {_expr(stmt, expr.operand, types)})"
    column = quote(expr.column)
    kind = duck_type(types[expr.column])

    def value(v: Any) -> str:
        if isinstance(v, Decimal) and kind.startswith("DECIMAL("):
            # At the literal's own scale when finer than the column's: 1.225 must not become
            # 1.23 (DuckDB compares decimals of different scales exactly).
            scale = max(int(kind[:-1].split(",")[1]), -int(v.as_tuple().exponent))
            return f"CAST({stmt.bind(v)} AS DECIMAL(38,{min(scale, 37)}))"
        return f"CAST({stmt.bind(v)} AS {kind})"

    if isinstance(expr, Comparison):
        return f"({column} {expr.op} {value(expr.value)})"
    if isinstance(expr, InList):
        values = ", ".join(value(v) for v in expr.values)
        return f"({column} {'NOT IN' if expr.negated else 'IN'} ({values}))"
    if isinstance(expr, Between):
        return f"({column} BETWEEN {value(expr.low)} AND {value(expr.high)})"
    if isinstance(expr, IsNull):
        return f"({column} IS {'NOT ' if expr.negated else ''}NULL)"
    raise TypeError(f"unknown expression {expr!r}")
