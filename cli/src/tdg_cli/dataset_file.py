"""Dataset definition files (YAML) → catalog requests.

The file mirrors the proto: `id`, `metadata:` and `schema:` (see examples/README.md). Only the
shape is checked here (known keys, value types, enum names); the catalog judges the content,
so a rule lives in one place. Every error names the file and the key.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from tdg.catalog.v1 import catalog_pb2 as pb

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
COLUMN_KEYS = ("name", "type", "nullable", "description", "unit", "sensitivity")
INT32_MAX = 2**31 - 1


class DatasetFileError(ValueError):
    """A malformed dataset file; the message names the file and the key."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


def load_register_request(path: str | Path) -> pb.RegisterDatasetRequest:
    """The RegisterDatasetRequest described by a dataset file."""
    file = Path(path)
    doc = _Doc(file)
    top = doc.mapping(_read(file), "", DATASET_KEYS)
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
    doc = _Doc(file)
    top = doc.mapping(_read(file), "", None)
    if "schema" not in top:
        raise DatasetFileError(file, "schema", "is required (a file with a schema: key)")
    unknown = sorted(str(k) for k in top if k not in DATASET_KEYS)
    if unknown:
        raise DatasetFileError(file, unknown[0], "unknown key; expected schema")
    return _schema(doc, top["schema"], "schema")


def _metadata(doc: _Doc, value: object) -> pb.DatasetMetadata:
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


def _schema(doc: _Doc, value: object, key: str) -> pb.Schema:
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


def _column(doc: _Doc, value: object, key: str) -> pb.Column:
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
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice (plain YAML keeps the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _read(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(path, "", f"cannot read the file: {exc}") from exc
    try:
        return yaml.load(
            text, Loader=_UniqueKeyLoader
        )  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise DatasetFileError(path, "", f"not valid YAML: {exc}") from exc


class _Doc:
    """Typed access to the parsed file, each error naming the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> DatasetFileError:
        return DatasetFileError(self.path, key, problem)

    def mapping(self, value: object, key: str, known: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping of keys to values")
        for k in value:
            if known is not None and k not in known:
                where = f"{key}.{k}" if key else str(k)
                raise self.fail(where, f"unknown key; expected one of {', '.join(known)}")
        return value

    def text(self, value: object, key: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            # YAML reads 69123 as a number and 01 as 1: codes must be quoted to keep their digits.
            raise self.fail(key, f"must be text, got {value!r}; put it in quotes")
        return value

    def texts(self, value: object, key: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "must be a list")
        return [self.text(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def integer(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, got {value!r}")
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise self.fail(key, f"{value} is out of range")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def choice(self, value: object, key: str, names: dict[str, Any]) -> Any:
        text = self.text(value, key).strip().lower()
        if text not in names:
            raise self.fail(key, f"unknown value {value!r}; one of {', '.join(names)}")
        return names[text]
