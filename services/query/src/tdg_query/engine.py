"""One engine behind both ways in (gRPC and Arrow Flight): prepare, then execute, then audit.

`prepare` (async) checks the request against the catalog entry, asks OPA `tdg.read` once, fetches
the consent subject set when the decision requires one, plans the read with pyiceberg and builds
the one DuckDB statement. `open` (blocking, in a worker thread or a Flight thread) starts DuckDB on
it; `Execution.next_batch` hands back record batches one at a time, under the row and byte caps,
and stops with PERMISSION_DENIED at the next batch once the agreement is revoked or the party
suspended. Every query, answered or refused, leaves one audit record.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.auth import Principal
from tdg_core.catalog_view import CatalogView
from tdg_core.errors import (
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input

from tdg_query import sql
from tdg_query.audit import AuditLog
from tdg_query.consent_sets import ConsentSets, Snapshot
from tdg_query.decision import Decision, parse_decision
from tdg_query.planner import Plan, Planner
from tdg_query.request import Query, check_dataset_id, check_request, request_json
from tdg_query.revocations import Revocations, Watch

log = structlog.get_logger("tdg.query.engine")

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


@dataclass
class Prepared:
    query_id: str
    principal: Principal
    request: qpb.QueryRequest
    channel: str
    started: float
    started_at: datetime
    dataset: cpb.Dataset | None = None
    query: Query | None = None
    decision: Decision | None = None
    plan: Plan | None = None
    statement: sql.Statement | None = None
    consent: Snapshot | None = None
    watch: Watch | None = None

    def header(self, schema: pa.Schema) -> qpb.QueryHeader:
        assert self.statement is not None and self.decision is not None and self.plan is not None
        return qpb.QueryHeader(
            query_id=self.query_id,
            dataset_id=self.request.dataset_id,
            snapshot_id=self.plan.snapshot_id,
            arrow_schema=schema.serialize().to_pybytes(),
            agreement_id=self.decision.agreement_id,
            treatments=[
                qpb.ColumnTreatment(column=c, treatment=t) for c, t in self.statement.output
            ],
            consent_revision=self.consent.revision if self.consent else 0,
        )


@dataclass
class Execution:
    """A running statement. Not thread-safe except `interrupt`."""

    prepared: Prepared
    cursor: duckdb.DuckDBPyConnection
    reader: pa.RecordBatchReader
    limits: Limits
    rows: int = 0
    bytes: int = 0
    exhausted: bool = False
    _pending: list[pa.RecordBatch] = field(default_factory=list)

    @property
    def schema(self) -> pa.Schema:
        return self.reader.schema

    def next_batch(self) -> pa.RecordBatch | None:
        """The next batch (at most MAX_BATCH_BYTES), or None at the end. Blocking."""
        while not self._pending:
            try:
                batch = self.reader.read_next_batch()
            except StopIteration:
                self.exhausted = True
                return None
            except duckdb.InterruptException as exc:
                raise Cancelled("the query was cancelled") from exc
            except duckdb.Error as exc:
                raise _duck_error(exc) from exc
            except (pa.ArrowException, OSError) as exc:
                # DuckDB's interrupt reaches the Arrow reader as an OSError ("INTERRUPT Error").
                if "interrupt" in str(exc).lower():
                    raise Cancelled("the query was cancelled") from exc
                raise Unavailable(f"the query engine failed: {exc}") from exc
            if batch.num_rows:
                self._pending.extend(_cut(batch))
        batch = self._pending.pop(0)
        watch = self.prepared.watch
        problem = watch.problem() if watch else None
        if problem:
            raise PermissionDenied([problem])
        size = batch.nbytes
        if self.rows + batch.num_rows > self.limits.max_rows:
            raise ResourceExhausted(
                f"the result has more than {self.limits.max_rows} rows, the limit per query "
                "(TDG_QUERY_MAX_ROWS): narrow the filter, aggregate, or set a limit"
            )
        if self.bytes + size > self.limits.max_bytes:
            raise ResourceExhausted(
                f"the result is larger than {self.limits.max_bytes} bytes, the limit per query "
                "(TDG_QUERY_MAX_BYTES): fewer columns, a narrower filter, or a limit"
            )
        self.rows += batch.num_rows
        self.bytes += size
        return batch

    def interrupt(self) -> None:
        try:
            self.cursor.interrupt()
        except Exception:  # already finished or closed
            pass

    def close(self) -> None:
        """Stop DuckDB first unless the result was read to its end: a reader released early
        would otherwise run the rest of the query before the cursor closes."""
        if not self.exhausted:
            self.interrupt()
        for release in (self.reader.close, self.cursor.close):
            try:
                release()
            except Exception:
                pass


def _cut(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    if batch.nbytes <= MAX_BATCH_BYTES or batch.num_rows <= 1:
        return [batch]
    rows = max(1, batch.num_rows * MAX_BATCH_BYTES // batch.nbytes)
    return [batch.slice(i, rows) for i in range(0, batch.num_rows, rows)]


class Engine:
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
        self._audit = audit
        self._database = database
        self._database_lock = threading.Lock()
        self.limits = limits

    async def prepare(
        self, principal: Principal, request: qpb.QueryRequest, channel: str
    ) -> Prepared:
        """Checked, decided and planned; every refusal is audited before it is raised."""
        prepared = Prepared(
            query_id=str(uuid.uuid4()),
            principal=principal,
            request=request,
            channel=channel,
            started=time.monotonic(),
            started_at=datetime.now(UTC),
        )
        try:
            await self._prepare(prepared)
        except asyncio.CancelledError:
            self.finish(prepared, None, Cancelled("the caller left before the query started"))
            raise
        except DomainError as exc:
            self.finish(prepared, None, exc)
            raise
        except Exception as exc:
            self.finish(prepared, None, exc)
            raise Unavailable(f"the query could not be planned: {exc}") from exc
        return prepared

    async def _prepare(self, prepared: Prepared) -> None:
        if not self._audit.accepting():
            raise Unavailable(
                "the audit trail cannot be written (Kafka unreachable): no query runs unaudited"
            )
        request = prepared.request
        check_dataset_id(request)
        entry = await self._datasets.fresh(request.dataset_id)
        if entry is None:
            raise NotFound(f"dataset '{request.dataset_id}' is not in the catalog")
        dataset = entry.dataset
        prepared.dataset = dataset
        query = check_request(request, dataset)
        prepared.query = query
        policy_input = read_input(
            dataset,
            prepared.principal.as_policy_input(),
            query.purpose,
            columns=query.columns,
            filter_columns=query.filter_columns(),
            group_by=query.group_by,
            aggregates=query.policy_aggregates(),
            order_by=query.order_columns(),
        )
        result, decision_id = await self._policy.decide_with_id(DecisionPath.READ, policy_input)
        decision = parse_decision(result, decision_id)
        prepared.decision = decision
        if not decision.allow:
            raise PermissionDenied(list(decision.reasons))
        if decision.consent_required:
            prepared.consent = await self._consent_sets.current(
                dataset.id, decision.consent_purpose or query.purpose
            )
        prepared.plan = await asyncio.to_thread(self._planner.plan, query, decision)
        prepared.statement = sql.build(
            query,
            decision,
            prepared.plan.source,
            dataset.schema.subject_column,
            sql.CONSENT_TABLE if prepared.consent is not None else None,
        )
        prepared.watch = self._revocations.watch(
            decision.agreement_id, prepared.principal.party, prepared.principal.org
        )
        problem = prepared.watch.problem()
        if problem:
            raise PermissionDenied([problem])

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own for one query (interruptible while `open` runs)."""
        with self._database_lock:
            return self._database.cursor()

    def open(
        self, prepared: Prepared, cursor: duckdb.DuckDBPyConnection | None = None
    ) -> Execution:
        """Start DuckDB on the statement. Blocking (an aggregate or a sort runs here, before the
        first batch): call it in a worker thread, with a `cursor()` to interrupt it meanwhile."""
        assert prepared.statement is not None
        cursor = cursor or self.cursor()
        try:
            if prepared.consent is not None:
                cursor.register(sql.CONSENT_TABLE, prepared.consent.subjects)
            relation = cursor.sql(prepared.statement.sql, params=prepared.statement.params)
            reader = relation.to_arrow_reader(self.limits.batch_rows)
        except duckdb.InterruptException as exc:
            cursor.close()
            raise Cancelled("the query was cancelled") from exc
        except duckdb.Error as exc:
            cursor.close()
            raise _duck_error(exc) from exc
        return Execution(prepared, cursor, reader, self.limits)

    def finish(
        self,
        prepared: Prepared,
        execution: Execution | None,
        error: BaseException | None,
    ) -> None:
        """Write the query's audit record (thread-safe)."""
        decision = prepared.decision
        statement = prepared.statement
        time_pb = Timestamp()
        time_pb.FromDatetime(prepared.started_at)
        record = qpb.AuditRecord(
            query_id=prepared.query_id,
            time=time_pb,
            party=prepared.principal.party,
            org=prepared.principal.org,
            dataset_id=prepared.request.dataset_id,
            snapshot_id=prepared.plan.snapshot_id if prepared.plan else 0,
            purpose=prepared.request.purpose,
            agreement_id=decision.agreement_id if decision else "",
            decision_id=decision.decision_id if decision else "",
            allowed=bool(decision and decision.allow),
            reasons=list(decision.reasons) if decision else [],
            treatments=[qpb.ColumnTreatment(column=c, treatment=t) for c, t in statement.output]
            if statement
            else [],
            request_json=request_json(prepared.request),
            row_filters_json=decision.row_filters_json() if decision else "[]",
            consent_required=bool(decision and decision.consent_required),
            consent_revision=prepared.consent.revision if prepared.consent else 0,
            min_group_size=decision.min_group_size if decision else 0,
            rows=execution.rows if execution else 0,
            bytes=execution.bytes if execution else 0,
            duration_ms=int((time.monotonic() - prepared.started) * 1000),
            outcome=outcome_of(error, execution is not None),
            channel=prepared.channel,
            error=_message(error),
        )
        self._audit.record(record)
        log.info(
            "query",
            query_id=prepared.query_id,
            party=record.party,
            dataset=record.dataset_id,
            purpose=record.purpose,
            outcome=record.outcome,
            rows=record.rows,
            bytes=record.bytes,
            duration_ms=record.duration_ms,
            channel=record.channel,
        )


