"""What `tdg query` says on the terminal besides the data: its progress while the stream comes,
the summary at the end (rows, bytes, query id, snapshot, agreement, masked columns)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.filesize import decimal as size_text
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from tdg.query.v1 import query_pb2 as pb

from tdg_cli.client import err, out
from tdg_cli.query_sinks import TablePreview
from tdg_cli.query_stream import Received, no_progress


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
def receiving(show: bool, dataset_id: str) -> Iterator[Callable[[int, int], None]]:
    """Rows and bytes received so far, on stderr (when it is a terminal); yields the callback."""
    if not show:
        yield no_progress
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


def stdout_gone() -> None:
    """stdout closed by its reader (`| head`): no more writes to it, even at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def print_preview(preview: TablePreview) -> None:
    """The table on stdout, and how many rows it leaves out."""
    out.print(preview.table())
    if preview.more:
        out.print(
            f"[dim]… {preview.more:,} more rows (the first {len(preview.rows)} shown: --max-rows, "
            "--limit, or --format csv|parquet|arrow --output FILE)[/]"
        )
