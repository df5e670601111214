"""Validation of what a data officer sends: the dataset id, its metadata and its schema.

Every problem is an `InvalidArgument` whose field is the path of the offending proto field
(`metadata.territory[1]`, `schema.columns[2].type`), so the caller can point at it.
"""

from __future__ import annotations

import math
import re
from typing import Literal
from urllib.parse import urlsplit

import pyarrow as pa
from tdg_core.column_types import is_temporal, parse_type
from tdg_core.errors import InvalidArgument
from tdg_core.identifiers import check_territory_codes, parse_dataset_id

from tdg_catalog.model import AccessLevel, Column, Metadata, Schema, Sensitivity

# The EU data theme vocabulary (http://publications.europa.eu/resource/authority/data-theme).
THEMES = frozenset(
    {
        "AGRI", "ECON", "EDUC", "ENER", "ENVI", "GOVE", "HEAL",
        "INTR", "JUST", "OP_DATPRO", "REGI", "SOCI", "TECH", "TRAN",
    }
)  # fmt: skip
LICENCES = ("etalab-2.0", "ODbL-1.0", "CC-BY-4.0", "CC0-1.0")
PROPRIETARY = "proprietary:"
UPDATE_FREQUENCIES = (
    "continuous",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "quarterly",
    "annual",
    "irregular",
)

MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_CONTACT = 320
MAX_KEYWORDS = 50
MAX_KEYWORD = 100
MAX_LICENCE_NAME = 100
MAX_TERRITORY = 5_000  # more than the communes of any French region
MAX_COLUMNS = 500
MAX_COLUMN_DESCRIPTION = 2_000
MAX_UNIT = 50

_COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")

# A subject column holds the identifier that consents and erasures are matched on.
_SUBJECT_TYPES = ("string", "int32", "int64")


def validate_new_dataset(dataset_id: str, metadata: Metadata, schema: Schema) -> str:
    """Checks a registration; returns the publisher named by the id."""
    publisher, _ = parse_dataset_id(dataset_id)
    validate_metadata(metadata)
    validate_schema(schema, metadata.access_level)
    return publisher


def validate_metadata(m: Metadata, field_prefix: str = "metadata") -> None:
    p = field_prefix
    if not m.title.strip():
        raise InvalidArgument(f"{p}.title", "is required")
    _max_length(f"{p}.title", m.title, MAX_TITLE)
    _max_length(f"{p}.description", m.description, MAX_DESCRIPTION)
    if m.contact:
        _check_contact(f"{p}.contact", m.contact)
    _check_themes(f"{p}.themes", m.themes)
    _check_keywords(f"{p}.keywords", m.keywords)
    _check_licence(f"{p}.licence", m.licence)
    try:
        AccessLevel(m.access_level)
    except ValueError:
        raise InvalidArgument(f"{p}.access_level", "must be open, restricted or personal") from None
    check_territory_codes(f"{p}.territory", m.territory, MAX_TERRITORY)
    # Optional: an empty frequency means the publisher does not commit to one.
    if m.update_frequency and m.update_frequency not in UPDATE_FREQUENCIES:
        raise InvalidArgument(
            f"{p}.update_frequency",
            f"unknown frequency {m.update_frequency!r}; one of {', '.join(UPDATE_FREQUENCIES)}",
        )
    if m.retention_days < 0:
        raise InvalidArgument(f"{p}.retention_days", "must be 0 (keep forever) or more days")


def _max_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(field, f"at most {limit} characters, got {len(value)}")


def _check_contact(field: str, contact: str) -> None:
    _max_length(field, contact, MAX_CONTACT)
    if _EMAIL.fullmatch(contact):
        return
    try:
        url = urlsplit(contact)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        url = urlsplit("")
    if url.scheme == "https" and url.hostname and not any(c.isspace() for c in contact):
        return
    raise InvalidArgument(field, f"{contact!r} is neither an e-mail address nor an https URL")


def _check_themes(field: str, themes: tuple[str, ...]) -> None:
    if not themes:
        raise InvalidArgument(field, f"at least one EU data theme: {', '.join(sorted(THEMES))}")
    seen: set[str] = set()
    for i, theme in enumerate(themes):
        if theme not in THEMES:
            hint = f"write {theme.upper()!r}; " if theme.upper() in THEMES else ""
            raise InvalidArgument(
                f"{field}[{i}]",
                f"unknown theme {theme!r}; {hint}one of {', '.join(sorted(THEMES))}",
            )
        if theme in seen:
            raise InvalidArgument(f"{field}[{i}]", f"theme {theme!r} is listed twice")
        seen.add(theme)


def _check_keywords(field: str, keywords: tuple[str, ...]) -> None:
    if len(keywords) > MAX_KEYWORDS:
        raise InvalidArgument(field, f"at most {MAX_KEYWORDS} keywords, got {len(keywords)}")
    for i, keyword in enumerate(keywords):
        if not keyword.strip():
            raise InvalidArgument(f"{field}[{i}]", "is empty")
        _max_length(f"{field}[{i}]", keyword, MAX_KEYWORD)


def _check_licence(field: str, licence: str) -> None:
    if licence in LICENCES:
        return
    if licence.startswith(PROPRIETARY):
        name = licence.removeprefix(PROPRIETARY).strip()
        if not name:
            raise InvalidArgument(field, "a proprietary licence needs a name: proprietary:<name>")
        _max_length(field, name, MAX_LICENCE_NAME)
        return
    raise InvalidArgument(
        field, f"unknown licence {licence!r}; one of {', '.join(LICENCES)} or proprietary:<name>"
    )