def outcome_of(error: BaseException | None, streaming: bool = False) -> str:
    """The audit record's outcome: ok | denied | revoked | invalid | limit_exceeded | cancelled |
    failed."""
    if error is None:
        return "ok"
    if isinstance(error, PermissionDenied):
        return "revoked" if streaming else "denied"
    if isinstance(error, InvalidArgument | NotFound):
        return "invalid"
    if isinstance(error, ResourceExhausted):
        return "limit_exceeded"
    if isinstance(error, asyncio.CancelledError | Cancelled):
        return "cancelled"
    return "failed"


class Cancelled(Exception):
    """The caller went away or its deadline passed."""


def _message(error: BaseException | None) -> str:
    if error is None:
        return ""
    return str(error)[:2000] or type(error).__name__


def _duck_error(exc: duckdb.Error) -> DomainError:
    """DuckDB's refusal of a statement built from a checked request: a value out of range or a
    conversion the request's literals cannot make."""
    if isinstance(exc, duckdb.ConversionException | duckdb.OutOfRangeException):
        return InvalidArgument("filter", f"a value cannot be used with its column: {exc}")
    if isinstance(exc, duckdb.IOException):
        return Unavailable(f"the table's data files cannot be read: {exc}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ResourceExhausted(f"the query needs more memory than the service has: {exc}")
    return Unavailable(f"the query engine failed: {exc}")
