"""The dead-letter topic `tdg.ingest.dlq`: rejected records written, listed, read back and replayed.

The format of a dead letter is a contract for every tool that reads the topic:

- **value**: the rejected record's value, byte for byte, never re-encoded (a record without a value
  becomes an empty value, never a null one: a null value would be a compaction tombstone).
- **key**: `<source topic>/<source partition>/<source offset>` in UTF-8. It is unique per source
  record, so a record rejected again has the same key: the worker is exactly-once for its tables
  but re-sends the rejects of a batch when it dies between sending them and committing the
  snapshot. Readers therefore deduplicate by key and keep the first copy (lowest offset; equal keys
  land in the same partition), and the topic may be compacted (`cleanup.policy=compact`).
- **headers**, UTF-8 text unless said otherwise:
  `tdg-dataset`, `tdg-source-topic`, `tdg-source-partition`, `tdg-source-offset`,
  `tdg-source-key` (the original key's bytes as they were, not necessarily UTF-8; absent when the
  record had no key), `tdg-producer` (the producing party, may be empty), `tdg-reason-category`
  (format | schema | policy | deprecated), `tdg-reason-code` (e.g. invalid_json),
  `tdg-reason-message` (at most 1000 characters), `tdg-schema-version` (the schema it was checked
  against), `tdg-rejected-at` (ISO 8601, UTC). Then every header of the original record under its
  own name (`tdg-producer-org`, a partner's trace id, …), except those named like ours: ours win.

A message without these headers (written by some other tool) is read with empty fields and
partition and offset -1; it is listed, never fatal to a reader, and never replayed.

Readers take no consumer group and read up to the end offsets taken when the call starts, within a
deadline. A dead letter's id is `<dlq partition>:<dlq offset>`. Listing is oldest first: the
partitions are merged by record timestamp, each partition in offset order. Each page reads the
partitions from their start, because deduplication needs every earlier key (retention or
compaction bound that cost); the page token holds the next offset of every partition.
"""

from __future__ import annotations

from tdg_ingest.dlq._letter import DeadLetter, RejectFilter, encode
from tdg_ingest.dlq._reader import DeadLetterReader
from tdg_ingest.dlq._send import DeadLetterWriter

__all__ = ["DeadLetter", "DeadLetterReader", "DeadLetterWriter", "RejectFilter", "encode"]
