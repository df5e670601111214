"""Record validation, the hot path of the ingest worker and of the front door: the Kafka message
values of one micro-batch → an Arrow table of the valid records in the dataset's storage schema,
and a reason for each other.

The public API, in three parts:

- **the fast path**: `RecordValidator(schema).validate(values)` → `Validated` (the table, the
  position of each row, a `Reject` for every other record);
- **diagnosis**: `Diagnosis(schema, max_record_bytes)(value)` → why one record is bad (a `Reason`
  in the words of `REASON_CODES`), or None;
- **the type grammar**: how a column of each Arrow type reads its JSON literal (`reader_type`,
  `parse_cell`, the `INSTANT` and `DATE` patterns, `type_text`).

Good records never meet Python's JSON parser. The batch is screened on Arrow arrays (size, one line
starting with "{", valid UTF-8), read by pyarrow's JSON reader in one multi-threaded call, and what
the reader does not check (required fields, NaN, zone offsets, real dates, decimal precision,
value ranges) is checked vectorised over its table (`_checks`).

When that read fails, the batch is streamed block by block (`_run`): the streaming reader hands
over every block before a failing one and names the failing row in its block, so a bad record costs
a restart, not its neighbours' bulk path. Failures naming no row are pinned by what they say (the
value a conversion quotes; unknown fields, read as columns; `_reading`), bisection being the last
resort; the records read before a bad one in its block are read again in bulk. Only the records
pinned or flagged are parsed in Python (`_diagnosis`), to say what is wrong with them.

pyarrow 26 facts this relies on (pinned by the tests): a line starting with `null` yields a silent
all-null row, and crashes the reader when it starts a block, so every line handed to it starts with
"{" and holds no raw newline, and records holding two values (rows out of step with records) are
set apart first; the reader does not check UTF-8; inferring the type of an unknown field recurses,
so it is only asked of shallow records.
"""

from __future__ import annotations

from tdg_ingest.records._diagnosis import Diagnosis
from tdg_ingest.records._grammar import DATE, INSTANT, parse_cell, reader_type, type_text
from tdg_ingest.records._outcome import (
    FORMAT,
    MAX_DEPTH,
    REASON_CODES,
    SCHEMA,
    Reason,
    Reject,
    Validated,
)
from tdg_ingest.records._validator import RecordValidator

__all__ = [
    "DATE",
    "FORMAT",
    "INSTANT",
    "MAX_DEPTH",
    "REASON_CODES",
    "SCHEMA",
    "Diagnosis",
    "Reason",
    "RecordValidator",
    "Reject",
    "Validated",
    "parse_cell",
    "reader_type",
    "type_text",
]
