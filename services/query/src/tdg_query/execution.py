"""One query, from its arrival to its audit record: the same for gRPC and Arrow Flight.

    Execution(engine, caller, asked, channel)
      prepare()      checked, decided (OPA), its subject set, planned (pyiceberg), built (SQL)
      open()         DuckDB started on the statement                               (blocking)
      next_batch()   the next batch under the caps, until the end or a revocation  (blocking)
      close(error)   DuckDB stopped and released; the audit record written

The guarantee: every execution ends, and is audited, exactly once. `close` does both the first time
it is called and nothing after; the execution is a context manager (sync and async) that closes it
with whatever ends the block: success, a refusal, a cap, a revocation, an error, the caller
cancelling or its deadline passing. The edges hold one execution in such a block (a Flight ticket
holds it between GetFlightInfo and DoGet, and closes it when it expires). A blocking step may run in
another thread when `close` comes: DuckDB is interrupted at once, and released when the step
returns.

A failure is told once, here, as `tdg_query.failures` says: refusals as they are, a dependency's
failure as UNAVAILABLE, anything else as INTERNAL with its message masked.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType

import duckdb
import pyarrow as pa
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.auth import Principal
from tdg_core.errors import DomainError, PermissionDenied, ResourceExhausted, Unavailable
from tdg_core.identifiers import parse_dataset_id

from tdg_query.engine import Decided, Engine, Prepared, cut
from tdg_query.failures import Cancelled, message_of, outcome_of, unexpected
from tdg_query.request import Asked

log = structlog.get_logger("tdg.query.execution")

PLANNING = "the query could not be planned"
RUNNING = "the query failed"


class Execution:
    """One query's run. Thread-safe: `interrupt` and `close`; the steps run one at a time."""

    def __init__(self, engine: Engine, caller: Principal, asked: Asked, channel: str) -> None:
        self.query_id = str(uuid.uuid4())
        self.caller = caller
        self.asked = asked
        self.channel = channel
        self._engine = engine
        self._started = time.monotonic()
        self._started_at = datetime.now(UTC)
        self._reached: Decided | Prepared | None = None
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._reader: pa.RecordBatchReader | None = None
        self._pending: list[pa.RecordBatch] = []
        self._exhausted = False
        self.rows = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._running = 0  # blocking steps under way
        self._ended = False

    @property
    def prepared(self) -> Prepared:
        assert isinstance(self._reached, Prepared), "prepare() first"
        return self._reached

    @property
    def duration_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    async def prepare(self) -> Prepared:
        """Checked, decided and planned."""
        try:
            return await self._prepare()
        except (DomainError, Cancelled):
            raise
        except Exception as exc:
            raise unexpected(exc, self.query_id, PLANNING) from exc

    async def _prepare(self) -> Prepared:
        engine = self._engine
        if not engine.audit.accepting():
            raise Unavailable(
                "the audit trail cannot be written (Kafka unreachable): no query runs unaudited"
            )
        parse_dataset_id(self.asked.dataset_id, "dataset_id")
        dataset = await engine.dataset(self.asked.dataset_id)
        query = self.asked.check(dataset)
        self._reached = decided = await engine.decide(self.caller, query, dataset)
        if not decided.decision.allow:
            raise PermissionDenied(list(decided.decision.reasons))
        self._reached = decided = await engine.consent(decided)
        self._reached = prepared = await engine.plan(decided, self.caller)
        problem = prepared.watch.problem()
        if problem:
            raise PermissionDenied([problem])
        return prepared

    def schema(self) -> pa.Schema:
        """The result's schema, without running the query. Blocking."""
        with self._step(RUNNING):
            return self._engine.schema(self.prepared)

    def open(self) -> pa.Schema:
        """Start DuckDB on the statement; the result's schema. Blocking: an aggregate or a sort
        runs here, before the first batch (`interrupt` stops it)."""
        with self._step(RUNNING):
            with self._lock:
                if self._ended:  # closed since the step began, with nothing to interrupt yet
                    raise Cancelled("the query had ended")
                self._cursor = cursor = self._engine.cursor()
            self._reader = reader = self._engine.open(self.prepared, cursor)
            schema: pa.Schema = reader.schema
            return schema

    def next_batch(self) -> pa.RecordBatch | None:
        """The next batch (at most MAX_BATCH_BYTES), or None at the end; PermissionDenied once
        the agreement is revoked or the party suspended, ResourceExhausted past a cap. Blocking."""
        with self._step(RUNNING):
            assert self._reader is not None, "open() first"
            while not self._pending:
                batch = self._engine.read(self._reader)
                if batch is None:
                    self._exhausted = True
                    return None
                if batch.num_rows:
                    self._pending.extend(cut(batch))
            batch = self._pending.pop(0)
            problem = self.prepared.watch.problem()
            if problem:
                raise PermissionDenied([problem])
            limits, size = self._engine.limits, batch.nbytes
            if self.rows + batch.num_rows > limits.max_rows:
                raise ResourceExhausted(
                    f"the result has more than {limits.max_rows} rows, the limit per query "
                    "(TDG_QUERY_MAX_ROWS): narrow the filter, aggregate, or set a limit"
                )
            if self.bytes + size > limits.max_bytes:
                raise ResourceExhausted(
                    f"the result is larger than {limits.max_bytes} bytes, the limit per query "
                    "(TDG_QUERY_MAX_BYTES): fewer columns, a narrower filter, or a limit"
                )
            self.rows += batch.num_rows
            self.bytes += size
            return batch

    @contextmanager
    def _step(self, doing: str) -> Iterator[None]:
        """A blocking step: its failure told as `failures` says; DuckDB released after it if the
        execution was closed meanwhile."""
        with self._lock:
            if self._ended:
                raise Cancelled("the query had ended")
            self._running += 1
        try:
            yield
        except (DomainError, Cancelled):
            raise
        except Exception as exc:
            raise unexpected(exc, self.query_id, doing) from exc
        finally:
            with self._lock:
                self._running -= 1
                release = self._ended and not self._running
            if release:
                self._release()

    def interrupt(self) -> None:
        """Stop DuckDB where it is (a blocked step then raises Cancelled)."""
        with self._lock:
            cursor = self._cursor
        if cursor is not None:
            try:
                cursor.interrupt()
            except Exception:  # already finished or closed
                pass

    def close(self, error: BaseException | None = None) -> None:
        """End the execution, with the error that ended it (None: answered): DuckDB stopped and
        released, the audit record written. Only the first call does anything."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            running = self._running
        if running:
            self.interrupt()  # the step under way releases DuckDB on its way out
        else:
            self._release()
        self._audit(self._told(error))

    def _release(self) -> None:
        """Stop DuckDB first unless the result was read to its end: a reader released early
        would otherwise run the rest of the query before the cursor closes."""
        if not self._exhausted:
            self.interrupt()
        for resource in (self._reader, self._cursor):
            if resource is not None:
                try:
                    resource.close()
                except Exception:
                    pass

    def _told(self, error: BaseException | None) -> BaseException | None:
        """What the audit trail says ended the execution (a fault outside the steps, at an edge,
        told as the steps tell theirs)."""
        if isinstance(error, Exception) and not isinstance(error, DomainError | Cancelled):
            return unexpected(error, self.query_id, RUNNING)
        if isinstance(error, GeneratorExit):
            return Cancelled("the caller stopped reading")
        if isinstance(error, asyncio.CancelledError):
            if not isinstance(self._reached, Prepared):
                return Cancelled("the caller left before the query started")
            if self._reader is None:
                return Cancelled("the caller cancelled the query")
            return Cancelled("the caller cancelled the query or its deadline passed")
        return error

    def __enter__(self) -> Execution:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(error)

    async def __aenter__(self) -> Execution:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(error)

    @contextmanager
    def closed_on_error(self) -> Iterator[Execution]:
        """A block after which the execution lives on (held by a Flight ticket, or by the stream
        it was handed to), unless the block fails: then it ends with the error."""
        try:
            yield self
        except BaseException as exc:
            self.close(exc)
            raise

    def _audit(self, error: BaseException | None) -> None:
        reached = self._reached
        prepared = reached if isinstance(reached, Prepared) else None
        decided = reached.decided if isinstance(reached, Prepared) else reached
        decision = decided.decision if decided else None
        consent = decided.consent if decided else None
        started = Timestamp()
        started.FromDatetime(self._started_at)
        record = qpb.AuditRecord(
            query_id=self.query_id,
            time=started,
            party=self.caller.party,
            org=self.caller.org,
            dataset_id=self.asked.dataset_id,
            snapshot_id=prepared.plan.snapshot_id if prepared else 0,
            purpose=self.asked.purpose,
            agreement_id=decision.agreement_id if decision else "",
            decision_id=decision.decision_id if decision else "",
            allowed=bool(decision and decision.allow),
            reasons=list(decision.reasons) if decision else [],
            treatments=[
                qpb.ColumnTreatment(column=c, treatment=t) for c, t in prepared.statement.output
            ]
            if prepared
            else [],
            request_json=self.asked.text(),
            row_filters_json=decision.row_filters_json() if decision else "[]",
            consent_required=bool(decision and decision.consent_required),
            consent_revision=consent.revision if consent else 0,
            min_group_size=decision.min_group_size if decision else 0,
            rows=self.rows,
            bytes=self.bytes,
            duration_ms=self.duration_ms,
            outcome=outcome_of(error, streaming=self._reader is not None),
            channel=self.channel,
            error=message_of(error),
        )
        self._engine.audit.record(record)
        log.info(
            "query",
            query_id=self.query_id,
            party=record.party,
            dataset=record.dataset_id,
            purpose=record.purpose,
            outcome=record.outcome,
            rows=record.rows,
            bytes=record.bytes,
            duration_ms=record.duration_ms,
            channel=record.channel,
        )