def validate_schema(s: Schema, access_level: AccessLevel, field_prefix: str = "schema") -> None:
    p = field_prefix
    if not s.columns:
        raise InvalidArgument(f"{p}.columns", "at least one column")
    if len(s.columns) > MAX_COLUMNS:
        raise InvalidArgument(
            f"{p}.columns", f"at most {MAX_COLUMNS} columns, got {len(s.columns)}"
        )
    positions: dict[str, int] = {}
    for i, column in enumerate(s.columns):
        field = f"{p}.columns[{i}]"
        if not _COLUMN_NAME.fullmatch(column.name):
            raise InvalidArgument(
                f"{field}.name",
                f"{column.name!r} must be lowercase letters, digits and underscores, "
                "starting with a letter, at most 63 characters",
            )
        if column.name in positions:
            raise InvalidArgument(
                f"{field}.name",
                f"column {column.name!r} is already columns[{positions[column.name]}]",
            )
        positions[column.name] = i
        try:
            arrow_type = parse_type(column.type)
        except ValueError as exc:
            raise InvalidArgument(f"{field}.type", str(exc)) from None
        _check_range(field, column, arrow_type)
        _max_length(f"{field}.description", column.description, MAX_COLUMN_DESCRIPTION)
        _max_length(f"{field}.unit", column.unit, MAX_UNIT)
        try:
            Sensitivity(column.sensitivity)
        except ValueError:
            raise InvalidArgument(
                f"{field}.sensitivity", "must be public, internal, personal or sensitive"
            ) from None
    _check_event_time(s, p)
    _check_keys(s, p)
    _check_subject(s, access_level, p)


RangeKind = Literal["value", "length", "epoch seconds"]


def _range_kind(t: pa.DataType) -> RangeKind | None:
    """What a column's range bounds, as the proto says; None where a range means nothing."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "value"
    if pa.types.is_string(t) or pa.types.is_list(t):
        return "length"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "epoch seconds"
    return None  # bool: two values, nothing to bound


def _check_range(field: str, column: Column, arrow_type: pa.DataType) -> None:
    kind = _range_kind(arrow_type)
    for name, bound in (("minimum", column.minimum), ("maximum", column.maximum)):
        if bound is None:
            continue
        if kind is None:
            raise InvalidArgument(
                f"{field}.{name}",
                f"a {column.type} column takes no range; ranges bound numbers, the length of "
                "strings and lists, and dates and timestamps",
            )
        if not math.isfinite(bound):
            raise InvalidArgument(f"{field}.{name}", f"must be a finite number, got {bound}")
        if kind == "length" and (bound < 0 or not float(bound).is_integer()):
            raise InvalidArgument(
                f"{field}.{name}",
                f"bounds the length of a {column.type}: a whole number 0 or more, "
                f"got {_number(bound)}",
            )
    low, high = column.minimum, column.maximum
    if low is not None and high is not None and low > high:
        raise InvalidArgument(
            f"{field}.maximum", f"{_number(high)} is below the minimum {_number(low)}"
        )


def _number(value: float) -> str:
    # 100 rather than 100.0 in messages; repr keeps every digit of the others.
    value = float(value)  # an int is a float to mypy, but has no is_integer() before 3.12
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _check_event_time(s: Schema, p: str) -> None:
    if not s.event_time_column:
        return
    field = f"{p}.event_time_column"
    column = s.column(s.event_time_column)
    if column is None:
        raise InvalidArgument(field, f"names no column: {s.event_time_column!r}")
    if not is_temporal(column.type):
        raise InvalidArgument(
            field, f"column {column.name!r} is {column.type}, not timestamp or date"
        )
    if column.nullable:
        # Ingest partitions and query filters by event time: every record must carry one.
        raise InvalidArgument(field, f"column {column.name!r} must be non-nullable")


def _check_keys(s: Schema, p: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(s.key_columns):
        if s.column(name) is None:
            raise InvalidArgument(f"{p}.key_columns[{i}]", f"names no column: {name!r}")
        if name in seen:
            raise InvalidArgument(f"{p}.key_columns[{i}]", f"{name!r} is listed twice")
        seen.add(name)


def _check_subject(s: Schema, access_level: AccessLevel, p: str) -> None:
    field = f"{p}.subject_column"
    if not s.subject_column:
        personal = next((c for c in s.columns if c.sensitivity == Sensitivity.PERSONAL), None)
        if personal is not None:
            raise InvalidArgument(
                field,
                f"is required because column {personal.name!r} is personal: "
                "name the column that identifies the data subject",
            )
        if access_level == AccessLevel.PERSONAL:
            raise InvalidArgument(
                field,
                "is required for personal data: name the column that identifies the data subject",
            )
        return
    column = s.column(s.subject_column)
    if column is None:
        raise InvalidArgument(field, f"names no column: {s.subject_column!r}")
    # The subject's identifier is personal data itself: it must never be served unmasked as public.
    if column.sensitivity not in (Sensitivity.PERSONAL, Sensitivity.SENSITIVE):
        raise InvalidArgument(
            field, f"column {column.name!r} identifies people: mark it personal or sensitive"
        )
    if column.type.strip() not in _SUBJECT_TYPES:
        raise InvalidArgument(
            field,
            f"column {column.name!r} is {column.type}; a subject id is a string or an integer",
        )
