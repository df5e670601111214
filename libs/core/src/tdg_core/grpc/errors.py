"""The one place where domain errors become gRPC status codes."""

from __future__ import annotations

import grpc

from tdg_core import errors

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-facing message of an exception (INTERNAL hides details)."""
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            message = str(exc)
            if isinstance(exc, errors.PermissionDenied):
                message = "permission denied: " + message
            return code, message
    return grpc.StatusCode.INTERNAL, "internal error (see the service log for the request id)"
