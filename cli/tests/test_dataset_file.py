"""Dataset files: every example loads, and a malformed file says which file and which key."""

from __future__ import annotations

from pathlib import Path

import pytest
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg_cli.dataset_file import load_register_request, load_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DATASET_FILES = sorted(EXAMPLES.glob("*.yaml"))

MINIMAL = """\
id: metropole-lyon.bikes
metadata:
  title: Comptages vélo
  themes: [TRAN]
  licence: etalab-2.0
  access_level: open
schema:
  columns:
    - {name: counter_id, type: string, nullable: false}
"""


def _write(tmp_path: Path, text: str, name: str = "dataset.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_register_request(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_the_four_example_datasets_exist() -> None:
    assert {p.stem for p in DATASET_FILES} == {
        "bike-counters",
        "ev-charging-sessions",
        "household-energy-meters",
        "waste-bin-fill-levels",
    }


@pytest.mark.parametrize("path", DATASET_FILES, ids=lambda p: p.stem)
def test_every_example_file_loads(path: Path) -> None:
    request = load_register_request(path)
    assert request.id == f"metropole-lyon.{path.stem}"
    assert request.metadata.title
    assert request.metadata.access_level != pb.ACCESS_LEVEL_UNSPECIFIED
    assert request.schema.columns
    assert all(c.sensitivity != pb.SENSITIVITY_UNSPECIFIED for c in request.schema.columns)


def test_bike_counters_mirror_the_yaml() -> None:
    request = load_register_request(EXAMPLES / "bike-counters.yaml")
    m = request.metadata
    assert list(m.themes) == ["TRAN"]
    assert m.licence == "etalab-2.0"
    assert m.access_level == pb.ACCESS_LEVEL_OPEN
    assert list(m.territory) == ["200046977", "69123", "69266"]
    assert m.update_frequency == "hourly"
    intensity = next(c for c in request.schema.columns if c.name == "intensity")
    assert (intensity.type, intensity.nullable, intensity.unit) == ("int32", False, "bicycles/h")
    assert request.schema.event_time_column == "date_observed"
    assert list(request.schema.key_columns) == ["counter_id", "lane_direction", "date_observed"]


def test_household_meters_are_personal_with_a_personal_subject_column() -> None:
    request = load_register_request(EXAMPLES / "household-energy-meters.yaml")
    assert request.metadata.access_level == pb.ACCESS_LEVEL_PERSONAL
    subject = request.schema.subject_column
    column = next(c for c in request.schema.columns if c.name == subject)
    assert column.sensitivity == pb.SENSITIVITY_PERSONAL


def test_the_evolution_adds_only_a_nullable_column() -> None:
    v1 = load_register_request(EXAMPLES / "bike-counters.yaml").schema
    v2 = load_schema(EXAMPLES / "evolutions" / "bike-counters-v2.yaml")
    assert list(v2.columns)[: len(v1.columns)] == list(v1.columns)
    added = list(v2.columns)[len(v1.columns) :]
    assert len(added) == 1 and added[0].nullable


def test_a_schema_may_come_from_a_whole_dataset_file() -> None:
    path = EXAMPLES / "bike-counters.yaml"
    assert load_schema(path) == load_register_request(path).schema


def test_omitted_nullable_and_sensitivity_mean_nullable_and_public(tmp_path: Path) -> None:
    request = load_register_request(_write(tmp_path, MINIMAL + "    - {name: lane, type: int32}\n"))
    lane = request.schema.columns[1]
    assert lane.nullable is True
    assert lane.sensitivity == pb.SENSITIVITY_PUBLIC


def test_enum_names_are_case_insensitive(tmp_path: Path) -> None:
    text = MINIMAL.replace("access_level: open", "access_level: Personal")
    text += "    - {name: owner, type: string, sensitivity: SENSITIVE}\n"
    request = load_register_request(_write(tmp_path, text))
    assert request.metadata.access_level == pb.ACCESS_LEVEL_PERSONAL
    assert request.schema.columns[1].sensitivity == pb.SENSITIVITY_SENSITIVE


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("access_level: open", "access_level: public"), "metadata.access_level"),
        (("themes: [TRAN]", "themes: TRAN"), "metadata.themes"),
        (("title: Comptages vélo", "title: 2024"), "metadata.title"),
        (
            ("licence: etalab-2.0", "licence: etalab-2.0\n  retention_days: forever"),
            "metadata.retention_days",
        ),
        (
            ("licence: etalab-2.0", "licence: etalab-2.0\n  retention_days: 99999999999"),
            "metadata.retention_days",
        ),
        (
            ("licence: etalab-2.0", "licence: etalab-2.0\n  territory: [69123]"),
            "metadata.territory[0]",
        ),
        (("licence: etalab-2.0", "licence: etalab-2.0\n  licence_url: x"), "metadata.licence_url"),
        (("nullable: false", "nullable: maybe"), "schema.columns[0].nullable"),
        (("type: string, ", ""), "schema.columns[0].type"),
        (("name: counter_id, ", ""), "schema.columns[0].name"),
        (
            ("name: counter_id", "name: counter_id, sensitivity: secret"),
            "schema.columns[0].sensitivity",
        ),
        (("name: counter_id", "name: counter_id, width: 3"), "schema.columns[0].width"),
        (
            (
                "  columns:\n    - {name: counter_id, type: string, nullable: false}\n",
                "  columns: {}\n",
            ),
            "schema.columns",
        ),
    ],
)
def test_a_malformed_value_names_its_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    old, new = change
    assert old in MINIMAL
    message = _error(tmp_path, MINIMAL.replace(old, new))
    assert f": {key}: " in message, message


