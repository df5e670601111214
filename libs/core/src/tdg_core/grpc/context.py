"""Per-call context set by the interceptors and read by servicers."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from tdg_core.auth import Principal

_principal: ContextVar[Principal | None] = ContextVar("tdg_principal", default=None)
_decision: ContextVar[dict[str, Any] | None] = ContextVar("tdg_decision", default=None)


def current_principal() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise RuntimeError("no authenticated principal in this context")
    return principal


def current_decision() -> dict[str, Any]:
    """The OPA decision document of the current call (tdg.rpc.decision)."""
    decision = _decision.get()
    if decision is None:
        raise RuntimeError("no policy decision in this context")
    return decision


def set_principal(principal: Principal) -> None:
    _principal.set(principal)


def set_decision(decision: dict[str, Any]) -> None:
    _decision.set(decision)
