"""`tdg query --where EXPR`: a small filter language → the structured `Expression` of a query.

The text never reaches the service: it is parsed here, into the proto, by a recursive-descent
parser (pure: no typer, no gRPC). The language:

    condition  := column OP value                     OP: = != <> < <= > >=
                | column [NOT] IN (value, …)
                | column [NOT] BETWEEN value AND value
                | column IS [NOT] NULL
    expression := NOT expression | expression AND expression | expression OR expression
                | ( expression )
    value      := 'text' ('' inside for a quote) | 12 | -3 | 1.5 | 2e3 | true | false
                | timestamp '2026-01-01T00:00:00Z' | date '2026-01-01' | decimal '12.50'

NOT binds tighter than AND, AND tighter than OR; keywords are case-insensitive; a column name is
`[a-z_][a-z0-9_]*`, in double quotes when it is a keyword (`"date" = date '2026-01-01'`).
Integers become int_value, other numbers double_value. Errors name the column (character, from 1)
where the text went wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from tdg.query.v1 import query_pb2 as pb

from tdg_cli.vocabulary import OptionError

COLUMN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# Words that cannot be a column unless quoted. `timestamp`, `date` and `decimal` are keywords only
# before a quoted string, so columns may bear those names.
RESERVED = frozenset({"and", "or", "not", "in", "between", "is", "null", "true", "false"})
OPERATORS = {
    "=": pb.COMPARISON_OPERATOR_EQ,
    "!=": pb.COMPARISON_OPERATOR_NE,
    "<>": pb.COMPARISON_OPERATOR_NE,
    "<": pb.COMPARISON_OPERATOR_LT,
    "<=": pb.COMPARISON_OPERATOR_LE,
    ">": pb.COMPARISON_OPERATOR_GT,
    ">=": pb.COMPARISON_OPERATOR_GE,
}
# Nesting of parentheses and NOTs. Protobuf parsers refuse messages nested more than 100 deep;
# each level costs the Expression at most two (Expression → Junction → Expression).
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|<>|!=|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DECIMAL = re.compile(r"[+-]?\d+(?:\.\d+)?")


class WhereError(OptionError):
    """The text is not an expression: what was expected, and at which column (from 1)."""

    def __init__(self, problem: str, column: int, found: str = "") -> None:
        super().__init__(
            "--where", f"{problem} at column {column}{f', found {found}' * bool(found)}"
        )
        self.column = column


@dataclass(frozen=True)
class Token:
    # number | word | op | punct | string | quoted (a "column") | end
    kind: str
    text: str  # as written
    value: str  # a string's or a quoted column's content, unescaped; else the text
    column: int  # where it starts, from 1

    def keyword(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words

    def is_punct(self, text: str) -> bool:
        return self.kind == "punct" and self.text == text

    def described(self) -> str:
        return "the end of the expression" if self.kind == "end" else repr(self.text)


def tokens(text: str) -> list[Token]:
    """The text's tokens, the last one `end`; WhereError on a character that starts none."""
    out: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            end = _closing_quote(text, i)
            if end < 0:
                what = "string" if ch == "'" else "quoted column name"
                raise WhereError(f"unterminated {what} starting", i + 1)
            raw = text[i : end + 1]
            kind = "string" if ch == "'" else "quoted"
            out.append(Token(kind, raw, raw[1:-1].replace(ch * 2, ch), i + 1))
            i = end + 1
            continue
        m = _TOKEN.match(text, i)
        if m is None or m.lastgroup is None:
            raise WhereError(f"unexpected character {ch!r}", i + 1)
        if m.lastgroup == "number" and m.end() < len(text) and _is_word_char(text[m.end()]):
            end = m.end()
            while end < len(text) and _is_word_char(text[end]):
                end += 1
            raise WhereError(f"malformed number {text[i:end]!r}", i + 1)
        if m.lastgroup != "space":
            out.append(Token(m.lastgroup, m.group(), m.group(), i + 1))
        i = m.end()
    out.append(Token("end", "", "", len(text) + 1))
    return out


