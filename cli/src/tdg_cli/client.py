"""gRPC calls from the CLI: bearer token, deadline, and errors printed for a person."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import typer
from rich.console import Console

from tdg_cli.settings import CliSettings

err = Console(stderr=True)
T = TypeVar("T")


@contextmanager
def channel(addr: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(addr) as ch:
        yield ch


def call(settings: CliSettings, method: Callable[..., T], request: Any) -> T:
    """Call with the token and a deadline; exit 1 with the status and message on failure."""
    if settings.token is None:
        err.print(
            "[red]no token:[/] set TDG_TOKEN, e.g. "
            "export TDG_TOKEN=$(tdg token issue --party me --org my-org --role data-officer)"
        )
        raise typer.Exit(2)
    metadata = (
        ("authorization", f"Bearer {settings.token.get_secret_value()}"),
        ("x-request-id", uuid.uuid4().hex),
    )
    try:
        return method(request, metadata=metadata, timeout=settings.call_timeout_s)
    except grpc.RpcError as exc:
        code = exc.code()
        err.print(f"[red]{code.name}[/]: {exc.details()}")
        raise typer.Exit(1) from exc
