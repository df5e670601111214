"""`tdg audit search`: the audit trail of governed queries (who read what, for which purpose, on
which agreement, with what outcome), from the query service."""

from __future__ import annotations

import json

import typer
from google.protobuf.json_format import MessageToDict
from rich.filesize import decimal as size_text
from rich.markup import escape
from rich.table import Table
from tdg.query.v1 import query_pb2 as pb

from tdg_cli.agreement_conditions import parse_time
from tdg_cli.client import QUERY, out, usage_errors
from tdg_cli.query_display import masked
from tdg_cli.vocabulary import OptionError, when

audit_app = typer.Typer(help="The audit trail of governed queries.", no_args_is_help=True)

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
OUTCOME_STYLES = {"ok": "green", "denied": "red", "revoked": "red", "failed": "red"}


def audit_request(
    dataset: str = "",
    party: str = "",
    purpose: str = "",
    agreement: str = "",
    query_id: str = "",
    since: str | None = None,
    until: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> pb.SearchAuditRequest:
    """The options as a request (empty ones filter nothing); OptionError naming the option."""
    request = pb.SearchAuditRequest(
        dataset_id=dataset.strip(),
        party=party.strip(),
        purpose=purpose.strip(),
        agreement_id=agreement.strip(),
        query_id=query_id.strip(),
        limit=limit,
    )
    if since is not None:
        request.since.CopyFrom(parse_time(since, "--since"))
    if until is not None:
        request.until.CopyFrom(parse_time(until, "--until"))
        if since is not None and request.until.ToNanoseconds() <= request.since.ToNanoseconds():
            raise OptionError("--until", "must be after --since")
    return request


def outcome_text(record: pb.AuditRecord) -> str:
    """The outcome, coloured, with the reasons (or the error) of one that is not ok."""
    style = OUTCOME_STYLES.get(record.outcome, "yellow")
    text = f"[{style}]{escape(record.outcome or '?')}[/]"
    why = "; ".join(record.reasons) or record.error
    if record.outcome != "ok" and why:
        text += f"\n[dim]{escape(why)}[/]"
    return text


def audit_table(records: list[pb.AuditRecord]) -> Table:
    table = Table(
        "time",
        "query id",
        "party",
        "dataset",
        "purpose",
        "agreement",
        "outcome",
        "rows",
        "bytes",
        "duration ms",
        "treatments",
    )
    for column in table.columns[7:10]:
        column.justify = "right"
    for r in records:
        treatments = masked(r.treatments)
        table.add_row(
            when(r.time) or "-",
            escape(r.query_id),
            escape(r.party),
            escape(r.dataset_id),
            escape(r.purpose),
            escape(r.agreement_id) or "-",
            outcome_text(r),
            f"{r.rows:,}",
            size_text(r.bytes),
            f"{r.duration_ms:,}",
            "-" if treatments == "none" else escape(treatments),
        )
    return table


@audit_app.command()
def search(
    dataset: str = typer.Option("", "--dataset", help="one dataset"),
    party: str = typer.Option("", "--party", help="the party that queried"),
    purpose: str = typer.Option("", "--purpose", help="one purpose"),
    agreement: str = typer.Option("", "--agreement", help="one agreement id"),
    query_id: str = typer.Option("", "--query-id", help="one query (its id from tdg query)"),
    since: str | None = typer.Option(
        None, "--since", metavar="ISO", help="queried at or after (ISO 8601; UTC unless an offset)"
    ),
    until: str | None = typer.Option(None, "--until", metavar="ISO", help="queried before"),
    limit: int = typer.Option(
        DEFAULT_LIMIT, "--limit", min=1, max=MAX_LIMIT, help="at most this many records"
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per record and line"),
) -> None:
    """The queries of the audit trail: your own datasets' for a data officer, all for the
    platform."""
    with usage_errors():
        request = audit_request(dataset, party, purpose, agreement, query_id, since, until, limit)
    response = QUERY.rpc("SearchAudit", request)
    records = list(response.records)
    if as_json:
        for r in records:
            typer.echo(json.dumps(MessageToDict(r, preserving_proto_field_name=True)))
        return
    out.print(audit_table(records))
    if len(records) >= limit:
        out.print(f"[dim]--limit {limit} reached: there may be more records[/]")
