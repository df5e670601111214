"""How a query's end is told: to its caller (a domain error, mapped to a status by
`tdg_core.grpc.errors` for gRPC and Flight alike) and to the audit trail (an outcome).

    what happened                                   the caller gets          audited as
    the request, the policy or a cap refuses it     its DomainError          invalid, denied,
                                                                             revoked, limit_exceeded
    the caller left, or its deadline passed         Cancelled                cancelled
    a dependency failed: Kafka, OPA, Iceberg, the   UNAVAILABLE, the cause   failed
      consent service, files and sockets
    anything else: a fault of the query service     INTERNAL, masked: only   failed
                                                    the query id

Only dependency failures are caught as such; any other exception is a bug, logged once with its
traceback and the query id, and its text never reaches the caller.
"""

from __future__ import annotations

import asyncio

import aiohttp
import duckdb
import grpc
import structlog
from pyiceberg.exceptions import CommitFailedException, RESTError
from tdg_core import background
from tdg_core.errors import (
    DomainError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)

log = structlog.get_logger("tdg.query")

# Besides Kafka and OSError (files, sockets, timeouts, Arrow's IO errors), which every service has:
DEPENDENCY_FAILURES: tuple[type[BaseException], ...] = (
    *background.DEPENDENCY_FAILURES,
    aiohttp.ClientError,  # OPA
    grpc.RpcError,  # the consent service
    RESTError,  # an Iceberg REST catalog
    CommitFailedException,
    duckdb.IOException,  # the data files, local or in the object store
)


class Cancelled(Exception):
    """The caller went away or its deadline passed."""


def unexpected(exc: Exception, query_id: str, doing: str) -> DomainError:
    """What the caller of a query gets for an exception no step turned into a domain error:
    UNAVAILABLE with the cause when a dependency failed, else INTERNAL with the message masked
    (the exception is logged here, with its traceback)."""
    if isinstance(exc, DEPENDENCY_FAILURES):
        return Unavailable(f"{doing}: {exc}")
    log.error("query failed: a fault of the query service", query_id=query_id, exc_info=exc)
    return Internal(f"internal error, query id {query_id} (see the query service's log)")


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


def message_of(error: BaseException | None) -> str:
    """The audit record's `error`."""
    if error is None:
        return ""
    return str(error)[:2000] or type(error).__name__
