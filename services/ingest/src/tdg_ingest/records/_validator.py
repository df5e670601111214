"""`RecordValidator`: the fast path's entry, one per dataset and schema version."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.json as pj
import structlog

from tdg_ingest.records._diagnosis import Diagnosis
from tdg_ingest.records._grammar import reader_type
from tdg_ingest.records._outcome import SCHEMA, Reject, Validated
from tdg_ingest.records._run import Run
from tdg_ingest.schema import TableSchema

log = structlog.get_logger("tdg.ingest.records")


class RecordValidator:
    """Validates micro-batches of one dataset at one schema version; build once, call per batch."""

    def __init__(self, schema: TableSchema, max_record_bytes: int = 1024 * 1024) -> None:
        self.schema = schema
        self.max_record_bytes = max_record_bytes
        self.storage = schema.arrow_schema()
        self.reader = pa.schema(
            [pa.field(c.name, reader_type(c.arrow_type)) for c in schema.columns]
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
            return Run(self, values).validated()
        except Exception:  # a bug must not stall the worker on one batch: go record by record
            log.exception("batch validation failed", dataset=self.schema.dataset_id)
            return self._one_by_one(values)

    def _one_by_one(self, values: Sequence[bytes]) -> Validated:
        tables, indexes, rejects = [], [], []
        for i, value in enumerate(values):
            try:
                one = Run(self, [value]).validated()
            except Exception as e:
                log.exception("record validation failed", dataset=self.schema.dataset_id)
                rejects.append(Reject(i, SCHEMA, "invalid_record", f"validation failed: {e!r}"))
                continue
            tables.append(one.table)
            indexes.extend([i] * one.table.num_rows)
            rejects.extend(Reject(i, r.category, r.code, r.message) for r in one.rejects)
        table = pa.concat_tables(tables) if tables else self.storage.empty_table()
        return Validated(table, pa.array(indexes, pa.int64()), rejects)
