"""`tdg access …`: access requests, data-sharing agreements, producer grants, purposes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from tdg.consent.v1 import consent_pb2 as pb

from tdg_cli.agreement_conditions import (
    MASK_SPEC_HELP,
    ConditionOptions,
    build_conditions,
    mask_spec,
    territory_spec,
)
from tdg_cli.client import CONSENT, JsonOpt, out, print_json, usage_errors
from tdg_cli.vocabulary import ACCESS_KINDS, AGREEMENT_STATES, LEGAL_BASES, when

access_app = typer.Typer(help="Access requests and data-sharing agreements.", no_args_is_help=True)

AgreementArg = typer.Argument(..., metavar="AGREEMENT_ID")
ReasonOpt = typer.Option(..., "--reason", help="why (kept in the agreement's history)")


# --- display -----------------------------------------------------------------------------------


def _print_conditions(c: pb.Conditions) -> None:
    out.print("[bold]conditions[/]")
    out.print(f"  columns: {', '.join(c.columns) or 'every column'}")
    if c.masks:
        out.print("  masks: " + ", ".join(f"{m.column}={mask_spec(m)}" for m in c.masks))
    else:
        out.print("  masks: none (personal and sensitive columns get the default masks)")
    if c.HasField("territory_filter") and c.territory_filter.column:
        out.print(f"  territory: {territory_spec(c.territory_filter)}")
    if c.aggregate_only:
        size = c.min_group_size or "the territory's default"
        out.print(f"  aggregates only, groups of at least {size}")
    until = when(c.valid_until) or "revoked"
    out.print(f"  valid from {when(c.valid_from) or '-'} until {until}")
    k = c.commitments
    if k.max_freshness_lag_s or k.completeness_pct or k.validity_rate_pct:
        promised = []
        if k.max_freshness_lag_s:
            promised.append(f"lag ≤ {k.max_freshness_lag_s} s")
        if k.completeness_pct:
            promised.append(f"completeness ≥ {k.completeness_pct:g} %")
        if k.validity_rate_pct:
            promised.append(f"validity ≥ {k.validity_rate_pct:g} %")
        out.print(f"  commitments: {' · '.join(promised)}")


def _print_agreement(a: pb.Agreement) -> None:
    out.print(
        f"[bold]{a.id}[/] — {ACCESS_KINDS.name(a.kind)} {a.dataset_id} by {a.consumer}"
        f"  [dim]({AGREEMENT_STATES.name(a.state)})[/]"
    )
    out.print(
        f"purposes {', '.join(a.purposes)} · legal basis {LEGAL_BASES.name(a.legal_basis)}"
        f" · columns asked {', '.join(a.requested_columns) or 'all'}"
    )
    if a.justification:
        out.print(f"justification: {a.justification}")
    people = f"requested by {a.requested_by or '-'}"
    if a.decided_by:
        people += f" · decided by {a.decided_by}"
    out.print(f"{people} · created {when(a.created_at)} · updated {when(a.updated_at)}")
    if a.reason:
        out.print(f"[yellow]reason:[/] {a.reason}")
    if a.HasField("conditions"):
        _print_conditions(a.conditions)
    if a.history:
        table = Table("at", "state", "actor", "reason", title="history")
        for e in a.history:
            table.add_row(when(e.at), AGREEMENT_STATES.name(e.state), e.actor, e.reason)
        out.print(table)


def _show(response: Any, as_json: bool) -> None:
    if as_json:
        print_json(response)
    else:
        _print_agreement(response.agreement)


# --- requests and decisions ----------------------------------------------------------------------


@access_app.command()
def request(
    dataset_id: str = typer.Argument(..., metavar="DATASET"),
    purpose: list[str] = typer.Option(
        ..., "--purpose", help="a purpose (tdg access purposes); repeat for several"
    ),
    legal_basis: str = typer.Option(..., "--legal-basis", help=LEGAL_BASES.choices),
    consumer: str = typer.Option("", "--consumer", help="the party that will use it; default: you"),
    kind: str = typer.Option("read", "--kind", help=ACCESS_KINDS.choices),
    column: list[str] = typer.Option(
        [], "--column", help="a column asked for; repeat for several; none: all"
    ),
    justification: str = typer.Option("", "--justification", help="what it is for"),
    as_json: bool = JsonOpt,
) -> None:
    """Ask for access to a dataset; the publisher's data officer approves or refuses."""
    with usage_errors():
        access_kind = ACCESS_KINDS.value(kind, "--kind")
        basis = LEGAL_BASES.value(legal_basis, "--legal-basis")
    req = pb.RequestAccessRequest(
        dataset_id=dataset_id,
        consumer=consumer,
        kind=access_kind,
        purposes=purpose,
        legal_basis=basis,
        justification=justification,
        columns=column,
    )
    _show(CONSENT.rpc("RequestAccess", req), as_json)


