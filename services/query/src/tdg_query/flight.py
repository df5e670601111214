"""Arrow Flight in front of the engine, so pyarrow.flight and ADBC clients work unchanged.

    GetFlightInfo(CMD = a serialized tdg.query.v1.QueryRequest) → the result schema and a ticket
    DoGet(ticket)                                                → the record batches
    GetSchema(same descriptor)                                   → the result schema only
    ListFlights(criteria = a purpose, or empty)                  → one flight per readable dataset

Each call carries `authorization: Bearer <JWT>` and is governed by OPA's `tdg.rpc` decision as a
gRPC call is; each query by `tdg.read`, as an `Execution` (the same as a gRPC query's).
GetFlightInfo prepares the query and computes its schema without reading data; the single-use
ticket it returns holds the execution, is bound to the caller's party and expires after
`ticket_ttl_s`. DoGet runs the query. Every query gets exactly one audit record (the execution's):
answered, refused, cancelled, or never fetched.

Handlers run in Flight's own threads; the asynchronous parts (prepare, OPA) run on the service's
event loop, the blocking DuckDB parts in the handler's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import pyarrow as pa
import structlog
from google.protobuf.message import DecodeError
from pyarrow import flight
from tdg.query.v1 import query_pb2 as qpb
from tdg_core.auth import Principal, TokenVerifier
from tdg_core.errors import (
    DomainError,
    Internal,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
)
from tdg_core.grpc.errors import status_of
from tdg_core.grpc.interceptors import authorize_call
from tdg_core.policy import PolicyClient

from tdg_query.engine import Engine
from tdg_query.execution import Execution
from tdg_query.failures import Cancelled
from tdg_query.readable import Readable
from tdg_query.request import Asked
from tdg_query.servicer import dataset_resource
from tdg_query.tickets import Tickets

log = structlog.get_logger("tdg.query.flight")

SERVICE = "arrow.flight.protocol.FlightService"
# How often a blocked handler looks whether its caller went away, and how long it waits for the
# event loop (prepare plans with pyiceberg and may fetch a consent subject set).
POLL_S = 0.25
LOOP_TIMEOUT_S = 120.0
SWEEP_S = 1.0
STOPPING = "the query service is stopping: run the query again"

T = TypeVar("T")

# pyarrow.flight sends these exceptions with the status codes on the left (checked against a
# server, pyarrow 26). Flight's own exceptions travel with their message only; the others
# (ArrowInvalid, ArrowKeyError) also carry a Python traceback in the status details: they are
# raised `from None`, at one place, so that it shows that place only.
_FLIGHT_ERRORS: dict[grpc.StatusCode, Callable[[str], Exception]] = {
    grpc.StatusCode.UNAUTHENTICATED: flight.FlightUnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: flight.FlightUnauthorizedError,
    grpc.StatusCode.UNAVAILABLE: flight.FlightUnavailableError,
    grpc.StatusCode.INTERNAL: flight.FlightInternalError,
    grpc.StatusCode.INVALID_ARGUMENT: pa.ArrowInvalid,
    grpc.StatusCode.NOT_FOUND: pa.ArrowKeyError,
}


class Stopping(Cancelled):
    """The server stops while the query runs: audited as cancelled, answered UNAVAILABLE."""

    def __init__(self) -> None:
        super().__init__("the query service stopped while the query ran")


def flight_error(exc: BaseException) -> Exception:
    """The Flight exception for an error: the gRPC service's status code and message, or, for a
    code Flight cannot send (RESOURCE_EXHAUSTED…), UNKNOWN with the code's name first."""
    if isinstance(exc, flight.FlightError):
        return exc  # type: ignore[no-any-return]
    if isinstance(exc, Stopping):
        exc = Unavailable(STOPPING)
    if isinstance(exc, Cancelled):
        return flight.FlightCancelledError(str(exc) or "cancelled")  # type: ignore[no-any-return]
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL and not isinstance(exc, Internal):
        message = "internal error (see the query service's log)"
    make = _FLIGHT_ERRORS.get(code)
    if make is None:
        return flight.FlightServerError(f"{code.name}: {message}")  # type: ignore[no-any-return]
    return make(message)


def _translated(handler: Callable[..., T]) -> Callable[..., T]:
    """A Flight handler whose errors reach the client as `flight_error` says."""

    @functools.wraps(handler)
    def wrapper(*args: Any) -> T:
        try:
            return handler(*args)
        except Exception as exc:
            if not isinstance(exc, DomainError | Cancelled | flight.FlightError):
                log.error("flight handler failed", handler=handler.__name__, exc_info=True)
            raise flight_error(exc) from None

    return wrapper