def _closing_quote(text: str, start: int) -> int:
    """The index of the quote closing the one at `start` (doubled quotes are inside), or -1."""
    quote = text[start]
    i = start + 1
    while True:
        i = text.find(quote, i)
        if i < 0:
            return -1
        if i + 1 < len(text) and text[i + 1] == quote:
            i += 2
            continue
        return i


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def parse_where(text: str) -> pb.Expression:
    """The expression written in `text`; WhereError (an OptionError on --where) if it is none."""
    return _Parser(tokens(text)).parse()


class _Parser:
    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    # --- tokens --------------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def advance(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def fail(self, expected: str, tok: Token | None = None) -> WhereError:
        tok = tok or self.tok
        return WhereError(f"expected {expected}", tok.column, tok.described())

    # --- grammar -------------------------------------------------------------------------------

    def parse(self) -> pb.Expression:
        if self.tok.kind == "end":
            raise self.fail("a condition, e.g. count > 3")
        expr = self.disjunction()
        if self.tok.kind != "end":
            if self.tok.is_punct(")"):
                raise WhereError("unbalanced ')': no '(' to close", self.tok.column)
            raise self.fail("AND, OR or the end after a complete condition")
        return expr

    def disjunction(self) -> pb.Expression:
        operands = [self.conjunction()]
        while self.tok.keyword("or"):
            self.advance()
            operands.append(self.conjunction())
        if len(operands) == 1:
            return operands[0]
        return _junction("or", operands)

    def conjunction(self) -> pb.Expression:
        operands = [self.negation()]
        while self.tok.keyword("and"):
            self.advance()
            operands.append(self.negation())
        if len(operands) == 1:
            return operands[0]
        return _junction("and", operands)

    def negation(self) -> pb.Expression:
        if self.tok.keyword("not"):
            self.nest(self.advance())
            inner = self.negation()
            self.depth -= 1
            return _negated(inner)
        return self.primary()

    def nest(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise WhereError(f"nested too deeply (more than {MAX_DEPTH} levels)", tok.column)

    def primary(self) -> pb.Expression:
        if self.tok.is_punct("("):
            opening = self.advance()
            self.nest(opening)
            if self.tok.is_punct(")"):
                raise self.fail("a condition inside '(' … ')'")
            expr = self.disjunction()
            if not self.tok.is_punct(")"):
                raise self.fail(f"')' (to close the '(' of column {opening.column})")
            self.advance()
            self.depth -= 1
            return expr
        return self.condition()

    def condition(self) -> pb.Expression:
        column = self.column_name()
        tok = self.tok
        if tok.kind == "op":
            self.advance()
            value = self.literal(f"after {tok.text!r}")
            cmp = pb.Comparison(column=column, op=OPERATORS[tok.text], value=value)
            return pb.Expression(comparison=cmp)
        negated = False
        if tok.keyword("not"):
            self.advance()
            negated = True
            if not (self.tok.keyword("in") or self.tok.keyword("between")):
                raise self.fail(f"IN or BETWEEN after '{column} NOT'")
        if self.tok.keyword("in"):
            self.advance()
            return pb.Expression(in_list=self.in_list(column, negated))
        if self.tok.keyword("between"):
            self.advance()
            between = pb.Expression(between=self.between(column))
            return _negated(between) if negated else between
        if self.tok.keyword("is"):
            self.advance()
            is_not = self.tok.keyword("not")
            if is_not:
                self.advance()
            if not self.tok.keyword("null"):
                raise self.fail(f"NULL after IS{' NOT' if is_not else ''}")
            self.advance()
            return pb.Expression(is_null=pb.IsNull(column=column, negated=is_not))
        raise self.fail(
            f"an operator after the column {column!r} "
            "(=, !=, <, <=, >, >=, IN, NOT IN, BETWEEN, IS NULL, IS NOT NULL)"
        )

    def column_name(self) -> str:
        tok = self.tok
        if tok.kind == "quoted":
            name = tok.value
        elif tok.kind == "word" and tok.text.lower() not in RESERVED:
            name = tok.text
        elif tok.kind == "word":
            word = tok.text.lower()
            raise self.fail(
                f'a column name ("{word}" in double quotes if a column bears that name)'
            )
        else:
            raise self.fail("a column name")
        if not COLUMN_NAME.fullmatch(name):
            raise WhereError(f"{name!r} is not a column name ([a-z_][a-z0-9_]*)", tok.column)
        self.advance()
        return name

    def in_list(self, column: str, negated: bool) -> pb.InList:
        keyword = "NOT IN" if negated else "IN"
        if not self.tok.is_punct("("):
            raise self.fail(f"'(' after {keyword}")
        opening = self.advance()
        values = [self.literal(f"in the {keyword} list")]
        while self.tok.is_punct(","):
            self.advance()
            values.append(self.literal("after ','"))
        if not self.tok.is_punct(")"):
            raise self.fail(
                f"',' or ')' (to close the {keyword} list opened at column {opening.column})"
            )
        self.advance()
        return pb.InList(column=column, values=values, negated=negated)

    def between(self, column: str) -> pb.Between:
        low = self.literal("after BETWEEN")
        if not self.tok.keyword("and"):
            raise self.fail(f"AND between the bounds of '{column} BETWEEN'")
        self.advance()
        high = self.literal("after BETWEEN … AND")
        return pb.Between(column=column, low=low, high=high)

    # --- literals ------------------------------------------------------------------------------

    def literal(self, where: str) -> pb.Literal:
        tok = self.tok
        expected = f"a value {where}"
        if tok.kind == "string":
            self.advance()
            return pb.Literal(string_value=tok.value)
        if tok.kind == "number":
            self.advance()
            return _number(tok)
        if tok.keyword("true", "false"):
            self.advance()
            return pb.Literal(bool_value=tok.text.lower() == "true")
        if tok.keyword("null"):
            raise WhereError(
                "NULL is no value to compare with: write COLUMN IS NULL or COLUMN IS NOT NULL",
                tok.column,
            )
        if tok.keyword("timestamp", "date", "decimal"):
            self.advance()
            kind = tok.text.lower()
            text = self.tok
            if text.kind != "string":
                raise self.fail(f"a quoted {kind} after {tok.text}, e.g. {_EXAMPLES[kind]}")
            self.advance()
            return _typed(kind, text)
        if tok.kind == "word" and tok.text.lower() not in RESERVED:
            raise self.fail(f"{expected} (text goes in single quotes: '{tok.text}')")
        raise self.fail(expected)


# `and`, `or` and `not` are Python keywords: no constructor argument, hence getattr.
def _junction(kind: str, operands: list[pb.Expression]) -> pb.Expression:
    expr = pb.Expression()
    getattr(expr, kind).operands.extend(operands)
    return expr


def _negated(inner: pb.Expression) -> pb.Expression:
    expr = pb.Expression()
    getattr(expr, "not").CopyFrom(inner)
    return expr


_EXAMPLES = {
    "timestamp": "timestamp '2026-01-01T08:00:00Z'",
    "date": "date '2026-01-01'",
    "decimal": "decimal '12.50'",
}


def _number(tok: Token) -> pb.Literal:
    text = tok.text
    if re.fullmatch(r"[+-]?\d+", text):
        value = int(text)
        if not INT64_MIN <= value <= INT64_MAX:
            raise WhereError(f"the integer {text} is out of the 64-bit range", tok.column)
        return pb.Literal(int_value=value)
    return pb.Literal(double_value=float(text))


def _typed(kind: str, tok: Token) -> pb.Literal:
    text = tok.value.strip()
    if kind == "timestamp":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise WhereError(
                f"{tok.value!r} is not an ISO 8601 time, e.g. 2026-01-01T08:00:00Z", tok.column
            ) from None
        literal = pb.Literal()
        literal.timestamp_value.FromDatetime(
            moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        )
        return literal
    if kind == "date":
        try:
            if not _DATE.fullmatch(text):
                raise ValueError(text)
            day = date.fromisoformat(text)
        except ValueError:
            raise WhereError(f"{tok.value!r} is not a date YYYY-MM-DD", tok.column) from None
        return pb.Literal(date_value=day.isoformat())
    try:
        if not _DECIMAL.fullmatch(text):
            raise InvalidOperation(text)
        Decimal(text)
    except InvalidOperation:
        raise WhereError(f"{tok.value!r} is not a decimal number, e.g. 12.50", tok.column) from None
    return pb.Literal(decimal_value=text)
