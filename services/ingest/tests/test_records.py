"""The record validator as the ingest worker sees it: which records become rows, which are
rejected, and what the reject says to the partner who sent them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from tdg_core.column_types import parse_type
from tdg_ingest.records import REASON_CODES, RecordValidator, Reject, Validated, _run
from tdg_ingest.schema import ColumnSpec, TableSchema


def column(
    name: str,
    type_: str,
    nullable: bool = True,
    minimum: float | None = None,
    maximum: float | None = None,
) -> ColumnSpec:
    return ColumnSpec(name, type_, parse_type(type_), nullable, minimum, maximum)


COUNTERS = TableSchema(
    "metropole-lyon.bike-counters",
    3,
    (
        column("counter_id", "string", nullable=False),
        column("observed_at", "timestamp", nullable=False),
        column("count", "int32"),
        column("total", "int64"),
        column("speed", "float64"),
        column("ratio", "float32"),
        column("open", "bool"),
        column("day", "date"),
        column("amount", "decimal(10,2)"),
        column("tags", "list<string>"),
        column("readings", "list<float64>"),
        column("windows", "list<list<int32>>"),
        column("seen", "list<timestamp>"),
    ),
    "observed_at",
)
VALIDATOR = RecordValidator(COUNTERS, max_record_bytes=4096)


def rec(**fields: Any) -> bytes:
    """A record of the counters dataset: the two required fields, plus `fields` (raw JSON text
    for values given as `Raw`)."""
    fields = {"counter_id": "X1", "observed_at": "2026-03-01T08:00:00Z", **fields}
    parts = [
        f"{json.dumps(k)}:{v.text if isinstance(v, Raw) else json.dumps(v)}"
        for k, v in fields.items()
        if not isinstance(v, Missing)
    ]
    return ("{" + ",".join(parts) + "}").encode()


class Raw:
    def __init__(self, text: str) -> None:
        self.text = text


class Missing:
    pass


def check(validated: Validated, n: int) -> None:
    """What holds for every batch: each record is a row or a reject, never both, in order."""
    assert validated.table.num_rows + len(validated.rejects) == n
    assert validated.table.schema == COUNTERS.arrow_schema()
    indexes = validated.indexes.to_pylist()
    assert indexes == sorted(indexes)
    rejected = [r.index for r in validated.rejects]
    assert rejected == sorted(set(rejected))
    assert sorted(indexes + rejected) == list(range(n))
    for r in validated.rejects:
        assert (r.category, r.code) in REASON_CODES


def reject_of(value: bytes) -> Reject:
    validated = VALIDATOR.validate([value])
    check(validated, 1)
    assert len(validated.rejects) == 1, validated.table.to_pylist()
    return validated.rejects[0]


def row_of(value: bytes) -> dict[str, Any]:
    validated = VALIDATOR.validate([value])
    check(validated, 1)
    assert not validated.rejects, validated.rejects
    row: dict[str, Any] = validated.table.to_pylist()[0]
    return row


# --- good records ------------------------------------------------------------------------------


def test_good_records_become_rows_of_the_storage_schema_in_utc_microseconds() -> None:
    row = row_of(
        rec(
            observed_at="2026-03-01T09:30:00.123456+01:00",
            count=12,
            total=2**40,
            speed=3,
            ratio=0.5,
            open=True,
            day="2024-02-29",
            amount=Raw("12.3"),
            tags=["a", None],
            readings=[1.5, 2],
            windows=[[1, 2], []],
            seen=["2026-03-01T00:00:00-02:00"],
        )
    )
    assert row["observed_at"] == datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
    assert row["count"] == 12 and row["total"] == 2**40
    assert row["speed"] == 3.0 and row["ratio"] == 0.5 and row["open"] is True
    assert row["day"] == date(2024, 2, 29)
    assert row["amount"] == Decimal("12.30")
    assert row["tags"] == ["a", None] and row["readings"] == [1.5, 2.0]
    assert row["windows"] == [[1, 2], []]
    assert row["seen"] == [datetime(2026, 3, 1, 2, 0, tzinfo=UTC)]
    assert not VALIDATOR.storage.field("counter_id").nullable


def test_missing_nullable_fields_are_null_as_for_records_older_than_a_new_column() -> None:
    evolved = TableSchema(
        COUNTERS.dataset_id, 4, (*COUNTERS.columns, column("lane", "string")), "observed_at"
    )
    validated = RecordValidator(evolved).validate([rec(count=1), rec(count=2, lane="north")])
    assert not validated.rejects
    assert validated.table.column("lane").to_pylist() == [None, "north"]
    assert validated.table.schema == evolved.arrow_schema()


def test_a_good_batch_is_read_without_parsing_any_record_in_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a good record went through Python's JSON parser")

    monkeypatch.setattr(json, "loads", forbidden)
    values = [rec(count=i, tags=["x"] * (i % 3)) for i in range(2000)]
    validated = VALIDATOR.validate(values)
    check(validated, len(values))
    assert validated.table.column("count").to_pylist() == list(range(2000))


@pytest.mark.parametrize(
    "value",
    [
        b'  {"counter_id":"X1","observed_at":"2026-03-01T08:00:00Z"}\r\n',
        b'{\n  "counter_id": "X1",\r\n  "observed_at": "2026-03-01T08:00:00Z"\n}',
        b'{"counter_id":"line\\nbreak","observed_at":"2026-03-01T08:00:00Z"}',
    ],
    ids=["surrounding-whitespace", "pretty-printed", "escaped-newline"],
)
def test_whitespace_and_line_breaks_around_values_are_accepted(value: bytes) -> None:
    assert row_of(value)["counter_id"] in ("X1", "line\nbreak")


def test_an_empty_batch_gives_an_empty_table() -> None:
    validated = VALIDATOR.validate([])
    check(validated, 0)


# --- format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code", "said"),
    [
        (b"", "empty", "empty"),
        (b" \t\r\n ", "empty", "whitespace"),
        (b'{"counter_id":"\xff"}', "invalid_utf8", "UTF-8"),
        (b"not json at all", "invalid_json", "not valid JSON"),
        (b'{"counter_id":"X1",}', "invalid_json", "not valid JSON"),
        (b'{"counter_id":"X1"', "truncated_json", "ends before"),
        (b'{"counter_id":"X1', "truncated_json", "ends before"),
        (b"[1, 2]", "not_object", "an array"),
        (b"42", "not_object", "a number"),
        (b"null", "not_object", "null"),
        (b'"text"', "not_object", "a string"),
        (rec() + rec(), "multiple_values", "more than one JSON value"),
        (rec() + b" null", "multiple_values", "more than one JSON value"),
        (rec() + b" garbage", "invalid_json", "unexpected data"),
        (b"\xef\xbb\xbf" + rec(), "invalid_json", "byte order mark"),
        (b'{"counter_id":"X1","counter_id":"X2"}', "duplicate_field", "'counter_id'"),
        (rec(tags=Raw("[" * 100 + "]" * 100)), "too_deep", "deeper than 64"),
        (rec(tags=Raw("[" * 100_000 + "]" * 100_000)), "too_deep", "deeper than 64"),
        (rec(zzz=Raw('{"a":' * 100_000 + "1" + "}" * 100_000)), "too_deep", "deeper"),
    ],
)
def test_malformed_messages_are_format_rejects(value: bytes, code: str, said: str) -> None:
    validator = RecordValidator(COUNTERS)  # the default size limit lets the deep ones in
    validated = validator.validate([value])
    check(validated, 1)
    [reject] = validated.rejects
    assert (reject.category, reject.code) == ("format", code)
    assert said in reject.message


def test_a_message_over_the_size_limit_is_rejected_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    big = rec(tags=["x" * 5000])
    monkeypatch.setattr(json, "loads", None)  # reading it would fail
    reject = reject_of(big)
    assert (reject.category, reject.code) == ("format", "too_large")
    assert str(len(big)) in reject.message and "4096" in reject.message


def test_a_null_message_between_good_ones_is_no_all_null_row() -> None:
    # pyarrow reads a `null` line as a row of nulls, and crashes on one that starts a block.
    loose = TableSchema("a.b", 1, (column("x", "string"),), "")
    validated = RecordValidator(loose).validate([b'{"x":"1"}', b"null", b"null", b'{"x":"2"}'])
    assert validated.table.column("x").to_pylist() == ["1", "2"]
    assert [(r.index, r.code) for r in validated.rejects] == [(1, "not_object"), (2, "not_object")]


# --- schema ------------------------------------------------------------------------------------


def test_an_unknown_field_names_the_field_the_schema_version_and_the_dataset() -> None:
    reject = reject_of(rec(lane="north"))
    assert (reject.category, reject.code) == ("schema", "unknown_field")
    assert "'lane'" in reject.message
    assert "version 3" in reject.message and "metropole-lyon.bike-counters" in reject.message


def test_an_unknown_field_sent_as_null_is_rejected_too() -> None:
    assert reject_of(rec(lane=None)).code == "unknown_field"


@pytest.mark.parametrize(
    ("value", "code", "said"),
    [
        (rec(counter_id=Missing()), "missing_field", "field 'counter_id' is required but missing"),
        (rec(observed_at=None), "null_field", "field 'observed_at' is required but null"),
    ],
)
def test_required_fields_must_be_present_and_not_null(value: bytes, code: str, said: str) -> None:
    reject = reject_of(value)
    assert (reject.category, reject.code, reject.message) == ("schema", code, said)


@pytest.mark.parametrize(
    ("field", "raw", "code", "said"),
    [
        ("count", '"twelve"', "wrong_type", "field 'count': expected int32, got \"twelve\""),
        ("count", "12.0", "wrong_type", "field 'count': expected int32, got 12.0"),
        ("count", "1e2", "wrong_type", "field 'count': expected int32, got 1e2"),
        ("count", "true", "wrong_type", "field 'count': expected int32, got true"),
        ("count", '"12"', "wrong_type", "field 'count': expected int32, got \"12\""),
        ("count", "[1]", "wrong_type", "field 'count': expected int32, got an array"),
        ("count", "3000000000", "out_of_range", "3000000000 is out of the int32 range"),
        ("total", "9223372036854775808", "out_of_range", "out of the int64 range"),
        ("total", "1" * 2000, "out_of_range", "out of the int64 range"),
        ("speed", "NaN", "not_finite", "field 'speed': expected a finite float64, got NaN"),
        ("speed", "Infinity", "not_finite", "got Infinity"),
        ("speed", "-Infinity", "not_finite", "got -Infinity"),
        ("speed", "1e400", "out_of_range", "out of the float64 range"),
        ("speed", '"1.5"', "wrong_type", 'expected float64, got "1.5"'),
        ("ratio", "1e39", "out_of_range", "out of the float32 range"),
        ("open", "1", "wrong_type", "field 'open': expected bool, got 1"),
        ("open", '"true"', "wrong_type", 'expected bool, got "true"'),
        ("counter_id", "123", "wrong_type", "field 'counter_id': expected string, got 123"),
        ("amount", "12.345", "invalid_decimal", "12.345 does not fit decimal(10,2)"),
        ("amount", "123456789.0", "invalid_decimal", "does not fit decimal(10,2)"),
        ("amount", '"abc"', "wrong_type", 'expected decimal(10,2), got "abc"'),
        ("tags", '["a", 1]', "wrong_type", "field 'tags[1]': expected string, got 1"),
        ("tags", '"a"', "wrong_type", "field 'tags': expected list<string>, got \"a\""),
        ("readings", "[1, NaN]", "not_finite", "field 'readings[1]'"),
        ("windows", "[[1], [2, 2.5]]", "wrong_type", "field 'windows[1][1]': expected int32"),
    ],
)
def test_values_of_the_wrong_type_name_the_field_and_show_the_value(
    field: str, raw: str, code: str, said: str
) -> None:
    reject = reject_of(rec(**{field: Raw(raw)}))
    assert (reject.category, reject.code) == ("schema", code)
    assert said in reject.message


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        ("-2147483648", True),
        ("2147483647", True),
        ("-2147483649", False),
        ("-0", True),
    ],
)
def test_int32_accepts_exactly_its_range(raw: str, accepted: bool) -> None:
    validated = VALIDATOR.validate([rec(count=Raw(raw))])
    assert (validated.table.num_rows == 1) is accepted


@pytest.mark.parametrize(
    ("raw", "amount"),
    [("12.34", "12.34"), ('"12.34"', "12.34"), ("12.340", "12.34"), ("1e2", "100.00")],
)
def test_decimals_are_numbers_or_strings_that_fit(raw: str, amount: str) -> None:
    assert row_of(rec(amount=Raw(raw)))["amount"] == Decimal(amount)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("2026-03-01T08:00:00", "naive_timestamp"),
        ("2026-03-01 08:00", "naive_timestamp"),
        ("2026-03-01", "naive_timestamp"),
        ("yesterday", "invalid_timestamp"),
        ("2026-02-30T08:00:00Z", "invalid_timestamp"),
        ("2026-03-01T25:00:00Z", "invalid_timestamp"),
        ("2026-03-01T08:00:00+24:00", "invalid_timestamp"),
        ("10000-01-01T00:00:00Z", "invalid_timestamp"),
        ("0000-06-01T00:00:00Z", "invalid_timestamp"),
        ("9999-12-31T23:00:00-02:00", "invalid_timestamp"),
    ],
)
def test_timestamps_need_a_zone_offset_and_a_real_instant_of_years_1_to_9999(
    text: str, code: str
) -> None:
    reject = reject_of(rec(observed_at=text))
    assert (reject.category, reject.code) == ("schema", code)
    assert "field 'observed_at'" in reject.message and json.dumps(text) in reject.message


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-03-01T08:00:00Z", datetime(2026, 3, 1, 8, tzinfo=UTC)),
        ("2026-03-01 09:00+01:00", datetime(2026, 3, 1, 8, tzinfo=UTC)),
        ("2026-03-01T07:00:00-0100", datetime(2026, 3, 1, 8, tzinfo=UTC)),
        ("2026-03-01T08Z", datetime(2026, 3, 1, 8, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_iso_8601_timestamps_with_an_offset_are_stored_in_utc(text: str, instant: datetime) -> None:
    assert row_of(rec(observed_at=text))["observed_at"] == instant


@pytest.mark.parametrize("text", ["2026-02-30", "2025-02-29", "2026-2-3", "0000-01-01", "tomorrow"])
def test_dates_must_be_real_yyyy_mm_dd_dates(text: str) -> None:
    reject = reject_of(rec(day=text))
    assert (reject.category, reject.code) == ("schema", "invalid_date")
    assert f"field 'day': expected a date YYYY-MM-DD, got {json.dumps(text)}" == reject.message


def test_a_huge_offending_value_is_cut_short_in_the_message() -> None:
    reject = reject_of(rec(count="x" * 3000))
    assert reject.code == "wrong_type" and len(reject.message) < 200
    assert reject.message.endswith("...")


# --- ranges ------------------------------------------------------------------------------------

RANGED = TableSchema(
    "a.ranged",
    1,
    (
        column("n", "int32", minimum=0, maximum=100),
        column("x", "float64", minimum=-1.5),
        column("code", "string", minimum=5, maximum=5),
        column("items", "list<int32>", maximum=2),
        column("day", "date", minimum=1767225600),  # 2026-01-01
        column("at", "timestamp", maximum=1767225600),  # 2026-01-01T00:00:00Z
    ),
    "at",
)


@pytest.mark.parametrize(
    ("fields", "code", "said"),
    [
        ({"n": -1}, "below_minimum", "field 'n': -1 is below the minimum 0"),
        ({"n": 101}, "above_maximum", "field 'n': 101 is above the maximum 100"),
        ({"x": -2}, "below_minimum", "field 'x': -2 is below the minimum -1.5"),
        ({"code": "6900"}, "below_minimum", "field 'code': length 4 is below the minimum 5"),
        ({"code": "690010"}, "above_maximum", "length 6 is above the maximum 5"),
        ({"items": [1, 2, 3]}, "above_maximum", "field 'items': 3 items is above the maximum 2"),
        ({"day": "2025-12-31"}, "below_minimum", '"2025-12-31" is below the minimum 2026-01-01'),
        ({"at": "2026-01-01T00:00:01Z"}, "above_maximum", "is above the maximum 2026-01-01"),
    ],
)
def test_values_outside_the_declared_range_are_rejected(
    fields: dict[str, Any], code: str, said: str
) -> None:
    good = {"n": 5, "x": 0.0, "code": "69001", "items": [], "day": "2026-06-01"}
    validator = RecordValidator(RANGED)
    values = [json.dumps({**good, **fields}).encode(), json.dumps(good).encode()]
    validated = validator.validate(values)
    assert validated.indexes.to_pylist() == [1]
    [reject] = validated.rejects
    assert (reject.index, reject.category, reject.code) == (0, "schema", code)
    assert said in reject.message


def test_values_on_the_bounds_are_accepted() -> None:
    bounds = {"n": 100, "x": -1.5, "code": "69001", "items": [1, 2], "at": "2026-01-01T00:00:00Z"}
    validated = RecordValidator(RANGED).validate([json.dumps(bounds).encode()])
    assert validated.table.num_rows == 1, validated.rejects


# --- batches -----------------------------------------------------------------------------------

BAD = [
    (b"", "empty"),
    (b"not json", "invalid_json"),
    (rec(count="twelve"), "wrong_type"),
    (rec(count=Raw("12.0")), "wrong_type"),
    (rec(amount=Raw("1.234")), "invalid_decimal"),
    (rec(lane="north"), "unknown_field"),
    (rec(lane=None), "unknown_field"),
    (rec(speed=Raw("NaN")), "not_finite"),
    (rec(observed_at="2026-03-01T08:00:00"), "naive_timestamp"),
    (rec(day="2026-02-30"), "invalid_date"),
    (rec(counter_id=Missing()), "missing_field"),
    (rec()[:-1], "truncated_json"),
    (rec() + rec(), "multiple_values"),
    (rec() + b"\n" + rec(), "multiple_values"),
    (rec(tags=Raw('["a", 1]')), "wrong_type"),
    (rec(windows=Raw("[[1], [2.5]]")), "wrong_type"),
    (rec(readings=Raw("[1, Infinity]")), "not_finite"),
    (b'{"counter_id":"\xc3\x28","observed_at":"2026-03-01T08:00:00Z"}', "invalid_utf8"),
    (rec(tags=Raw("[" * 70 + "]" * 70)), "too_deep"),
]


@pytest.mark.parametrize("spacing", [1, 7, 300])
def test_bad_records_are_isolated_and_the_good_ones_kept_in_order(spacing: int) -> None:
    values: list[bytes] = []
    expected: dict[int, str] = {}
    for k in range(3 * len(BAD) + 1):
        base = len(values)
        values.extend([rec(count=base + j) for j in range(spacing)])
        if k < 3 * len(BAD):
            expected[len(values)] = BAD[k % len(BAD)][1]
            values.append(BAD[k % len(BAD)][0])
    validated = VALIDATOR.validate(values)
    check(validated, len(values))
    assert {r.index: r.code for r in validated.rejects} == expected
    good = [i for i in range(len(values)) if i not in expected]
    assert validated.indexes.to_pylist() == good
    assert validated.table.column("count").to_pylist() == good


def test_a_new_field_in_half_the_records_rejects_exactly_those() -> None:
    values = [rec(count=i, **({"lane": "n"} if i % 2 else {})) for i in range(1000)]
    validated = VALIDATOR.validate(values)
    check(validated, len(values))
    assert {r.index for r in validated.rejects if r.code == "unknown_field"} == set(
        range(1, 1000, 2)
    )


def test_every_reject_code_is_documented() -> None:
    codes = {code for _, code in REASON_CODES}
    assert {code for _, code in BAD} <= codes
    assert all(category in ("format", "schema") for category, _ in REASON_CODES)
    assert all(code == code.lower() and " " not in code for code in codes)


def test_a_failure_of_the_validator_itself_still_accounts_for_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(_run.Run, "_screen", broken)
    validated = VALIDATOR.validate([rec(), rec()])
    check(validated, 2)
    assert [r.code for r in validated.rejects] == ["invalid_record"] * 2
