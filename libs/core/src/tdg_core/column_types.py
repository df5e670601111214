"""The column type grammar of tdg schemas and its Apache Arrow types.

    type := string | bool | int32 | int64 | float32 | float64 | date | timestamp
          | decimal(P,S)      1 <= P <= 38, 0 <= S <= P
          | list<type>

Only the canonical spelling is accepted (surrounding whitespace aside), so that a type string
stored in a schema is also its identity: two columns have the same type when their strings are
equal, and the catalog, ingest and query read the same text.
"""

from __future__ import annotations

import re

import pyarrow as pa

# A timestamp is an instant: microseconds (what Parquet and Iceberg store natively) in UTC.
TIMESTAMP = pa.timestamp("us", tz="UTC")

SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "date": pa.date32(),
    "timestamp": TIMESTAMP,
}

GRAMMAR = ", ".join([*SCALARS, "decimal(P,S)", "list<T>"])

# Deep enough for any real column; bounded so a hostile type string cannot exhaust the stack.
MAX_LIST_DEPTH = 8

_DECIMAL = re.compile(r"decimal\((0|[1-9][0-9]*),(0|[1-9][0-9]*)\)")


def parse_type(text: str) -> pa.DataType:
    """The Arrow type written `text`; ValueError saying what is wrong otherwise."""
    spelled = text.strip()
    if not spelled:
        raise ValueError(f"type is required; one of {GRAMMAR}")
    if any(c.isspace() for c in spelled):
        raise ValueError(f"no spaces inside a type: write {''.join(spelled.split())!r}")
    return _parse(spelled, depth=0)


def _parse(text: str, depth: int) -> pa.DataType:
    scalar = SCALARS.get(text)
    if scalar is not None:
        return scalar
    if text.startswith("list<") and text.endswith(">"):
        if depth >= MAX_LIST_DEPTH:
            raise ValueError(f"lists nest at most {MAX_LIST_DEPTH} deep")
        element = text[len("list<") : -1]
        if not element:
            raise ValueError("list<T> needs an element type, e.g. list<string>")
        return pa.list_(_parse(element, depth + 1))
    if text.startswith("decimal"):
        return _decimal(text)
    raise ValueError(f"unknown type {text!r}; expected one of {GRAMMAR}")


def _decimal(text: str) -> pa.DataType:
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise ValueError(f"malformed decimal {text!r}; write decimal(P,S), e.g. decimal(10,2)")
    precision, scale = int(match[1]), int(match[2])
    if not 1 <= precision <= 38:
        raise ValueError(f"decimal precision {precision} is out of range 1..38")
    if scale > precision:
        raise ValueError(f"decimal scale {scale} is larger than its precision {precision}")
    return pa.decimal128(precision, scale)


def is_temporal(text: str) -> bool:
    """Whether a column of this type can carry event time (a date or a timestamp)."""
    return text.strip() in ("date", "timestamp")
