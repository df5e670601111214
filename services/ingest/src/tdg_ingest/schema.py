"""A dataset's schema as ingestion needs it: the catalog's columns with their Arrow types, value
ranges and roles (event time, subject, keys), built from the catalog's protobuf `Schema`."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from tdg.catalog.v1 import catalog_pb2
from tdg_core.column_types import parse_type


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str  # the catalog's type text, e.g. "int32", "decimal(10,2)", "list<string>"
    arrow_type: pa.DataType
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class TableSchema:
    dataset_id: str
    version: int
    columns: tuple[ColumnSpec, ...]
    event_time_column: str
    subject_column: str = ""
    key_columns: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, dataset_id: str, schema: catalog_pb2.Schema) -> TableSchema:
        columns = tuple(
            ColumnSpec(
                name=c.name,
                type=c.type.strip(),
                arrow_type=parse_type(c.type),
                nullable=c.nullable,
                minimum=c.minimum if c.HasField("minimum") else None,
                maximum=c.maximum if c.HasField("maximum") else None,
            )
            for c in schema.columns
        )
        return cls(
            dataset_id=dataset_id,
            version=schema.version,
            columns=columns,
            event_time_column=schema.event_time_column,
            subject_column=schema.subject_column,
            key_columns=tuple(schema.key_columns),
        )

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        """The schema of the Arrow tables appended to the dataset's Iceberg table."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns],
            metadata={"schema_version": str(self.version)},
        )