class _Streams:
    """The executions blocked reading a batch right now, with their calls: interrupted when the
    caller goes away or the server stops. A call's context is only valid while the call runs, so
    it is only looked at under the lock, between `reading`'s entry and exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reading: dict[int, tuple[Any, Execution]] = {}
        self.stopping = False

    @contextmanager
    def reading(self, context: Any, execution: Execution) -> Iterator[None]:
        with self._lock:
            if self.stopping:
                raise Stopping()
            self._reading[id(execution)] = (context, execution)
        try:
            yield
        finally:
            with self._lock:
                del self._reading[id(execution)]

    def interrupt_cancelled(self) -> None:
        with self._lock:
            for context, execution in self._reading.values():
                if context.is_cancelled():
                    execution.interrupt()

    def interrupt_all(self) -> None:
        with self._lock:
            self.stopping = True
            for _, execution in self._reading.values():
                execution.interrupt()


class _Authenticated(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, principal: Principal) -> None:
        self.principal = principal


class _Authentication(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Verifies the bearer token of every call, as the gRPC server does."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> _Authenticated:
        values = headers.get("authorization") or [None]
        value = values[0].decode() if isinstance(values[0], bytes) else values[0]
        try:
            principal = self._verifier.verify(value)
        except Unauthenticated as exc:
            raise flight.FlightUnauthenticatedError(str(exc)) from None
        return _Authenticated(principal)


def query_request(descriptor: Any) -> qpb.QueryRequest:
    """The query a descriptor carries: a command, the bytes of a tdg.query.v1.QueryRequest."""
    if descriptor.descriptor_type != flight.DescriptorType.CMD:
        raise InvalidArgument(
            "descriptor",
            "must be a command holding a serialized tdg.query.v1.QueryRequest "
            "(FlightDescriptor.for_command(request.SerializeToString())); paths are not served",
        )
    request = qpb.QueryRequest()
    try:
        request.ParseFromString(descriptor.command)
    except DecodeError as exc:
        raise InvalidArgument(
            "descriptor.cmd", f"is not a serialized tdg.query.v1.QueryRequest: {exc}"
        ) from None
    return request


def purpose_of(criteria: bytes) -> str:
    try:
        return criteria.decode().strip()
    except UnicodeDecodeError:
        raise InvalidArgument("criteria", "must be a purpose in UTF-8, or empty") from None


class QueryFlightServer(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(
        self,
        location: str,
        engine: Engine,
        readable: Readable,
        verifier: TokenVerifier,
        policy: PolicyClient,
        loop: asyncio.AbstractEventLoop,
        ticket_ttl_s: float,
    ) -> None:
        # Set before the base class starts the server: calls may come in right away.
        self._engine = engine
        self._readable = readable
        self._policy = policy
        self._loop = loop
        self._tickets: Tickets[Execution] = Tickets(ticket_ttl_s, self._expired)
        self._streams = _Streams()
        self._stopped = threading.Event()
        self._watch = threading.Thread(target=self._watching, name="flight-watch", daemon=True)
        super().__init__(location, middleware={"auth": _Authentication(verifier)})
        self._watch.start()

    def shutdown(self) -> None:
        """Stop: running queries end with UNAVAILABLE, unclaimed tickets are audited."""
        self._streams.interrupt_all()
        super().shutdown()
        self._stopped.set()
        self._watch.join()
        self._tickets.close()

    # The Flight methods.

    @_translated
    def get_flight_info(self, context: Any, descriptor: Any) -> Any:
        request = query_request(descriptor)
        principal = self._authorize(context, "GetFlightInfo", dataset_resource(request.dataset_id))
        execution = Execution(self._engine, principal, Asked(request), "flight")
        with execution.closed_on_error():  # else the ticket holds it
            self._on_loop(context, execution.prepare())
            schema = execution.schema()
            ticket = self._tickets.issue(principal.party, execution)
        return flight.FlightInfo(
            schema,
            descriptor,
            [flight.FlightEndpoint(ticket, [])],
            total_records=-1,
            total_bytes=-1,
        )

    @_translated
    def get_schema(self, context: Any, descriptor: Any) -> Any:
        request = query_request(descriptor)
        principal = self._authorize(context, "GetSchema", dataset_resource(request.dataset_id))
        # Answered once the schema is had: it is all that was asked (no rows read).
        with Execution(self._engine, principal, Asked(request), "flight") as execution:
            self._on_loop(context, execution.prepare())
            return flight.SchemaResult(execution.schema())

    @_translated
    def do_get(self, context: Any, ticket: Any) -> Any:
        execution = self._tickets.claim(ticket.ticket, self._principal(context).party)
        with execution.closed_on_error():  # else the stream holds it
            self._authorize(context, "DoGet", dataset_resource(execution.asked.dataset_id))
            if self._streams.stopping:
                raise Unavailable(STOPPING)
            # Blocking, and DuckDB runs the query's blocking parts (aggregates, sort) right here.
            schema = execution.open()
            batches = self._batches(context, execution)
            next(batches)
            return flight.GeneratorStream(schema, batches)

    @_translated
    def list_flights(self, context: Any, criteria: bytes) -> list[Any]:
        purpose = purpose_of(criteria)
        principal = self._authorize(context, "ListFlights", {})
        found = self._on_loop(context, self._readable.datasets(principal, purpose))
        return [
            flight.FlightInfo(
                pa.schema([]),
                flight.FlightDescriptor.for_command(
                    qpb.QueryRequest(
                        dataset_id=d.dataset_id, purpose=d.purposes[0]
                    ).SerializeToString()
                ),
                [],
                total_records=-1,
                total_bytes=-1,
                app_metadata=json.dumps(
                    {"dataset_id": d.dataset_id, "title": d.title, "purposes": d.purposes}
                ).encode(),
            )
            for d in found
        ]

    # The parts.

    def _batches(
        self, context: Any, execution: Execution
    ) -> Generator[pa.RecordBatch | None, None, None]:
        """The answer, batch by batch; the execution ends with the stream, however it ends.
        Primed by one `next` so that, from then on, dropping it unread still ends it."""
        try:
            with execution:
                yield None
                while (batch := self._next_batch(context, execution)) is not None:
                    yield batch
        except Exception as exc:
            raise flight_error(exc) from None

    def _next_batch(self, context: Any, execution: Execution) -> pa.RecordBatch | None:
        """The next batch, unless the server stops (`reading` says) or the caller went away."""
        try:
            with self._streams.reading(context, execution):
                if context.is_cancelled():
                    raise Cancelled("the caller cancelled the query or its deadline passed")
                return execution.next_batch()
        except Cancelled:  # DuckDB interrupted: by the caller leaving, or by the server stopping
            if self._streams.stopping:
                raise Stopping() from None
            raise

    def _principal(self, context: Any) -> Principal:
        middleware = context.get_middleware("auth")
        if middleware is None:  # cannot happen: the middleware refuses calls without a token
            raise Unauthenticated("no authenticated caller")
        principal: Principal = middleware.principal
        return principal

    def _authorize(self, context: Any, rpc: str, resource: dict[str, Any]) -> Principal:
        """OPA's tdg.rpc decision on the call, asked as the gRPC AuthorizationInterceptor does."""
        principal = self._principal(context)
        self._on_loop(
            context, authorize_call(self._policy, f"/{SERVICE}/{rpc}", principal, resource)
        )
        return principal

    def _on_loop(self, context: Any, work: Coroutine[Any, Any, T]) -> T:
        """`work`'s result, run on the service's event loop; cancelled when the caller goes away
        or the loop does not answer in time."""
        try:
            future = asyncio.run_coroutine_threadsafe(work, self._loop)
        except RuntimeError:  # the loop is closed
            work.close()
            raise Unavailable(STOPPING) from None
        deadline = time.monotonic() + LOOP_TIMEOUT_S
        while not future.done():
            concurrent.futures.wait([future], timeout=POLL_S)
            if future.done():
                break
            if context.is_cancelled() or time.monotonic() > deadline:
                future.cancel()
                if context.is_cancelled():
                    raise Cancelled("the caller cancelled the call")
                raise Unavailable(f"the query service did not answer within {LOOP_TIMEOUT_S}s")
        if future.cancelled():  # by the loop, which is stopping
            raise Unavailable(STOPPING)
        return future.result()

    @staticmethod
    def _expired(execution: Execution) -> None:
        execution.close(Cancelled("the ticket expired before DoGet"))

    def _watching(self) -> None:
        swept = time.monotonic()
        while not self._stopped.wait(POLL_S):
            self._streams.interrupt_cancelled()
            if time.monotonic() - swept >= SWEEP_S:
                swept = time.monotonic()
                try:
                    self._tickets.sweep()
                except Exception:
                    log.exception("expiring flight tickets failed")
