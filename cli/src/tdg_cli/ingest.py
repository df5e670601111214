"""`tdg ingest …`: send records, ingestion status, delivery indicators, table compaction; the
dead-letter commands are in `ingest_dlq`, the reading of files to send in `ingest_send`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from tdg.ingest.v1 import ingest_pb2 as pb

from tdg_cli.agreement_conditions import parse_time
from tdg_cli.client import INGEST, JsonOpt, err, out, print_json, usage_errors
from tdg_cli.ingest_dlq import dlq_app, reason_text
from tdg_cli.ingest_send import (
    READ_ERRORS,
    Chunk,
    Reading,
    Source,
    file_format,
    open_source,
    publish_requests,
)
from tdg_cli.settings import CliSettings
from tdg_cli.vocabulary import OptionError, when

ingest_app = typer.Typer(
    help="Ingestion: send records, watch delivery, handle rejects.", no_args_is_help=True
)
ingest_app.add_typer(dlq_app, name="dlq")

DatasetArg = typer.Argument(..., metavar="DATASET")
PERIODS = ("hour", "day")
DEFAULT_DAYS = 7
MET, MISSED, NOT_PROMISED = "✓", "✗", "\u2013"  # the last an en dash
INDICATORS_NOTE = (
    "availability = hours with accepted records / hours in the period · "
    f"validity = accepted / received · promises: {MET} met, {MISSED} missed, "
    f"{NOT_PROMISED} nothing promised"
)


# --- send --------------------------------------------------------------------------------------


@ingest_app.command()
def send(
    dataset_id: str = DatasetArg,
    file: Path = typer.Argument(
        ...,
        metavar="FILE",
        exists=True,
        dir_okay=False,
        readable=True,
        help="JSON lines, CSV (a header line first) or Parquet",
    ),
    fmt: str = typer.Option(
        "auto", "--format", help="auto|jsonl|csv|parquet; auto: from the file's suffix"
    ),
    batch_rows: int = typer.Option(5000, "--batch-rows", min=1, help="records per message"),
) -> None:
    """Send a file's records to a dataset (JSON lines byte for byte); exit 1 if any is refused."""
    with usage_errors():
        source, first, rest = _open(file, file_format(file, fmt), batch_rows)
    if first is None:
        out.print(f"nothing to send: {escape(str(file))} holds no records")
        return
    reading = Reading(itertools.chain([first], rest))
    timeout_s = CliSettings().ingest_long_call_timeout_s
    with _progress(source) as advance:

        def sent() -> Iterator[Chunk]:
            for chunk in reading:
                yield chunk
                advance(chunk.position)

        response = INGEST.rpc("Publish", publish_requests(dataset_id, sent()), timeout_s=timeout_s)
        if reading.error is None:
            advance(source.total)
    _print_published(dataset_id, response, source, reading.records)
    if reading.error is not None:
        err.print(
            f"[red]stopped reading {escape(str(file))} after {reading.records} records:[/] "
            f"{escape(str(reading.error))}"
        )
    if response.refused or reading.error is not None:
        raise typer.Exit(1)


def _open(path: Path, fmt: str, batch_rows: int) -> tuple[Source, Chunk | None, Iterator[Chunk]]:
    """The source and its first chunk: a file unreadable as `fmt` is a usage error, found before
    anything is sent."""
    try:
        source = open_source(path, fmt)
        chunks = source.chunks(batch_rows)
        return source, next(chunks, None), chunks
    except READ_ERRORS as exc:
        raise OptionError("FILE", f"cannot read {path} as {fmt}: {exc}") from exc


