"""The catalog's domain objects: plain dataclasses, no gRPC, no SQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class AccessLevel(enum.StrEnum):
    OPEN = "open"
    RESTRICTED = "restricted"
    PERSONAL = "personal"


class Sensitivity(enum.StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"


class Status(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    DEPRECATED = "deprecated"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    description: str = ""
    unit: str = ""
    sensitivity: Sensitivity = Sensitivity.PUBLIC
    # Declared range checked on ingestion (numbers: the value; strings and lists: the length;
    # dates and timestamps: epoch seconds); None is unbounded.
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True, slots=True)
class Schema:
    columns: tuple[Column, ...]
    event_time_column: str = ""
    key_columns: tuple[str, ...] = ()
    subject_column: str = ""
    version: int = 0  # assigned by the catalog
    created_at: datetime | None = None

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True, slots=True)
class Metadata:
    title: str
    description: str = ""
    contact: str = ""
    themes: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    licence: str = ""
    access_level: AccessLevel = AccessLevel.OPEN
    territory: tuple[str, ...] = ()
    update_frequency: str = ""
    retention_days: int = 0


METADATA_FIELDS: tuple[str, ...] = (
    "title",
    "description",
    "contact",
    "themes",
    "keywords",
    "licence",
    "access_level",
    "territory",
    "update_frequency",
    "retention_days",
)


@dataclass(frozen=True, slots=True)
class Dataset:
    id: str
    publisher: str
    metadata: Metadata
    schema: Schema
    status: Status = Status.DRAFT
    latest_schema_version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deprecation_reason: str = ""


@dataclass(frozen=True, slots=True)
class DraftScope:
    """Which drafts a caller may see, as decided by OPA (tdg.rpc draft_scope)."""

    all: bool = False
    publishers: frozenset[str] = field(default_factory=frozenset)

    def admits(self, d: Dataset) -> bool:
        return d.status != Status.DRAFT or self.all or d.publisher in self.publishers
