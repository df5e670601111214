"""The slow path: what is wrong with one record, in the words of `REASON_CODES`.

Only the records the fast path pins or flags come here; each is parsed with Python's JSON parser
(numbers kept exact and as written, duplicate fields and NaN noticed) and checked against the
schema with the same rules, so that both paths agree on what a valid record is.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from tdg_ingest.records._grammar import bounded, parse_cell, type_text
from tdg_ingest.records._outcome import MAX_DEPTH, SCHEMA, Reason, format_reason
from tdg_ingest.schema import ColumnSpec, TableSchema

_SHOWN = 80  # characters of an offending value quoted in a message

# A timestamp written without an offset, for the message only.
_NAIVE_RE = re.compile(
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:[.][0-9]+)?)?)?)?$"
)
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+[.]?[0-9]*|[.][0-9]+)(?:[eE][+-]?[0-9]+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")

_WIDE = Context(prec=100)  # room for decimal(38,S) and more
_INT_RANGE = {32: (-(2**31), 2**31 - 1), 64: (-(2**63), 2**63 - 1)}


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
            return format_reason(
                "too_large",
                f"record is {len(value)} bytes, over the limit of "
                f"{self.max_record_bytes}; it was not read",
            )
        if not value.strip():
            return format_reason(
                "empty", "record is empty" if not value else "record is only whitespace"
            )
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return format_reason(
                "invalid_utf8", f"record is not valid UTF-8: {e.reason} at byte {e.start}"
            )
        if text.startswith("\ufeff"):
            return format_reason("invalid_json", "record starts with a byte order mark")
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
            return format_reason(
                "too_deep", f"record nests arrays and objects deeper than {MAX_DEPTH}"
            )
        except _Duplicate as e:
            return format_reason(
                "duplicate_field", f"field {_name(e.args[0])} appears more than once"
            )
        problem = _walk(obj)
        if problem is not None:
            return problem
        if not isinstance(obj, dict):
            return format_reason("not_object", f"record is {_kind(obj)}, expected a JSON object")
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
            return format_reason("invalid_json", f"record has unexpected data at character {e.pos}")
        return format_reason(
            "multiple_values",
            f"record holds more than one JSON value (another at character {e.pos})",
        )
    if e.msg.startswith("Unterminated string") or e.pos >= len(text.rstrip()):
        return format_reason(
            "truncated_json", f"record ends before its JSON value is complete ({e.msg})"
        )
    return format_reason("invalid_json", f"record is not valid JSON: {e.msg} at character {e.pos}")


def _walk(obj: Any) -> Reason | None:
    """Nesting depth and unpaired surrogates (which Python's parser keeps, pyarrow's refuses)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return format_reason(
                    "too_deep", f"record nests arrays and objects deeper than {MAX_DEPTH}"
                )
            items: Iterable[Any] = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
            if isinstance(value, dict):
                stack.extend((name, depth) for name in value)
        elif isinstance(value, str) and _SURROGATE.search(value):
            return format_reason(
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
    if parse_cell(value, t) is not None:
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
        return "out_of_range", f"field '{path}': {_show(value)} is out of the {type_text(t)} range"
    return None


def _check_float(value: Any, t: pa.DataType, path: str) -> tuple[str, str] | None:
    if isinstance(value, _Constant):
        return "not_finite", f"field '{path}': expected a finite {type_text(t)}, got {value.text}"
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return _wrong(value, t, path)
    try:
        number = float(value)
        if t.bit_width == 32:
            number = struct.unpack("f", struct.pack("f", number))[0]  # as pyarrow rounds it
    except OverflowError:
        number = float("inf")
    if number in (float("inf"), float("-inf")):
        return "out_of_range", f"field '{path}': {_show(value)} is out of the {type_text(t)} range"
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
    return "invalid_decimal", f"field '{path}': {_show(value)} does not fit {type_text(t)}"


def _bounds(spec: ColumnSpec, value: Any) -> tuple[str, str] | None:
    if not bounded(spec):
        return None
    t = spec.arrow_type
    if isinstance(value, str | list) and not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
        measure: Any = len(value)
        what = f"length {measure}" if isinstance(value, str) else f"{measure} items"
    elif pa.types.is_date(t) or pa.types.is_timestamp(t):
        cell = parse_cell(value, t)
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
    return "wrong_type", f"field '{path}': expected {type_text(t)}, got {_show(value)}"


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
