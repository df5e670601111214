"""What a data officer may register: every refusal names the field to fix."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from tdg_catalog.model import AccessLevel, Column, Metadata, Schema, Sensitivity
from tdg_catalog.validation import (
    validate_metadata,
    validate_new_dataset,
    validate_schema,
)
from tdg_core.errors import InvalidArgument
from tdg_core.identifiers import parse_dataset_id

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

METADATA = Metadata(
    title="Comptages vélo horaires",
    description="Nombre de vélos par compteur et par heure.",
    contact="https://data.grandlyon.com",
    themes=("TRAN",),
    keywords=("vélo", "comptage"),
    licence="etalab-2.0",
    access_level=AccessLevel.OPEN,
    territory=("200046977", "69123", "69266", "69"),
    update_frequency="hourly",
    retention_days=0,
)
SCHEMA = Schema(
    columns=(
        Column("counter_id", "string", nullable=False),
        Column("date_observed", "timestamp", nullable=False),
        Column("intensity", "int32", nullable=False, unit="bicycles/h"),
        Column("lane_direction", "string"),
    ),
    event_time_column="date_observed",
    key_columns=("counter_id", "date_observed"),
)
PERSONAL = Schema(
    columns=(
        Column("household_id", "string", nullable=False, sensitivity=Sensitivity.PERSONAL),
        Column("day", "date", nullable=False),
        Column("consumption", "decimal(10,3)", unit="kWh"),
    ),
    event_time_column="day",
    subject_column="household_id",
)


def _refusal(call: object, *args: object, **kwargs: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value


def _metadata_field(**changes: object) -> str:
    m = dataclasses.replace(METADATA, **changes)  # type: ignore[arg-type]
    return _refusal(validate_metadata, m).field


def _schema_field(schema: Schema, access: AccessLevel = AccessLevel.OPEN) -> str:
    return _refusal(validate_schema, schema, access).field


def _columns(*columns: Column, **changes: object) -> Schema:
    return dataclasses.replace(SCHEMA, columns=columns, **changes)  # type: ignore[arg-type]


# --- the id ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset_id", "publisher", "name"),
    [
        ("metropole-lyon.bike-counters", "metropole-lyon", "bike-counters"),
        ("sytral.tcl-2024", "sytral", "tcl-2024"),
        ("a.b", "a", "b"),
        ("p" * 63 + "." + "n" * 100, "p" * 63, "n" * 100),
    ],
)
def test_a_well_formed_id_names_publisher_and_dataset(
    dataset_id: str, publisher: str, name: str
) -> None:
    assert parse_dataset_id(dataset_id) == (publisher, name)


@pytest.mark.parametrize(
    "dataset_id",
    [
        "",
        "bike-counters",
        "metropole-lyon.bike.counters",
        "metropole-lyon.Bike_Counters",
        "Metropole-lyon.bikes",
        "metropole-lyon.-bikes",
        "metropole-lyon.bikes-",
        "metropole--lyon.bikes",
        "1metropole.bikes",
        "metropole-lyon.2024-bikes",
        "métropole-lyon.vélos",
        ".bikes",
        "metropole-lyon.",
        "p" * 64 + ".bikes",
        "lyon." + "n" * 101,
    ],
)
def test_a_malformed_id_is_refused_on_the_id_field(dataset_id: str) -> None:
    assert _refusal(parse_dataset_id, dataset_id).field == "id"


def test_id_error_shows_an_example() -> None:
    assert "metropole-lyon.bike-counters" in str(_refusal(parse_dataset_id, "Lyon.Velos"))


def test_a_valid_registration_returns_its_publisher() -> None:
    assert validate_new_dataset("metropole-lyon.bikes", METADATA, SCHEMA) == "metropole-lyon"


def test_registration_checks_the_id_first() -> None:
    bad = dataclasses.replace(METADATA, title="")
    assert _refusal(validate_new_dataset, "Lyon.Bikes", bad, SCHEMA).field == "id"


# --- metadata -------------------------------------------------------------------------------


def test_the_reference_metadata_is_valid() -> None:
    validate_metadata(METADATA)


def test_minimal_metadata_is_valid() -> None:
    validate_metadata(Metadata(title="Compteurs", themes=("ENER",), licence="CC0-1.0"))


@pytest.mark.parametrize("title", ["", "   "])
def test_title_is_required(title: str) -> None:
    assert _metadata_field(title=title) == "metadata.title"


def test_title_and_description_have_a_maximum_length() -> None:
    validate_metadata(dataclasses.replace(METADATA, title="t" * 200, description="d" * 10_000))
    assert _metadata_field(title="t" * 201) == "metadata.title"
    assert _metadata_field(description="d" * 10_001) == "metadata.description"


@pytest.mark.parametrize(
    "contact", ["donnees@grandlyon.com", "https://data.grandlyon.com/contact", ""]
)
def test_contact_may_be_an_email_or_an_https_url(contact: str) -> None:
    validate_metadata(dataclasses.replace(METADATA, contact=contact))


@pytest.mark.parametrize(
    "contact",
    ["http://data.grandlyon.com", "data.grandlyon.com", "donnees@", "https://", "a b@c.fr"],
)
def test_other_contacts_are_refused(contact: str) -> None:
    assert _metadata_field(contact=contact) == "metadata.contact"


def test_at_least_one_theme_is_required() -> None:
    assert _metadata_field(themes=()) == "metadata.themes"


def test_themes_come_from_the_eu_vocabulary() -> None:
    validate_metadata(dataclasses.replace(METADATA, themes=("ENER", "OP_DATPRO", "REGI")))
    assert _metadata_field(themes=("TRAN", "MOBILITY")) == "metadata.themes[1]"


def test_a_lowercase_theme_gets_a_hint() -> None:
    error = _refusal(validate_metadata, dataclasses.replace(METADATA, themes=("ener",)))
    assert error.field == "metadata.themes[0]"
    assert "'ENER'" in error.problem


def test_a_theme_listed_twice_is_refused() -> None:
    assert _metadata_field(themes=("ENER", "TRAN", "ENER")) == "metadata.themes[2]"


def test_keywords_are_bounded() -> None:
    validate_metadata(dataclasses.replace(METADATA, keywords=tuple(f"k{i}" for i in range(50))))
    assert _metadata_field(keywords=tuple(f"k{i}" for i in range(51))) == "metadata.keywords"
    assert _metadata_field(keywords=("vélo", "k" * 101)) == "metadata.keywords[1]"
    assert _metadata_field(keywords=("vélo", " ")) == "metadata.keywords[1]"


@pytest.mark.parametrize(
    "licence",
    ["etalab-2.0", "ODbL-1.0", "CC-BY-4.0", "CC0-1.0", "proprietary:convention-dsp-irve"],
)
def test_known_and_named_proprietary_licences_are_accepted(licence: str) -> None:
    validate_metadata(dataclasses.replace(METADATA, licence=licence))


@pytest.mark.parametrize(
    "licence", ["", "WTFPL", "odbl-1.0", "etalab", "proprietary:", "proprietary:  "]
)
def test_other_licences_are_refused(licence: str) -> None:
    assert _metadata_field(licence=licence) == "metadata.licence"


@pytest.mark.parametrize(
    "code", ["69123", "2A004", "2B033", "97411", "200046977", "69", "01", "2A", "2B", "974"]
)
def test_insee_codes_are_accepted(code: str) -> None:
    validate_metadata(dataclasses.replace(METADATA, territory=(code,)))


@pytest.mark.parametrize(
    "code", ["6912", "691234", "2C004", "20", "00", "96", "977", "20004697", "Lyon", "69 123", ""]
)
def test_malformed_territory_codes_are_refused_at_their_position(code: str) -> None:
    error = _refusal(validate_metadata, dataclasses.replace(METADATA, territory=("69123", code)))
    assert error.field == "metadata.territory[1]"
    assert "INSEE" in error.problem


def test_a_territory_code_listed_twice_is_refused() -> None:
    assert _metadata_field(territory=("69123", "69123")) == "metadata.territory[1]"


def test_territory_is_optional() -> None:
    validate_metadata(dataclasses.replace(METADATA, territory=()))


@pytest.mark.parametrize("frequency", ["continuous", "daily", "annual", "irregular", ""])
def test_update_frequency_is_one_of_the_vocabulary_or_unset(frequency: str) -> None:
    validate_metadata(dataclasses.replace(METADATA, update_frequency=frequency))


def test_unknown_update_frequency_is_refused() -> None:
    assert _metadata_field(update_frequency="Daily") == "metadata.update_frequency"


def test_retention_is_zero_for_ever_or_positive() -> None:
    validate_metadata(dataclasses.replace(METADATA, retention_days=3650))
    assert _metadata_field(retention_days=-1) == "metadata.retention_days"


def test_field_prefix_is_honoured() -> None:
    error = _refusal(validate_metadata, dataclasses.replace(METADATA, title=""), "update")
    assert error.field == "update.title"


# --- schema ---------------------------------------------------------------------------------


def test_the_reference_schemas_are_valid() -> None:
    validate_schema(SCHEMA, AccessLevel.OPEN)
    validate_schema(PERSONAL, AccessLevel.PERSONAL)


def test_a_schema_needs_columns() -> None:
    assert _schema_field(_columns()) == "schema.columns"


def test_a_schema_has_at_most_500_columns() -> None:
    many = tuple(Column(f"c{i}", "int32") for i in range(501))
    assert _schema_field(Schema(columns=many)) == "schema.columns"
    validate_schema(Schema(columns=many[:500]), AccessLevel.OPEN)


@pytest.mark.parametrize(
    "name", ["Count", "2nd", "_x", "count-2", "comptés", "", "c" * 64, "date observed"]
)
def test_malformed_column_names_are_refused(name: str) -> None:
    schema = _columns(*SCHEMA.columns, Column(name, "string"))
    assert _schema_field(schema) == "schema.columns[4].name"


def test_duplicate_column_names_are_refused_where_repeated() -> None:
    schema = _columns(*SCHEMA.columns, Column("intensity", "int64"))
    error = _refusal(validate_schema, schema, AccessLevel.OPEN)
    assert error.field == "schema.columns[4].name"
    assert "columns[2]" in error.problem


def test_an_invalid_type_names_the_column_type_field() -> None:
    schema = _columns(SCHEMA.columns[0], SCHEMA.columns[1], Column("intensity", "varchar"))
    error = _refusal(validate_schema, schema, AccessLevel.OPEN)
    assert error.field == "schema.columns[2].type"
    assert "varchar" in error.problem


def test_column_description_and_unit_are_bounded() -> None:
    long_description = _columns(*SCHEMA.columns, Column("x", "string", description="d" * 2001))
    assert _schema_field(long_description) == "schema.columns[4].description"
    long_unit = _columns(*SCHEMA.columns, Column("x", "string", unit="u" * 51))
    assert _schema_field(long_unit) == "schema.columns[4].unit"


def test_event_time_must_name_a_column() -> None:
    schema = dataclasses.replace(SCHEMA, event_time_column="observed_at")
    assert _schema_field(schema) == "schema.event_time_column"


@pytest.mark.parametrize("type_", ["string", "int64", "list<timestamp>"])
def test_event_time_must_be_a_timestamp_or_a_date(type_: str) -> None:
    schema = _columns(Column("counter_id", "string"), Column("date_observed", type_, False))
    error = _refusal(validate_schema, dataclasses.replace(schema, key_columns=()), AccessLevel.OPEN)
    assert error.field == "schema.event_time_column"


def test_event_time_must_be_non_nullable() -> None:
    schema = _columns(Column("counter_id", "string"), Column("date_observed", "date"))
    error = _refusal(validate_schema, dataclasses.replace(schema, key_columns=()), AccessLevel.OPEN)
    assert error.field == "schema.event_time_column"
    assert "non-nullable" in error.problem


def test_event_time_is_optional() -> None:
    validate_schema(dataclasses.replace(SCHEMA, event_time_column=""), AccessLevel.OPEN)


def test_key_columns_must_exist_and_be_distinct() -> None:
    missing = dataclasses.replace(SCHEMA, key_columns=("counter_id", "lane"))
    assert _schema_field(missing) == "schema.key_columns[1]"
    twice = dataclasses.replace(SCHEMA, key_columns=("counter_id", "counter_id"))
    assert _schema_field(twice) == "schema.key_columns[1]"


def test_a_personal_column_requires_a_subject_column() -> None:
    schema = dataclasses.replace(PERSONAL, subject_column="")
    error = _refusal(validate_schema, schema, AccessLevel.RESTRICTED)
    assert error.field == "schema.subject_column"
    assert "household_id" in error.problem


def test_personal_access_requires_a_subject_column() -> None:
    assert _schema_field(SCHEMA, AccessLevel.PERSONAL) == "schema.subject_column"


def test_subject_column_must_exist() -> None:
    schema = dataclasses.replace(PERSONAL, subject_column="meter_id")
    assert _schema_field(schema, AccessLevel.PERSONAL) == "schema.subject_column"


def test_subject_column_must_not_be_public() -> None:
    public_subject = dataclasses.replace(
        PERSONAL,
        columns=(Column("household_id", "string"), *PERSONAL.columns[1:]),
    )
    error = _refusal(validate_schema, public_subject, AccessLevel.PERSONAL)
    assert error.field == "schema.subject_column"
    assert "personal or sensitive" in error.problem


def test_subject_column_holds_an_identifier() -> None:
    float_subject = dataclasses.replace(
        PERSONAL,
        columns=(
            Column("household_id", "float64", sensitivity=Sensitivity.PERSONAL),
            *PERSONAL.columns[1:],
        ),
    )
    assert _schema_field(float_subject, AccessLevel.PERSONAL) == "schema.subject_column"


def test_a_sensitive_subject_column_is_accepted_in_a_restricted_dataset() -> None:
    schema = dataclasses.replace(
        PERSONAL,
        columns=(
            Column("patient_id", "int64", False, sensitivity=Sensitivity.SENSITIVE),
            *PERSONAL.columns[1:],
        ),
        subject_column="patient_id",
    )
    validate_schema(schema, AccessLevel.RESTRICTED)


# --- the example files ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_dataset_passes_the_catalog_rules(path: Path) -> None:
    # The same path as a registration: file → proto (the CLI) → domain (the servicer) → rules.
    from tdg_catalog.convert import metadata_from_pb, schema_from_pb
    from tdg_cli.dataset_file import load_register_request

    request = load_register_request(path)
    publisher = validate_new_dataset(
        request.id, metadata_from_pb(request.metadata), schema_from_pb(request.schema)
    )
    assert publisher == "metropole-lyon"


# --- value ranges ---------------------------------------------------------------------------


def _ranged(type_: str, minimum: float | None = None, maximum: float | None = None) -> Schema:
    return _columns(*SCHEMA.columns, Column("x", type_, minimum=minimum, maximum=maximum))


def _range_refusal(type_: str, minimum: float | None, maximum: float | None) -> InvalidArgument:
    return _refusal(validate_schema, _ranged(type_, minimum, maximum), AccessLevel.OPEN)


@pytest.mark.parametrize(
    ("type_", "minimum", "maximum"),
    [
        ("int32", 0, None),  # a count
        ("float64", 0, 100),  # a percentage
        ("decimal(10,3)", -0.5, 1e6),
        ("float32", None, -40),
        ("string", 5, 5),  # an INSEE code has 5 characters
        ("list<string>", 1, None),
        ("date", 1_420_070_400, None),  # from 2015-01-01
        ("timestamp", -86_400.5, 4_102_444_800),
        ("int64", 7, 7),
    ],
)
def test_a_range_is_accepted_on_numbers_lengths_and_instants(
    type_: str, minimum: float | None, maximum: float | None
) -> None:
    validate_schema(_ranged(type_, minimum, maximum), AccessLevel.OPEN)


@pytest.mark.parametrize("side", ["minimum", "maximum"])
def test_a_bool_column_takes_no_range(side: str) -> None:
    flag = Column("renovation_done", "bool", **{side: 1})  # type: ignore[arg-type]
    error = _refusal(validate_schema, _columns(*SCHEMA.columns[:2], flag), AccessLevel.OPEN)
    assert error.field == f"schema.columns[2].{side}"
    assert "bool" in error.problem


def test_a_minimum_above_the_maximum_names_the_maximum() -> None:
    error = _range_refusal("float64", 100, 0)
    assert error.field == "schema.columns[4].maximum"
    assert "0 is below the minimum 100" in error.problem


@pytest.mark.parametrize("bound", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("side", ["minimum", "maximum"])
def test_a_bound_must_be_a_finite_number(bound: float, side: str) -> None:
    schema = _ranged("float64", **{side: bound})
    error = _refusal(validate_schema, schema, AccessLevel.OPEN)
    assert error.field == f"schema.columns[4].{side}"
    assert "finite" in error.problem


@pytest.mark.parametrize("type_", ["string", "list<int32>"])
@pytest.mark.parametrize(("minimum", "maximum"), [(-1, None), (None, 2.5), (0.5, 3)])
def test_a_length_is_a_whole_number_not_below_zero(
    type_: str, minimum: float | None, maximum: float | None
) -> None:
    error = _range_refusal(type_, minimum, maximum)
    assert error.field == f"schema.columns[4].{'minimum' if minimum is not None else 'maximum'}"
    assert "length" in error.problem


def test_a_range_on_an_invalid_type_reports_the_type() -> None:
    assert _schema_field(_ranged("varchar", 0, 1)) == "schema.columns[4].type"
