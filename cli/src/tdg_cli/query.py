"""`tdg query DATASET --purpose P …`: a governed query, its Arrow batches shown or written.

The options become a structured QueryRequest (the --where text is parsed here, by `query_where`:
no SQL text is ever sent). The answer is a stream: a QueryHeader (with the Arrow schema), Arrow
record batches, a QuerySummary. `receive` reads it into a sink a batch at a time, so memory stays
bounded whatever the size of the result: a table on the terminal (the first rows kept, the others
only counted), CSV on stdout or in a file, a Parquet or Arrow IPC file. A file is written beside
its destination as FILE.part and renamed at the end: a query refused or cut short mid-stream (an
agreement revoked, a cap reached) leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol

import grpc
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import typer
from rich.filesize import decimal as size_text
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from tdg.query.v1 import query_pb2 as pb
from tdg.query.v1 import query_pb2_grpc

from tdg_cli.agreement_conditions import parse_time
from tdg_cli.client import call_stream, err, out, usage_errors
from tdg_cli.query_where import COLUMN_NAME, parse_where
from tdg_cli.settings import CliSettings
from tdg_cli.vocabulary import OptionError

FORMATS = ("table", "csv", "parquet", "arrow")
SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
AGGREGATES = {
    "count": pb.AGGREGATE_FUNCTION_COUNT,
    "sum": pb.AGGREGATE_FUNCTION_SUM,
    "min": pb.AGGREGATE_FUNCTION_MIN,
    "max": pb.AGGREGATE_FUNCTION_MAX,
    "avg": pb.AGGREGATE_FUNCTION_AVG,
    "count_distinct": pb.AGGREGATE_FUNCTION_COUNT_DISTINCT,
}
AGGREGATE_NAMES = {value: name for name, value in AGGREGATES.items()}
DEFAULT_TABLE_ROWS = 50


# --- the request -------------------------------------------------------------------------------


def column_list(texts: Sequence[str], option: str) -> list[str]:
    """Column names, comma-separated and/or the option repeated; OptionError on a bad or
    repeated one."""
    names: list[str] = []
    for text in texts:
        for part in text.split(","):
            name = part.strip()
            if not name:
                continue
            if not COLUMN_NAME.fullmatch(name):
                raise OptionError(option, f"{name!r} is not a column name ([a-z_][a-z0-9_]*)")
            if name in names:
                raise OptionError(option, f"{name!r} is named twice")
            names.append(name)
    return names


def parse_aggregate(text: str) -> pb.Aggregate:
    """`function[:column][:alias]`, e.g. `count`, `sum:count`, `count_distinct:counter_id:n`,
    `count::rows`; OptionError on --agg otherwise."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) > 3:
        raise OptionError("--agg", f"{text!r}: give FUNCTION[:COLUMN][:ALIAS]")
    function, column, alias = [*parts, "", ""][:3]
    name = function.lower()
    if name not in AGGREGATES:
        raise OptionError(
            "--agg", f"{text!r}: unknown function {function!r}; one of {', '.join(AGGREGATES)}"
        )
    if not column and name != "count":
        raise OptionError("--agg", f"{text!r}: {name} needs a column, e.g. {name}:count")
    for what, value in (("column", column), ("alias", alias)):
        if value and not COLUMN_NAME.fullmatch(value):
            raise OptionError("--agg", f"{text!r}: the {what} {value!r} is not [a-z_][a-z0-9_]*")
    return pb.Aggregate(function=AGGREGATES[name], column=column, alias=alias)


def aggregate_name(aggregate: pb.Aggregate) -> str:
    """The result column's name: the alias, or `<function>_<column>` (`count` alone)."""
    if aggregate.alias:
        return aggregate.alias
    function = AGGREGATE_NAMES.get(aggregate.function, str(aggregate.function))
    return f"{function}_{aggregate.column}" if aggregate.column else function


def parse_order_by(texts: Sequence[str]) -> list[pb.OrderBy]:
    """`column[:asc|:desc]`, comma-separated and/or the option repeated."""
    orders: list[pb.OrderBy] = []
    for text in texts:
        for part in text.split(","):
            item = part.strip()
            if not item:
                continue
            column, _, direction = item.partition(":")
            column, direction = column.strip(), direction.strip().lower()
            if not COLUMN_NAME.fullmatch(column):
                raise OptionError("--order-by", f"{column!r} is not a column name")
            if direction not in ("", "asc", "desc"):
                raise OptionError("--order-by", f"{item!r}: give COLUMN, COLUMN:asc or COLUMN:desc")
            if any(o.column == column for o in orders):
                raise OptionError("--order-by", f"{column!r} is named twice")
            orders.append(pb.OrderBy(column=column, descending=direction == "desc"))
    return orders


