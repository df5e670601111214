"""Validation of what callers send: parties, access requests, conditions, consents, erasures.

Every problem is an `InvalidArgument` naming the proto field (`conditions.masks[1].method`), and
conditions are checked against the dataset's schema so an approval cannot name a column that does
not exist or generalise a column that cannot be generalised that way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from tdg_core.errors import InvalidArgument
from tdg_core.identifiers import check_party_id, check_territory_codes

from tdg_consent.model import (
    PARTY_ROLES,
    AccessKind,
    Conditions,
    DatasetRef,
    Generalisation,
    MaskMethod,
    Party,
    PartyKind,
)

MAX_NAME = 200
MAX_CONTACT = 320
MAX_TEXT = 2000
MAX_PURPOSES = 10
MAX_COLUMNS = 500
MAX_CODES = 40_000  # every commune of France
MAX_SUBJECT = 200
MAX_SOURCE = 100
TRUNCATE_UNITS = ("hour", "day", "week", "month", "year")
MAX_GROUP_SIZE = 1_000_000

_SIREN = re.compile(r"[0-9]{9}")
_PURPOSE = re.compile(r"[a-z](?:-?[a-z0-9])*")
_NUMERIC = re.compile(r"(int(8|16|32|64)|uint(8|16|32|64)|float(16|32|64)|decimal\(.*\))")


def text(field: str, value: str, limit: int, required: bool = False) -> str:
    if required and not value.strip():
        raise InvalidArgument(field, "is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"at most {limit} characters, got {len(value)}")
    return value


def validate_party(p: Party) -> None:
    check_party_id(p.id, "party.id")
    text("party.name", p.name, MAX_NAME, required=True)
    text("party.contact", p.contact, MAX_CONTACT)
    if p.siren and not _SIREN.fullmatch(p.siren):
        raise InvalidArgument("party.siren", f"{p.siren!r} is not a SIREN (9 digits)")
    if p.kind is PartyKind.APPLICATION:
        check_party_id(p.organisation, "party.organisation")
        if p.organisation == p.id:
            raise InvalidArgument("party.organisation", "an application cannot own itself")
    elif p.organisation and p.organisation != p.id:
        raise InvalidArgument(
            "party.organisation", "only an application belongs to an organisation; leave it empty"
        )
    for i, role in enumerate(p.roles):
        if role not in PARTY_ROLES:
            raise InvalidArgument(
                f"party.roles[{i}]", f"unknown role {role!r}; known: {', '.join(PARTY_ROLES)}"
            )
    if len(set(p.roles)) != len(p.roles):
        raise InvalidArgument("party.roles", "a role is listed twice")


def validate_purposes(purposes: Sequence[str], vocabulary: Sequence[str]) -> None:
    if not purposes:
        raise InvalidArgument("purposes", f"at least one purpose, among: {', '.join(vocabulary)}")
    if len(purposes) > MAX_PURPOSES:
        raise InvalidArgument("purposes", f"at most {MAX_PURPOSES}")
    for i, purpose in enumerate(purposes):
        check_purpose(f"purposes[{i}]", purpose, vocabulary)
    if len(set(purposes)) != len(purposes):
        raise InvalidArgument("purposes", "a purpose is listed twice")


def check_purpose(field: str, purpose: str, vocabulary: Sequence[str]) -> str:
    if not purpose:
        raise InvalidArgument(field, f"is required, one of: {', '.join(vocabulary)}")
    if not _PURPOSE.fullmatch(purpose) or purpose not in vocabulary:
        raise InvalidArgument(
            field, f"unknown purpose {purpose!r}; the territory's purposes: {', '.join(vocabulary)}"
        )
    return purpose


def validate_columns(field: str, columns: Sequence[str], dataset: DatasetRef) -> None:
    if len(columns) > MAX_COLUMNS:
        raise InvalidArgument(field, f"at most {MAX_COLUMNS} columns")
    for i, name in enumerate(columns):
        _known_column(f"{field}[{i}]", name, dataset)
    if len(set(columns)) != len(columns):
        raise InvalidArgument(field, "a column is listed twice")


def _known_column(field: str, name: str, dataset: DatasetRef) -> None:
    if dataset.column(name) is None:
        known = ", ".join(c.name for c in dataset.columns)
        raise InvalidArgument(field, f"no column {name!r} in '{dataset.id}' (columns: {known})")


def validate_conditions(c: Conditions, dataset: DatasetRef, kind: AccessKind) -> None:
    p = "conditions"
    validate_columns(f"{p}.columns", c.columns, dataset)
    granted = set(c.columns) or {col.name for col in dataset.columns}
    seen: set[str] = set()
    for i, mask in enumerate(c.masks):
        f = f"{p}.masks[{i}]"
        _known_column(f"{f}.column", mask.column, dataset)
        if mask.column not in granted:
            raise InvalidArgument(
                f"{f}.column", f"{mask.column!r} is not among the granted columns"
            )
        if mask.column in seen:
            raise InvalidArgument(f"{f}.column", f"{mask.column!r} is masked twice")
        seen.add(mask.column)
        _check_mask(f, mask.method, mask.generalisation, dataset, mask.column)
    if c.territory_filter is not None:
        tf = c.territory_filter
        _known_column(f"{p}.territory_filter.column", tf.column, dataset)
        column = dataset.column(tf.column)
        if column is not None and column.type != "string":
            raise InvalidArgument(
                f"{p}.territory_filter.column", f"{tf.column!r} is {column.type}, not a string"
            )
        if not tf.codes:
            raise InvalidArgument(f"{p}.territory_filter.codes", "at least one INSEE code")
        check_territory_codes(f"{p}.territory_filter.codes", tf.codes, MAX_CODES)
    if c.min_group_size < 0 or c.min_group_size > MAX_GROUP_SIZE:
        raise InvalidArgument(f"{p}.min_group_size", f"between 0 and {MAX_GROUP_SIZE}")
    if c.min_group_size == 1:
        raise InvalidArgument(f"{p}.min_group_size", "a group of 1 is a person: at least 2")
    if c.min_group_size and not c.aggregate_only:
        raise InvalidArgument(f"{p}.min_group_size", "only with aggregate_only")
    if c.valid_from and c.valid_until and c.valid_until <= c.valid_from:
        raise InvalidArgument(f"{p}.valid_until", "must be after valid_from")
    if c.commitments is not None:
        if kind is not AccessKind.WRITE:
            raise InvalidArgument(f"{p}.commitments", "delivery commitments are for write access")
        cm = c.commitments
        if cm.max_freshness_lag_s < 0:
            raise InvalidArgument(f"{p}.commitments.max_freshness_lag_s", "must be >= 0")
        for name in ("completeness_pct", "validity_rate_pct"):
            value = getattr(cm, name)
            if not (0 <= value <= 100) or math.isnan(value):
                raise InvalidArgument(f"{p}.commitments.{name}", "a percentage, 0 to 100")
    if kind is AccessKind.WRITE and (c.masks or c.territory_filter or c.aggregate_only):
        raise InvalidArgument(p, "masks, territory filters and aggregation are for read access")


def _check_mask(
    field: str, method: MaskMethod, g: object, dataset: DatasetRef, column_name: str
) -> None:
    column = dataset.column(column_name)
    assert column is not None
    if method is not MaskMethod.GENERALISE:
        if g is not None:
            raise InvalidArgument(f"{field}.generalisation", "only with method GENERALISE")
        return
    if not isinstance(g, Generalisation):
        raise InvalidArgument(
            f"{field}.generalisation",
            "required with GENERALISE: truncate_to, round_to or commune_to_epci",
        )
    f = f"{field}.generalisation"
    if g.truncate_to:
        if g.truncate_to not in TRUNCATE_UNITS:
            raise InvalidArgument(
                f"{f}.truncate_to", f"one of {', '.join(TRUNCATE_UNITS)}, got {g.truncate_to!r}"
            )
        if column.type not in ("date", "timestamp"):
            raise InvalidArgument(
                f"{f}.truncate_to", f"{column.name!r} is {column.type}, not a date or timestamp"
            )
    elif g.round_to:
        if not g.round_to > 0 or math.isinf(g.round_to):
            raise InvalidArgument(f"{f}.round_to", "a step greater than 0, e.g. 100")
        if not _NUMERIC.fullmatch(column.type):
            raise InvalidArgument(
                f"{f}.round_to", f"{column.name!r} is {column.type}, not a number"
            )
    elif g.commune_to_epci:
        if column.type != "string":
            raise InvalidArgument(
                f"{f}.commune_to_epci", f"{column.name!r} is {column.type}, not a string"
            )
    else:
        raise InvalidArgument(f, "one of truncate_to, round_to or commune_to_epci")


def validate_subject(field: str, subject_id: str) -> str:
    if not subject_id.strip():
        raise InvalidArgument(field, "is required")
    if len(subject_id) > MAX_SUBJECT or any(ch.isspace() for ch in subject_id):
        raise InvalidArgument(field, f"at most {MAX_SUBJECT} characters, without spaces")
    return subject_id


def validate_source(field: str, source: str) -> str:
    return text(field, source, MAX_SOURCE, required=True)
