"""The steps of a query, each from one immutable stage to the next; `tdg_query.execution` runs them
in order and audits the result, for gRPC and Arrow Flight alike.

    Query + caller ─decide─► Decided ─consent─► Decided ─plan─► Prepared ─open─► a reader
                 (OPA tdg.read)    (its subject set,   (pyiceberg's files,  (DuckDB runs
                                    when required)      the one statement)   the statement)

`decide`, `consent` and `plan` are asynchronous; `open`, `schema` and `read` block (DuckDB runs
an aggregate or a sort before the first batch): call them in a worker thread or a Flight thread.
DuckDB's errors, as exceptions or as the Arrow reader's OSError, become domain errors here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg_core.auth import Principal
from tdg_core.catalog_view import CatalogView
from tdg_core.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input

from tdg_query import sql
from tdg_query.audit import AuditLog
from tdg_query.consent_sets import ConsentSets, Snapshot
from tdg_query.decision import Decision, parse_decision
from tdg_query.failures import Cancelled
from tdg_query.model import Query
from tdg_query.planner import Plan, Planner
from tdg_query.revocations import Revocations, Watch

# gRPC clients refuse messages over 4 MiB by default: batches are cut well below.
MAX_BATCH_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    dataset: cpb.Dataset


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_bytes: int
    batch_rows: int


@dataclass(frozen=True)
class Decided:
    """A query OPA has decided on (allowed or not), with its subject set once fetched."""

    query: Query
    dataset: cpb.Dataset
    decision: Decision
    consent: Snapshot | None = None


@dataclass(frozen=True)
class Prepared:
    """A query ready to run: the snapshot's files planned, the one statement built."""

    decided: Decided
    plan: Plan
    statement: sql.Statement
    watch: Watch


class Engine:
    """What every query runs on: the catalog, OPA, the consent sets, the revocations, pyiceberg's
    planner, DuckDB, the caps, and the audit trail its executions write to."""

    def __init__(
        self,
        datasets: CatalogView[Entry],
        planner: Planner,
        policy: PolicyClient,
        consent_sets: ConsentSets,
        revocations: Revocations,
        audit: AuditLog,
        database: duckdb.DuckDBPyConnection,
        limits: Limits,
    ) -> None:
        self._datasets = datasets
        self._planner = planner
        self._policy = policy
        self._consent_sets = consent_sets
        self._revocations = revocations
        self._database = database
        self._database_lock = threading.Lock()
        self.audit = audit
        self.limits = limits

    async def dataset(self, dataset_id: str) -> cpb.Dataset:
        entry = await self._datasets.fresh(dataset_id)
        if entry is None:
            raise NotFound(f"dataset '{dataset_id}' is not in the catalog")
        return entry.dataset

    async def decide(self, caller: Principal, query: Query, dataset: cpb.Dataset) -> Decided:
        """OPA's `tdg.read` decision on the query, once."""
        policy_input = read_input(
            dataset,
            caller.as_policy_input(),
            query.purpose,
            columns=query.columns,
            filter_columns=query.filter_columns(),
            group_by=query.group_by,
            aggregates=query.policy_aggregates(),
            order_by=query.order_columns(),
        )
        result, decision_id = await self._policy.decide_with_id(DecisionPath.READ, policy_input)
        return Decided(query, dataset, parse_decision(result, decision_id))

    async def consent(self, decided: Decided) -> Decided:
        """With the subjects whose consent the decision requires (as it is if none)."""
        decision = decided.decision
        if not decision.consent_required:
            return decided
        purpose = decision.consent_purpose or decided.query.purpose
        snapshot = await self._consent_sets.current(decided.dataset.id, purpose)
        return dataclasses.replace(decided, consent=snapshot)

    async def plan(self, decided: Decided, caller: Principal) -> Prepared:
        query, decision = decided.query, decided.decision
        plan = await asyncio.to_thread(self._planner.plan, query, decision)
        statement = sql.build(
            query,
            decision,
            plan.source,
            decided.dataset.schema.subject_column,
            sql.CONSENT_TABLE if decided.consent is not None else None,
        )
        watch = self._revocations.watch(decision.agreement_id, caller.party, caller.org)
        return Prepared(decided, plan, statement, watch)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one query (interruptible while `open` runs)."""
        with self._database_lock:
            return self._database.cursor()

    def open(self, prepared: Prepared, cursor: duckdb.DuckDBPyConnection) -> pa.RecordBatchReader:
        """DuckDB started on the statement, on `cursor` (which the caller closes). Blocking."""
        consent = prepared.decided.consent
        try:
            if consent is not None:
                cursor.register(sql.CONSENT_TABLE, consent.subjects)
            relation = cursor.sql(prepared.statement.sql, params=prepared.statement.params)
            return relation.to_arrow_reader(self.limits.batch_rows)
        except duckdb.Error as exc:
            raise duck_error(exc) from exc

    def schema(self, prepared: Prepared) -> pa.Schema:
        """The result's schema without reading data: DuckDB answers `LIMIT 0` with an empty
        result and no scan, whereas opening the statement itself runs its blocking parts
        (aggregates, sort)."""
        statement = prepared.statement
        probe = dataclasses.replace(
            prepared,
            statement=dataclasses.replace(
                statement, sql=f"SELECT * FROM ({statement.sql}) LIMIT 0"
            ),
        )
        cursor = self.cursor()
        try:
            reader = self.open(probe, cursor)
            schema: pa.Schema = reader.schema
            reader.close()
            return schema
        finally:
            cursor.close()

    def read(self, reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
        """DuckDB's next batch, or None at the end. Blocking."""
        try:
            return reader.read_next_batch()
        except StopIteration:
            return None
        except duckdb.Error as exc:
            raise duck_error(exc) from exc
        except (pa.ArrowException, OSError) as exc:
            streamed = _streamed_error(exc)
            if streamed is None:
                raise  # Arrow's own: an OSError is a dependency's failure, the rest a fault
            raise duck_error(streamed) from exc