@access_app.command()
def approve(
    agreement_id: str = AgreementArg,
    column: list[str] = typer.Option(
        [], "--column", help="a column granted; repeat for several; none: every column"
    ),
    mask: list[str] = typer.Option(
        [], "--mask", metavar="COL=METHOD", help=f"a column's treatment: {MASK_SPEC_HELP}; repeat"
    ),
    territory: str | None = typer.Option(
        None,
        "--territory",
        metavar="COLUMN=CODE,CODE…",
        help="serve only the rows whose COLUMN holds one of these INSEE codes",
    ),
    aggregate_only: bool | None = typer.Option(
        None, "--aggregate-only/--no-aggregate-only", help="serve aggregates only"
    ),
    min_group_size: int | None = typer.Option(
        None, "--min-group-size", min=0, help="with --aggregate-only; 0: the territory's default"
    ),
    valid_from: str | None = typer.Option(
        None, "--valid-from", metavar="ISO", help="ISO 8601 date or time (UTC unless an offset)"
    ),
    valid_until: str | None = typer.Option(
        None, "--valid-until", metavar="ISO", help="as --valid-from; unset: until revoked"
    ),
    max_freshness_lag_s: int | None = typer.Option(
        None, "--max-freshness-lag-s", min=0, help="write: promised lag, seconds"
    ),
    completeness_pct: float | None = typer.Option(
        None, "--completeness-pct", min=0, max=100, help="write: promised completeness, %"
    ),
    validity_rate_pct: float | None = typer.Option(
        None, "--validity-rate-pct", min=0, max=100, help="write: promised validity rate, %"
    ),
    conditions: Path | None = typer.Option(
        None,
        "--conditions",
        metavar="FILE.yaml",
        exists=True,
        dir_okay=False,
        readable=True,
        help="YAML with the fields of Conditions; the options override it",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Approve an access request with its conditions (the publisher's data officer)."""
    options = ConditionOptions(
        columns=tuple(column),
        masks=tuple(mask),
        territory=territory,
        aggregate_only=aggregate_only,
        min_group_size=min_group_size,
        valid_from=valid_from,
        valid_until=valid_until,
        max_freshness_lag_s=max_freshness_lag_s,
        completeness_pct=completeness_pct,
        validity_rate_pct=validity_rate_pct,
    )
    with usage_errors():
        approved = build_conditions(options, conditions)
    req = pb.ApproveAccessRequest(agreement_id=agreement_id, conditions=approved)
    _show(CONSENT.rpc("ApproveAccess", req), as_json)


@access_app.command()
def refuse(
    agreement_id: str = AgreementArg, reason: str = ReasonOpt, as_json: bool = JsonOpt
) -> None:
    """Refuse an access request."""
    req = pb.RefuseAccessRequest(agreement_id=agreement_id, reason=reason)
    _show(CONSENT.rpc("RefuseAccess", req), as_json)


@access_app.command()
def suspend(
    agreement_id: str = AgreementArg, reason: str = ReasonOpt, as_json: bool = JsonOpt
) -> None:
    """Suspend an active agreement (resume it later)."""
    req = pb.SuspendAgreementRequest(agreement_id=agreement_id, reason=reason)
    _show(CONSENT.rpc("SuspendAgreement", req), as_json)


@access_app.command()
def resume(agreement_id: str = AgreementArg, as_json: bool = JsonOpt) -> None:
    """Resume a suspended agreement."""
    req = pb.ResumeAgreementRequest(agreement_id=agreement_id)
    _show(CONSENT.rpc("ResumeAgreement", req), as_json)


@access_app.command()
def revoke(
    agreement_id: str = AgreementArg, reason: str = ReasonOpt, as_json: bool = JsonOpt
) -> None:
    """Revoke an agreement for good (publisher or consumer side)."""
    req = pb.RevokeAgreementRequest(agreement_id=agreement_id, reason=reason)
    _show(CONSENT.rpc("RevokeAgreement", req), as_json)


# --- reading -----------------------------------------------------------------------------------


@access_app.command()
def show(agreement_id: str = AgreementArg, as_json: bool = JsonOpt) -> None:
    """Show an agreement with its conditions and history."""
    _show(CONSENT.rpc("GetAgreement", pb.GetAgreementRequest(agreement_id=agreement_id)), as_json)


@access_app.command("list")
def list_(
    dataset: str = typer.Option("", "--dataset", help="a dataset id"),
    consumer: str = typer.Option("", "--consumer", help="a consumer party"),
    publisher: str = typer.Option("", "--publisher", help="the agreements on its datasets"),
    state: str = typer.Option("", "--state", help=AGREEMENT_STATES.choices),
    kind: str = typer.Option("", "--kind", help=ACCESS_KINDS.choices),
    page_size: int = typer.Option(50, "--page-size", min=1, max=500, help="agreements per page"),
    page_token: str = typer.Option("", "--page-token", help="the page to start from"),
    all_pages: bool = typer.Option(False, "--all", help="follow the pages to the end"),
    as_json: bool = JsonOpt,
) -> None:
    """List agreements and requests (one page, the next page token printed; --all for all)."""
    with usage_errors():
        agreement_state = AGREEMENT_STATES.optional(state, "--state")
        access_kind = ACCESS_KINDS.optional(kind, "--kind")
    req = pb.ListAgreementsRequest(
        dataset_id=dataset,
        consumer=consumer,
        publisher=publisher,
        state=agreement_state,
        kind=access_kind,
        page_size=page_size,
        page_token=page_token,
    )
    response = CONSENT.rpc_pages("ListAgreements", req, all_pages)
    if as_json:
        print_json(response)
        return
    table = Table(
        "id", "dataset", "consumer", "kind", "state", "purposes", "legal basis", "updated"
    )
    for a in response.agreements:
        table.add_row(
            a.id,
            a.dataset_id,
            a.consumer,
            ACCESS_KINDS.name(a.kind),
            AGREEMENT_STATES.name(a.state),
            ", ".join(a.purposes),
            LEGAL_BASES.name(a.legal_basis),
            when(a.updated_at),
        )
    out.print(table)
    if response.next_page_token:
        out.print(f"next page: --page-token {response.next_page_token}")


@access_app.command()
def grants(
    dataset_id: str = typer.Argument(..., metavar="DATASET"), as_json: bool = JsonOpt
) -> None:
    """Who may write records to a dataset: its publisher and its active write agreements."""
    response = CONSENT.rpc(
        "ListProducerGrants", pb.ListProducerGrantsRequest(dataset_id=dataset_id)
    )
    if as_json:
        print_json(response)
        return
    table = Table("party", "agreement", "max lag (s)", "completeness %", "validity %", "until")
    for g in response.grants:
        c = g.commitments
        table.add_row(
            g.party,
            g.agreement_id or "(publisher)",
            str(c.max_freshness_lag_s or "-"),
            f"{c.completeness_pct:g}" if c.completeness_pct else "-",
            f"{c.validity_rate_pct:g}" if c.validity_rate_pct else "-",
            when(g.valid_until) or "-",
        )
    out.print(table)


@access_app.command()
def purposes(as_json: bool = JsonOpt) -> None:
    """The purposes and legal bases an access request may name."""
    response = CONSENT.rpc("ListPurposes", pb.ListPurposesRequest())
    if as_json:
        print_json(response)
        return
    table = Table("purpose", "description")
    for p in response.purposes:
        table.add_row(p.code, p.description)
    out.print(table)
    bases = ", ".join(LEGAL_BASES.name(b) for b in response.legal_bases)
    out.print(f"legal bases: {bases}")
