"""One call of `RecordValidator.validate`: the batch read in bulk when it can be, else streamed
block by block, the records a failure points at diagnosed and rejected, the rest read again."""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from tdg_ingest.records._arrays import arange, as_mask, or_mask
from tdg_ingest.records._checks import checked_table
from tdg_ingest.records._outcome import FORMAT, SCHEMA, Reason, Reject, Validated
from tdg_ingest.records._reading import (
    BLOCK,
    TWO_VALUES,
    WINDOW,
    Chunk,
    is_utf8,
    not_utf8,
    one_block,
    read_json,
    row_hint,
)

if TYPE_CHECKING:
    from tdg_ingest.records._validator import RecordValidator


class Run:
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
            joined = b"\n".join(self.lines) if len(candidates) > WINDOW else b""
        else:
            candidates = list(range(len(self.values)))
        if joined:
            table = read_json(joined, self.v.bulk, self.v.strict)
            if isinstance(table, pa.Table) and table.num_rows == len(candidates):
                positions = pa.array(candidates, pa.int64()) if odd else arange(len(candidates))
                self.pieces.append((table, positions))
                return self._finish()
        groups = deque([self._single_values(candidates)] if candidates else [])
        while groups:
            again = self._stream(groups.popleft())
            if again:  # good records read up to a bad one, not yet converted
                table = read_json(self._join(again), self.v.bulk, self.v.strict)
                if isinstance(table, pa.Table) and table.num_rows == len(again):
                    self.pieces.append((table, pa.array(again, pa.int64())))
                else:
                    groups.append(again)
        return self._finish()

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
            odd = or_mask(odd, pc.greater(pc.list_value_length(pc.split_pattern(lines, b"\r")), 1))
        odd = or_mask(odd, pc.greater(pc.binary_length(lines), self.v.max_record_bytes))
        odd = or_mask(odd, pc.invert(pc.starts_with(lines, b"{")))
        try:
            whole.cast(pa.large_string())
        except pa.ArrowInvalid:
            odd = pc.or_(odd, not_utf8(joined, lines))
        self.screened = lines
        return joined, pc.indices_nonzero(odd).to_pylist()

    def _prefilter(self, odd: list[int]) -> list[int]:
        """Make the odd records single lines starting with "{" or reject them unread by pyarrow;
        the positions of all records left to read."""
        lines = list(self.values)
        for i in odd:
            line = lines[i].strip(b" \t\r\n") if len(lines[i]) <= self.v.max_record_bytes else b""
            if not line.startswith(b"{") or not is_utf8(line):
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
        hits = as_mask(pc.match_substring_regex(self.screened, TWO_VALUES))
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
        chunk = Chunk([self.lines[i] for i in group])
        # Blocks as small as the longest line allows: a failure costs the rest of its block.
        block = max(BLOCK, max(map(len, chunk.lines)) + 1)
        options = pj.ReadOptions(use_threads=False, block_size=block)
        parse = self.v.infer if chunk.shallow(0, len(group)) else self.v.strict
        again: list[int] = []
        lo, failures, restarted = 0, 0, -1
        while lo < len(group):
            if failures > max(8, lo // 16):  # mostly bad records: go window by window
                for k in range(lo, len(group), WINDOW):
                    self._sweep(group[k : k + WINDOW])
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
            bad = self._hinted(group[start : start + WINDOW], error)
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
        chunk: Chunk,
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
            table = read_json(part, one_block(part.size), self.v.infer)
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
        chunk: Chunk,
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

    def _keep(self, table: pa.Table, chunk: Chunk, group: list[int], lo: int, hi: int) -> None:
        """Keep the rows read for records lo..hi of the chunk, less those with unknown fields."""
        positions = pa.array(group[lo:hi], pa.int64())
        extras = [name for name in table.column_names if name not in self.v.names]
        if extras:
            keep = self._known_fields_only(table, extras, chunk, group, lo, hi)
            table, positions = table.filter(keep), positions.filter(keep)
        self.pieces.append((table.select(self.v.reader.names), positions))

    def _known_fields_only(
        self, table: pa.Table, extras: list[str], chunk: Chunk, group: list[int], lo: int, hi: int
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
        return pc.invert(pc.is_in(arange(hi - lo), pa.array(rejected, pa.int64())))

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
        chunk = Chunk(list(map(self.lines.__getitem__, window)))
        again: list[int] = []
        # Unknown fields become columns rather than failures naming no row, where that is safe.
        lo, hi, failures = 0, len(window), 0
        infer = chunk.shallow(lo, hi)
        while True:
            part = chunk.part(lo, hi)
            read = read_json(part, one_block(part.size), self.v.infer if infer else self.v.strict)
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
        row = row_hint(error)
        if row is None:
            return None
        for k in (row, row - 1):
            if 0 <= k < len(run) and self._diagnosed(run[k]):
                return k
        return None

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

    def _finish(self) -> Validated:
        if not self.pieces:
            empty = pa.array([], pa.int64())
            return Validated(self.v.storage.empty_table(), empty, _by_index(self.rejects))
        table = pa.concat_tables([t for t, _ in self.pieces])
        positions = pa.concat_arrays([p for _, p in self.pieces])
        if len(self.pieces) > 1:  # pieces come back in the order they were settled
            order = pc.sort_indices(positions)
            table, positions = table.take(order), positions.take(order)
        out, positions, failed = checked_table(self.v.schema, self.v.storage, table, positions)
        for i, reason in failed:
            self._reject(i, None, reason)
        return Validated(out, positions, _by_index(self.rejects))


def _by_index(rejects: Mapping[int, Reject]) -> list[Reject]:
    return [rejects[i] for i in sorted(rejects)]