@contextmanager
def _progress(source: Source) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr over the file's bytes (or rows); yields `advance(position)`."""
    counter: Sequence[ProgressColumn] = (
        (DownloadColumn(), TransferSpeedColumn())
        if source.unit == "bytes"
        else (MofNCompleteColumn(), TextColumn("rows"))
    )
    with Progress(
        TextColumn(f"sending {escape(source.path.name)}"),
        BarColumn(),
        *counter,
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        task: TaskID = progress.add_task("send", total=source.total)

        def advance(position: int) -> None:
            progress.update(task, completed=position)

        yield advance


def _print_published(
    dataset_id: str, response: pb.PublishResponse, source: Source, sent: int
) -> None:
    refused = f"[red]{response.refused}[/]" if response.refused else "0"
    topic = f" [dim](topic {response.topic})[/]" if response.topic else ""
    out.print(
        f"{dataset_id}: {sent} records sent from {escape(source.path.name)} · received "
        f"{response.received} · queued {response.queued} · refused {refused}{topic}"
    )
    if response.problems:
        shown = len(response.problems)
        caption = f"the first {shown} of {response.refused}" if response.refused > shown else None
        table = Table("record", "at", "reason", "message", title="problems", caption=caption)
        for p in response.problems:
            table.add_row(
                str(p.index), source.where(p.index), reason_text(p.reason), escape(p.reason.message)
            )
        out.print(table)


# --- status ------------------------------------------------------------------------------------


@ingest_app.command()
def status(
    dataset_id: str = typer.Argument(
        "", metavar="[DATASET]", help="one dataset; default: every dataset you may see"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Per dataset: lag, throughput, last event and commit, rows stored, rejects, snapshot."""
    response = INGEST.rpc("Status", pb.StatusRequest(dataset_id=dataset_id))
    if as_json:
        print_json(response)
        return
    table = Table(
        "dataset",
        "state",
        "lag",
        "rec/s",
        "last event",
        "last commit",
        "rows stored",
        "rejected",
        "snapshot",
        "schema",
    )
    for d in response.datasets:
        table.add_row(
            d.dataset_id,
            d.state,
            str(d.lag_records),
            f"{d.records_per_s:.1f}",
            when(d.last_event_time) or "-",
            when(d.last_commit_time) or "-",
            str(d.rows_stored),
            str(d.records_rejected),
            str(d.snapshot_id) if d.snapshot_id else "-",
            f"v{d.schema_version}" if d.schema_version else "-",
        )
    out.print(table)


# --- delivery indicators -----------------------------------------------------------------------


def indicators_request(
    dataset_id: str,
    producer: str = "",
    since: str | None = None,
    days: int | None = None,
    until: str | None = None,
    period: str = "day",
    now: datetime | None = None,
) -> pb.GetDeliveryIndicatorsRequest:
    """The options as a request: since from --since, or --days (default 7) before --until (default
    now); OptionError naming the option at fault."""
    if since is not None and days is not None:
        raise OptionError("--days", "give --since or --days, not both")
    kind = period.strip().lower()
    if kind not in PERIODS:
        raise OptionError("--period", f"unknown period {period!r}; one of {', '.join(PERIODS)}")
    request = pb.GetDeliveryIndicatorsRequest(
        dataset_id=dataset_id, producer=producer.strip(), period=kind
    )
    if until is not None:
        request.until.CopyFrom(parse_time(until, "--until"))
    if since is not None:
        request.since.CopyFrom(parse_time(since, "--since"))
    else:
        end = request.until.ToDatetime(tzinfo=UTC) if until is not None else now
        end = end or datetime.now(UTC)
        request.since.FromDatetime(end - timedelta(days=DEFAULT_DAYS if days is None else days))
    return request


def duration(seconds: float) -> str:
    """A freshness, short and unbreakable as `kubectl` shows ages: 4.2s, 35s, 6m40s, 3h20m, 2d4h."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, s = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{s}s" if s else f"{minutes}m"
    hours, m = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{m}m" if m else f"{hours}h"
    days, h = divmod(hours, 24)
    return f"{days}d{h}h" if h else f"{days}d"


def promise(met: bool, promised: bool, what: str) -> str:
    """A commitment's cell: met or missed and what was promised; a dash when nothing was."""
    if not promised:
        return f"[dim]{NOT_PROMISED}[/]"
    return f"[green]{MET}[/] {what}" if met else f"[red]{MISSED}[/] {what}"


def period_label(start: Timestamp, period: str) -> str:
    if start.seconds == 0 and start.nanos == 0:
        return "-"
    moment = start.ToDatetime(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:00Z" if period == "hour" else "%Y-%m-%d")


def indicator_table(indicators: Sequence[pb.DeliveryIndicator]) -> Table:
    """One row per producer and period, the producers apart."""
    table = Table(
        "producer",
        "period",
        "received",
        "accepted",
        "rejected",
        "availability",
        "validity",
        "freshness p50 / max",
        "freshness promise",
        "availability promise",
        "validity promise",
    )
    rows = sorted(indicators, key=lambda i: (i.producer, i.period_start.seconds))
    for n, (producer, group) in enumerate(itertools.groupby(rows, key=lambda i: i.producer)):
        if n:
            table.add_section()
        for i in group:
            k = i.commitments
            table.add_row(
                producer or "(any)",
                period_label(i.period_start, i.period),
                str(i.received),
                str(i.accepted),
                str(i.rejected),
                f"{i.availability_pct:.1f} %",
                f"{i.validity_pct:.1f} %" if i.received else "-",
                f"{duration(i.freshness_p50_s)} / {duration(i.freshness_max_s)}"
                if i.accepted
                else "-",
                promise(
                    i.freshness_met,
                    k.max_freshness_lag_s > 0,
                    f"≤ {duration(k.max_freshness_lag_s)}",
                ),
                promise(i.availability_met, k.completeness_pct > 0, f"≥ {k.completeness_pct:g} %"),
                promise(i.validity_met, k.validity_rate_pct > 0, f"≥ {k.validity_rate_pct:g} %"),
            )
    table.columns[1].no_wrap = True
    return table


@ingest_app.command()
def indicators(
    dataset_id: str = DatasetArg,
    producer: str = typer.Option("", "--producer", help="one producer; default: every producer"),
    since: str | None = typer.Option(
        None, "--since", metavar="ISO", help="from (ISO 8601; UTC unless an offset)"
    ),
    days: int | None = typer.Option(
        None, "--days", min=1, help=f"the last N days (default {DEFAULT_DAYS}); not with --since"
    ),
    until: str | None = typer.Option(None, "--until", metavar="ISO", help="to; default: now"),
    period: str = typer.Option("day", "--period", help="hour|day"),
    as_json: bool = JsonOpt,
) -> None:
    """Producers' delivery per period (volume, availability, validity, freshness) against the
    commitments of their agreements."""
    with usage_errors():
        request = indicators_request(dataset_id, producer, since, days, until, period)
    response = INGEST.rpc("GetDeliveryIndicators", request)
    if as_json:
        print_json(response)
        return
    out.print(indicator_table(response.indicators))
    out.print(f"[dim]{INDICATORS_NOTE}[/]")


# --- maintenance -------------------------------------------------------------------------------


@ingest_app.command()
def compact(
    dataset_id: str = DatasetArg,
    expire_older_than_h: int | None = typer.Option(
        None, "--expire-older-than-h", min=1, help="expire older snapshots (service default 24)"
    ),
    target_file_mb: int | None = typer.Option(
        None, "--target-file-mb", min=1, help="rewrite smaller data files (service default 64)"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Rewrite a dataset's small files and expire its old snapshots (safe while ingesting)."""
    request = pb.CompactTableRequest(
        dataset_id=dataset_id,
        expire_older_than_h=expire_older_than_h or 0,
        target_file_bytes=(target_file_mb or 0) * 1024 * 1024,
    )
    timeout_s = CliSettings().ingest_long_call_timeout_s
    response = INGEST.rpc("CompactTable", request, timeout_s=timeout_s)
    if as_json:
        print_json(response)
        return
    out.print(
        f"{dataset_id}: {response.files_rewritten} files rewritten into {response.files_written}"
        f" · {response.snapshots_expired} snapshots expired · snapshot {response.snapshot_id}"
    )