def cut(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """`batch` in slices of at most MAX_BATCH_BYTES (about)."""
    if batch.nbytes <= MAX_BATCH_BYTES or batch.num_rows <= 1:
        return [batch]
    rows = max(1, batch.num_rows * MAX_BATCH_BYTES // batch.nbytes)
    return [batch.slice(i, rows) for i in range(0, batch.num_rows, rows)]


def duck_error(exc: duckdb.Error) -> Exception:
    """The domain error of DuckDB's refusal of a statement built from a checked request (a value
    out of range, a conversion the request's literals cannot make) or of a failure to run it;
    any other DuckDB error is a fault of the statement, so of the service: a copy of it, to be
    told as such (`failures.unexpected`)."""
    if isinstance(exc, duckdb.InterruptException):
        return Cancelled("the query was cancelled")
    if isinstance(exc, duckdb.ConversionException | duckdb.OutOfRangeException):
        return InvalidArgument("filter", f"a value cannot be used with its column: {exc}")
    if isinstance(exc, duckdb.IOException | duckdb.InvalidInputException):
        return Unavailable(f"the table's data files cannot be read: {exc}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ResourceExhausted(f"the query needs more memory than the service has: {exc}")
    return type(exc)(str(exc))


# DuckDB's errors while a result streams reach the Arrow reader as an OSError whose message begins
# with the error's kind ("Conversion Error: …"); as the same exceptions they are told the same.
_STREAM_ERRORS: dict[str, type[duckdb.Error]] = {
    "INTERRUPT": duckdb.InterruptException,
    "Conversion": duckdb.ConversionException,
    "Out of Range": duckdb.OutOfRangeException,
    "IO": duckdb.IOException,
    "HTTP": duckdb.HTTPException,
    "Invalid Input": duckdb.InvalidInputException,
    "Out of Memory": duckdb.OutOfMemoryException,
}


def _streamed_error(exc: Exception) -> duckdb.Error | None:
    kind, found, _ = str(exc).partition(" Error: ")
    if not found:
        return duckdb.InterruptException(str(exc)) if "interrupt" in str(exc).lower() else None
    return _STREAM_ERRORS.get(kind, duckdb.Error)(str(exc))
