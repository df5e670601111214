"""`tdg access approve` options and conditions files → Conditions: syntax, errors, the merge."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.consent.v1 import consent_pb2 as pb
from tdg_cli.agreement_conditions import (
    ConditionOptions,
    build_conditions,
    load_conditions,
    mask_spec,
    parse_mask,
    parse_masks,
    parse_territory,
    parse_time,
    territory_spec,
)
from tdg_cli.vocabulary import OptionError
from tdg_cli.yaml_file import YamlFileError

JAN_1_2026 = 1767225600  # 2026-01-01T00:00:00Z


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conditions.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- mask specs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("age=clear", pb.ColumnMask(column="age", method=pb.MASK_METHOD_CLEAR)),
        ("name=null", pb.ColumnMask(column="name", method=pb.MASK_METHOD_NULL)),
        ("meter_id=hash", pb.ColumnMask(column="meter_id", method=pb.MASK_METHOD_HASH)),
        (" meter_id = HASH ", pb.ColumnMask(column="meter_id", method=pb.MASK_METHOD_HASH)),
        (
            "ts=truncate:day",
            pb.ColumnMask(
                column="ts",
                method=pb.MASK_METHOD_GENERALISE,
                generalisation=pb.Generalisation(truncate_to="day"),
            ),
        ),
        (
            "count=round:100",
            pb.ColumnMask(
                column="count",
                method=pb.MASK_METHOD_GENERALISE,
                generalisation=pb.Generalisation(round_to=100.0),
            ),
        ),
        (
            "kwh=round:0.5",
            pb.ColumnMask(
                column="kwh",
                method=pb.MASK_METHOD_GENERALISE,
                generalisation=pb.Generalisation(round_to=0.5),
            ),
        ),
        (
            "commune=epci",
            pb.ColumnMask(
                column="commune",
                method=pb.MASK_METHOD_GENERALISE,
                generalisation=pb.Generalisation(commune_to_epci=True),
            ),
        ),
    ],
)
def test_mask_specs(spec: str, expected: pb.ColumnMask) -> None:
    assert parse_mask(spec) == expected


@pytest.mark.parametrize("unit", ["hour", "day", "week", "month", "year"])
def test_every_truncation_unit(unit: str) -> None:
    assert parse_mask(f"ts=truncate:{unit}").generalisation.truncate_to == unit


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("ts", "is not COLUMN=METHOD"),
        ("=hash", "is not COLUMN=METHOD"),
        ("ts=", "is not COLUMN=METHOD"),
        ("ts=blur", "unknown method 'blur'"),
        ("ts=generalise", "unknown method 'generalise'"),
        ("ts=truncate", "truncate:UNIT"),
        ("ts=truncate:", "truncate:UNIT"),
        ("ts=truncate:fortnight", "truncate:UNIT"),
        ("count=round", "round:STEP"),
        ("count=round:0", "round:STEP"),
        ("count=round:-5", "round:STEP"),
        ("count=round:ten", "round:STEP"),
        ("count=round:inf", "round:STEP"),
        ("count=round:nan", "round:STEP"),
        ("id=hash:sha1", "hash takes no argument"),
        ("id=hash:", "hash takes no argument"),
        ("commune=epci:2024", "epci takes no argument"),
    ],
)
def test_malformed_mask_specs_name_the_option_and_the_spec(spec: str, says: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_mask(spec)
    assert info.value.option == "--mask"
    assert says in str(info.value)
    assert repr(spec) in str(info.value)


def test_a_column_masked_twice_is_an_error() -> None:
    with pytest.raises(OptionError, match="'ts' is masked twice"):
        parse_masks(["ts=hash", "ts=truncate:day"])


@pytest.mark.parametrize(
    "spec", ["clear", "null", "hash", "truncate:week", "round:100", "round:0.25", "epci"]
)
def test_mask_spec_is_the_inverse_of_parse_mask(spec: str) -> None:
    assert mask_spec(parse_mask(f"col={spec}")) == spec


# --- territory ---------------------------------------------------------------------------------


def test_territory_spec() -> None:
    territory = parse_territory("commune=69123, 69266,69123")
    assert territory == pb.TerritoryFilter(column="commune", codes=["69123", "69266"])
    assert territory_spec(territory) == "commune=69123,69266"
    # Corsican codes keep their letters and leading zeros stay: codes are text.
    assert list(parse_territory("insee=2A004,01053").codes) == ["2A004", "01053"]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("commune", "is not COLUMN=CODE,CODE"),
        ("=69123", "is not COLUMN=CODE,CODE"),
        ("commune=", "is not COLUMN=CODE,CODE"),
        ("commune=69123,,69266", "an empty code"),
        ("commune=69123,", "an empty code"),
    ],
)
def test_malformed_territory_specs(spec: str, says: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_territory(spec)
    assert info.value.option == "--territory"
    assert says in str(info.value)


# --- times -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-01-01", JAN_1_2026),
        ("2026-01-01T00:00:00", JAN_1_2026),
        ("2026-01-01T00:00:00Z", JAN_1_2026),
        ("2026-01-01T01:00:00+01:00", JAN_1_2026),
        ("2026-01-01T08:30", JAN_1_2026 + 8 * 3600 + 30 * 60),
    ],
)
def test_times_are_utc_unless_they_carry_an_offset(text: str, seconds: int) -> None:
    assert parse_time(text, "--valid-from") == _ts(seconds)


def test_a_malformed_time_names_the_option() -> None:
    with pytest.raises(OptionError) as info:
        parse_time("01/02/2026", "--valid-until")
    assert info.value.option == "--valid-until"
    assert "ISO 8601" in str(info.value)


# --- conditions file ---------------------------------------------------------------------------

FULL = """\
columns: [counter_id, commune, count, ts]
masks:
  - {column: counter_id, method: hash}
  - {column: ts, method: generalise, generalisation: {truncate_to: day}}
  - {column: commune, method: generalise, generalisation: {commune_to_epci: true}}
  - count=round:10
