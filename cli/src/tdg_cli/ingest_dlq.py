"""`tdg ingest dlq …`: the dead-letter topic, where each rejected record waits with its reason."""

from __future__ import annotations

import json
import unicodedata
from contextlib import closing

import typer
from google.protobuf.json_format import MessageToDict
from rich.markup import escape
from rich.table import Table
from tdg.ingest.v1 import ingest_pb2 as pb

from tdg_cli.agreement_conditions import parse_time
from tdg_cli.client import INGEST, JsonOpt, out, print_json, usage_errors
from tdg_cli.vocabulary import OptionError, when

dlq_app = typer.Typer(help="Rejected records: list, show, replay.", no_args_is_help=True)

DatasetOpt = typer.Option("", "--dataset", help="a dataset id")
CategoryOpt = typer.Option("", "--category", help="format|schema|policy|deprecated")
CodeOpt = typer.Option("", "--code", help="e.g. invalid_json, type_mismatch, write_denied")
ProducerOpt = typer.Option("", "--producer", help="the party that sent the record")
SinceOpt = typer.Option(
    None, "--since", metavar="ISO", help="rejected at or after (ISO 8601; UTC unless an offset)"
)
PAGE_SIZE = 200


# --- requests ----------------------------------------------------------------------------------


def reject_filter(
    dataset: str = "",
    category: str = "",
    code: str = "",
    producer: str = "",
    since: str | None = None,
) -> pb.RejectFilter:
    """The options as a RejectFilter (empty ones filter nothing); OptionError on a bad --since."""
    f = pb.RejectFilter(
        dataset_id=dataset.strip(),
        category=category.strip(),
        code=code.strip(),
        producer=producer.strip(),
    )
    if since is not None:
        f.since.CopyFrom(parse_time(since, "--since"))
    return f


def replay_request(
    ids: list[str],
    dataset: str = "",
    category: str = "",
    code: str = "",
    producer: str = "",
    since: str | None = None,
) -> pb.ReplayRejectsRequest:
    """Either ids or a filter with a dataset, as the service wants; OptionError otherwise."""
    wanted = [i.strip() for i in ids if i.strip()]
    narrowing = [
        name
        for name, value in (
            ("--category", category),
            ("--code", code),
            ("--producer", producer),
            ("--since", since),
        )
        if value
    ]
    if wanted:
        if dataset or narrowing:
            given = ", ".join((["--dataset"] if dataset else []) + narrowing)
            raise OptionError(
                "--id", f"give either --id or a filter, not both (also given: {given})"
            )
        return pb.ReplayRejectsRequest(ids=list(dict.fromkeys(wanted)))
    if not dataset.strip():
        if narrowing:
            raise OptionError(
                "--dataset", f"a filter needs --dataset ({', '.join(narrowing)} given)"
            )
        raise OptionError("--id", "nothing to replay: give --id ID (repeat) or --dataset DATASET")
    return pb.ReplayRejectsRequest(filter=reject_filter(dataset, category, code, producer, since))


def describe_replay(request: pb.ReplayRejectsRequest) -> str:
    """What a replay request will send back, for the confirmation question."""
    if request.ids:
        ids = list(request.ids)
        shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
        return f"{len(ids)} reject{'s' if len(ids) > 1 else ''} ({shown})"
    f = request.filter
    narrowing = [
        f"{name} {value}"
        for name, value in (("category", f.category), ("code", f.code), ("producer", f.producer))
        if value
    ]
    if f.HasField("since"):
        narrowing.append(f"rejected since {when(f.since)}")
    return f"every reject of {f.dataset_id}" + (
        f" with {', '.join(narrowing)}" if narrowing else ""
    )


# --- display -----------------------------------------------------------------------------------


def reason_text(reason: pb.Reason) -> str:
    return f"{reason.category}/{reason.code}"


