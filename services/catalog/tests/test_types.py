"""The column type grammar: what a data officer may write and the Arrow type it becomes."""

from __future__ import annotations

import pyarrow as pa
import pytest
from tdg_catalog.model import Column, Schema, Sensitivity
from tdg_catalog.types import to_arrow_schema
from tdg_core.column_types import parse_type


@pytest.mark.parametrize(
    ("text", "arrow"),
    [
        ("string", pa.string()),
        ("bool", pa.bool_()),
        ("int32", pa.int32()),
        ("int64", pa.int64()),
        ("float32", pa.float32()),
        ("float64", pa.float64()),
        ("date", pa.date32()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("decimal(10,2)", pa.decimal128(10, 2)),
        ("decimal(38,0)", pa.decimal128(38, 0)),
        ("decimal(1,1)", pa.decimal128(1, 1)),
        ("list<string>", pa.list_(pa.string())),
        ("list<list<decimal(5,2)>>", pa.list_(pa.list_(pa.decimal128(5, 2)))),
    ],
)
def test_every_documented_type_becomes_its_arrow_type(text: str, arrow: pa.DataType) -> None:
    assert parse_type(text) == arrow


def test_timestamps_are_utc_microseconds() -> None:
    t = parse_type("timestamp")
    assert t.unit == "us"
    assert t.tz == "UTC"


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_type("  int64\n") == pa.int64()


@pytest.mark.parametrize("text", ["decimal(10, 2)", "list< string >"])
def test_space_inside_a_type_is_refused_with_the_canonical_spelling(text: str) -> None:
    with pytest.raises(ValueError, match="no spaces") as info:
        parse_type(text)
    assert "".join(text.split()) in str(info.value)


@pytest.mark.parametrize(
    "text", ["varchar", "int", "String", "INT64", "double", "timestamp[ms]", "list<int32", ""]
)
def test_non_canonical_spellings_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_type(text)


def test_unknown_type_message_lists_the_grammar() -> None:
    with pytest.raises(ValueError) as info:
        parse_type("varchar")
    assert "'varchar'" in str(info.value)
    assert "decimal(P,S)" in str(info.value)
    assert "list<T>" in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("decimal(0,0)", "precision 0"),
        ("decimal(39,2)", "precision 39"),
        ("decimal(5,6)", "scale 6"),
        ("decimal(10)", "malformed"),
        ("decimal(010,2)", "malformed"),
        ("decimal(-1,0)", "malformed"),
    ],
)
def test_decimal_bounds_are_enforced(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        parse_type(text)


def test_empty_list_element_is_explained() -> None:
    with pytest.raises(ValueError, match="element type"):
        parse_type("list<>")


def test_lists_nest_deeply_but_not_without_bound() -> None:
    assert parse_type("list<" * 8 + "int32" + ">" * 8) is not None
    with pytest.raises(ValueError, match="nest"):
        parse_type("list<" * 9 + "int32" + ">" * 9)
    with pytest.raises(ValueError):
        parse_type("list<" * 5000 + "int32" + ">" * 5000)


def test_arrow_schema_keeps_names_types_nullability_and_classification() -> None:
    schema = Schema(
        columns=(
            Column("meter_id", "string", nullable=False, sensitivity=Sensitivity.PERSONAL),
            Column("date_observed", "timestamp", nullable=False),
            Column("consumption", "decimal(10,3)", description="Énergie consommée", unit="kWh"),
        ),
        event_time_column="date_observed",
        key_columns=("meter_id", "date_observed"),
        subject_column="meter_id",
        version=3,
    )
    arrow = to_arrow_schema(schema)
    assert arrow.names == ["meter_id", "date_observed", "consumption"]
    assert arrow.field("meter_id").nullable is False
    assert arrow.field("consumption").nullable is True
    assert arrow.field("consumption").type == pa.decimal128(10, 3)
    assert arrow.field("meter_id").metadata[b"sensitivity"] == b"personal"
    consumption = arrow.field("consumption").metadata
    assert consumption[b"unit"] == b"kWh"
    assert consumption[b"description"].decode() == "Énergie consommée"
    assert consumption[b"sensitivity"] == b"public"
    assert arrow.metadata[b"event_time_column"] == b"date_observed"
    assert arrow.metadata[b"key_columns"] == b"meter_id,date_observed"
    assert arrow.metadata[b"subject_column"] == b"meter_id"
    assert arrow.metadata[b"schema_version"] == b"3"


def test_arrow_schema_of_an_invalid_type_fails() -> None:
    with pytest.raises(ValueError):
        to_arrow_schema(Schema(columns=(Column("x", "varchar"),)))


def test_arrow_schema_carries_value_ranges_as_text() -> None:
    schema = Schema(
        columns=(
            Column("filling_level", "float32", minimum=0.0, maximum=1.0),
            Column("intensity", "int32", minimum=0.0),
            Column("status", "string"),
        )
    )
    arrow = to_arrow_schema(schema)
    filling = arrow.field("filling_level").metadata
    assert (float(filling[b"minimum"]), float(filling[b"maximum"])) == (0.0, 1.0)
    assert float(arrow.field("intensity").metadata[b"minimum"]) == 0.0
    assert b"maximum" not in arrow.field("intensity").metadata
    assert b"minimum" not in arrow.field("status").metadata


def test_arrow_range_metadata_reads_back_exactly() -> None:
    bound = 0.1 + 0.2  # not representable in few digits
    arrow = to_arrow_schema(Schema(columns=(Column("x", "float64", maximum=bound),)))
    assert float(arrow.field("x").metadata[b"maximum"]) == bound
