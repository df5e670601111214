"""Domain errors shared by every service; one interceptor maps them to gRPC status codes.

Domain code raises these and never imports grpc; `tdg_core.grpc.errors` does the mapping.
"""

from __future__ import annotations

from collections.abc import Sequence


class DomainError(Exception):
    """Base of the errors a caller can act upon; the message is shown to the caller."""


class InvalidArgument(DomainError):
    """A request field is malformed; `field` is its path, e.g. `schema.columns[2].type`."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    """The request is well formed but the state forbids it; `violations` lists each reason."""

    def __init__(self, message: str, violations: Sequence[str] = ()) -> None:
        self.violations = list(violations)
        full = message if not self.violations else f"{message}: " + "; ".join(self.violations)
        super().__init__(full)


class PermissionDenied(DomainError):
    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons) or ["denied by policy"]
        super().__init__("; ".join(self.reasons))


class Unauthenticated(DomainError):
    pass


class Unavailable(DomainError):
    """A dependency (OPA, Kafka, the database) cannot be reached."""


class ResourceExhausted(DomainError):
    pass


class Internal(DomainError):
    """A fault of the service itself (a bug), neither the caller's nor a dependency's. Its message
    is for the caller and says no more than where to look: the details go to the service's log."""