def value_text(value: bytes) -> str | None:
    """The value as text when it is UTF-8 without control characters (tabs and line breaks
    aside); None when it is better shown as a hex dump."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for ch in text:
        if ch not in "\t\r\n" and unicodedata.category(ch).startswith("C"):
            return None
    return text


def hex_dump(value: bytes, width: int = 16) -> str:
    """`offset  hex bytes  ascii`, `width` bytes a line, as `xxd` or `hexdump -C` show them."""
    lines = []
    for offset in range(0, len(value), width):
        part = value[offset : offset + width]
        hexes = " ".join(f"{b:02x}" for b in part)
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in part)
        lines.append(f"{offset:08x}  {hexes:<{width * 3 - 1}}  {ascii_}")
    return "\n".join(lines)


def _print_reject(r: pb.Reject) -> None:
    fields = [
        ("id", r.id),
        ("dataset", r.dataset_id),
        ("source", f"{r.source_topic} partition {r.source_partition} offset {r.source_offset}"),
        ("producer", r.producer or "-"),
        ("reason", reason_text(r.reason)),
        ("message", r.reason.message),
        ("rejected at", when(r.rejected_at)),
        ("schema version", str(r.schema_version) if r.schema_version else "-"),
    ]
    for name, value in fields:
        out.print(f"[bold]{name}:[/] {escape(value)}")
    text = value_text(r.value)
    if text is None:
        out.print(f"[bold]value[/] ({len(r.value)} bytes, not text; hex dump):")
        out.print(hex_dump(r.value), markup=False, highlight=False)
    else:
        out.print(f"[bold]value[/] ({len(r.value)} bytes, UTF-8):")
        out.print(text, markup=False, highlight=False, soft_wrap=True)


# --- commands ----------------------------------------------------------------------------------


@dlq_app.command("list")
def list_(
    dataset: str = DatasetOpt,
    category: str = CategoryOpt,
    code: str = CodeOpt,
    producer: str = ProducerOpt,
    since: str | None = SinceOpt,
    limit: int = typer.Option(100, "--limit", min=1, help="at most this many rejects"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per reject and line"),
) -> None:
    """The rejected records, newest pages first as the service orders them, up to --limit."""
    with usage_errors():
        request = pb.ListRejectsRequest(
            filter=reject_filter(dataset, category, code, producer, since),
            page_size=min(limit, PAGE_SIZE),
        )
    rejects: list[pb.Reject] = []
    more = False
    with closing(INGEST.pages("ListRejects", request)) as pages:
        for page in pages:
            rejects.extend(page.rejects)
            if len(rejects) >= limit:
                more = len(rejects) > limit or bool(page.next_page_token)
                del rejects[limit:]
                break
    if as_json:
        for r in rejects:
            typer.echo(json.dumps(MessageToDict(r, preserving_proto_field_name=True)))
        return
    table = Table("id", "dataset", "source", "producer", "reason", "message", "rejected at")
    for r in rejects:
        table.add_row(
            r.id,
            r.dataset_id,
            f"{r.source_partition}/{r.source_offset}",
            r.producer,
            reason_text(r.reason),
            escape(r.reason.message),
            when(r.rejected_at) or "-",
        )
    out.print(table)
    if more:
        out.print(f"[dim]more rejects than --limit {limit}[/]")


@dlq_app.command()
def show(reject_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
    """One reject: where it came from, why, and the record as it arrived."""
    response = INGEST.rpc("GetReject", pb.GetRejectRequest(id=reject_id))
    if as_json:
        print_json(response)
    else:
        _print_reject(response.reject)


@dlq_app.command()
def replay(
    reject_id: list[str] = typer.Option(
        [], "--id", metavar="ID", help="a reject to replay; repeat for several"
    ),
    dataset: str = typer.Option("", "--dataset", help="replay the rejects of this dataset"),
    category: str = CategoryOpt,
    code: str = CodeOpt,
    producer: str = ProducerOpt,
    since: str | None = SinceOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Send rejects back to their source topic, unchanged, to be validated again (after a schema
    fix, say): some by --id, or a dataset's, narrowed by the filter options."""
    with usage_errors():
        request = replay_request(reject_id, dataset, category, code, producer, since)
    if not yes:
        typer.confirm(f"Replay {describe_replay(request)}?", abort=True)
    response = INGEST.rpc("ReplayRejects", request)
    out.print(f"replayed {response.replayed} rejects")
