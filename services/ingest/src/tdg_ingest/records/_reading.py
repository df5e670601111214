"""pyarrow's JSON reader as the validator drives it: records joined as lines (`Chunk`), reads
that return the failure instead of raising, and what a failure says about where the bad record is
(the row it names, or the value a conversion quotes)."""

from __future__ import annotations

import codecs
import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from tdg_ingest.records._arrays import arange
from tdg_ingest.records._outcome import MAX_DEPTH
from tdg_ingest.schema import ColumnSpec

WINDOW = 256  # records per single-block read when settling records apart
BLOCK = 32 << 10  # bytes per block when streaming a batch that holds bad records

_ROW = re.compile(r" in row (\d+)$")
_TOKENS = (
    re.compile(r"couldn't parse:(.+)$"),
    re.compile(r": (\S+) requires (?:scale|precision)"),
    re.compile(r"The string '(.+)' is not a valid"),
)
_KIND = re.compile(r"(?:JSON to|a valid) (int32|int64|decimal128)")
# A "}" followed by what no object member allows: in a record, and in records joined as lines.
TWO_VALUES = r"\}[ \t\r\n]*[^ \t\r\n,\]}]"
_TWO_LINES = re.compile(rb"\}[ \t]*[^\s,\]}]")


class Chunk:
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


def read_json(data: Any, read: pj.ReadOptions, parse: pj.ParseOptions) -> pa.Table | BaseException:
    try:
        if read.use_threads:
            return pj.read_json(pa.BufferReader(data), read_options=read, parse_options=parse)
        # The streaming reader costs half as much per call, which counts when sweeping.
        return pj.open_json(
            pa.BufferReader(data), read_options=read, parse_options=parse
        ).read_all()
    except (pa.ArrowException, ValueError) as e:  # UnicodeDecodeError: invalid UTF-8
        return e


def one_block(size: int) -> pj.ReadOptions:
    # One block, so that a row named in an error counts from the first record of the read.
    return pj.ReadOptions(use_threads=False, block_size=size + 1)


def row_hint(error: BaseException | None) -> int | None:
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


def not_utf8(joined: bytes, lines: pa.Array) -> pa.Array:
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
    return pc.is_in(arange(len(lines)), pa.array(bad, pa.int64()))


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
