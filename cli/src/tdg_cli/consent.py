"""`tdg consent …`: citizens' consents (give, withdraw, list) and the subject sets they make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from tdg.consent.v1 import consent_pb2 as pb

from tdg_cli.client import CONSENT, JsonOpt, err, out, print_json
from tdg_cli.subject_set import SubjectSetError, collect, write_arrow_file
from tdg_cli.vocabulary import CONSENT_STATES, when

consent_app = typer.Typer(help="Citizens' consents to purposes.", no_args_is_help=True)

SubjectArg = typer.Argument(..., metavar="SUBJECT", help="the data subject's id")
PurposeOpt = typer.Option(..., "--purpose", help="a purpose (tdg access purposes)")
DatasetOpt = typer.Option("", "--dataset", help="one dataset; default: every dataset")
SourceOpt = typer.Option("", "--source", help="where it was collected, e.g. portal, paper-form")


def _receipt(response: Any, verb: str, as_json: bool) -> None:
    if as_json:
        print_json(response)
        return
    c = response.consent
    err.print(
        f"consent {verb}: {c.subject_id} · {c.purpose} · {c.dataset_id or 'every dataset'}"
        f" [dim](revision {c.revision})[/]"
    )
    # Alone on stdout, for a script: the receipt to give the citizen.
    typer.echo(c.receipt_id)


@consent_app.command()
def give(
    subject_id: str = SubjectArg,
    purpose: str = PurposeOpt,
    dataset: str = DatasetOpt,
    source: str = SourceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Record a subject's consent; prints the receipt id."""
    req = pb.GiveConsentRequest(
        subject_id=subject_id, purpose=purpose, dataset_id=dataset, source=source
    )
    _receipt(CONSENT.rpc("GiveConsent", req), "given", as_json)


@consent_app.command()
def withdraw(
    subject_id: str = SubjectArg,
    purpose: str = PurposeOpt,
    dataset: str = DatasetOpt,
    source: str = SourceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Record the withdrawal of a subject's consent; prints the receipt id."""
    req = pb.WithdrawConsentRequest(
        subject_id=subject_id, purpose=purpose, dataset_id=dataset, source=source
    )
    _receipt(CONSENT.rpc("WithdrawConsent", req), "withdrawn", as_json)


@consent_app.command("list")
def list_(subject_id: str = SubjectArg, as_json: bool = JsonOpt) -> None:
    """A subject's consents, given and withdrawn."""
    response = CONSENT.rpc("ListConsents", pb.ListConsentsRequest(subject_id=subject_id))
    if as_json:
        print_json(response)
        return
    table = Table("purpose", "dataset", "state", "source", "given", "withdrawn", "receipt")
    for c in response.consents:
        table.add_row(
            c.purpose,
            c.dataset_id or "(every dataset)",
            CONSENT_STATES.name(c.state),
            c.source,
            when(c.given_at),
            when(c.withdrawn_at),
            c.receipt_id,
        )
    out.print(table)


@consent_app.command()
def subjects(
    dataset_id: str = typer.Argument(..., metavar="DATASET"),
    purpose: str = PurposeOpt,
    since: int = typer.Option(
        0, "--since", min=0, metavar="REVISION", help="only the changes after it; 0: the whole set"
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        metavar="FILE.arrow",
        dir_okay=False,
        help="write the set as an Arrow IPC file",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """The subjects with active consent for (dataset, purpose), or the changes since a revision."""
    req = pb.StreamSubjectSetRequest(dataset_id=dataset_id, purpose=purpose, since_revision=since)
    try:
        subject_set = collect(CONSENT.stream("StreamSubjectSet", req), since)
    except SubjectSetError as exc:
        err.print(f"[red]unreadable subject set:[/] {exc}")
        raise typer.Exit(1) from exc
    if output is not None:
        try:
            write_arrow_file(subject_set.table, output)
        except OSError as exc:
            err.print(f"[red]cannot write {output}:[/] {exc}")
            raise typer.Exit(1) from exc
    summary: dict[str, Any] = {
        "dataset_id": dataset_id,
        "purpose": purpose,
        "since_revision": since,
        "revision": subject_set.revision,
        "snapshot": subject_set.snapshot,
        "count": subject_set.count,
    }
    if not subject_set.snapshot:
        summary["activated"] = subject_set.activated
        summary["deactivated"] = subject_set.deactivated
    if output is not None:
        summary["output"] = str(output)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    revision = (
        "unknown (no chunk received)" if subject_set.revision is None else subject_set.revision
    )
    if subject_set.snapshot:
        line = f"{subject_set.count} subjects with active consent, revision {revision}"
    else:
        line = (
            f"{subject_set.count} changes after revision {since} up to revision {revision}:"
            f" {subject_set.activated} activated, {subject_set.deactivated} deactivated"
        )
    if output is not None:
        line += f"; written to {output}"
    out.print(line)
