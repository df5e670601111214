"""Where `tdg query` puts the batches it receives, one at a time (memory stays bounded whatever
the size of the result): a table on the terminal (the first rows kept, the others only counted),
CSV on stdout or in a file, a Parquet or Arrow IPC file.

A file is written beside its destination as FILE.part and renamed at the end: a query refused or
cut short mid-stream (an agreement revoked, a cap reached) leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tdg_cli.client import err
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
DEFAULT_TABLE_ROWS = 50


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
