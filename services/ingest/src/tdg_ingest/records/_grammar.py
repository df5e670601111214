"""The type grammar of a record: which JSON literal a column of each Arrow type takes, and how.

A column is read by pyarrow's JSON reader as `reader_type` (dates and timestamps as strings) and
its literals are then parsed by `parse_temporal` (a whole column) or `parse_cell` (one value, for
the diagnosis); both take exactly the instants and dates of `INSTANT` and `DATE`, of years
1-9999, with a real day of the month. `type_text` spells a type as the catalog does.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc

from tdg_ingest.records._arrays import all_false, arange, as_mask
from tdg_ingest.schema import ColumnSpec

# The instants and dates pyarrow's cast accepts, field ranges included, less year 0000 (which it
# parses and Python cannot represent); no check of the day of the month, which `_plausible` adds.
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_DAY = _YEAR + "-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_HOUR, _MINUTE = "(?:[01][0-9]|2[0-3])", "[0-5][0-9]"
_TIME = f"[T ]{_HOUR}(?::{_MINUTE}(?::{_MINUTE}(?:[.][0-9]{{1,6}})?)?)?"
INSTANT = f"^{_DAY}{_TIME}(?:Z|[+-]{_HOUR}(?::?{_MINUTE})?)$"
DATE = f"^{_DAY}$"
_INSTANT_RE, _DATE_RE = re.compile(INSTANT), re.compile(DATE)
_MONTH_DAYS = pa.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int32())
# Instants of years 1-9999 in UTC: pyarrow parses year 0, and 9999-12-31T23:00-02:00 is in
# year 10000 in UTC; Python (and the tools downstream) represent neither.
_FLOOR_US, _CEILING_US = -62135596800 * 10**6, 253402300800 * 10**6
_FLOOR_DAYS = -719162


def reader_type(t: pa.DataType) -> pa.DataType:
    """The type asked of the JSON reader: dates and timestamps as strings, cast later, because
    the reader takes a timestamp without an offset for UTC and refuses "2026-02-03" as date32."""
    if pa.types.is_list(t):
        return pa.list_(reader_type(t.value_type))
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pa.string()
    return t


def type_text(t: pa.DataType) -> str:
    """The catalog's spelling of an Arrow type (see tdg_core.column_types)."""
    if pa.types.is_list(t):
        return f"list<{type_text(t.value_type)}>"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_boolean(t):
        return "bool"
    return {"float": "float32", "double": "float64"}.get(str(t), str(t))


def parse_cell(text: str, t: pa.DataType) -> date | datetime | None:
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


def parse_temporal(column: pa.Array, t: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Strings cast to a date or timestamp, and the mask of those that are not one."""
    try:
        converted = pc.cast(column, t)
        bad = all_false(len(column))
    except pa.ArrowInvalid:
        bad = pc.and_(pc.is_valid(column), pc.invert(_plausible(column, t)))
        try:
            converted = pc.cast(pc.if_else(bad, pa.scalar(None, column.type), column), t)
        except pa.ArrowInvalid:  # a string pyarrow refuses that `_plausible` takes: find it
            kept = pc.and_(pc.is_valid(column), pc.invert(bad))
            failing = pa.array(_failing(column, kept, t), pa.int64())
            bad = pc.or_(bad, pc.is_in(arange(len(column)), failing))
            converted = pc.cast(pc.if_else(bad, pa.scalar(None, column.type), column), t)
    if _is_instant(t):
        micros = pc.cast(converted, pa.int64())
        outside = pc.or_(pc.less(micros, _FLOOR_US), pc.greater_equal(micros, _CEILING_US))
        outside = pc.or_(outside, pc.starts_with(column, "0000"))  # whatever the offset
    else:
        outside = pc.less(pc.cast(converted, pa.int32()), _FLOOR_DAYS)
    return converted, pc.or_(bad, as_mask(outside))


def _plausible(column: pa.Array, t: pa.DataType) -> pa.Array:
    """Which strings have the shape pyarrow parses and a real day of the month (the regex lets
    2026-02-30 through)."""
    shaped = as_mask(pc.match_substring_regex(column, INSTANT if _is_instant(t) else DATE))
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
    return as_mask(pc.less_equal(day, last))


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


def _is_instant(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t))


def bounded(spec: ColumnSpec) -> bool:
    """Whether the column's minimum or maximum applies (to a number, a length or an instant)."""
    bounds = spec.minimum is not None or spec.maximum is not None
    return bounds and not pa.types.is_boolean(spec.arrow_type)
