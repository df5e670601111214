"""`tdg query --where`: the filter language parsed into the structured Expression (never sent as
text): every condition, typed literals, precedence (NOT over AND over OR), nesting, and errors
that say what was expected at which column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import text_format
from tdg.query.v1 import query_pb2 as pb
from tdg_cli.query_where import MAX_DEPTH, WhereError, parse_where
from tdg_cli.vocabulary import OptionError


def _text(expr: pb.Expression) -> str:
    return text_format.MessageToString(expr, as_one_line=True)


def _cmp(column: str, op: int, **value: object) -> pb.Expression:
    return pb.Expression(
        comparison=pb.Comparison(column=column, op=op, value=pb.Literal(**value))  # type: ignore[arg-type]
    )


def _junction(kind: str, *operands: pb.Expression) -> pb.Expression:
    expr = pb.Expression()
    getattr(expr, kind).operands.extend(operands)
    return expr


def _not(inner: pb.Expression) -> pb.Expression:
    expr = pb.Expression()
    getattr(expr, "not").CopyFrom(inner)
    return expr


def _lit(expr: pb.Expression) -> pb.Literal:
    assert expr.WhichOneof("kind") == "comparison"
    return expr.comparison.value


A1 = _cmp("a", pb.COMPARISON_OPERATOR_EQ, int_value=1)
B2 = _cmp("b", pb.COMPARISON_OPERATOR_EQ, int_value=2)
C3 = _cmp("c", pb.COMPARISON_OPERATOR_EQ, int_value=3)


# --- conditions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("=", pb.COMPARISON_OPERATOR_EQ),
        ("!=", pb.COMPARISON_OPERATOR_NE),
        ("<>", pb.COMPARISON_OPERATOR_NE),
        ("<", pb.COMPARISON_OPERATOR_LT),
        ("<=", pb.COMPARISON_OPERATOR_LE),
        (">", pb.COMPARISON_OPERATOR_GT),
        (">=", pb.COMPARISON_OPERATOR_GE),
    ],
)
def test_each_comparison_operator(op: str, expected: int) -> None:
    for text in (f"count {op} 3", f"count{op}3", f"  count  {op}  3  "):
        assert parse_where(text) == _cmp("count", expected, int_value=3)


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("'c1'", pb.Literal(string_value="c1")),
        ("'it''s'", pb.Literal(string_value="it's")),
        ("''", pb.Literal(string_value="")),
        ("'Saint-Étienne, \"centre\"'", pb.Literal(string_value='Saint-Étienne, "centre"')),
        ("'AND OR ( )'", pb.Literal(string_value="AND OR ( )")),
        ("12", pb.Literal(int_value=12)),
        ("-3", pb.Literal(int_value=-3)),
        ("+7", pb.Literal(int_value=7)),
        ("0", pb.Literal(int_value=0)),
        ("9223372036854775807", pb.Literal(int_value=2**63 - 1)),
        ("-9223372036854775808", pb.Literal(int_value=-(2**63))),
        ("1.5", pb.Literal(double_value=1.5)),
        ("-0.25", pb.Literal(double_value=-0.25)),
        (".5", pb.Literal(double_value=0.5)),
        ("3.", pb.Literal(double_value=3.0)),
        ("2e3", pb.Literal(double_value=2000.0)),
        ("1.5E-2", pb.Literal(double_value=0.015)),
        ("true", pb.Literal(bool_value=True)),
        ("FALSE", pb.Literal(bool_value=False)),
        ("date '2026-01-31'", pb.Literal(date_value="2026-01-31")),
        ("DATE '2024-02-29'", pb.Literal(date_value="2024-02-29")),
        ("decimal '12.50'", pb.Literal(decimal_value="12.50")),
        ("decimal '-3'", pb.Literal(decimal_value="-3")),
    ],
)
def test_literals_are_typed(text: str, literal: pb.Literal) -> None:
    assert _lit(parse_where(f"x = {text}")) == literal


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T08:30:00+02:00", datetime(2026, 1, 1, 6, 30, tzinfo=UTC)),
        ("2026-01-01 08:30:00.250", datetime(2026, 1, 1, 8, 30, 0, 250_000, tzinfo=UTC)),
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_timestamps_are_instants_utc_unless_an_offset(text: str, moment: datetime) -> None:
    literal = _lit(parse_where(f"ts >= timestamp '{text}'"))
    assert literal.WhichOneof("value") == "timestamp_value"
    assert literal.timestamp_value.ToDatetime(tzinfo=UTC) == moment
    other_zone = timezone(timedelta(hours=-5))
    assert literal.timestamp_value.ToDatetime(tzinfo=other_zone) == moment


def test_in_and_not_in() -> None:
    expr = parse_where("counter_id IN ('c1', 'c2', 3, 4.5, true)")
    assert expr == pb.Expression(
        in_list=pb.InList(
            column="counter_id",
            values=[
                pb.Literal(string_value="c1"),
                pb.Literal(string_value="c2"),
                pb.Literal(int_value=3),
                pb.Literal(double_value=4.5),
                pb.Literal(bool_value=True),
            ],
        )
    )
    negated = parse_where("counter_id not in ('c9')")
    assert negated == pb.Expression(
        in_list=pb.InList(column="counter_id", values=[pb.Literal(string_value="c9")], negated=True)
    )


def test_between_and_not_between() -> None:
    between = pb.Expression(
        between=pb.Between(
            column="count", low=pb.Literal(int_value=1), high=pb.Literal(double_value=5.5)
        )
    )
    assert parse_where("count BETWEEN 1 AND 5.5") == between
    assert parse_where("count NOT BETWEEN 1 AND 5.5") == _not(between)
    days = parse_where("day between date '2026-01-01' and date '2026-01-31'")
    assert days.between.low.date_value == "2026-01-01"
    assert days.between.high.date_value == "2026-01-31"


def test_the_and_of_between_is_not_a_junction() -> None:
    between = parse_where("count BETWEEN 1 AND 5").between
    assert parse_where("count BETWEEN 1 AND 5 AND b = 2") == _junction(
        "and", pb.Expression(between=between), B2
    )
    assert parse_where("b = 2 OR count BETWEEN 1 AND 5") == _junction(
        "or", B2, pb.Expression(between=between)
    )


def test_is_null_and_is_not_null() -> None:
    assert parse_where("note IS NULL") == pb.Expression(is_null=pb.IsNull(column="note"))
    assert parse_where("note is not null") == pb.Expression(
        is_null=pb.IsNull(column="note", negated=True)
    )


# --- junctions, precedence, NOT ---------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    assert parse_where("a = 1 OR b = 2 AND c = 3") == _junction("or", A1, _junction("and", B2, C3))
    assert parse_where("a = 1 AND b = 2 OR c = 3") == _junction("or", _junction("and", A1, B2), C3)
    assert parse_where("(a = 1 OR b = 2) AND c = 3") == _junction(
        "and", _junction("or", A1, B2), C3
    )


def test_a_chain_of_one_junction_is_one_junction() -> None:
    assert parse_where("a = 1 AND b = 2 AND c = 3") == _junction("and", A1, B2, C3)
    assert parse_where("a = 1 or b = 2 Or c = 3") == _junction("or", A1, B2, C3)


def test_not_binds_tighter_than_and() -> None:
    assert parse_where("NOT a = 1 AND b = 2") == _junction("and", _not(A1), B2)
    assert parse_where("NOT (a = 1 AND b = 2)") == _not(_junction("and", A1, B2))
    assert parse_where("not not a = 1") == _not(_not(A1))
    assert parse_where("a = 1 OR NOT b = 2") == _junction("or", A1, _not(B2))


def test_parentheses_change_nothing_around_one_condition() -> None:
    assert parse_where("(((a = 1)))") == A1
    assert parse_where("((a = 1) AND (b = 2))") == _junction("and", A1, B2)


def test_keywords_are_case_insensitive_and_columns_may_bear_soft_keywords() -> None:
    assert parse_where("a IS NOT NULL And b In (1) oR NOT c bEtWeEn 1 AnD 2") == parse_where(
        "a is not null and b in (1) or not c between 1 and 2"
    )
    # timestamp, date and decimal are keywords only before a quoted string.
    expr = parse_where("timestamp > timestamp '2026-01-01T00:00:00Z' AND date = date '2026-01-01'")
    assert [e.comparison.column for e in getattr(expr, "and").operands] == ["timestamp", "date"]
    # A column named like a reserved word is written in double quotes.
    assert parse_where('"not" = 1').comparison.column == "not"


def test_deep_nesting_up_to_the_limit_and_through_protobuf() -> None:
    # The worst case for protobuf's depth: each level a junction inside parentheses.
    text = "a = 1"
    for _ in range(MAX_DEPTH):
        text = f"(b = 2 OR {text})"
    expr = parse_where(text)
    assert pb.Expression.FromString(expr.SerializeToString()) == expr
    depth, node = 0, expr
    while node.WhichOneof("kind") == "or":
        depth += 1
        node = getattr(node, "or").operands[1]
    assert depth == MAX_DEPTH
    assert node == A1
    nots = "NOT " * MAX_DEPTH + "a = 1"
    assert pb.Expression.FromString(parse_where(nots).SerializeToString()) == parse_where(nots)


def test_nesting_past_the_limit_is_refused_where_it_goes_too_deep() -> None:
    text = "(" * (MAX_DEPTH + 1) + "a = 1" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(WhereError) as info:
        parse_where(text)
    assert info.value.column == MAX_DEPTH + 1
    assert "nested too deeply" in str(info.value)
    with pytest.raises(WhereError, match="nested too deeply"):
        parse_where("NOT " * (MAX_DEPTH + 1) + "a = 1")
    with pytest.raises(WhereError, match="nested too deeply"):
        parse_where("(" * 10_000)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "says"),
    [
        ("count >= 3 AND x =", 19, "expected a value after '=' at column 19, found the end"),
        ("count = AND b = 1", 9, "expected a value after '=' at column 9, found 'AND'"),
        ("", 1, "expected a condition"),
        ("   ", 4, "expected a condition"),
        ("a = 1 OR", 9, "expected a column name at column 9"),
        ("a = 1 b = 2", 7, "expected AND, OR or the end after a complete condition"),
        ("a = 1)", 6, "unbalanced ')'"),
        ("((a = 1)", 9, "expected ')' (to close the '(' of column 1) at column 9"),
        ("()", 2, "expected a condition inside '(' … ')'"),
        ("a b", 3, "expected an operator after the column 'a'"),
        ("a LIKE 'x%'", 3, "expected an operator"),
        ("a == 1", 4, "expected a value after '='"),
        ("a = 'oops", 5, "unterminated string starting at column 5"),
        ('"col = 1', 1, "unterminated quoted column name"),
        ("a = 1 # note", 7, "unexpected character '#'"),
        ("a = 1; DROP TABLE t", 6, "unexpected character ';'"),
        ("a = 3x", 5, "malformed number '3x'"),
        ("a = 1AND b = 2", 5, "malformed number '1AND'"),
        ("a = 99999999999999999999", 5, "out of the 64-bit range"),
        ("a = foo", 5, "text goes in single quotes: 'foo'"),
        ("a = b", 5, "expected a value after '='"),
        ("a = NULL", 5, "write COLUMN IS NULL or COLUMN IS NOT NULL"),
        ("a != null", 6, "IS NOT NULL"),
        ("a IS 3", 6, "expected NULL after IS"),
        ("a IS NOT 3", 10, "expected NULL after IS NOT"),
        ("a NOT LIKE 'x'", 7, "expected IN or BETWEEN after 'a NOT'"),
        ("a IN 'x'", 6, "expected '(' after IN"),
        ("a NOT IN ()", 11, "expected a value in the NOT IN list"),
        ("a IN ('x',)", 11, "expected a value after ','"),
        ("a IN ('x' 'y')", 11, "expected ',' or ')' (to close the IN list opened at column 6)"),
        ("a IN ('x'", 10, "found the end of the expression"),
        ("a BETWEEN 1 5", 13, "expected AND between the bounds of 'a BETWEEN'"),
        ("a BETWEEN 1 AND", 16, "expected a value after BETWEEN … AND"),
        ("Count = 1", 1, "'Count' is not a column name ([a-z_][a-z0-9_]*)"),
        ('"Count" = 1', 1, "'Count' is not a column name"),
        ("and = 1", 1, 'expected a column name ("and" in double quotes'),
        ("1 = a", 1, "expected a column name at column 1, found '1'"),
        ("a = timestamp 2026", 15, "expected a quoted timestamp after timestamp"),
        ("a = timestamp 'tomorrow'", 15, "'tomorrow' is not an ISO 8601 time"),
        ("a = date '2026-1-1'", 10, "'2026-1-1' is not a date YYYY-MM-DD"),
        ("a = date '2026-02-30'", 10, "not a date"),
        ("a = decimal '1e3'", 13, "'1e3' is not a decimal number"),
        ("a = 1 AND NOT", 14, "expected a column name at column 14, found the end"),
    ],
)
def test_errors_say_what_was_expected_and_where(text: str, column: int, says: str) -> None:
    with pytest.raises(WhereError) as info:
        parse_where(text)
    assert info.value.column == column, str(info.value)
    assert says in str(info.value)
    assert f"at column {column}" in str(info.value)
    assert isinstance(info.value, OptionError)
    assert info.value.option == "--where"