def query_request(
    dataset_id: str,
    purpose: str,
    columns: Sequence[str] = (),
    where: str | None = None,
    group_by: Sequence[str] = (),
    aggregates: Sequence[str] = (),
    since: str | None = None,
    until: str | None = None,
    order_by: Sequence[str] = (),
    limit: int | None = None,
    snapshot: int | None = None,
    as_of: str | None = None,
) -> pb.QueryRequest:
    """The options as a request; OptionError naming the option at fault."""
    if not purpose.strip():
        raise OptionError("--purpose", "give the purpose of the read")
    request = pb.QueryRequest(dataset_id=dataset_id.strip(), purpose=purpose.strip())
    request.columns.extend(column_list(columns, "--columns"))
    if where is not None:
        request.filter.CopyFrom(parse_where(where))
    request.group_by.extend(column_list(group_by, "--group-by"))
    request.aggregates.extend(parse_aggregate(a) for a in aggregates)
    if request.aggregates and request.columns:
        raise OptionError(
            "--columns", "not with --agg: the result is the --group-by columns then the aggregates"
        )
    names = list(request.group_by)
    for aggregate in request.aggregates:
        name = aggregate_name(aggregate)
        if name in names:
            raise OptionError(
                "--agg", f"two result columns named {name!r}: give an aggregate an alias (f:col:a)"
            )
        names.append(name)
    if since is not None:
        request.time_range.start.CopyFrom(parse_time(since, "--since"))
    if until is not None:
        request.time_range.end.CopyFrom(parse_time(until, "--until"))
        if since is not None and request.time_range.end.ToNanoseconds() <= (
            request.time_range.start.ToNanoseconds()
        ):
            raise OptionError("--until", "must be after --since")
    request.order_by.extend(parse_order_by(order_by))
    if limit is not None:
        if limit < 1:
            raise OptionError("--limit", "must be at least 1")
        request.limit = limit
    if snapshot is not None and as_of is not None:
        raise OptionError("--as-of", "give --snapshot or --as-of, not both")
    if snapshot is not None:
        request.snapshot_id = snapshot
    if as_of is not None:
        request.as_of_time.CopyFrom(parse_time(as_of, "--as-of"))
    return request


