"""Schema evolution: only changes that keep existing readers and writers working pass."""

from __future__ import annotations

import dataclasses

import pytest
from tdg_catalog.compatibility import incompatibilities
from tdg_catalog.model import Column, Schema, Sensitivity

V1 = Schema(
    columns=(
        Column("counter_id", "string", nullable=False),
        Column("date_observed", "timestamp", nullable=False),
        Column("count", "int64", nullable=False, unit="bicycles/h"),
        Column("speed", "float32", description="vitesse moyenne", unit="km/h"),
        Column("lanes", "list<int32>"),
        Column("owner", "string", sensitivity=Sensitivity.PERSONAL),
    ),
    event_time_column="date_observed",
    key_columns=("counter_id", "date_observed"),
    subject_column="owner",
)


def _with(columns: tuple[Column, ...] = V1.columns, **changes: object) -> Schema:
    return dataclasses.replace(V1, columns=columns, **changes)  # type: ignore[arg-type]


def _replace_column(column: str, /, **changes: object) -> Schema:
    columns = tuple(
        dataclasses.replace(c, **changes) if c.name == column else c  # type: ignore[arg-type]
        for c in V1.columns
    )
    return _with(columns)


def test_the_same_schema_is_compatible() -> None:
    assert incompatibilities(V1, V1) == []


def test_adding_a_nullable_column_is_compatible() -> None:
    new = _with((*V1.columns, Column("lane_count", "int32")))
    assert incompatibilities(V1, new) == []


def test_adding_a_non_nullable_column_is_listed() -> None:
    new = _with((*V1.columns, Column("lane_count", "int32", nullable=False)))
    assert incompatibilities(V1, new) == ["column 'lane_count' added as non-nullable"]


def test_removing_a_column_is_listed() -> None:
    new = _with(tuple(c for c in V1.columns if c.name != "speed"))
    assert incompatibilities(V1, new) == ["column 'speed' removed"]


def test_renaming_a_column_is_a_removal_and_an_addition() -> None:
    new = _replace_column("speed", name="average_speed", nullable=False)
    assert incompatibilities(V1, new) == [
        "column 'speed' removed",
        "column 'average_speed' added as non-nullable",
    ]


@pytest.mark.parametrize(
    ("column", "new_type"),
    [("speed", "float64"), ("lanes", "list<int64>")],
)
def test_widening_numbers_is_compatible(column: str, new_type: str) -> None:
    assert incompatibilities(V1, _replace_column(column, type=new_type)) == []


def test_widening_int32_to_int64_is_compatible() -> None:
    old = _replace_column("count", type="int32")
    assert incompatibilities(old, V1) == []


@pytest.mark.parametrize(
    ("column", "new_type", "old_type"),
    [
        ("count", "int32", "int64"),  # narrowing
        ("count", "float64", "int64"),  # int to float loses exactness
        ("speed", "string", "float32"),
        ("lanes", "list<float64>", "list<int32>"),
        ("lanes", "int32", "list<int32>"),
    ],
)
def test_other_type_changes_are_listed(column: str, new_type: str, old_type: str) -> None:
    assert incompatibilities(V1, _replace_column(column, type=new_type)) == [
        f"column '{column}' type changed from {old_type} to {new_type}"
    ]


def test_making_a_column_nullable_is_compatible() -> None:
    assert incompatibilities(V1, _replace_column("count", nullable=True)) == []


def test_making_a_column_non_nullable_is_listed() -> None:
    assert incompatibilities(V1, _replace_column("speed", nullable=False)) == [
        "column 'speed' made non-nullable"
    ]


def test_editing_description_and_unit_is_compatible() -> None:
    new = _replace_column("speed", description="vitesse moyenne des vélos", unit="m/s")
    assert incompatibilities(V1, new) == []


def test_reordering_columns_is_compatible() -> None:
    assert incompatibilities(V1, _with(tuple(reversed(V1.columns)))) == []


def test_lowering_sensitivity_is_listed() -> None:
    new = _replace_column("owner", sensitivity=Sensitivity.PUBLIC)
    assert incompatibilities(V1, new) == [
        "column 'owner' sensitivity lowered from personal to public"
    ]


def test_raising_sensitivity_is_compatible() -> None:
    new = _replace_column("speed", sensitivity=Sensitivity.INTERNAL)
    assert incompatibilities(V1, new) == []
    new = _replace_column("owner", sensitivity=Sensitivity.SENSITIVE)
    assert incompatibilities(V1, new) == []


def test_changing_the_event_time_column_is_listed() -> None:
    problems = incompatibilities(V1, _with(event_time_column=""))
    assert problems == ["event_time_column changed from 'date_observed' to none"]


def test_changing_the_key_is_listed() -> None:
    problems = incompatibilities(V1, _with(key_columns=("counter_id",)))
    assert problems == [
        "key_columns changed from ('counter_id', 'date_observed') to ('counter_id')"
    ]


def test_changing_or_dropping_the_subject_column_is_listed() -> None:
    assert incompatibilities(V1, _with(subject_column="counter_id")) == [
        "subject_column changed from 'owner' to 'counter_id'"
    ]
    assert incompatibilities(V1, _with(subject_column="")) == [
        "subject_column changed from 'owner' to none"
    ]


def test_naming_a_subject_column_where_there_was_none_is_compatible() -> None:
    # Marking a column personal needs a subject column; adding protection breaks no reader.
    old = dataclasses.replace(
        _replace_column("owner", sensitivity=Sensitivity.PUBLIC), subject_column=""
    )
    assert incompatibilities(old, V1) == []


def test_every_problem_is_listed_once() -> None:
    new = _with(
        (
            Column("counter_id", "int64", nullable=False),
            Column("date_observed", "timestamp", nullable=False),
            Column("speed", "float32", nullable=False),
            Column("lanes", "list<int32>"),
            Column("owner", "string", sensitivity=Sensitivity.INTERNAL),
            Column("lane_count", "int32", nullable=False),
        )
    )
    assert incompatibilities(V1, new) == [
        "column 'counter_id' type changed from string to int64",
        "column 'count' removed",
        "column 'speed' made non-nullable",
        "column 'owner' sensitivity lowered from personal to internal",
        "column 'lane_count' added as non-nullable",
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"minimum": 0.0},  # a range set where there was none
        {"minimum": 0.0, "maximum": 50.0},  # narrowed
        {"maximum": 1e6},  # widened
    ],
)
def test_setting_or_changing_a_range_is_compatible(changes: dict[str, float]) -> None:
    assert incompatibilities(V1, _replace_column("speed", **changes)) == []


def test_dropping_a_range_is_compatible() -> None:
    ranged = _replace_column("count", minimum=0.0)
    assert incompatibilities(ranged, V1) == []
