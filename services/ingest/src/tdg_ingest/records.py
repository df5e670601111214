"""Record validation, the hot path of the ingest worker: the Kafka message values of one micro-batch
→ an Arrow table of the valid records in the dataset's storage schema, and a reason for each other.

Good records never meet Python's JSON parser. The batch is screened on Arrow arrays (size, one line
starting with "{", valid UTF-8), read by pyarrow's JSON reader in one multi-threaded call, and what
the reader does not check (required fields, NaN, zone offsets, real dates, decimal precision,
value ranges) is checked vectorised over its table.

When that read fails, the batch is streamed block by block: the streaming reader hands over every
block before a failing one and names the failing row in its block, so a bad record costs a restart,
not its neighbours' bulk path. Failures naming no row are pinned by what they say (the value a
conversion quotes; unknown fields, read as columns), bisection being the last resort; the records
read before a bad one in its block are read again in bulk. Only the records pinned or flagged are
parsed in Python (`Diagnosis`), to say what is wrong with them.

pyarrow 26 facts this relies on (pinned by the tests): a line starting with `null` yields a silent
all-null row, and crashes the reader when it starts a block, so every line handed to it starts with
"{" and holds no raw newline, and records holding two values (rows out of step with records) are
set apart first; the reader does not check UTF-8; inferring the type of an unknown field recurses,
so it is only asked of shallow records.
"""

from __future__ import annotations

import codecs
import json
import re
import struct
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from itertools import accumulate, repeat
from operator import add
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import structlog

from tdg_ingest.schema import ColumnSpec, TableSchema

log = structlog.get_logger("tdg.ingest.records")

FORMAT = "format"
SCHEMA = "schema"

# Every (category, code) `RecordValidator` can emit, for the docs and the DLQ tooling. The worker
# adds its own "policy" and "deprecated" reasons.
REASON_CODES: Mapping[tuple[str, str], str] = {
    (FORMAT, "empty"): "the message is empty or only whitespace",
    (FORMAT, "too_large"): "the message is over the record size limit; it was not read",
    (FORMAT, "invalid_utf8"): "the message is not valid UTF-8",
    (FORMAT, "invalid_json"): "the message is not valid JSON",
    (FORMAT, "truncated_json"): "the message ends before its JSON value is complete",
    (FORMAT, "multiple_values"): "the message holds more than one JSON value",
    (FORMAT, "not_object"): "the message is JSON but not an object",
    (FORMAT, "too_deep"): "arrays and objects nest too deeply",
    (FORMAT, "duplicate_field"): "a field appears twice in the object",
    (SCHEMA, "unknown_field"): "a field is not in the dataset's schema",
    (SCHEMA, "missing_field"): "a required field is absent",
    (SCHEMA, "null_field"): "a required field is null",
    (SCHEMA, "wrong_type"): "a value is not of its column's type",
    (SCHEMA, "out_of_range"): "a number does not fit its column's type",
    (SCHEMA, "not_finite"): "a float is NaN or infinite",
    (SCHEMA, "naive_timestamp"): "a timestamp has no zone offset",
    (SCHEMA, "invalid_timestamp"): "a timestamp is not an ISO 8601 instant of years 1-9999",
    (SCHEMA, "invalid_date"): "a date is not a real YYYY-MM-DD date of years 1-9999",
    (SCHEMA, "invalid_decimal"): "a decimal does not fit its column's precision and scale",
    (SCHEMA, "below_minimum"): "a value (or a length) is below the column's minimum",
    (SCHEMA, "above_maximum"): "a value (or a length) is above the column's maximum",
    (SCHEMA, "invalid_record"): "the JSON reader refused the record; its message says why",
}

MAX_DEPTH = 64  # nesting of arrays and objects; the deepest valid record needs 9
_SHOWN = 80  # characters of an offending value quoted in a message
_WINDOW = 256  # records per single-block read when settling records apart
_BLOCK = 32 << 10  # bytes per block when streaming a batch that holds bad records

