"""What validation answers: the valid records as a table (`Validated`), a `Reject` for each other,
and every reason code a reject can carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

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


def format_reason(code: str, message: str) -> Reason:
    return FORMAT, code, message
