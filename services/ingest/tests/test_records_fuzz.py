"""Property tests of the record validator: whatever bytes partners send, validation never fails,
every record is either a row or a reject, and every valid record arrives with its values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tdg_core.column_types import parse_type
from tdg_ingest.records import MAX_DEPTH, REASON_CODES, RecordValidator
from tdg_ingest.schema import ColumnSpec, TableSchema


def column(name: str, type_: str, nullable: bool = True, **bounds: float) -> ColumnSpec:
    return ColumnSpec(name, type_, parse_type(type_), nullable, **bounds)


ALL_TYPES = TableSchema(
    "fuzz.all-types",
    2,
    (
        column("id", "string", nullable=False),
        column("at", "timestamp", nullable=False),
        column("n32", "int32"),
        column("n64", "int64"),
        column("f64", "float64"),
        column("f32", "float32"),
        column("flag", "bool"),
        column("day", "date"),
        column("amount", "decimal(12,3)"),
        column("tags", "list<string>"),
        column("grid", "list<list<int64>>"),
        column("times", "list<timestamp>"),
        column("level", "int32", minimum=0, maximum=10),
        column("code", "string", minimum=1, maximum=8),
    ),
    "at",
)
LIMIT = 4000
VALIDATOR = RecordValidator(ALL_TYPES, max_record_bytes=LIMIT)
FUZZ = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass(frozen=True)
class Valid:
    row: dict[str, Any]  # what the table must hold for it


@dataclass(frozen=True)
class Invalid:
    category: str | None  # the reject's category, when the strategy knows it


@dataclass(frozen=True)
class Case:
    value: bytes
    expect: Valid | Invalid | None  # None: anything goes, as long as it is accounted for


# --- valid values: (JSON text, the value the table holds) ---------------------------------------

OFFSETS = st.sampled_from(
    [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30))]
)
INSTANTS = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=OFFSETS
)


def _instant(moment: datetime, zulu: bool) -> tuple[str, datetime]:
    text = moment.isoformat()
    return json.dumps(text.replace("+00:00", "Z") if zulu else text), moment.astimezone(UTC)


TIMESTAMPS = st.builds(_instant, INSTANTS, st.booleans())
INT64S = st.integers(-(2**63), 2**63 - 1)
DECIMALS = st.decimals(
    min_value=Decimal("-999999999.999"), max_value=Decimal("999999999.999"), places=3
)


def _json(value: Any) -> tuple[str, Any]:
    return json.dumps(value), value


def _decimal(number: Decimal, quoted: bool) -> tuple[str, Decimal]:
    return (json.dumps(str(number)) if quoted else str(number)), number


def _list(items: list[tuple[str, Any] | None]) -> tuple[str, list[Any]]:
    texts = ["null" if item is None else item[0] for item in items]
    return "[" + ", ".join(texts) + "]", [None if item is None else item[1] for item in items]


def _nullable(values: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


VALUES: dict[str, st.SearchStrategy[tuple[str, Any]]] = {
    "id": st.text(max_size=20).map(_json),
    "at": TIMESTAMPS,
    "n32": st.integers(-(2**31), 2**31 - 1).map(_json),
    "n64": INT64S.map(_json),
    "f64": st.floats(allow_nan=False, allow_infinity=False).map(_json),
    "f32": st.floats(width=32, allow_nan=False, allow_infinity=False).map(_json),
    "flag": st.booleans().map(_json),
    "day": st.dates().map(lambda d: (json.dumps(d.isoformat()), d)),
    "amount": st.builds(_decimal, DECIMALS, st.booleans()),
    "tags": st.lists(_nullable(st.text(max_size=5).map(_json)), max_size=4).map(_list),
    "grid": st.lists(
        _nullable(st.lists(_nullable(INT64S.map(_json)), max_size=3).map(_list)), max_size=3
    ).map(_list),
    "times": st.lists(_nullable(TIMESTAMPS), max_size=3).map(_list),
    "level": st.integers(0, 10).map(_json),
    "code": st.text(min_size=1, max_size=8).map(_json),
}
REQUIRED = {c.name for c in ALL_TYPES.columns if not c.nullable}

# Values no column of the type takes, with the category of the reject.
WRONG: dict[str, list[str]] = {
    "id": ["1", "true", "[]", "{}"],
    "at": [
        '"2026-01-01T00:00:00"',
        '"10000-01-01T00:00:00Z"',
        '"0000-01-01T00:00:00Z"',
        '"9999-12-31T23:59:59-01:00"',
        '"0001-01-01T00:00:00+01:00"',
        '"2026-01-01T25:00Z"',
        "1234",
    ],
    "n32": ['"1"', "1.5", "1.0", "true", "2147483648", "[1]"],
    "n64": ["9223372036854775808", "1e3", '"7"'],
    "f64": ['"1.5"', "true", "NaN", "Infinity", "-Infinity", "1e999"],
    "f32": ["1e39", "NaN"],
    "flag": ["1", '"true"'],
    "day": ['"2026-02-30"', '"2026-1-1"', '"0000-01-01"', "20260101"],
    "amount": ["1.2345", "1e10", '"x"', "true"],
    "tags": ['"a"', "[1]", "[[]]"],
    "grid": ["[[1.5]]", "[1]", '[["1"]]'],
    "times": ['["2026-01-01T00:00:00"]', '["x"]'],
    "level": ["-1", "11"],
    "code": ['""', '"123456789"'],
}


def _text(fields: dict[str, str], spacing: str) -> bytes:
    return ("{" + spacing.join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}").encode()


SPACING = st.sampled_from([",", ", ", ",\n  ", ",\r\n"])


@st.composite
def valid_records(draw: st.DrawFn) -> Case:
    texts, row = {}, {}
    for spec in ALL_TYPES.columns:
        presence = (
            "value" if spec.name in REQUIRED else draw(st.sampled_from(["value", "null", "absent"]))
        )
        if presence == "value":
            texts[spec.name], row[spec.name] = draw(VALUES[spec.name])
        else:
            row[spec.name] = None
            if presence == "null":
                texts[spec.name] = "null"
    order = draw(st.permutations(list(texts)))
    value = _text({k: texts[k] for k in order}, draw(SPACING))
    return Case(value, Valid(row) if len(value) <= LIMIT else Invalid("format"))


@st.composite
def wrong_types(draw: st.DrawFn) -> Case:
    case = draw(valid_records())
    fields = json.loads(case.value)
    name = draw(st.sampled_from(sorted(WRONG)))
    texts = {k: json.dumps(v) for k, v in fields.items() if k not in ("amount", "at")}
    texts["at"] = json.dumps(fields["at"])
    texts[name] = draw(st.sampled_from(WRONG[name]))
    value = _text(texts, ",")
    return Case(value, Invalid("schema" if len(value) <= LIMIT else "format"))


@st.composite
def unknown_fields(draw: st.DrawFn) -> Case:
    case = draw(valid_records())
    extra = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in VALUES))
    value = draw(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=6,
        )
    )
    text = case.value[:-1] + b"," + json.dumps({extra: value})[1:].encode()
    return Case(text, Invalid("schema" if len(text) <= LIMIT else "format"))


@st.composite
def truncated(draw: st.DrawFn) -> Case:
    value = draw(valid_records()).value.rstrip()
    cut = draw(st.integers(1, len(value) - 1))
    return Case(value[:cut], Invalid("format"))


@st.composite
def deep(draw: st.DrawFn) -> Case:
    depth = draw(st.integers(3, 20_000))  # [[[]]] fits no column
    name = draw(st.sampled_from(["tags", "grid", "id", "zzz"]))
    nested = "[" * depth + "]" * depth
    value = _text({"id": '"x"', "at": '"2026-01-01T00:00:00Z"', name: nested}, ",")
    # Too large, or deeper than MAX_DEPTH with the object around it: a format reject.
    return Case(value, Invalid("format" if depth >= MAX_DEPTH else "schema"))


@st.composite
def huge_strings(draw: st.DrawFn) -> Case:
    size = draw(st.integers(LIMIT - 200, LIMIT + 200))
    name = json.dumps("é" * (size // 2), ensure_ascii=False)
    value = _text({"id": name, "at": '"2026-01-01T00:00:00Z"'}, ",")
    if len(value) > LIMIT:
        return Case(value, Invalid("format"))
    row: dict[str, Any] = {c.name: None for c in ALL_TYPES.columns}
    row.update(id="é" * (size // 2), at=datetime(2026, 1, 1, tzinfo=UTC))
    return Case(value, Valid(row))


@st.composite
def non_finite(draw: st.DrawFn) -> Case:
    case = draw(valid_records())
    token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
    name, text = draw(st.sampled_from([("f64", token), ("f32", token), ("n32", token)]))
    value = case.value[:-1] + f',"{name}":{text}}}'.encode()
    if f'"{name}"'.encode() in case.value:  # the field twice: also a format reject
        return Case(value, Invalid(None))
    return Case(value, Invalid("schema" if len(value) <= LIMIT else "format"))


EPOCH_1 = datetime(1, 1, 1)
LAST = (datetime(9999, 12, 31, 23, 59, 59) - EPOCH_1).total_seconds()


@st.composite
def edge_instants(draw: st.DrawFn) -> Case:
    """Timestamps near the ends of years 1-9999, whose offset may carry them out of range."""
    year = draw(st.sampled_from([0, 1, 2, 9998, 9999, 10000]))
    month, day = draw(st.sampled_from([(1, 1), (12, 31), (6, 15)]))
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    sign, off_h, off_m = (
        draw(st.sampled_from([1, -1])),
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
    )
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00"
    text += f"{'+' if sign > 0 else '-'}{off_h:02d}:{off_m:02d}"
    value = _text({"id": '"x"', "at": json.dumps(text)}, ",")
    if not 1 <= year <= 9999:
        return Case(value, Invalid("schema"))
    local = (datetime(year, month, day, hour, minute) - EPOCH_1).total_seconds()
    seconds = local - sign * (off_h * 3600 + off_m * 60)
    if not 0 <= seconds <= LAST:
        return Case(value, Invalid("schema"))
    row: dict[str, Any] = {c.name: None for c in ALL_TYPES.columns}
    row.update(id="x", at=(EPOCH_1 + timedelta(seconds=seconds)).replace(tzinfo=UTC))
    return Case(value, Valid(row))


RANDOM_BYTES = st.binary(max_size=80).map(lambda b: Case(b, None))
STRUCTURED_NOISE = st.lists(
    st.sampled_from([b"{", b"}", b"[", b"]", b'"id"', b'"at"', b":", b",", b"null", b"1", b"\n"]),
    max_size=12,
).map(lambda parts: Case(b"".join(parts), None))
INVALID = st.one_of(
    wrong_types(), unknown_fields(), truncated(), deep(), huge_strings(), non_finite()
)
ANY_CASE = st.one_of(
    valid_records(),
    edge_instants(),
    non_finite(),
    wrong_types(),
    unknown_fields(),
    truncated(),
    deep(),
    huge_strings(),
    RANDOM_BYTES,
    STRUCTURED_NOISE,
)


def assert_sound(cases: list[Case]) -> None:
    values = [c.value for c in cases]
    validated = VALIDATOR.validate(values)
    table, rejects = validated.table, validated.rejects
    assert table.num_rows + len(rejects) == len(values)
    assert table.schema == ALL_TYPES.arrow_schema()
    assert [f.nullable for f in table.schema] == [c.nullable for c in ALL_TYPES.columns]
    table.validate(full=True)
    indexes = validated.indexes.to_pylist()
    rejected = {r.index: r for r in rejects}
    assert len(rejected) == len(rejects)
    assert [r.index for r in rejects] == sorted(rejected)
    assert sorted(indexes + list(rejected)) == list(range(len(values)))
    assert all((r.category, r.code) in REASON_CODES and r.message for r in rejects)
    rows = dict(zip(indexes, table.to_pylist(), strict=True))
    for i, case in enumerate(cases):
        if isinstance(case.expect, Valid):
            assert i in rows, (case.value, rejected.get(i))
            assert rows[i] == case.expect.row, case.value
        elif isinstance(case.expect, Invalid):
            assert i in rejected, case.value
            if case.expect.category is not None:
                assert rejected[i].category == case.expect.category, (case.value, rejected[i])


@FUZZ
@given(st.lists(valid_records(), min_size=1, max_size=20))
def test_valid_records_all_arrive_with_their_values(cases: list[Case]) -> None:
    assert_sound(cases)


@FUZZ
@given(st.lists(ANY_CASE, max_size=20))
def test_any_mix_of_records_is_accounted_for_exactly(cases: list[Case]) -> None:
    assert_sound(cases)


@FUZZ
@given(INVALID)
def test_each_invalid_record_is_rejected_with_its_category_alone(case: Case) -> None:
    assert_sound([case])


@FUZZ
@given(st.lists(edge_instants(), min_size=1, max_size=10))
def test_instants_are_kept_exactly_when_they_fall_in_years_1_to_9999_in_utc(
    cases: list[Case],
) -> None:
    assert_sound(cases)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(ANY_CASE, min_size=1, max_size=8),
    st.lists(valid_records(), min_size=1, max_size=4),
    st.randoms(use_true_random=False),
)
def test_large_batches_sweep_bad_records_out_of_many_good_ones(
    bad: list[Case], good: list[Case], random: Any
) -> None:
    cases = [random.choice(good) for _ in range(random.randint(300, 900))]
    for case in bad:
        cases.insert(random.randint(0, len(cases)), case)
    assert_sound(cases)


def test_dates_of_every_year_round_trip() -> None:
    cases = [
        Case(
            _text({"id": '"x"', "at": '"2026-01-01T00:00:00Z"', "day": f'"{year:04d}-02-28"'}, ","),
            None,
        )
        for year in range(1, 10000, 37)
    ]
    assert_sound(cases)
    days = VALIDATOR.validate([c.value for c in cases]).table.column("day").to_pylist()
    assert days == [date(year, 2, 28) for year in range(1, 10000, 37)]