# The instants and dates pyarrow's cast accepts, field ranges included, less year 0000 (which it
# parses and Python cannot represent); no check of the day of the month, which `_plausible` adds.
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_DAY = _YEAR + "-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_HOUR, _MINUTE = "(?:[01][0-9]|2[0-3])", "[0-5][0-9]"
_TIME = f"[T ]{_HOUR}(?::{_MINUTE}(?::{_MINUTE}(?:[.][0-9]{{1,6}})?)?)?"
INSTANT = f"^{_DAY}{_TIME}(?:Z|[+-]{_HOUR}(?::?{_MINUTE})?)$"
DATE = f"^{_DAY}$"
# A timestamp written without an offset, for the message only.
_NAIVE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:[.][0-9]+)?)?)?)?$"
_INSTANT_RE, _NAIVE_RE, _DATE_RE = re.compile(INSTANT), re.compile(_NAIVE), re.compile(DATE)
_MONTH_DAYS = pa.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int32())
# Instants of years 1-9999 in UTC: pyarrow parses year 0, and 9999-12-31T23:00-02:00 is in
# year 10000 in UTC; Python (and the tools downstream) represent neither.
_FLOOR_US, _CEILING_US = -62135596800 * 10**6, 253402300800 * 10**6
_FLOOR_DAYS = -719162
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+[.]?[0-9]*|[.][0-9]+)(?:[eE][+-]?[0-9]+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ROW = re.compile(r" in row (\d+)$")
_TOKENS = (
    re.compile(r"couldn't parse:(.+)$"),
    re.compile(r": (\S+) requires (?:scale|precision)"),
    re.compile(r"The string '(.+)' is not a valid"),
)
_KIND = re.compile(r"(?:JSON to|a valid) (int32|int64|decimal128)")
# A "}" followed by what no object member allows: in a record, and in records joined as lines.
_TWO_VALUES = r"\}[ \t\r\n]*[^ \t\r\n,\]}]"
_TWO_LINES = re.compile(rb"\}[ \t]*[^\s,\]}]")
_WIDE = Context(prec=100)  # room for decimal(38,S) and more
_INT_RANGE = {32: (-(2**31), 2**31 - 1), 64: (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class Reject:
    index: int  # position in the input sequence
    category: str  # "format" | "schema" here; the worker adds "policy" and "deprecated"
    code: str  # machine-readable, snake_case: a key of REASON_CODES
    message: str  # for people, e.g. "field 'count': expected int32, got \"twelve\""


@dataclass(frozen=True)
class Validated:
    table: pa.Table  # valid records in input order, schema == TableSchema.arrow_schema()
    indexes: pa.Array  # int64 position in the input of each row of `table`
    rejects: list[Reject]  # sorted by index; len(table) + len(rejects) == len(values)


Reason = tuple[str, str, str]  # category, code, message


class RecordValidator:
    """Validates micro-batches of one dataset at one schema version; build once, call per batch."""

    def __init__(self, schema: TableSchema, max_record_bytes: int = 1024 * 1024) -> None:
        self.schema = schema
        self.max_record_bytes = max_record_bytes
        self.storage = schema.arrow_schema()
        self.reader = pa.schema(
            [pa.field(c.name, _reader_type(c.arrow_type)) for c in schema.columns]
        )
        self.names = frozenset(c.name for c in schema.columns)
        self.diagnose = Diagnosis(schema, max_record_bytes)
        # A block must hold the longest line, or the reader refuses it as straddling.
        self.bulk = pj.ReadOptions(use_threads=True, block_size=max(1 << 20, max_record_bytes + 1))
        self.strict = pj.ParseOptions(
            explicit_schema=self.reader, unexpected_field_behavior="error"
        )
        self.infer = pj.ParseOptions(explicit_schema=self.reader, unexpected_field_behavior="infer")

    def validate(self, values: Sequence[bytes]) -> Validated:
        try:
            return _Run(self, values).validated()
        except Exception:  # a bug must not stall the worker on one batch: go record by record
            log.exception("batch validation failed", dataset=self.schema.dataset_id)
            return self._one_by_one(values)

    def _one_by_one(self, values: Sequence[bytes]) -> Validated:
        tables, indexes, rejects = [], [], []
        for i, value in enumerate(values):
            try:
                one = _Run(self, [value]).validated()
            except Exception as e:
                log.exception("record validation failed", dataset=self.schema.dataset_id)
                rejects.append(Reject(i, SCHEMA, "invalid_record", f"validation failed: {e!r}"))
                continue
            tables.append(one.table)
            indexes.extend([i] * one.table.num_rows)
            rejects.extend(Reject(i, r.category, r.code, r.message) for r in one.rejects)
        table = pa.concat_tables(tables) if tables else self.storage.empty_table()
        return Validated(table, pa.array(indexes, pa.int64()), rejects)


class _Run:
    """One call of `validate`: the pieces of table read so far and the rejects."""

    def __init__(self, validator: RecordValidator, values: Sequence[bytes]) -> None:
        self.v = validator
        self.values = values
        self.lines: Sequence[bytes] = values  # each record as one line starting with "{"
        self.pieces: list[tuple[pa.Table, pa.Array]] = []  # tables read, positions of their rows
        self.rejects: dict[int, Reject] = {}
        self.screened: pa.Array = None  # each record as it came, for patterns

    def validated(self) -> Validated:
        if not self.values:
            return self._finish()
        joined, odd = self._screen()
        if odd:
            candidates = self._prefilter(odd)
            # Rejected records are blank lines, which the reader skips.
            joined = b"\n".join(self.lines) if len(candidates) > _WINDOW else b""
        else:
            candidates = list(range(len(self.values)))
        if joined:
            table = _read(joined, self.v.bulk, self.v.strict)
            if isinstance(table, pa.Table) and table.num_rows == len(candidates):
                positions = pa.array(candidates, pa.int64()) if odd else _arange(len(candidates))
                self.pieces.append((table, positions))
                return self._finish()
        groups = deque([self._single_values(candidates)] if candidates else [])
        while groups:
            again = self._stream(groups.popleft())
            if again:  # good records read up to a bad one, not yet converted
                table = _read(self._join(again), self.v.bulk, self.v.strict)
                if isinstance(table, pa.Table) and table.num_rows == len(again):
                    self.pieces.append((table, pa.array(again, pa.int64())))
                else:
                    groups.append(again)
        return self._finish()

    # --- reading -------------------------------------------------------------------------------

    def _screen(self) -> tuple[bytes, list[int]]:
        """The batch joined as JSON lines, and the records that are not yet a line of valid UTF-8
        (which pyarrow's reader does not check) starting with "{" within the size limit. Looked
        for on Arrow arrays: looking at 100,000 Python objects one by one costs as much as
        reading them."""
        joined = b"\n".join(self.values)
        whole = pa.array([joined], pa.large_binary())
        lines = pc.split_pattern(whole, b"\n").flatten()
        odd = None
        if len(lines) != len(self.values):  # a raw newline inside a record
            lines = pa.array(self.values, pa.binary())
            odd = pc.greater(pc.list_value_length(pc.split_pattern(lines, b"\n")), 1)
        if b"\r" in joined:
            odd = _or(odd, pc.greater(pc.list_value_length(pc.split_pattern(lines, b"\r")), 1))
        odd = _or(odd, pc.greater(pc.binary_length(lines), self.v.max_record_bytes))
        odd = _or(odd, pc.invert(pc.starts_with(lines, b"{")))
        try:
            whole.cast(pa.large_string())
        except pa.ArrowInvalid:
            odd = pc.or_(odd, _not_utf8(joined, lines))
        self.screened = lines
        return joined, pc.indices_nonzero(odd).to_pylist()

    def _prefilter(self, odd: list[int]) -> list[int]:
        """Make the odd records single lines starting with "{" or reject them unread by pyarrow;
        the positions of all records left to read."""
        lines = list(self.values)
        for i in odd:
            line = lines[i].strip(b" \t\r\n") if len(lines[i]) <= self.v.max_record_bytes else b""
            if not line.startswith(b"{") or not _is_utf8(line):
                self._reject(i, None, (FORMAT, "not_object", "record is not a JSON object"))
                line = b""
            # A raw newline in JSON text can only be whitespace: replacing it changes nothing.
            lines[i] = line.replace(b"\n", b" ").replace(b"\r", b" ")
        self.lines = lines
        if not self.rejects:
            return list(range(len(lines)))
        return [i for i in range(len(lines)) if i not in self.rejects]

    def _single_values(self, candidates: list[int]) -> list[int]:
        """The candidates less those holding more than one JSON value, which would put the
        reader's rows out of step with the records: found by a pattern (which strings may fool)
        and confirmed by the diagnosis."""
        hits = _mask(pc.match_substring_regex(self.screened, _TWO_VALUES))
        suspects = [i for i in pc.indices_nonzero(hits).to_pylist() if i not in self.rejects]
        rejected = {i for i in suspects if self._diagnosed(i)}
        return [i for i in candidates if i not in rejected] if rejected else candidates

    def _stream(self, group: list[int]) -> list[int]:
        """Read the group with the streaming reader, which hands over every block before a
        failing one and names the failing row within its block: the record that row points at
        is rejected and reading resumes after it; the records of a block whose failure names no
        row are settled apart. Unknown fields are read as columns when that is safe, so that a
        field new to the schema costs one restart, not one per record. Returns the good records
        read before a bad one in its block, to be read again."""
        if not group:
            return []
        chunk = _Chunk([self.lines[i] for i in group])
        # Blocks as small as the longest line allows: a failure costs the rest of its block.
        block = max(_BLOCK, max(map(len, chunk.lines)) + 1)
        options = pj.ReadOptions(use_threads=False, block_size=block)
        parse = self.v.infer if chunk.shallow(0, len(group)) else self.v.strict
        again: list[int] = []
        lo, failures, restarted = 0, 0, -1
        while lo < len(group):
            if failures > max(8, lo // 16):  # mostly bad records: go window by window
                for k in range(lo, len(group), _WINDOW):
                    self._sweep(group[k : k + _WINDOW])
                break
            rows, error = self._read_blocks(chunk, group, lo, options, parse)
            start = lo + rows
            if error is None:
                if start != len(group):
                    raise RuntimeError("the reader's rows are out of step with the records")
                break
            if parse is self.v.infer and "unexpected field" in str(error) and start != restarted:
                lo = restarted = start  # a field the first block did not have: infer it anew
                continue
            failures += 1
            bad = self._hinted(group[start : start + _WINDOW], error)
            if bad is not None:
                again.extend(group[start : start + bad])
                lo = start + bad + 1
            else:
                lo = chunk.block_end(start, block)
                if not self._settle_block(chunk, group, start, lo, error, again):
                    self._sweep(group[start:lo])
        return again

    def _settle_block(
        self,
        chunk: _Chunk,
        group: list[int],
        lo: int,
        hi: int,
        error: BaseException,
        again: list[int],
    ) -> bool:
        """Settle the records of a block whose failure names no row in one more read, when the
        failure says enough: unknown fields (read them as columns) or a value that does not
        convert (reject the records quoting it). False when it does not."""
        block = group[lo:hi]
        if "unexpected field" in str(error) and chunk.shallow(lo, hi):
            part = chunk.part(lo, hi)
            table = _read(part, _one_block(part.size), self.v.infer)
            if not isinstance(table, pa.Table) or table.num_rows != len(block):
                return False
            self._keep(table, chunk, group, lo, hi)
            return True
        suspects = {block[k - lo] for k in chunk.suspects(lo, hi, error, self.v.schema.columns)}
        rejected = {i for i in suspects if self._diagnosed(i)}
        if not rejected:
            return False
        # The block was parsed whole before a value failed to convert: the others are read again.
        again.extend(i for i in block if i not in rejected)
        return True

    def _read_blocks(
        self,
        chunk: _Chunk,
        group: list[int],
        lo: int,
        options: pj.ReadOptions,
        parse: pj.ParseOptions,
    ) -> tuple[int, BaseException | None]:
        """Keep the blocks read from record `lo` before the first failure; how many rows they
        hold, and the failure."""
        batches, rows, error = [], 0, None
        try:
            part = pa.BufferReader(chunk.part(lo, len(group)))
            for batch in pj.open_json(part, read_options=options, parse_options=parse):
                batches.append(batch)
                rows += batch.num_rows
        except (pa.ArrowException, ValueError) as e:
            error = e
        if rows:
            self._keep(pa.Table.from_batches(batches), chunk, group, lo, lo + rows)
        return rows, error

    def _keep(self, table: pa.Table, chunk: _Chunk, group: list[int], lo: int, hi: int) -> None:
        """Keep the rows read for records lo..hi of the chunk, less those with unknown fields."""
        positions = pa.array(group[lo:hi], pa.int64())
        extras = [name for name in table.column_names if name not in self.v.names]
        if extras:
            keep = self._known_fields_only(table, extras, chunk, group, lo, hi)
            table, positions = table.filter(keep), positions.filter(keep)
        self.pieces.append((table.select(self.v.reader.names), positions))

    def _known_fields_only(
        self, table: pa.Table, extras: list[str], chunk: _Chunk, group: list[int], lo: int, hi: int
    ) -> pa.Array:
        """Which rows of a table read with unknown fields as columns have none. A row with a
        value in one is rejected; so is one naming one with a null value, which shows only in
        its text (looked for as JSON writers spell names, escaping non-ASCII or not)."""
        hit = pc.is_valid(table[extras[0]])
        for name in extras[1:]:
            hit = pc.or_(hit, pc.is_valid(table[name]))
        rows = set(pc.indices_nonzero(hit.combine_chunks()).to_pylist())
        spelled = {json.dumps(n, ensure_ascii=a).encode() for n in extras for a in (True, False)}
        end = chunk.starts[hi]
        for spelling in spelled:
            at = chunk.data.find(spelling, chunk.starts[lo], end)
            while at >= 0:
                row = bisect_right(chunk.starts, at) - 1
                rows.add(row - lo)
                at = chunk.data.find(spelling, chunk.starts[row + 1], end)
        rejected = [r for r in sorted(rows) if self._diagnosed(group[lo + r])]
        return pc.invert(pc.is_in(_arange(hi - lo), pa.array(rejected, pa.int64())))

    def _join(self, group: list[int]) -> bytes:
        return b"\n".join([self.lines[i] for i in group])

    def _sweep(self, window: list[int]) -> None:
        """Settle a few records by single-block reads: each pass rejects at least one of them
        and leaves fewer to read again, or halves what a failure points nowhere in."""
        pending = deque([window] if window else [])
        while pending:
            again, apart = self._pass(pending.popleft())
            pending.extend(g for g in (again, *apart) if g)

    def _pass(self, window: list[int]) -> tuple[list[int], list[list[int]]]:
        """Read the window in single blocks from its first unsettled record, rejecting the record
        each failure points at. Returns the records to read again (the good ones before a bad one,
        read up to it but not converted) and, when a failure points at nothing, the two halves of
        what is left."""
        chunk = _Chunk(list(map(self.lines.__getitem__, window)))
        again: list[int] = []
        # Unknown fields become columns rather than failures naming no row, where that is safe.
        lo, hi, failures = 0, len(window), 0
        infer = chunk.shallow(lo, hi)
        while True:
            part = chunk.part(lo, hi)
            read = _read(part, _one_block(part.size), self.v.infer if infer else self.v.strict)
            error = read if isinstance(read, BaseException) else None
            if not isinstance(read, BaseException) and read.num_rows == hi - lo:
                self._keep(read, chunk, window, lo, hi)
                return again, []
            failures += 1
            if failures > max(4, len(window) // 16):  # mostly bad: ask about each record
                rest = [i for i in window[lo:hi] if not self._diagnosed(i)]
                if len(rest) < hi - lo:
                    return again + rest, []
            bad = self._hinted(window[lo:hi], error)
            if bad is not None:
                again.extend(window[lo : lo + bad])
                lo += bad + 1
                if lo == hi:
                    return again, []
                continue
            if hi - lo == 1:
                break
            if not infer and "unexpected field" in str(error) and chunk.shallow(lo, hi):
                infer = True  # read them again with unknown fields as columns, to see whose
                continue
            suspects = [window[k] for k in chunk.suspects(lo, hi, error, self.v.schema.columns)]
            rejected = {i for i in suspects if self._diagnosed(i)}
            if rejected:
                return again + [i for i in window[lo:hi] if i not in rejected], []
            break
        if hi - lo == 1:
            self._reject(window[lo], error)
            return again, []
        mid = (lo + hi) // 2
        return again, [window[lo:mid], window[mid:hi]]

    def _hinted(self, run: list[int], error: BaseException | None) -> int | None:
        """Reject the record of the run that the row named in the error points at, and say which
        one it was. The row before may be it: pyarrow counts trailing garbage as the next row."""
        row = _row_hint(error)
        if row is None:
            return None
        for k in (row, row - 1):
            if 0 <= k < len(run) and self._diagnosed(run[k]):
                return k
        return None

    # --- rejecting -----------------------------------------------------------------------------

    def _diagnosed(self, i: int) -> bool:
        """Reject record i if the Python diagnosis finds what is wrong with it."""
        reason = self.v.diagnose(self.values[i])
        if reason is not None:
            self.rejects[i] = Reject(i, *reason)
        return reason is not None

    def _reject(self, i: int, error: BaseException | None, fallback: Reason | None = None) -> None:
        if self._diagnosed(i):
            return
        if fallback is None:
            said = str(error) if error is not None else "more than one row read from one record"
            fallback = (SCHEMA, "invalid_record", f"record refused by the JSON reader: {said}")
        self.rejects[i] = Reject(i, *fallback)

    # --- checking what the reader does not -------------------------------------------------------

    def _finish(self) -> Validated:
        rejects = self.rejects
        if not self.pieces:
            empty = pa.array([], pa.int64())
            return Validated(self.v.storage.empty_table(), empty, _sorted(rejects))
        table = pa.concat_tables([t for t, _ in self.pieces])
        positions = pa.concat_arrays([p for _, p in self.pieces])
        if len(self.pieces) > 1:  # pieces come back in the order they were settled
            order = pc.sort_indices(positions)
            table, positions = table.take(order), positions.take(order)
        columns: list[pa.Array] = []
        flags: list[tuple[ColumnSpec, str, pa.Array]] = []
        for spec in self.v.schema.columns:
            column, column_flags = _checked(spec, table[spec.name].combine_chunks())
            columns.append(column)
            flags.extend((spec, code, mask) for code, mask in column_flags)
        if flags:
            bad = flags[0][2]
            for _, _, mask in flags[1:]:
                bad = pc.or_(bad, mask)
            if pc.any(bad).as_py():
                self._reject_flagged(flags, bad, positions)
                keep = pc.invert(bad)
                columns = [pc.filter(column, keep) for column in columns]
                positions = pc.filter(positions, keep)
        columns = [
            c if c.type == spec.arrow_type else pc.cast(c, spec.arrow_type)
            for c, spec in zip(columns, self.v.schema.columns, strict=True)
        ]
        out = pa.Table.from_arrays(columns, schema=self.v.storage)
        return Validated(out, positions, _sorted(rejects))

    def _reject_flagged(
        self, flags: list[tuple[ColumnSpec, str, pa.Array]], bad: pa.Array, positions: pa.Array
    ) -> None:
        first: dict[int, tuple[ColumnSpec, str]] = {}
        for spec, code, mask in flags:
            for row in pc.indices_nonzero(mask).to_pylist():
                first.setdefault(row, (spec, code))
        for row in pc.indices_nonzero(bad).to_pylist():
            spec, code = first[row]
            said = REASON_CODES[(SCHEMA, code)]
            self._reject(
                positions[row].as_py(), None, (SCHEMA, code, f"field '{spec.name}': {said}")
            )


class _Chunk:
    """Records of a window joined as lines, to read any run of them without copying."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.starts = list(accumulate(map((1).__add__, map(len, lines)), initial=0))
        self.data = b"\n".join(lines)
        self.buffer = pa.py_buffer(self.data)

    def part(self, lo: int, hi: int) -> pa.Buffer:
        return self.buffer.slice(self.starts[lo], self.starts[hi] - self.starts[lo] - 1)

    def shallow(self, lo: int, hi: int) -> bool:
        """Whether no record of the run nests deeper than MAX_DEPTH (inferring the type of an
        unknown field recurses in pyarrow). Counting brackets bounds nesting, strings and all."""
        whole = self.data[self.starts[lo] : self.starts[hi]]
        # Each record opens with "{", so one of them holds at most this many brackets:
        if whole.count(b"[") + whole.count(b"{") - (hi - lo - 1) <= MAX_DEPTH:
            return True
        lines = self.lines[lo:hi]
        counts = map(
            add, map(bytes.count, lines, repeat(b"[")), map(bytes.count, lines, repeat(b"{"))
        )
        return bool(max(counts) <= MAX_DEPTH)

    def block_end(self, start: int, size: int) -> int:
        """Past the records a block of `size` bytes starting at record `start` can hold."""
        return min(len(self.lines), bisect_right(self.starts, self.starts[start] + size))

    def suspects(
        self, lo: int, hi: int, error: BaseException | None, columns: Sequence[ColumnSpec]
    ) -> list[int]:
        """Records of the run a failure naming no row may be about: a second value after the
        object, or the value a conversion error quotes."""
        pattern = _TWO_LINES if error is None else _token(str(error), columns)
        if pattern is None:
            return []
        matches = pattern.finditer(self.data, self.starts[lo], self.starts[hi])
        found = (bisect_right(self.starts, m.start()) - 1 for m in matches)
        return sorted({k for k in found if lo <= k < hi})


def _checked(spec: ColumnSpec, column: pa.Array) -> tuple[pa.Array, list[tuple[str, pa.Array]]]:
    """The column (converted to its storage type where its cells allow) and the masks of its
    rows that fail a check, by reason code."""
    flags: list[tuple[str, pa.Array]] = []
    if not spec.nullable:
        flags.append(("missing_field", pc.is_null(column)))
    converted, cell_flags = _cells(column, spec.arrow_type)
    flags.extend(cell_flags)
    measure = _measure(converted, spec.arrow_type) if _bounded(spec) else None
    if measure is not None:
        if spec.minimum is not None:
            flags.append(("below_minimum", _mask(pc.less(measure, spec.minimum))))
        if spec.maximum is not None:
            flags.append(("above_maximum", _mask(pc.greater(measure, spec.maximum))))
    return converted, flags


def _cells(column: pa.Array, t: pa.DataType) -> tuple[pa.Array, list[tuple[str, pa.Array]]]:
    if pa.types.is_list(t):
        _, inner = _cells(column.flatten(), t.value_type)
        return column, [(code, _parents(column, mask)) for code, mask in inner]
    if pa.types.is_floating(t):
        return column, [("not_finite", _mask(pc.invert(pc.is_finite(column))))]
    if pa.types.is_decimal(t):
        wide = pa.decimal256(76, t.scale)
        bound = pa.scalar(Decimal(10 ** (t.precision - t.scale)), wide)
        # The reader fits the scale but not the precision: 123456789.0 comes out of a
        # decimal(10,2) as an 11-digit value.
        return column, [
            ("invalid_decimal", _mask(pc.greater_equal(pc.abs(column.cast(wide)), bound)))
        ]
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        converted, bad = _parse_temporal(column, t)
        return converted, [("invalid_date" if pa.types.is_date(t) else "invalid_timestamp", bad)]
    return column, []


def _parse_temporal(column: pa.Array, t: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Strings cast to a date or timestamp, and the mask of those that are not one."""
    try:
        converted = pc.cast(column, t)
        bad = _all_false(len(column))
    except pa.ArrowInvalid:
        bad = pc.and_(pc.is_valid(column), pc.invert(_plausible(column, t)))
        try:
            converted = pc.cast(pc.if_else(bad, pa.scalar(None, column.type), column), t)
        except pa.ArrowInvalid:  # a string pyarrow refuses that `_plausible` takes: find it
            kept = pc.and_(pc.is_valid(column), pc.invert(bad))
            failing = pa.array(_failing(column, kept, t), pa.int64())
            bad = pc.or_(bad, pc.is_in(_arange(len(column)), failing))
            converted = pc.cast(pc.if_else(bad, pa.scalar(None, column.type), column), t)
    if _is_instant(t):
        micros = pc.cast(converted, pa.int64())
        outside = pc.or_(pc.less(micros, _FLOOR_US), pc.greater_equal(micros, _CEILING_US))
        outside = pc.or_(outside, pc.starts_with(column, "0000"))  # whatever the offset
    else:
        outside = pc.less(pc.cast(converted, pa.int32()), _FLOOR_DAYS)
    return converted, pc.or_(bad, _mask(outside))


def _plausible(column: pa.Array, t: pa.DataType) -> pa.Array:
    """Which strings have the shape pyarrow parses and a real day of the month (the regex lets
    2026-02-30 through)."""
    shaped = _mask(pc.match_substring_regex(column, INSTANT if _is_instant(t) else DATE))
    digits = pc.if_else(shaped, column, pa.scalar(None, column.type))

    def field(start: int, stop: int) -> pa.Array:
        return pc.cast(pc.utf8_slice_codeunits(digits, start, stop), pa.int32())

    year, month, day = field(0, 4), field(5, 7), field(8, 10)

    def divides(n: int) -> pa.Array:
        return pc.equal(pc.multiply(pc.divide(year, n), n), year)

    leap = pc.or_(pc.and_(divides(4), pc.invert(divides(100))), divides(400))
    last = pc.add(
        pc.take(_MONTH_DAYS, month), pc.cast(pc.and_(pc.equal(month, 2), leap), pa.int32())
    )
    return _mask(pc.less_equal(day, last))


def _failing(column: pa.Array, among: pa.Array, t: pa.DataType) -> list[int]:
    """Positions, among those selected, of the cells that do not cast to `t`, found by halves."""
    selected = pc.indices_nonzero(among)
    cells = column.take(selected)
    spans, failing = [(0, len(cells))], []
    while spans:
        lo, hi = spans.pop()
        try:
            pc.cast(cells.slice(lo, hi - lo), t)
        except pa.ArrowInvalid:
            if hi - lo == 1:
                failing.append(selected[lo].as_py())
            else:
                spans.extend([(lo, (lo + hi) // 2), ((lo + hi) // 2, hi)])
    return failing


def _bounded(spec: ColumnSpec) -> bool:
    bounds = spec.minimum is not None or spec.maximum is not None
    return bounds and not pa.types.is_boolean(spec.arrow_type)


def _measure(column: pa.Array, t: pa.DataType) -> pa.Array:
    """What minimum/maximum bound: the number, the length, or the epoch seconds."""
    if pa.types.is_string(t):
        return pc.utf8_length(column)
    if pa.types.is_list(t):
        return pc.list_value_length(column)
    if pa.types.is_date(t):
        return pc.multiply(pc.cast(pc.cast(column, pa.int32()), pa.int64()), 86400)
    if pa.types.is_timestamp(t):
        return pc.divide(pc.cast(pc.cast(column, pa.int64()), pa.float64()), 1e6)
    if pa.types.is_decimal(t):
        return pc.cast(column, pa.float64())
    return column


def _parents(column: pa.Array, child_mask: pa.Array) -> pa.Array:
    """A mask over the lists of `column` from a mask over their flattened items."""
    if not pc.any(child_mask).as_py():
        return _all_false(len(column))
    bad = pc.unique(pc.filter(pc.list_parent_indices(column), child_mask))
    return pc.is_in(_arange(len(column)), bad.cast(pa.int64()))


def _reader_type(t: pa.DataType) -> pa.DataType:
    """The type asked of the JSON reader: dates and timestamps as strings, cast later, because
    the reader takes a timestamp without an offset for UTC and refuses "2026-02-03" as date32."""
    if pa.types.is_list(t):
        return pa.list_(_reader_type(t.value_type))
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pa.string()
    return t


def _read(data: Any, read: pj.ReadOptions, parse: pj.ParseOptions) -> pa.Table | BaseException:
    try:
        if read.use_threads:
            return pj.read_json(pa.BufferReader(data), read_options=read, parse_options=parse)
        # The streaming reader costs half as much per call, which counts when sweeping.
        return pj.open_json(
            pa.BufferReader(data), read_options=read, parse_options=parse
        ).read_all()
    except (pa.ArrowException, ValueError) as e:  # UnicodeDecodeError: invalid UTF-8
        return e


def _one_block(size: int) -> pj.ReadOptions:
    # One block, so that a row named in an error counts from the first record of the read.
    return pj.ReadOptions(use_threads=False, block_size=size + 1)


def _row_hint(error: BaseException | None) -> int | None:
    if not isinstance(error, pa.ArrowInvalid):
        return None
    match = _ROW.search(str(error))
    return int(match[1]) if match else None


def _token(message: str, columns: Sequence[ColumnSpec]) -> re.Pattern[bytes] | None:
    """Where the value a conversion error quotes can stand in a record (the error names neither
    column nor row): as the value of a column of the type it names, or as an item of a list."""
    value = next((m[1] for p in _TOKENS if (m := p.search(message))), None)
    if value is None:
        return None
    kind = _KIND.search(message)
    named = [c for c in columns if kind is None or str(_leaf(c.arrow_type)).startswith(kind[1])]
    keys = [re.escape(json.dumps(c.name)[1:-1].encode()) for c in named]
    quoted = rb'"?' + re.escape(value.encode()) + rb'"?[ \t]*[\],}]'
    where = [rb'"(?:' + b"|".join(keys) + rb')"[ \t]*:[ \t]*' + quoted] if keys else []
    if any(pa.types.is_list(c.arrow_type) for c in named):
        where.append(rb"[\[,][ \t]*" + quoted)
    return re.compile(b"|".join(where)) if where else None


def _leaf(t: pa.DataType) -> pa.DataType:
    return _leaf(t.value_type) if pa.types.is_list(t) else t


def _not_utf8(joined: bytes, lines: pa.Array) -> pa.Array:
    """Which of the records joined as lines hold invalid UTF-8."""
    ends = pc.cumulative_sum(pc.add(pc.binary_length(lines), 1)).to_pylist()
    view, start, bad = memoryview(joined), 0, []
    while start < len(joined):
        try:
            codecs.utf_8_decode(view[start:], "strict", True)
            break
        except UnicodeDecodeError as e:
            k = bisect_right(ends, start + e.start)
            bad.append(k)
            start = ends[k]
    return pc.is_in(_arange(len(lines)), pa.array(bad, pa.int64()))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_instant(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t))


def _or(mask: pa.Array | None, more: pa.Array) -> pa.Array:
    return more if mask is None else pc.or_(mask, more)


def _mask(mask: pa.Array) -> pa.Array:
    return pc.fill_null(mask, False)


def _arange(n: int) -> pa.Array:
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def _all_true(n: int) -> pa.Array:
    return pa.repeat(pa.scalar(True), n)


def _all_false(n: int) -> pa.Array:
    return pa.repeat(pa.scalar(False), n)


def _sorted(rejects: Mapping[int, Reject]) -> list[Reject]:
    return [rejects[i] for i in sorted(rejects)]


# --- the slow path: why one record is bad ----------------------------------------------------


class _Constant:
    """NaN, Infinity or -Infinity: JSON has none, both parsers take them."""

    def __init__(self, text: str) -> None:
        self.text = text


class _Number(Decimal):
    """A JSON number with a fraction or an exponent: exact, and shown as written."""

    text: str

    def __new__(cls, text: str) -> _Number:
        number = super().__new__(cls, text)
        number.text = text
        return number


class _HugeInt(_Number):
    """An integer literal too long for Python's int()."""


class _Duplicate(Exception):
    pass


class Diagnosis:
    """What is wrong with one record, in the words of `REASON_CODES`; None if nothing is.

    The same rules as the vectorised path; dates and timestamps are even parsed by the same
    pyarrow cast, so that both paths agree on what a valid instant is."""

    def __init__(self, schema: TableSchema, max_record_bytes: int) -> None:
        self.schema = schema
        self.max_record_bytes = max_record_bytes
        self.columns = {c.name: c for c in schema.columns}

    def __call__(self, value: bytes) -> Reason | None:
        parsed = self._parse(value)
        if isinstance(parsed, tuple):
            return parsed
        return self._fields(parsed[0])

    def _parse(self, value: bytes) -> Reason | list[Any]:
        if len(value) > self.max_record_bytes:
            return _format(
                "too_large",
                f"record is {len(value)} bytes, over the limit of "
                f"{self.max_record_bytes}; it was not read",
            )
        if not value.strip():
            return _format("empty", "record is empty" if not value else "record is only whitespace")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return _format(
                "invalid_utf8", f"record is not valid UTF-8: {e.reason} at byte {e.start}"
            )
        if text.startswith("\ufeff"):
            return _format("invalid_json", "record starts with a byte order mark")
        try:
            obj = json.loads(
                text,
                parse_float=_Number,
                parse_int=_parse_int,
                parse_constant=_Constant,
                object_pairs_hook=_pairs,
            )
        except json.JSONDecodeError as e:
            return _json_error(text, e)
        except RecursionError:
            return _format("too_deep", f"record nests arrays and objects deeper than {MAX_DEPTH}")
        except _Duplicate as e:
            return _format("duplicate_field", f"field {_name(e.args[0])} appears more than once")
        problem = _walk(obj)
        if problem is not None:
            return problem
        if not isinstance(obj, dict):
            return _format("not_object", f"record is {_kind(obj)}, expected a JSON object")
        return [obj]

    def _fields(self, obj: dict[str, Any]) -> Reason | None:
        for name in obj:
            if name not in self.columns:
                return (
                    SCHEMA,
                    "unknown_field",
                    f"field {_name(name)} is not in schema version {self.schema.version} "
                    f"of dataset '{self.schema.dataset_id}'",
                )
        for spec in self.schema.columns:
            if spec.name not in obj or obj[spec.name] is None:
                if spec.nullable:
                    continue
                code, said = (
                    ("missing_field", "missing") if spec.name not in obj else ("null_field", "null")
                )
                return SCHEMA, code, f"field '{spec.name}' is required but {said}"
            problem = _check(obj[spec.name], spec.arrow_type, spec.name) or _bounds(
                spec, obj[spec.name]
            )
            if problem is not None:
                return SCHEMA, *problem
        return None


def _parse_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= 1000 else _HugeInt(text)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Duplicate(name)
            seen.add(name)
    return obj


def _json_error(text: str, e: json.JSONDecodeError) -> Reason:
    if e.msg == "Extra data":
        try:
            json.JSONDecoder().raw_decode(text, e.pos)
        except (ValueError, RecursionError):
            return _format("invalid_json", f"record has unexpected data at character {e.pos}")
        return _format(
            "multiple_values",
            f"record holds more than one JSON value (another at character {e.pos})",
        )
    if e.msg.startswith("Unterminated string") or e.pos >= len(text.rstrip()):
        return _format("truncated_json", f"record ends before its JSON value is complete ({e.msg})")
    return _format("invalid_json", f"record is not valid JSON: {e.msg} at character {e.pos}")


def _walk(obj: Any) -> Reason | None:
    """Nesting depth and unpaired surrogates (which Python's parser keeps, pyarrow's refuses)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return _format(
                    "too_deep", f"record nests arrays and objects deeper than {MAX_DEPTH}"
                )
            items: Iterable[Any] = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
            if isinstance(value, dict):
                stack.extend((name, depth) for name in value)
        elif isinstance(value, str) and _SURROGATE.search(value):
            return _format(
                "invalid_json", "record holds a string with an unpaired surrogate escape"
            )
    return None


def _check(value: Any, t: pa.DataType, path: str) -> tuple[str, str] | None:
    """(code, message) if the non-null `value` is not of type `t`."""
    if pa.types.is_list(t):
        if not isinstance(value, list):
            return _wrong(value, t, path)
        for k, item in enumerate(value):
            problem = None if item is None else _check(item, t.value_type, f"{path}[{k}]")
            if problem is not None:
                return problem
        return None
    if pa.types.is_string(t):
        return None if isinstance(value, str) else _wrong(value, t, path)
    if pa.types.is_boolean(t):
        return None if isinstance(value, bool) else _wrong(value, t, path)
    if pa.types.is_integer(t):
        return _check_int(value, t, path)
    if pa.types.is_floating(t):
        return _check_float(value, t, path)
    if pa.types.is_decimal(t):
        return _check_decimal(value, t, path)
    if not isinstance(value, str):
        return _wrong(value, t, path)
    if _parse_cell(value, t) is not None:
        return None
    if pa.types.is_date(t):
        return "invalid_date", f"field '{path}': expected a date YYYY-MM-DD, got {_show(value)}"
    if _NAIVE_RE.match(value):
        return "naive_timestamp", (
            f"field '{path}': timestamp {_show(value)} has no zone offset (add Z or e.g. +01:00)"
        )
    return "invalid_timestamp", (
        f"field '{path}': expected an ISO 8601 timestamp with a zone offset, "
        f'e.g. "2026-01-31T08:00:00+01:00", of years 0001-9999, got {_show(value)}'
    )


def _check_int(value: Any, t: pa.DataType, path: str) -> tuple[str, str] | None:
    if isinstance(value, bool) or not isinstance(value, int | _HugeInt):
        return _wrong(value, t, path)
    low, high = _INT_RANGE[t.bit_width]
    if isinstance(value, _HugeInt) or not low <= value <= high:
        return "out_of_range", f"field '{path}': {_show(value)} is out of the {_type_text(t)} range"
    return None


def _check_float(value: Any, t: pa.DataType, path: str) -> tuple[str, str] | None:
    if isinstance(value, _Constant):
        return "not_finite", f"field '{path}': expected a finite {_type_text(t)}, got {value.text}"
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return _wrong(value, t, path)
    try:
        number = float(value)
        if t.bit_width == 32:
            number = struct.unpack("f", struct.pack("f", number))[0]  # as pyarrow rounds it
    except OverflowError:
        number = float("inf")
    if number in (float("inf"), float("-inf")):
        return "out_of_range", f"field '{path}': {_show(value)} is out of the {_type_text(t)} range"
    return None


def _check_decimal(value: Any, t: pa.DataType, path: str) -> tuple[str, str] | None:
    text = isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value)
    if not text and (isinstance(value, bool) or not isinstance(value, int | Decimal)):
        return _wrong(value, t, path)
    number = Decimal(value)
    try:
        fitted = number.quantize(Decimal(1).scaleb(-t.scale), context=_WIDE)
        fits = fitted == number and abs(fitted) < 10 ** (t.precision - t.scale)
    except InvalidOperation:
        fits = False
    if fits:
        return None
    return "invalid_decimal", f"field '{path}': {_show(value)} does not fit {_type_text(t)}"


def _bounds(spec: ColumnSpec, value: Any) -> tuple[str, str] | None:
    if not _bounded(spec):
        return None
    t = spec.arrow_type
    if isinstance(value, str | list) and not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
        measure: Any = len(value)
        what = f"length {measure}" if isinstance(value, str) else f"{measure} items"
    elif pa.types.is_date(t) or pa.types.is_timestamp(t):
        cell = _parse_cell(value, t)
        seconds = cell.timestamp() if isinstance(cell, datetime) else _epoch_days(cell) * 86400
        measure, what = seconds, _show(value)
    else:
        measure, what = value, _show(value)
    name = f"field '{spec.name}'"
    if spec.minimum is not None and measure < spec.minimum:
        return "below_minimum", f"{name}: {what} is below the minimum {_bound(spec, spec.minimum)}"
    if spec.maximum is not None and measure > spec.maximum:
        return "above_maximum", f"{name}: {what} is above the maximum {_bound(spec, spec.maximum)}"
    return None


def _epoch_days(day: date | None) -> int:
    return (day - date(1970, 1, 1)).days if day is not None else 0


def _parse_cell(text: str, t: pa.DataType) -> date | datetime | None:
    """The date or instant `text` is, within years 1-9999; None if it is none. Python's parser
    answers for the usual shapes; pyarrow's cast, which the vectorised path uses, for the rest."""
    try:
        if pa.types.is_date(t) and _DATE_RE.match(text):
            return date.fromisoformat(text)
        if pa.types.is_timestamp(t) and _INSTANT_RE.match(text):
            return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    if text.startswith("0000"):  # pyarrow parses year 0, which Python cannot represent
        return None
    try:
        return pc.cast(pa.array([text], pa.string()), t)[0].as_py()  # type: ignore[no-any-return]
    except (pa.ArrowInvalid, ValueError, OverflowError):  # an instant in year 10000 in UTC
        return None


def _bound(spec: ColumnSpec, bound: float) -> str:
    if pa.types.is_date(spec.arrow_type) or pa.types.is_timestamp(spec.arrow_type):
        moment = datetime.fromtimestamp(bound, UTC)
        shown = (
            moment.date().isoformat() if pa.types.is_date(spec.arrow_type) else moment.isoformat()
        )
        return f"{shown} ({_number(bound)} s)"
    return _number(bound)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _wrong(value: Any, t: pa.DataType, path: str) -> tuple[str, str]:
    return "wrong_type", f"field '{path}': expected {_type_text(t)}, got {_show(value)}"


def _type_text(t: pa.DataType) -> str:
    """The catalog's spelling of an Arrow type (see tdg_core.column_types)."""
    if pa.types.is_list(t):
        return f"list<{_type_text(t.value_type)}>"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_boolean(t):
        return "bool"
    return {"float": "float32", "double": "float64"}.get(str(t), str(t))


def _show(value: Any) -> str:
    """A value as it was written, cut to ~80 characters."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value[: _SHOWN * 2], ensure_ascii=False)
    elif isinstance(value, _Constant | _Number):
        text = value.text
    elif isinstance(value, list | dict):
        text = _kind(value)
    else:
        text = str(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _name(name: str) -> str:
    return f"'{name}'" if len(name) <= _SHOWN else f"'{name[: _SHOWN - 3]}...'"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _format(code: str, message: str) -> Reason:
    return FORMAT, code, message
