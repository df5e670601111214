"""gRPC calls from the CLI: bearer token, deadline, and errors printed for a person.

Also what every command module shares: the services (stub and address), paging, `--json`, and
option errors turned into usage errors (exit 2 naming the option).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from tdg.catalog.v1 import catalog_pb2_grpc
from tdg.consent.v1 import consent_pb2_grpc
from tdg.ingest.v1 import ingest_pb2_grpc
from tdg.query.v1 import query_pb2_grpc

from tdg_cli.settings import CliSettings
from tdg_cli.vocabulary import OptionError

err = Console(stderr=True)
out = Console()
T = TypeVar("T")

JsonOpt = typer.Option(False, "--json", help="print JSON instead of a table")


@contextmanager
def channel(addr: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(addr) as ch:
        yield ch


def _metadata(settings: CliSettings) -> tuple[tuple[str, str], ...]:
    if settings.token is None:
        err.print(
            "[red]no token:[/] set TDG_TOKEN, e.g. "
            "export TDG_TOKEN=$(tdg token issue --party me --org my-org --role data-officer)"
        )
        raise typer.Exit(2)
    return (
        ("authorization", f"Bearer {settings.token.get_secret_value()}"),
        ("x-request-id", uuid.uuid4().hex),
    )


def _failed(exc: grpc.RpcError) -> typer.Exit:
    err.print(f"[red]{exc.code().name}[/]: {exc.details()}")
    return typer.Exit(1)


def call(
    settings: CliSettings, method: Callable[..., T], request: Any, timeout_s: float | None = None
) -> T:
    """Call with the token and a deadline (`timeout_s`, default the settings' call timeout); exit 1
    with the status and message on failure. A client-streaming method takes an iterator of
    requests, sent as it yields them."""
    metadata = _metadata(settings)
    timeout = settings.call_timeout_s if timeout_s is None else timeout_s
    try:
        return method(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as exc:
        raise _failed(exc) from exc


def call_stream(settings: CliSettings, method: Callable[..., Any], request: Any) -> Iterator[Any]:
    """A server-streaming call: its messages as they come (the deadline covers the whole stream);
    exit 1 with the status and message on failure, before or during the stream."""
    metadata = _metadata(settings)
    try:
        yield from method(request, metadata=metadata, timeout=settings.call_timeout_s)
    except grpc.RpcError as exc:
        raise _failed(exc) from exc


@dataclass(frozen=True)
class Service:
    """A gRPC service the CLI calls: its stub class and the setting holding its address."""

    stub: Callable[[grpc.Channel], Any]
    addr: Callable[[CliSettings], str]

    def rpc(self, name: str, request: Any, timeout_s: float | None = None) -> Any:
        """Call the method `name` (e.g. "GetDataset"); `timeout_s` replaces the usual deadline."""
        settings = CliSettings()
        with channel(self.addr(settings)) as ch:
            return call(settings, getattr(self.stub(ch), name), request, timeout_s)

    def rpc_pages(self, name: str, request: Any, all_pages: bool) -> Any:
        """A list method: one page, or with `all_pages` every page from the request's
        page_token on, merged into one response (its next_page_token empty)."""
        settings = CliSettings()
        with channel(self.addr(settings)) as ch:
            method = getattr(self.stub(ch), name)
            response = call(settings, method, request)
            seen: set[str] = set()
            while all_pages and response.next_page_token:
                token = response.next_page_token
                if token in seen:  # a service that loops would otherwise never end
                    err.print(f"[red]the service repeated the page token {token!r}[/]")
                    raise typer.Exit(1)
                seen.add(token)
                request.page_token = token
                page = call(settings, method, request)
                response.MergeFrom(page)
                response.next_page_token = page.next_page_token
            return response

    def pages(self, name: str, request: Any) -> Generator[Any, None, None]:
        """A list method's pages from the request's page_token on, each called for when the
        previous one has been read (the channel open meanwhile): stop reading to stop calling."""
        settings = CliSettings()
        with channel(self.addr(settings)) as ch:
            method = getattr(self.stub(ch), name)
            seen: set[str] = set()
            while True:
                response = call(settings, method, request)
                yield response
                token = response.next_page_token
                if not token:
                    return
                if token in seen:  # a service that loops would otherwise never end
                    err.print(f"[red]the service repeated the page token {token!r}[/]")
                    raise typer.Exit(1)
                seen.add(token)
                request.page_token = token

    def stream(self, name: str, request: Any) -> Iterator[Any]:
        """A server-streaming method's messages; the channel stays open while they are read."""
        settings = CliSettings()
        with channel(self.addr(settings)) as ch:
            yield from call_stream(settings, getattr(self.stub(ch), name), request)


CATALOG = Service(catalog_pb2_grpc.CatalogServiceStub, lambda s: s.catalog_addr)
CONSENT = Service(consent_pb2_grpc.ConsentServiceStub, lambda s: s.consent_addr)
INGEST = Service(ingest_pb2_grpc.IngestServiceStub, lambda s: s.ingest_addr)
QUERY = Service(query_pb2_grpc.QueryServiceStub, lambda s: s.query_addr)


def print_json(message: Any) -> None:
    """A response as JSON (the proto JSON mapping, with the proto's field names)."""
    out.print_json(json.dumps(MessageToDict(message, preserving_proto_field_name=True)))


@contextmanager
def usage_errors() -> Iterator[None]:
    """Turn an OptionError raised while translating the options into a usage error: the option
    named, exit 2, nothing called."""
    try:
        yield
    except OptionError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{exc.option}'") from exc