def test_an_unquoted_territory_code_is_asked_to_be_quoted(tmp_path: Path) -> None:
    message = _error(
        tmp_path, MINIMAL.replace("licence: etalab-2.0", "licence: etalab-2.0\n  territory: [01]")
    )
    assert "quotes" in message


@pytest.mark.parametrize("missing", ["id", "metadata", "schema"])
def test_a_missing_top_level_key_is_named(tmp_path: Path, missing: str) -> None:
    lines = MINIMAL.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{missing}:"))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
    )
    message = _error(tmp_path, "".join(lines[:start] + lines[end:]))
    assert f": {missing}: is required" in message


def test_an_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    assert ": publisher: unknown key" in _error(tmp_path, MINIMAL + "publisher: lyon\n")


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    message = _error(
        tmp_path, MINIMAL.replace("themes: [TRAN]", "themes: [TRAN]\n  themes: [ENER]")
    )
    assert "themes" in message and "twice" in message


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    assert "not valid YAML" in _error(tmp_path, "id: [unclosed\n")


def test_a_file_that_is_not_a_mapping_is_reported(tmp_path: Path) -> None:
    assert "mapping" in _error(tmp_path, "- just\n- a list\n")


def test_a_missing_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nowhere\.yaml"):
        load_register_request(tmp_path / "nowhere.yaml")


def test_a_schema_file_needs_a_schema_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "columns:\n  - {name: x, type: string}\n")
    with pytest.raises(ValueError, match=r": schema: is required"):
        load_schema(path)


def test_a_schema_only_file_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "schema:\n  columns:\n    - {name: x, type: 'decimal(10,2)'}\n  key_columns: [x]\n",
    )
    schema = load_schema(path)
    assert [(c.name, c.type) for c in schema.columns] == [("x", "decimal(10,2)")]
    assert list(schema.key_columns) == ["x"]


def _with_column(tmp_path: Path, column: str) -> pb.Column:
    request = load_register_request(_write(tmp_path, MINIMAL + f"    - {column}\n"))
    return request.schema.columns[1]


def test_a_range_is_read_and_an_absent_bound_stays_unset(tmp_path: Path) -> None:
    level = _with_column(tmp_path, "{name: level, type: float32, minimum: 0, maximum: 1.5}")
    assert (level.minimum, level.maximum) == (0.0, 1.5)
    count = _with_column(tmp_path, "{name: count, type: int32, minimum: 0}")
    assert count.HasField("minimum") and not count.HasField("maximum")
    status = _with_column(tmp_path, "{name: status, type: string}")
    assert not status.HasField("minimum") and not status.HasField("maximum")


@pytest.mark.parametrize(
    ("written", "epoch_seconds"),
    [
        ("2015-01-01", 1_420_070_400),
        ("2015-01-01T00:00:00Z", 1_420_070_400),
        ("2015-01-01 01:00:00", 1_420_074_000),  # no zone: UTC
        ("2015-01-01T01:00:00+01:00", 1_420_070_400),
        ("'2015-01-01T00:00:00+00:00'", 1_420_070_400),  # ISO text, as a JSON file has it
        ("1420070400", 1_420_070_400),
    ],
)
def test_a_time_bound_may_be_written_as_a_date_or_timestamp(
    tmp_path: Path, written: str, epoch_seconds: int
) -> None:
    column = _with_column(tmp_path, f"{{name: seen, type: timestamp, minimum: {written}}}")
    assert column.minimum == epoch_seconds


def test_a_json_dataset_file_with_ranges_loads(tmp_path: Path) -> None:
    text = (
        '{"id": "metropole-lyon.bikes", "metadata": {"title": "Comptages", "themes": ["TRAN"], '
        '"licence": "etalab-2.0"}, "schema": {"columns": [{"name": "percent", "type": "float64", '
        '"minimum": 0, "maximum": 100}, {"name": "day", "type": "date", "minimum": "2015-01-01"}]}}'
    )
    columns = load_register_request(_write(tmp_path, text, "dataset.json")).schema.columns
    assert (columns[0].minimum, columns[0].maximum) == (0, 100)
    assert columns[1].minimum == 1_420_070_400


@pytest.mark.parametrize("bound", ["lots", "'1e3'", ".nan", ".inf", "true", "[0]"])
def test_a_malformed_bound_names_its_key(tmp_path: Path, bound: str) -> None:
    text = MINIMAL + f"    - {{name: level, type: float64, maximum: {bound}}}\n"
    assert ": schema.columns[1].maximum: " in _error(tmp_path, text)


def test_the_examples_declare_realistic_ranges() -> None:
    request = load_register_request(EXAMPLES / "waste-bin-fill-levels.yaml")
    columns = {c.name: c for c in request.schema.columns}
    assert (columns["filling_level"].minimum, columns["filling_level"].maximum) == (0, 1)
    assert columns["stored_waste_kind"].minimum == 1  # the length of the list
    bikes = {
        c.name: c for c in load_register_request(EXAMPLES / "bike-counters.yaml").schema.columns
    }
    assert bikes["intensity"].minimum == 0 and not bikes["intensity"].HasField("maximum")
