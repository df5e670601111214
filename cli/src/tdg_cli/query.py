"""`tdg query DATASET --purpose P …`: a governed query, its Arrow batches shown or written.

The options become a structured QueryRequest (`query_request`); the answer's stream is read
(`query_stream`) a batch at a time into a sink (`query_sinks`: a table, CSV, Parquet or Arrow
IPC, files written as FILE.part then renamed); the progress and the summary go to stderr
(`query_display`).
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import typer
from rich.markup import escape

from tdg_cli.client import err, out, usage_errors
from tdg_cli.query_display import print_preview, receiving, stdout_gone, summary_lines
from tdg_cli.query_request import query_request
from tdg_cli.query_sinks import (
    DEFAULT_TABLE_ROWS,
    OutputError,
    TablePreview,
    new_sink,
    output_format,
)
from tdg_cli.query_stream import QueryStreamError, query_stream, receive


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
        with receiving(show, dataset_id) as advance, closing(query_stream(request)) as stream:
            received = receive(stream, sink, advance)
    except QueryStreamError as exc:
        err.print(f"[red]unreadable answer from the query service:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    except OutputError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from exc
    except BrokenPipeError as exc:
        stdout_gone()
        raise typer.Exit(1) from exc
    except OSError as exc:
        err.print(f"[red]cannot write {escape(str(output or 'stdout'))}:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    if isinstance(sink, TablePreview):
        print_preview(sink)
    for line in summary_lines(received, output):
        err.print(line)
