"""Domain objects ⇄ JSON-ready dicts, for the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tdg_catalog.model import AccessLevel, Column, Metadata, Schema, Sensitivity


def metadata_to_dict(m: Metadata) -> dict[str, Any]:
    return {
        "title": m.title,
        "description": m.description,
        "contact": m.contact,
        "themes": list(m.themes),
        "keywords": list(m.keywords),
        "licence": m.licence,
        "access_level": m.access_level.value,
        "territory": list(m.territory),
        "update_frequency": m.update_frequency,
        "retention_days": m.retention_days,
    }


def metadata_from_dict(d: dict[str, Any]) -> Metadata:
    return Metadata(
        title=d["title"],
        description=d["description"],
        contact=d["contact"],
        themes=tuple(d["themes"]),
        keywords=tuple(d["keywords"]),
        licence=d["licence"],
        access_level=AccessLevel(d["access_level"]),
        territory=tuple(d["territory"]),
        update_frequency=d["update_frequency"],
        retention_days=d["retention_days"],
    )


def schema_to_dict(s: Schema) -> dict[str, Any]:
    return {
        "columns": [
            {
                "name": c.name,
                "type": c.type,
                "nullable": c.nullable,
                "description": c.description,
                "unit": c.unit,
                "sensitivity": c.sensitivity.value,
                "minimum": c.minimum,
                "maximum": c.maximum,
            }
            for c in s.columns
        ],
        "event_time_column": s.event_time_column,
        "key_columns": list(s.key_columns),
        "subject_column": s.subject_column,
    }


def schema_from_dict(d: dict[str, Any], version: int, created_at: datetime | None) -> Schema:
    return Schema(
        columns=tuple(
            Column(
                name=c["name"],
                type=c["type"],
                nullable=c["nullable"],
                description=c["description"],
                unit=c["unit"],
                sensitivity=Sensitivity(c["sensitivity"]),
                # Schemas stored before ranges existed have no such keys: unbounded.
                minimum=c.get("minimum"),
                maximum=c.get("maximum"),
            )
            for c in d["columns"]
        ),
        event_time_column=d["event_time_column"],
        key_columns=tuple(d["key_columns"]),
        subject_column=d["subject_column"],
        version=version,
        created_at=created_at,
    )
