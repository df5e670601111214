"""`tdg ingest send`: a file → the messages of the Publish stream (pure: no typer, no gRPC calls).

JSON lines go as they are: each non-blank line's bytes, without its line terminator, one element of
`JsonRecords.records`, never parsed nor re-encoded, so a partner's bytes arrive untouched (the
service judges them). CSV and Parquet are read with pyarrow a batch at a time (memory bounded
whatever the file's size) and go as Arrow IPC streams in `arrow_ipc`.

Each message holds at most `batch_rows` records and stays under `max_bytes` (gRPC refuses messages
over 4 MiB): an Arrow batch too big is split by rows, JSON lines are grouped up to the bound. A
single record bigger than the bound still goes alone: the service refuses it (too_large), or gRPC
ends the stream if it is over gRPC's own limit.

Record indexes (PublishResponse problems) count records in the stream from 0; `Source.where` turns
one back into its place in the file (a line of a JSON lines file, a row of a CSV or Parquet file).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tdg.ingest.v1 import ingest_pb2 as pb

from tdg_cli.vocabulary import OptionError

FORMATS = ("jsonl", "csv", "parquet")
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Under gRPC's default 4 MiB, with room for the message's own framing.
MAX_MESSAGE_BYTES = 3 * 1024 * 1024
# What one element of JsonRecords.records costs beyond its bytes: a tag and a length (varint).
_RECORD_FRAMING = 6
# Errors met while reading a file: pyarrow's (ArrowInvalid is also a ValueError) and the OS's.
READ_ERRORS = (pa.ArrowException, OSError, ValueError)


def file_format(path: Path, fmt: str) -> str:
    """The format named by `--format`, or for `auto` the one the file's suffix says."""
    fmt = fmt.strip().lower()
    if fmt == "auto":
        detected = SUFFIXES.get(path.suffix.lower())
        if detected is None:
            raise OptionError(
                "--format",
                f"cannot tell the format of {path.name!r} from its suffix (known: "
                f"{', '.join(SUFFIXES)}); give --format {'|'.join(FORMATS)}",
            )
        return detected
    if fmt not in FORMATS:
        raise OptionError("--format", f"unknown format {fmt!r}; one of auto, {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class Chunk:
    """The records of one message: JSON lines, or an Arrow IPC stream."""

    records: int
    json: tuple[bytes, ...] = ()
    arrow_ipc: bytes = b""
    # How far into the file this chunk reaches, in the source's progress unit (for a progress bar).
    position: int = 0


class Source(Protocol):
    """A file to send: its chunks, its size for a progress bar, and where a record came from."""

    @property
    def path(self) -> Path: ...

    @property
    def total(self) -> int:
        """The progress total, in `unit`: the file's bytes, or rows (Parquet knows its count)."""

    @property
    def unit(self) -> str: ...

    def chunks(self, batch_rows: int, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[Chunk]: ...

    def where(self, index: int) -> str: ...


def open_source(path: Path, fmt: str) -> Source:
    """The file read as `fmt` (jsonl, csv or parquet); the errors of READ_ERRORS when it cannot
    be opened as such (Parquet reads its footer here; CSV and JSON lines fail on first read)."""
    if fmt == "jsonl":
        return JsonLinesFile(path)
    if fmt == "csv":
        return CsvFile(path)
    return ParquetFile(path)


# --- JSON lines --------------------------------------------------------------------------------


@dataclass
class JsonLinesFile:
    path: Path
    unit: ClassVar[str] = "bytes"
    # The line numbers (from 1) of the blank lines skipped so far, in order.
    skipped: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.path.stat().st_size

    def chunks(self, batch_rows: int, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[Chunk]:
        with self.path.open("rb") as f:
            yield from self.chunks_of(f, batch_rows, max_bytes)

    def chunks_of(
        self, lines: Iterable[bytes], batch_rows: int, max_bytes: int = MAX_MESSAGE_BYTES
    ) -> Iterator[Chunk]:
        """The records of `lines` (each with its terminator, as a binary file yields them)."""
        self.skipped.clear()
        records: list[bytes] = []
        size = position = 0
        for number, line in enumerate(lines, start=1):
            position += len(line)
            record = _without_terminator(line)
            if not record.strip():
                self.skipped.append(number)
                continue
            cost = len(record) + _RECORD_FRAMING
            if records and (len(records) == batch_rows or size + cost > max_bytes):
                yield Chunk(records=len(records), json=tuple(records), position=position)
                records, size = [], 0
            records.append(record)
            size += cost
        if records:
            yield Chunk(records=len(records), json=tuple(records), position=position)

    def where(self, index: int) -> str:
        return f"line {self.line_of(index)}"

    def line_of(self, index: int) -> int:
        """The line number (from 1) of the record at `index` (from 0): blank lines are no
        records, so each one skipped before it moves it one line down."""
        line = index + 1
        for skipped in self.skipped:
            if skipped > line:
                break
            line += 1
        return line


def _without_terminator(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


# --- CSV and Parquet: Arrow IPC ----------------------------------------------------------------


@dataclass
class CsvFile:
    """A CSV file with a header line; column types inferred by pyarrow from the first block."""

    path: Path
    unit: ClassVar[str] = "bytes"

    @property
    def total(self) -> int:
        return self.path.stat().st_size

    def chunks(self, batch_rows: int, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[Chunk]:
        with pa.OSFile(str(self.path), "rb") as f, pa_csv.open_csv(f) as reader:
            # The reader reads ahead: the file's position is where parsing will be shortly.
            batches = ((batch, min(f.tell(), self.total)) for batch in reader)
            yield from arrow_chunks(batches, reader.schema, batch_rows, max_bytes)

    def where(self, index: int) -> str:
        return f"row {index + 1}"


@dataclass
class ParquetFile:
    path: Path
    unit: ClassVar[str] = "rows"

    def __post_init__(self) -> None:
        self._file = pq.ParquetFile(self.path)

    @property
    def total(self) -> int:
        return int(self._file.metadata.num_rows)

    def chunks(self, batch_rows: int, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[Chunk]:
        def batches() -> Iterator[tuple[Any, int]]:
            rows = 0
            for batch in self._file.iter_batches(batch_size=batch_rows):
                rows += batch.num_rows
                yield batch, rows

        yield from arrow_chunks(batches(), self._file.schema_arrow, batch_rows, max_bytes)

    def where(self, index: int) -> str:
        return f"row {index + 1}"


def arrow_chunks(
    batches: Iterable[tuple[Any, int]], schema: Any, batch_rows: int, max_bytes: int
) -> Iterator[Chunk]:
    """Record batches (each with the file position after it) regrouped into messages of
    `batch_rows` rows (the last one fewer), each split further by rows while over `max_bytes`.
    Slices and groups share the file's buffers: nothing is copied until serialised."""
    pending: list[Any] = []
    rows = position = 0
    for batch, position in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(batch_rows - rows, batch.num_rows - offset)
            pending.append(batch.slice(offset, take))
            rows += take
            offset += take
            if rows == batch_rows:
                yield from _bounded(pa.Table.from_batches(pending, schema), max_bytes, position)
                pending, rows = [], 0
    if rows:
        yield from _bounded(pa.Table.from_batches(pending, schema), max_bytes, position)


def _bounded(table: Any, max_bytes: int, position: int) -> Iterator[Chunk]:
    payload = ipc_stream(table)
    if len(payload) <= max_bytes or table.num_rows <= 1:
        yield Chunk(records=table.num_rows, arrow_ipc=payload, position=position)
        return
    # As many parts as the size says, with a margin for rows of uneven size.
    parts = max(2, math.ceil(len(payload) * 1.2 / max_bytes))
    step = math.ceil(table.num_rows / parts)
    for start in range(0, table.num_rows, step):
        yield from _bounded(table.slice(start, step), max_bytes, position)


def ipc_stream(table: Any) -> bytes:
    """A table as an Arrow IPC stream: its schema, then its record batches."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


# --- the stream --------------------------------------------------------------------------------


def publish_requests(dataset_id: str, chunks: Iterable[Chunk]) -> Iterator[pb.PublishRequest]:
    """One PublishRequest per chunk; the first names the dataset."""
    for i, chunk in enumerate(chunks):
        request = pb.PublishRequest(dataset_id=dataset_id if i == 0 else "")
        if chunk.arrow_ipc:
            request.arrow_ipc = chunk.arrow_ipc
        else:
            request.json.records.extend(chunk.json)
        yield request


@dataclass
class Reading:
    """The chunks of a source as they are sent: how many records so far, and the read error that
    ended them early, if one did (what was read before it is sent all the same, and the service's
    answer shown: records already queued cannot be taken back)."""

    chunks: Iterable[Chunk]
    records: int = 0
    error: Exception | None = None

    def __iter__(self) -> Iterator[Chunk]:
        try:
            for chunk in self.chunks:
                self.records += chunk.records
                yield chunk
        except READ_ERRORS as exc:
            self.error = exc