territory_filter: {column: commune, codes: ["69123", "69266"]}
aggregate_only: true
min_group_size: 20
valid_from: 2026-01-01
valid_until: 2026-12-31T23:00:00+01:00
commitments: {max_freshness_lag_s: 300, completeness_pct: 95, validity_rate_pct: 99.5}
"""


def test_a_full_conditions_file(tmp_path: Path) -> None:
    c = load_conditions(_write(tmp_path, FULL))
    assert list(c.columns) == ["counter_id", "commune", "count", "ts"]
    assert [f"{m.column}={mask_spec(m)}" for m in c.masks] == [
        "counter_id=hash",
        "ts=truncate:day",
        "commune=epci",
        "count=round:10",
    ]
    assert c.territory_filter == pb.TerritoryFilter(column="commune", codes=["69123", "69266"])
    assert (c.aggregate_only, c.min_group_size) == (True, 20)
    assert c.valid_from == _ts(JAN_1_2026)
    assert c.valid_until == _ts(JAN_1_2026 + 364 * 86400 + 22 * 3600)
    assert c.commitments == pb.DeliveryCommitments(
        max_freshness_lag_s=300, completeness_pct=95.0, validity_rate_pct=99.5
    )


def test_an_empty_file_is_empty_conditions(tmp_path: Path) -> None:
    assert load_conditions(_write(tmp_path, "")) == pb.Conditions()
    assert load_conditions(_write(tmp_path, "territory_filter: null\n")) == pb.Conditions()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colums: [a]\n", "colums: unknown key"),
        ("columns: a\n", "columns: must be a list"),
        ("masks: {a: hash}\n", "masks: must be a list"),
        ("masks: [{column: a}]\n", "masks[0].method: is required"),
        ("masks: [{column: a, method: blur}]\n", "masks[0].method: unknown value 'blur'"),
        ("masks: [{column: a, method: generalise}]\n", "masks[0].generalisation: is required"),
        (
            "masks: [{column: a, method: hash, generalisation: {round_to: 5}}]\n",
            "masks[0].generalisation: only with method: generalise",
        ),
        (
            "masks: [{column: a, method: generalise, generalisation: {round_to: 5, "
            "truncate_to: day}}]\n",
            "needs exactly one of",
        ),
        (
            "masks: [{column: a, method: generalise, generalisation: {truncate_to: decade}}]\n",
            "masks[0].generalisation.truncate_to: one of hour",
        ),
        (
            "masks: [{column: a, method: generalise, generalisation: {round_to: 0}}]\n",
            "round_to: a step greater than 0",
        ),
        (
            "masks: [{column: a, method: generalise, generalisation: {commune_to_epci: false}}]\n",
            "commune_to_epci: must be true",
        ),
        ("masks: [a=hash, a=null]\n", "masks: column 'a' is masked twice"),
        ("masks: [a=blur]\n", "masks[0]: 'a=blur': unknown method"),
        ("territory_filter: {column: commune, codes: [69123]}\n", "put it in quotes"),
        ("aggregate_only: yes please\n", "aggregate_only: must be true or false"),
        ("min_group_size: 2.5\n", "min_group_size: must be a whole number"),
        ("valid_from: next monday\n", "valid_from: 'next monday' is not an ISO 8601"),
        ("commitments: {completeness_pct: lots}\n", "completeness_pct: must be a number"),
        ("columns: [a]\ncolumns: [b]\n", "written twice"),
        ("columns: [a\n", "not valid YAML"),
    ],
)
def test_a_malformed_file_names_the_file_and_the_key(tmp_path: Path, text: str, says: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(YamlFileError) as info:
        load_conditions(path)
    assert str(path) in str(info.value)
    assert says in str(info.value)


# --- options over the file ---------------------------------------------------------------------


def test_options_alone() -> None:
    c = build_conditions(
        ConditionOptions(
            columns=("a", "b"),
            masks=("a=hash",),
            territory="commune=69123",
            aggregate_only=True,
            min_group_size=15,
            valid_from="2026-01-01",
            max_freshness_lag_s=60,
        )
    )
    assert list(c.columns) == ["a", "b"]
    assert [m.column for m in c.masks] == ["a"]
    assert c.territory_filter.codes == ["69123"]
    assert (c.aggregate_only, c.min_group_size) == (True, 15)
    assert c.valid_from == _ts(JAN_1_2026)
    assert not c.HasField("valid_until")
    assert c.commitments.max_freshness_lag_s == 60


def test_no_options_and_no_file_is_empty_conditions() -> None:
    assert build_conditions(ConditionOptions()) == pb.Conditions()


def test_the_options_override_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)
    c = build_conditions(
        ConditionOptions(
            columns=("counter_id", "count"),
            masks=("ts=truncate:month", "lane=null"),
            territory="commune=69381",
            aggregate_only=False,
            min_group_size=0,
            valid_until="2027-01-01",
            completeness_pct=90.0,
        ),
        path,
    )
    assert list(c.columns) == ["counter_id", "count"]  # replaced
    # Masks merge by column: ts replaced in place, lane added, the others kept.
    assert [f"{m.column}={mask_spec(m)}" for m in c.masks] == [
        "counter_id=hash",
        "ts=truncate:month",
        "commune=epci",
        "count=round:10",
        "lane=null",
    ]
    assert c.territory_filter == pb.TerritoryFilter(column="commune", codes=["69381"])
    assert (c.aggregate_only, c.min_group_size) == (False, 0)  # a flag can turn the file's off
    assert c.valid_from == _ts(JAN_1_2026)  # kept
    assert c.valid_until == _ts(JAN_1_2026 + 365 * 86400)
    assert c.commitments == pb.DeliveryCommitments(
        max_freshness_lag_s=300, completeness_pct=90.0, validity_rate_pct=99.5
    )


def test_options_not_given_keep_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)
    assert build_conditions(ConditionOptions(), path) == load_conditions(path)


def test_a_bad_option_is_reported_before_the_file_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(OptionError) as info:
        build_conditions(ConditionOptions(masks=("ts=blur",)), missing)
    assert info.value.option == "--mask"


def test_a_bad_file_is_an_error_of_the_conditions_option(tmp_path: Path) -> None:
    path = _write(tmp_path, "colums: [a]\n")
    with pytest.raises(OptionError) as info:
        build_conditions(ConditionOptions(), path)
    assert info.value.option == "--conditions"
    assert "colums: unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        (ConditionOptions(masks=("a=hash", "a=null")), "--mask"),
        (ConditionOptions(territory="commune"), "--territory"),
        (ConditionOptions(valid_from="soon"), "--valid-from"),
        (ConditionOptions(valid_until="2026-13-01"), "--valid-until"),
    ],
)
def test_each_option_error_names_its_option(options: ConditionOptions, option: str) -> None:
    with pytest.raises(OptionError) as info:
        build_conditions(options)
    assert info.value.option == option
