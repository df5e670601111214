"""A catalog schema as an Arrow schema (the type grammar itself is `tdg_core.column_types`)."""

from __future__ import annotations

import pyarrow as pa
from tdg_core.column_types import parse_type

from tdg_catalog.model import Schema


def to_arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of a catalog schema; descriptions, units, sensitivities and value ranges
    travel as field metadata so that ingest and query see what the catalog declares."""
    fields = []
    for c in schema.columns:
        meta = {"sensitivity": c.sensitivity.value}
        if c.description:
            meta["description"] = c.description
        if c.unit:
            meta["unit"] = c.unit
        # repr() of a float reads back as the same float.
        if c.minimum is not None:
            meta["minimum"] = repr(c.minimum)
        if c.maximum is not None:
            meta["maximum"] = repr(c.maximum)
        fields.append(pa.field(c.name, parse_type(c.type), nullable=c.nullable, metadata=meta))
    schema_meta = {
        "event_time_column": schema.event_time_column,
        "key_columns": ",".join(schema.key_columns),
        "subject_column": schema.subject_column,
        "schema_version": str(schema.version),
    }
    return pa.schema(fields, metadata={k: v for k, v in schema_meta.items() if v})
