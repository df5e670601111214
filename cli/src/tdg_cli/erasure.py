"""`tdg erasure …`: a data subject's right to erasure, carried out by the ingest service."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from tdg.consent.v1 import consent_pb2 as pb

from tdg_cli.client import CONSENT, JsonOpt, out, print_json, usage_errors
from tdg_cli.vocabulary import ERASURE_STATES, when

erasure_app = typer.Typer(help="Erasure requests.", no_args_is_help=True)


def _print_erasure(e: pb.Erasure) -> None:
    out.print(
        f"[bold]{e.id}[/] — erase {e.subject_id} from {e.dataset_id or 'every dataset'}"
        f"  [dim]({ERASURE_STATES.name(e.state)})[/]"
    )
    details = [f"requested by {e.requested_by or '-'} at {when(e.requested_at)}"]
    if e.source:
        details.append(f"source {e.source}")
    if when(e.completed_at):
        details.append(f"completed {when(e.completed_at)}")
    out.print(" · ".join(details))
    if e.reason:
        out.print(f"reason: {e.reason}")
    if e.failure:
        out.print(f"[red]failure:[/] {e.failure}")
    if e.datasets:
        table = Table("dataset", "snapshot", "rows deleted", "completed")
        for d in e.datasets:
            table.add_row(
                d.dataset_id, str(d.snapshot_id), str(d.rows_deleted), when(d.completed_at)
            )
        out.print(table)


def _show(response: Any, as_json: bool) -> None:
    if as_json:
        print_json(response)
    else:
        _print_erasure(response.erasure)


@erasure_app.command()
def request(
    subject_id: str = typer.Argument(..., metavar="SUBJECT", help="the data subject's id"),
    dataset: str = typer.Option("", "--dataset", help="one dataset; default: every dataset"),
    reason: str = typer.Option("", "--reason", help="why"),
    source: str = typer.Option("", "--source", help="where it was received, e.g. portal"),
    as_json: bool = JsonOpt,
) -> None:
    """Ask for a subject's records to be erased."""
    req = pb.RequestErasureRequest(
        subject_id=subject_id, dataset_id=dataset, reason=reason, source=source
    )
    _show(CONSENT.rpc("RequestErasure", req), as_json)


@erasure_app.command()
def status(erasure_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
    """Show an erasure request and what it has deleted."""
    _show(CONSENT.rpc("GetErasure", pb.GetErasureRequest(id=erasure_id)), as_json)


@erasure_app.command("list")
def list_(
    subject: str = typer.Option("", "--subject", help="a data subject's id"),
    state: str = typer.Option("", "--state", help=ERASURE_STATES.choices),
    page_size: int = typer.Option(50, "--page-size", min=1, max=500, help="requests per page"),
    page_token: str = typer.Option("", "--page-token", help="the page to start from"),
    all_pages: bool = typer.Option(False, "--all", help="follow the pages to the end"),
    as_json: bool = JsonOpt,
) -> None:
    """List erasure requests (one page, the next page token printed; --all for every page)."""
    with usage_errors():
        erasure_state = ERASURE_STATES.optional(state, "--state")
    req = pb.ListErasuresRequest(
        subject_id=subject, state=erasure_state, page_size=page_size, page_token=page_token
    )
    response = CONSENT.rpc_pages("ListErasures", req, all_pages)
    if as_json:
        print_json(response)
        return
    table = Table("id", "subject", "dataset", "state", "requested", "completed")
    for e in response.erasures:
        table.add_row(
            e.id,
            e.subject_id,
            e.dataset_id or "(every dataset)",
            ERASURE_STATES.name(e.state),
            when(e.requested_at),
            when(e.completed_at),
        )
    out.print(table)
    if response.next_page_token:
        out.print(f"next page: --page-token {response.next_page_token}")