def output_format(fmt: str | None, output: Path | None) -> str:
    """The format named by --format, or by --output's suffix, or a table on the terminal."""
    if fmt is None:
        if output is None:
            return "table"
        detected = SUFFIXES.get(output.suffix.lower())
        if detected is None:
            raise OptionError(
                "--format",
                f"cannot tell the format of {output.name!r} from its suffix (known: "
                f"{', '.join(SUFFIXES)}); give --format csv|parquet|arrow",
            )
        return detected
    name = fmt.strip().lower()
    if name not in FORMATS:
        raise OptionError("--format", f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if name == "table" and output is not None:
        raise OptionError(
            "--format", "a table is for the terminal: with --output give csv|parquet|arrow"
        )
    if name in ("parquet", "arrow") and output is None:
        raise OptionError("--output", f"--format {name} writes a file: give --output FILE")
    return name


# --- sinks: where the batches go ---------------------------------------------------------------


class OutputError(Exception):
    """The result cannot be written as asked (a type CSV cannot hold, a file not writable)."""


class Sink(Protocol):
    def start(self, schema: pa.Schema) -> None: ...

    def write(self, batch: pa.RecordBatch) -> None: ...

    def finish(self) -> None:
        """Everything was received: make the output whole (close, rename)."""

    def abort(self) -> None:
        """The query failed: leave no partial output behind (or say it is partial)."""


@dataclass
class TablePreview:
    """The first `max_rows` rows, as text, for a table on the terminal; the others counted only."""

    max_rows: int = DEFAULT_TABLE_ROWS
    schema: pa.Schema | None = None
    rows: list[list[Text]] = field(default_factory=list)
    received: int = 0

    def start(self, schema: pa.Schema) -> None:
        self.schema = schema

    def write(self, batch: pa.RecordBatch) -> None:
        self.received += batch.num_rows
        wanted = self.max_rows - len(self.rows)
        if wanted > 0:
            for row in batch.slice(0, wanted).to_pylist():
                self.rows.append([cell_text(v) for v in row.values()])

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass

    @property
    def more(self) -> int:
        return self.received - len(self.rows)

    def table(self) -> Table:
        table = Table(caption="no rows" if not self.received else None)
        for f in self.schema or []:
            numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
            numeric = numeric or pa.types.is_decimal(f.type)
            table.add_column(escape(f.name), justify="right" if numeric else "left")
        for row in self.rows:
            table.add_row(*row)
        return table


def cell_text(value: Any) -> Text:
    """A value for a table cell (never read as rich markup); null dimmed."""
    if value is None:
        return Text("null", style="dim")
    if isinstance(value, datetime):
        return Text(value.isoformat().replace("+00:00", "Z"))
    if isinstance(value, date | Decimal):
        return Text(str(value))
    if isinstance(value, bytes):
        shown = value[:16].hex()
        return Text(shown + ("…" if len(value) > 16 else ""))
    if isinstance(value, list | dict):
        return Text(json.dumps(value, default=str, ensure_ascii=False))
    return Text(str(value))


class _File:
    """A file written as PATH.part, renamed to PATH when whole, removed if not."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")

    def open(self) -> Any:
        try:
            return pa.OSFile(str(self.part), "wb")
        except OSError as exc:
            raise OutputError(f"cannot write {self.part}: {exc}") from exc

    def commit(self) -> None:
        try:
            os.replace(self.part, self.path)
        except OSError as exc:
            raise OutputError(f"cannot rename {self.part} to {self.path}: {exc}") from exc

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)


# What pyarrow raises for a type CSV cannot hold (a list, a struct).
_CSV_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


class CsvSink:
    """CSV with a header line, to a file or (output None) to stdout."""

    def __init__(self, output: Path | None, stdout: IO[bytes] | None = None) -> None:
        self.file = _File(output) if output is not None else None
        self.stdout = stdout
        self.sink: Any = None
        self.writer: Any = None

    def start(self, schema: pa.Schema) -> None:
        if self.file is not None:
            self.sink = self.file.open()
        else:
            sys.stdout.flush()
            self.sink = pa.PythonFile(self.stdout or sys.stdout.buffer, mode="w")
        try:
            self.writer = pa_csv.CSVWriter(self.sink, schema)
        except _CSV_ERRORS as exc:
            raise OutputError(
                f"cannot write this result as CSV ({exc}): use --format parquet or arrow"
            ) from exc

    def write(self, batch: pa.RecordBatch) -> None:
        try:
            self.writer.write_batch(batch)
        except _CSV_ERRORS as exc:
            raise OutputError(
                f"cannot write this result as CSV ({exc}): use --format parquet or arrow"
            ) from exc

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.sink.close()
            self.file.commit()
        elif self.sink is not None:
            self.sink.flush()

    def abort(self) -> None:
        if self.file is not None:
            if self.sink is not None:
                try:
                    self.sink.close()
                except (pa.ArrowException, OSError):
                    pass
            self.file.discard()
        elif self.writer is not None:
            err.print("[red]the CSV written to stdout is incomplete[/]")


class _FileSink:
    """Parquet or Arrow IPC written batch by batch into PATH.part."""

    def __init__(self, output: Path) -> None:
        self.file = _File(output)
        self.sink: Any = None
        self.writer: Any = None

    def new_writer(self, sink: Any, schema: pa.Schema) -> Any:
        raise NotImplementedError

    def start(self, schema: pa.Schema) -> None:
        self.sink = self.file.open()
        self.writer = self.new_writer(self.sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)

    def finish(self) -> None:
        self.writer.close()
        self.sink.close()
        self.file.commit()

    def abort(self) -> None:
        for closable in (self.writer, self.sink):
            if closable is not None:
                try:
                    closable.close()
                except (pa.ArrowException, OSError):
                    pass
        self.file.discard()


class ParquetSink(_FileSink):
    def new_writer(self, sink: Any, schema: pa.Schema) -> Any:
        return pq.ParquetWriter(sink, schema)


class ArrowFileSink(_FileSink):
    """The Arrow IPC file format (random access: `pyarrow.ipc.open_file`)."""

    def new_writer(self, sink: Any, schema: pa.Schema) -> Any:
        return pa.ipc.new_file(sink, schema)


def new_sink(fmt: str, output: Path | None, max_rows: int = DEFAULT_TABLE_ROWS) -> Sink:
    if fmt == "table":
        return TablePreview(max_rows)
    if fmt == "csv":
        return CsvSink(output)
    assert output is not None  # output_format insists
    return ParquetSink(output) if fmt == "parquet" else ArrowFileSink(output)


# --- the stream --------------------------------------------------------------------------------


class QueryStreamError(Exception):
    """The stream is not what the contract promises (parts out of order, undecodable Arrow)."""


@dataclass(frozen=True)
class Received:
    header: pb.QueryHeader
    summary: pb.QuerySummary
    rows: int
    bytes: int
    batches: int


def _no_progress(rows: int, size: int) -> None:
    pass


def receive(
    responses: Iterable[pb.QueryResponse],
    sink: Sink,
    progress: Callable[[int, int], None] = _no_progress,
) -> Received:
    """Read the stream into the sink, a batch at a time; `progress(rows, bytes)` after each batch.
    On any failure (the stream's, the sink's, an interrupt) the sink is aborted, then the error
    raised again."""
    header: pb.QueryHeader | None = None
    summary: pb.QuerySummary | None = None
    schema: pa.Schema | None = None
    rows = size = batches = 0
    try:
        for n, response in enumerate(responses):
            part = response.WhichOneof("part")
            if summary is not None:
                raise QueryStreamError(f"message {n} ({part}) came after the summary")
            if part == "header":
                if header is not None:
                    raise QueryStreamError(f"message {n} is a second header")
                header = response.header
                schema = _schema(header.arrow_schema)
                sink.start(schema)
            elif part == "arrow_batch":
                if schema is None:
                    raise QueryStreamError(f"message {n} is a batch before the header")
                batch = _batch(response.arrow_batch, schema, batches)
                sink.write(batch)
                rows += batch.num_rows
                size += len(response.arrow_batch)
                batches += 1
                progress(rows, size)
            elif part == "summary":
                if header is None:
                    raise QueryStreamError(f"message {n} is the summary, before any header")
                summary = response.summary
            else:
                raise QueryStreamError(f"message {n} is empty")
        if header is None:
            raise QueryStreamError("the stream ended without a header")
        if summary is None:
            raise QueryStreamError(
                f"the stream ended without a summary after {rows} rows: the result is incomplete"
            )
        if summary.rows != rows:
            raise QueryStreamError(f"the summary counts {summary.rows} rows, {rows} were received")
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    return Received(header=header, summary=summary, rows=rows, bytes=size, batches=batches)


def _schema(payload: bytes) -> pa.Schema:
    try:
        return pa.ipc.read_schema(pa.py_buffer(payload))
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise QueryStreamError(f"the header's schema is not an Arrow IPC schema: {exc}") from exc


def _batch(payload: bytes, schema: pa.Schema, index: int) -> pa.RecordBatch:
    try:
        return pa.ipc.read_record_batch(pa.py_buffer(payload), schema)
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise QueryStreamError(
            f"batch {index} is not an Arrow record batch of the header's schema: {exc}"
        ) from exc


def query_stream(request: pb.QueryRequest) -> Generator[pb.QueryResponse, None, None]:
    """The Query stream, with the query's own deadline and message size; a failed status (before
    or mid-stream) printed and exit 1, as every command."""
    settings = CliSettings()
    options = [("grpc.max_receive_message_length", settings.query_max_message_bytes)]
    # call_stream's deadline is the settings' call timeout: a query's is its own.
    whole_query = settings.model_copy(update={"call_timeout_s": settings.query_timeout_s})
    with grpc.insecure_channel(settings.query_addr, options=options) as ch:
        stub = query_pb2_grpc.QueryServiceStub(ch)
        yield from call_stream(whole_query, stub.Query, request)


# --- display -----------------------------------------------------------------------------------


def masked(treatments: Iterable[pb.ColumnTreatment]) -> str:
    """The columns not returned in clear: `counter_id=hash, ts=generalise`, or `none`
    (aggregates are computed from clear values)."""
    shown = [
        f"{t.column}={t.treatment}" for t in treatments if t.treatment not in ("clear", "aggregate")
    ]
    return ", ".join(shown) or "none"


def summary_lines(received: Received, output: Path | None = None) -> list[str]:
    """What the query did, for stderr (rich markup)."""
    h, s = received.header, received.summary
    snapshot = str(h.snapshot_id) if h.snapshot_id else "0 (no data yet)"
    parts = [
        f"{s.rows:,} rows",
        size_text(s.bytes),
        f"{s.duration_ms:,} ms",
        f"query {escape(h.query_id)}",
        f"snapshot {snapshot}",
        f"agreement {escape(h.agreement_id) or '- (publisher or open dataset)'}",
    ]
    if h.consent_revision:
        parts.append(f"consent revision {h.consent_revision}")
    lines = [" · ".join(parts)]
    lines.append(f"masked: {escape(masked(h.treatments))}")
    if output is not None:
        lines.append(f"written to {escape(str(output))}")
    return lines


@contextmanager
def _progress(show: bool, dataset_id: str) -> Iterator[Callable[[int, int], None]]:
    """Rows and bytes received so far, on stderr (when it is a terminal); yields the callback."""
    if not show:
        yield _no_progress
        return
    with Progress(
        SpinnerColumn(),
        TextColumn(f"receiving {escape(dataset_id)}"),
        TextColumn("{task.fields[rows]:,} rows · {task.fields[size]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("query", total=None, rows=0, size=size_text(0))

        def advance(rows: int, size: int) -> None:
            progress.update(task, rows=rows, size=size_text(size))

        yield advance


def _stdout_gone() -> None:
    """stdout closed by its reader (`| head`): no more writes to it, even at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# --- the command -------------------------------------------------------------------------------


