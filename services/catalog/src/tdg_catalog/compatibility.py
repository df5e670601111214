"""Which schema changes keep every existing reader and writer working.

A new schema version must read every record written under the old one, and consumers built
on the old one must keep working. Allowed: add a nullable column, widen int32 to int64 or
float32 to float64 (also inside lists), make a column nullable, edit a description or a
unit, raise a column's sensitivity, reorder columns (records are matched by name), name
a subject column where there was none (it only adds protection), and set, change or drop a
column's value range. Everything else is listed.
"""

from __future__ import annotations

from tdg_catalog.model import Column, Schema, Sensitivity

# Each type that a column may widen to, from the narrower one.
WIDENINGS = {"int32": "int64", "float32": "float64"}

# From least to most protected.
_PROTECTION = {
    Sensitivity.PUBLIC: 0,
    Sensitivity.INTERNAL: 1,
    Sensitivity.PERSONAL: 2,
    Sensitivity.SENSITIVE: 3,
}


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """One human-readable line per change that breaks readers or writers of `old`; empty when
    `new` is a backward-compatible evolution."""
    problems: list[str] = []
    new_columns = {c.name: c for c in new.columns}
    old_names = {c.name for c in old.columns}
    for before in old.columns:
        after = new_columns.get(before.name)
        if after is None:
            problems.append(f"column '{before.name}' removed")
        else:
            problems.extend(_column_changes(before, after))
    for added in new.columns:
        if added.name not in old_names and not added.nullable:
            # Records written before have no value for it.
            problems.append(f"column '{added.name}' added as non-nullable")
    if old.event_time_column != new.event_time_column:
        problems.append(
            _role_change("event_time_column", old.event_time_column, new.event_time_column)
        )
    if old.key_columns != new.key_columns:
        problems.append(
            f"key_columns changed from {_names(old.key_columns)} to {_names(new.key_columns)}"
        )
    if old.subject_column and old.subject_column != new.subject_column:
        problems.append(_role_change("subject_column", old.subject_column, new.subject_column))
    return problems


def _column_changes(before: Column, after: Column) -> list[str]:
    # Not compared: minimum and maximum. A range is a check on what ingest accepts from now on,
    # not part of how values are stored or decoded, so readers of earlier records are unaffected
    # even when a narrower range would have rejected some of them; a writer's out-of-range
    # records go to the dead-letter topic with the reason, which is what the range is for.
    problems = []
    old_type, new_type = before.type.strip(), after.type.strip()
    if not widens(old_type, new_type):
        problems.append(f"column '{before.name}' type changed from {old_type} to {new_type}")
    if before.nullable and not after.nullable:
        problems.append(f"column '{before.name}' made non-nullable")
    if _PROTECTION[after.sensitivity] < _PROTECTION[before.sensitivity]:
        problems.append(
            f"column '{before.name}' sensitivity lowered from {before.sensitivity.value} "
            f"to {after.sensitivity.value}"
        )
    return problems


def widens(old_type: str, new_type: str) -> bool:
    """Whether every value of `old_type` is a value of `new_type` (equal types included)."""
    if old_type == new_type or WIDENINGS.get(old_type) == new_type:
        return True
    element = "list<"
    if old_type.startswith(element) and new_type.startswith(element):
        return widens(old_type[len(element) : -1], new_type[len(element) : -1])
    return False


def _role_change(role: str, before: str, after: str) -> str:
    return f"{role} changed from {_name(before)} to {_name(after)}"


def _name(column: str) -> str:
    return f"'{column}'" if column else "none"


def _names(columns: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{c}'" for c in columns) + ")" if columns else "none"
