"""`tdg party …`: register, get, list, suspend, reinstate the parties of the data space."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from tdg.consent.v1 import consent_pb2 as pb

from tdg_cli.client import CONSENT, JsonOpt, out, print_json, usage_errors
from tdg_cli.vocabulary import PARTY_KINDS, PARTY_STATUSES, when

party_app = typer.Typer(help="Parties: organisations and their applications.", no_args_is_help=True)

PageSizeOpt = typer.Option(50, "--page-size", min=1, max=500, help="parties per page")
PageTokenOpt = typer.Option("", "--page-token", help="the page to start from")
AllPagesOpt = typer.Option(False, "--all", help="follow the pages to the end")


def _print_party(p: pb.Party) -> None:
    status = PARTY_STATUSES.name(p.status)
    colour = "yellow" if p.status == pb.PARTY_STATUS_SUSPENDED else "dim"
    out.print(f"[bold]{p.id}[/] — {p.name}  [{colour}]({PARTY_KINDS.name(p.kind)}, {status})[/]")
    details = []
    if p.organisation:
        details.append(f"organisation {p.organisation}")
    details.append(f"roles {', '.join(p.roles) or '-'}")
    if p.siren:
        details.append(f"SIREN {p.siren}")
    if p.contact:
        details.append(f"contact {p.contact}")
    out.print(" · ".join(details))
    if p.suspension_reason:
        out.print(f"[yellow]suspended:[/] {p.suspension_reason}")
    out.print(f"[dim]created {when(p.created_at)} · updated {when(p.updated_at)}[/]")


def _show(response: Any, as_json: bool) -> None:
    if as_json:
        print_json(response)
    else:
        _print_party(response.party)


@party_app.command()
def register(
    party_id: str = typer.Argument(..., metavar="ID", help="lowercase letters, digits, hyphens"),
    kind: str = typer.Option(..., "--kind", help=PARTY_KINDS.choices),
    name: str = typer.Option(..., "--name", help="the name shown to people"),
    organisation: str = typer.Option(
        "", "--organisation", help="an application's owning organisation"
    ),
    role: list[str] = typer.Option(
        [], "--role", help="publisher, producer or consumer; repeat for several"
    ),
    siren: str = typer.Option("", "--siren", help="an organisation's SIREN (9 digits)"),
    contact: str = typer.Option("", "--contact", help="e.g. an e-mail address"),
    as_json: bool = JsonOpt,
) -> None:
    """Register an organisation or an application (platform-admin)."""
    with usage_errors():
        party_kind = PARTY_KINDS.value(kind, "--kind")
    party = pb.Party(
        id=party_id,
        kind=party_kind,
        name=name,
        organisation=organisation,
        roles=role,
        siren=siren,
        contact=contact,
    )
    _show(CONSENT.rpc("RegisterParty", pb.RegisterPartyRequest(party=party)), as_json)


@party_app.command()
def get(party_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
    """Show a party."""
    _show(CONSENT.rpc("GetParty", pb.GetPartyRequest(id=party_id)), as_json)


@party_app.command("list")
def list_(
    kind: str = typer.Option("", "--kind", help=PARTY_KINDS.choices),
    organisation: str = typer.Option("", "--organisation", help="an organisation's applications"),
    status: str = typer.Option("", "--status", help=PARTY_STATUSES.choices),
    page_size: int = PageSizeOpt,
    page_token: str = PageTokenOpt,
    all_pages: bool = AllPagesOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List parties (one page, the next page token printed; --all for every page)."""
    with usage_errors():
        party_kind = PARTY_KINDS.optional(kind, "--kind")
        party_status = PARTY_STATUSES.optional(status, "--status")
    request = pb.ListPartiesRequest(
        kind=party_kind,
        organisation=organisation,
        status=party_status,
        page_size=page_size,
        page_token=page_token,
    )
    response = CONSENT.rpc_pages("ListParties", request, all_pages)
    if as_json:
        print_json(response)
        return
    table = Table("id", "name", "kind", "organisation", "roles", "status")
    for p in response.parties:
        table.add_row(
            p.id,
            p.name,
            PARTY_KINDS.name(p.kind),
            p.organisation,
            ", ".join(p.roles),
            PARTY_STATUSES.name(p.status),
        )
    out.print(table)
    if response.next_page_token:
        out.print(f"next page: --page-token {response.next_page_token}")


@party_app.command()
def suspend(
    party_id: str = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option(..., "--reason", help="why (shown in every denial)"),
    as_json: bool = JsonOpt,
) -> None:
    """Suspend a party: it (and an organisation's applications) is denied everything."""
    _show(CONSENT.rpc("SuspendParty", pb.SuspendPartyRequest(id=party_id, reason=reason)), as_json)


@party_app.command()
def reinstate(party_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
    """Lift a party's suspension."""
    _show(CONSENT.rpc("ReinstateParty", pb.ReinstatePartyRequest(id=party_id)), as_json)