def query(
    dataset_id: str = typer.Argument(..., metavar="DATASET"),
    purpose: str = typer.Option(
        ..., "--purpose", help="why the data is read (tdg access purposes)"
    ),
    columns: list[str] = typer.Option(
        [], "--columns", metavar="A,B", help="the columns to return; default: all you may see"
    ),
    where: str | None = typer.Option(
        None,
        "--where",
        metavar="EXPR",
        help="a filter, e.g. \"count >= 3 AND counter_id IN ('c1','c2')\": = != < <= > >=, "
        "[NOT] IN (…), BETWEEN … AND …, IS [NOT] NULL, AND, OR, NOT, ( ); values 'text', 12, "
        "1.5, true, timestamp '2026-01-01T00:00:00Z', date '2026-01-01'",
    ),
    group_by: list[str] = typer.Option([], "--group-by", metavar="A,B", help="group by columns"),
    aggregates: list[str] = typer.Option(
        [],
        "--agg",
        metavar="F[:COL][:ALIAS]",
        help="an aggregate (repeat): count, sum, min, max, avg, count_distinct; e.g. sum:count",
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="ISO", help="event time from (ISO 8601; UTC unless an offset)"
    ),
    until: str | None = typer.Option(None, "--until", metavar="ISO", help="event time before"),
    order_by: list[str] = typer.Option(
        [], "--order-by", metavar="COL[:desc]", help="order by result columns (repeat or A,B:desc)"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="at most this many rows"),
    snapshot: int | None = typer.Option(
        None, "--snapshot", min=1, metavar="ID", help="read the table as of this snapshot"
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", metavar="ISO", help="read the table as it was at this time"
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        help="table|csv|parquet|arrow; default: from --output's suffix, else a table",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", metavar="FILE", dir_okay=False, help="write the result there"
    ),
    max_rows: int = typer.Option(
        DEFAULT_TABLE_ROWS, "--max-rows", min=1, help="a table shows at most this many rows"
    ),
) -> None:
    """Read a dataset for a purpose, as an agreement allows.

    Columns, a filter, groups and aggregates, a time range, an order, a limit, an earlier
    snapshot. A table on the terminal, or CSV, Parquet or an Arrow IPC file; the summary (rows,
    bytes, query id, snapshot, agreement, masked columns) on stderr."""
    with usage_errors():
        request = query_request(
            dataset_id,
            purpose,
            columns,
            where,
            group_by,
            aggregates,
            since,
            until,
            order_by,
            limit,
            snapshot,
            as_of,
        )
        kind = output_format(fmt, output)
    sink = new_sink(kind, output, max_rows)
    # Progress only on a terminal, and not over CSV printed to the same terminal.
    show = kind != "table" and err.is_terminal and not (output is None and out.is_terminal)
    try:
        with _progress(show, dataset_id) as advance, closing(query_stream(request)) as stream:
            received = receive(stream, sink, advance)
    except QueryStreamError as exc:
        err.print(f"[red]unreadable answer from the query service:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    except OutputError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from exc
    except BrokenPipeError as exc:
        _stdout_gone()
        raise typer.Exit(1) from exc
    except OSError as exc:
        err.print(f"[red]cannot write {escape(str(output or 'stdout'))}:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    if isinstance(sink, TablePreview):
        out.print(sink.table())
        if sink.more:
            out.print(
                f"[dim]… {sink.more:,} more rows (the first {len(sink.rows)} shown: --max-rows, "
                "--limit, or --format csv|parquet|arrow --output FILE)[/]"
            )
    for line in summary_lines(received, output):
        err.print(line)
