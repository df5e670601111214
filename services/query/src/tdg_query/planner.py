"""The read plan of a query: which snapshot, and which of its Parquet files, with pyiceberg.

pyiceberg only plans (manifests, partition and column-statistics pruning); DuckDB reads the files
itself. Reading through pyiceberg's Arrow batch reader costs 5-8 times more on two cores.

Plans are cached per (dataset, snapshot, pruning filter): a snapshot never changes. The table's
metadata is reloaded at most every `table_ttl_s` for reads of the current snapshot, since ingestion
commits a snapshot every second or so on a busy dataset.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow.parquet as pq
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression
from pyiceberg.table import Table
from tdg_core.errors import FailedPrecondition, NotFound, Unavailable
from tdg_lake import tables
from tdg_lake.catalog import table_identifier

from tdg_query import model as rq
from tdg_query.decision import Decision
from tdg_query.sql import Source

log = structlog.get_logger("tdg.query.planner")


@dataclass(frozen=True)
class Plan:
    snapshot_id: int  # 0: the table has no snapshot yet
    source: Source


class Planner:
    def __init__(self, catalog: Catalog, table_ttl_s: float = 0.5, cache_size: int = 512) -> None:
        self._catalog = catalog
        self._table_ttl_s = table_ttl_s
        self._cache_size = cache_size
        self._tables: dict[str, tuple[Table, float]] = {}
        self._plans: OrderedDict[tuple[str, int, str], Source] = OrderedDict()
        self._file_columns: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._lock = threading.Lock()

    def plan(self, query: rq.Query, decision: Decision) -> Plan:
        """Blocking (catalog and manifest reads): call it in a worker thread."""
        table = self._table(
            query.dataset_id, fresh=query.snapshot_id is None and query.as_of is None
        )
        snapshot = self._snapshot(table, query)
        if snapshot is None and query.snapshot_id is not None:
            table = self._table(query.dataset_id, fresh=True, force=True)
            snapshot = self._snapshot(table, query)
            if snapshot is None:
                raise NotFound(
                    f"snapshot {query.snapshot_id} of dataset '{query.dataset_id}' "
                    "(it may have expired: snapshots are kept for the ingest service's retention)"
                )
        if snapshot is None:
            return Plan(0, Source((), frozenset(), True))
        expression = pruning(query, decision)
        key = (query.dataset_id, snapshot.snapshot_id, repr(expression))
        with self._lock:
            cached = self._plans.get(key)
            if cached is not None:
                self._plans.move_to_end(key)
                return Plan(snapshot.snapshot_id, cached)
        try:
            source = self._files(table, snapshot.snapshot_id, expression)
        except (ValueError, TypeError) as exc:
            # A filter pyiceberg cannot bind (a code that is no number for a numeric column,
            # say) prunes nothing; DuckDB still applies it exactly.
            log.info("pruning skipped", dataset=query.dataset_id, error=str(exc))
            source = self._files(table, snapshot.snapshot_id, AlwaysTrue())
        with self._lock:
            self._plans[key] = source
            while len(self._plans) > self._cache_size:
                self._plans.popitem(last=False)
        return Plan(snapshot.snapshot_id, source)

    def _table(self, dataset_id: str, fresh: bool, force: bool = False) -> Table:
        now = time.monotonic()
        with self._lock:
            cached = self._tables.get(dataset_id)
        if cached is not None and not force and (not fresh or now - cached[1] < self._table_ttl_s):
            return cached[0]
        try:
            table = self._catalog.load_table(table_identifier(dataset_id))
        except NoSuchTableError as exc:
            raise NotFound(f"dataset '{dataset_id}' has no table yet (is it published?)") from exc
        except Exception as exc:
            raise Unavailable(f"the Iceberg catalog cannot be read: {exc}") from exc
        with self._lock:
            self._tables[dataset_id] = (table, now)
        return table

    @staticmethod
    def _snapshot(table: Table, query: rq.Query) -> Any:
        if query.snapshot_id is not None:
            return table.snapshot_by_id(query.snapshot_id)
        if query.as_of is not None:
            snapshot = table.snapshot_as_of_timestamp(int(query.as_of.timestamp() * 1000))
            if snapshot is None:
                raise NotFound(
                    f"dataset '{query.dataset_id}' has no snapshot at or before "
                    f"{query.as_of.isoformat()} (or it has expired)"
                )
            return snapshot
        return table.current_snapshot()

    def _files(self, table: Table, snapshot_id: int, expression: BooleanExpression) -> Source:
        try:
            tasks = list(table.scan(row_filter=expression, snapshot_id=snapshot_id).plan_files())
        except Exception as exc:
            raise Unavailable(f"the table's manifests cannot be read: {exc}") from exc
        schema = table.schemas().get(table.metadata.current_schema_id) or table.schema()
        names = {f.field_id: f.name for f in schema.fields}
        files: list[str] = []
        column_sets: list[frozenset[str]] = []
        for task in tasks:
            if task.delete_files:
                # The ingest service deletes by rewriting files (copy on write); delete files
                # would come from another writer and DuckDB would not apply them.
                raise FailedPrecondition(
                    f"table of '{table.name()}' has delete files; compact it before querying"
                )
            path = local_path(task.file.file_path)
            files.append(path)
            ids = set(task.file.value_counts or {}) | set(task.file.null_value_counts or {})
            if ids:
                column_sets.append(frozenset(names[i] for i in ids if i in names))
            else:
                column_sets.append(self._columns_of(path))
        present = frozenset().union(*column_sets) if column_sets else frozenset()
        uniform = len(set(column_sets)) <= 1
        return Source(tuple(files), present, uniform)

    def _columns_of(self, path: str) -> frozenset[str]:
        """A file without column statistics: its Parquet footer says which columns it has."""
        with self._lock:
            known = self._file_columns.get(path)
        if known is not None:
            return known
        columns = frozenset(pq.read_schema(path).names)
        with self._lock:
            self._file_columns[path] = columns
            while len(self._file_columns) > self._cache_size * 16:
                self._file_columns.popitem(last=False)
        return columns


def local_path(uri: str) -> str:
    """DuckDB reads local files by path; other schemes (s3://) as they are."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return unquote(parts.path)
    return uri


def pruning(query: rq.Query, decision: Decision) -> BooleanExpression:
    """The conjuncts pyiceberg can prune files with: the policy's row filters and the simple
    top-level conjuncts of the caller's filter. DuckDB applies the exact filter; this only skips
    files that cannot match, so anything not translated is left out (always true)."""
    parts: list[BooleanExpression] = [
        tables.is_in(f.column, f.values) for f in decision.row_filters if f.values
    ]
    conjuncts: list[rq.Expr] = []
    if query.filter is not None:
        stack: list[rq.Expr] = [query.filter]
        while stack:
            expr = stack.pop()
            if isinstance(expr, rq.Junction) and expr.op == "AND":
                stack.extend(expr.operands)
            else:
                conjuncts.append(expr)
    for expr in conjuncts:
        translated = _translate(expr)
        if translated is not None:
            parts.append(translated)
    return tables.all_of(parts)


_OPS: dict[str, Callable[[str, Any], BooleanExpression]] = {
    "=": tables.eq,
    "!=": tables.ne,
    "<": tables.lt,
    "<=": tables.le,
    ">": tables.gt,
    ">=": tables.ge,
}


def _literal(value: rq.Value) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _prunable(value: rq.Value) -> bool:
    # pyiceberg binds a decimal only at the column's exact scale; DuckDB compares it exactly.
    return not isinstance(value, Decimal)


def _translate(expr: rq.Expr) -> BooleanExpression | None:
    values = (
        [expr.value]
        if isinstance(expr, rq.Comparison)
        else list(expr.values)
        if isinstance(expr, rq.InList)
        else [expr.low, expr.high]
        if isinstance(expr, rq.Between)
        else []
    )
    if not all(_prunable(v) for v in values):
        return None
    if isinstance(expr, rq.Comparison):
        if isinstance(expr.value, float) and expr.op in ("=", "!="):
            return None  # float equality: leave it to DuckDB
        return _OPS[expr.op](expr.column, _literal(expr.value))
    if isinstance(expr, rq.InList) and not expr.negated:
        return tables.is_in(expr.column, (_literal(v) for v in expr.values))
    if isinstance(expr, rq.Between):
        return And(
            tables.ge(expr.column, _literal(expr.low)), tables.le(expr.column, _literal(expr.high))
        )
    if isinstance(expr, rq.IsNull):
        return tables.not_null(expr.column) if expr.negated else tables.is_null(expr.column)
    return None
