"""Dataset definition files (YAML) → catalog requests.

The file mirrors the proto: `id`, `metadata:` and `schema:` (see examples/README.md). Only the
shape is checked here (known keys, value types, enum names); the catalog judges the content,
so a rule lives in one place. Every error names the file and the key.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

from tdg.catalog.v1 import catalog_pb2 as pb

from tdg_cli.yaml_file import YamlDoc, YamlFileError, read_yaml

ACCESS_LEVELS = {
    "open": pb.ACCESS_LEVEL_OPEN,
    "restricted": pb.ACCESS_LEVEL_RESTRICTED,
    "personal": pb.ACCESS_LEVEL_PERSONAL,
}
SENSITIVITIES = {
    "public": pb.SENSITIVITY_PUBLIC,
    "internal": pb.SENSITIVITY_INTERNAL,
    "personal": pb.SENSITIVITY_PERSONAL,
    "sensitive": pb.SENSITIVITY_SENSITIVE,
}
DATASET_KEYS = ("id", "metadata", "schema")
METADATA_TEXT = ("title", "description", "contact", "licence", "update_frequency")
METADATA_LISTS = ("themes", "keywords", "territory")
METADATA_KEYS = (*METADATA_TEXT, *METADATA_LISTS, "access_level", "retention_days")
SCHEMA_KEYS = ("columns", "event_time_column", "key_columns", "subject_column")
COLUMN_KEYS = (
    "name",
    "type",
    "nullable",
    "description",
    "unit",
    "sensitivity",
    "minimum",
    "maximum",
)

# A malformed dataset file; the message names the file and the key.
DatasetFileError = YamlFileError


def load_register_request(path: str | Path) -> pb.RegisterDatasetRequest:
    """The RegisterDatasetRequest described by a dataset file."""
    file = Path(path)
    doc = YamlDoc(file)
    top = doc.mapping(read_yaml(file), "", DATASET_KEYS)
    for key in DATASET_KEYS:
        if key not in top:
            raise DatasetFileError(file, key, "is required")
    return pb.RegisterDatasetRequest(
        id=doc.text(top["id"], "id"),
        metadata=_metadata(doc, top["metadata"]),
        schema=_schema(doc, top["schema"], "schema"),
    )


def load_schema(path: str | Path) -> pb.Schema:
    """The schema of a file holding a whole dataset or only a `schema:` key (for evolutions)."""
    file = Path(path)
    doc = YamlDoc(file)
    top = doc.mapping(read_yaml(file), "", None)
    if "schema" not in top:
        raise DatasetFileError(file, "schema", "is required (a file with a schema: key)")
    unknown = sorted(str(k) for k in top if k not in DATASET_KEYS)
    if unknown:
        raise DatasetFileError(file, unknown[0], "unknown key; expected schema")
    return _schema(doc, top["schema"], "schema")


def _metadata(doc: YamlDoc, value: object) -> pb.DatasetMetadata:
    m = doc.mapping(value, "metadata", METADATA_KEYS)
    out = pb.DatasetMetadata()
    for key in METADATA_TEXT:
        if key in m:
            setattr(out, key, doc.text(m[key], f"metadata.{key}"))
    for key in METADATA_LISTS:
        if key in m:
            getattr(out, key).extend(doc.texts(m[key], f"metadata.{key}"))
    if "access_level" in m:
        out.access_level = doc.choice(m["access_level"], "metadata.access_level", ACCESS_LEVELS)
    if "retention_days" in m:
        out.retention_days = doc.integer(m["retention_days"], "metadata.retention_days")
    return out


def _schema(doc: YamlDoc, value: object, key: str) -> pb.Schema:
    s = doc.mapping(value, key, SCHEMA_KEYS)
    out = pb.Schema()
    columns = s.get("columns")
    if not isinstance(columns, list):
        raise DatasetFileError(doc.path, f"{key}.columns", "must be a list of columns")
    out.columns.extend(_column(doc, c, f"{key}.columns[{i}]") for i, c in enumerate(columns))
    if "event_time_column" in s:
        out.event_time_column = doc.text(s["event_time_column"], f"{key}.event_time_column")
    if "key_columns" in s:
        out.key_columns.extend(doc.texts(s["key_columns"], f"{key}.key_columns"))
    if "subject_column" in s:
        out.subject_column = doc.text(s["subject_column"], f"{key}.subject_column")
    return out


def _column(doc: YamlDoc, value: object, key: str) -> pb.Column:
    c = doc.mapping(value, key, COLUMN_KEYS)
    for required in ("name", "type"):
        if required not in c:
            raise DatasetFileError(doc.path, f"{key}.{required}", "is required")
    return pb.Column(
        name=doc.text(c["name"], f"{key}.name"),
        type=doc.text(c["type"], f"{key}.type"),
        # Nullable unless stated: a column added later must be nullable anyway.
        nullable=doc.boolean(c.get("nullable", True), f"{key}.nullable"),
        description=doc.text(c.get("description", ""), f"{key}.description"),
        unit=doc.text(c.get("unit", ""), f"{key}.unit"),
        sensitivity=doc.choice(c.get("sensitivity", "public"), f"{key}.sensitivity", SENSITIVITIES),
        # Absent stays unset (unbounded), which the proto tells apart from a bound of 0.
        minimum=_bound(doc, c["minimum"], f"{key}.minimum") if "minimum" in c else None,
        maximum=_bound(doc, c["maximum"], f"{key}.maximum") if "maximum" in c else None,
    )


def _bound(doc: YamlDoc, value: object, key: str) -> float:
    """A range bound: a number, or for date and timestamp columns a date or a timestamp (YAML's
    own, or ISO 8601 text as JSON writes it), sent as the epoch seconds the proto carries."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise doc.fail(
                key, f"must be a number, a date or a timestamp (ISO 8601), got {value!r}"
            ) from None
    if isinstance(value, datetime):
        # No zone written means UTC, as YAML and the catalog's timestamps have it.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC).timestamp()
    return doc.number(value, key)
