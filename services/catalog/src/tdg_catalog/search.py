"""Full-text search over the catalog: accent- and case-insensitive, ranked by where words match.

The store keeps `document_text(d)` per dataset and preselects candidates whose text contains
every query term as a substring (`LIKE '%term%'`); `rank` then scores those few hundred
candidates. Every token match that `rank` counts is also a substring of `document_text`, so the
prefilter never hides a hit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

from tdg_catalog.model import Dataset

# Where a word matches says how much the dataset is about it.
TITLE = 3.0
KEYWORDS = 2.5
COLUMN_NAMES = 2.0
DESCRIPTION = 1.0
COLUMN_DESCRIPTIONS = 1.0

PREFIX_MATCH = 0.5  # "energ" finding "energie" counts half of the whole word
ALSO_ELSEWHERE = 0.25  # share of a term's other matching fields added to its best one

# Ligatures that NFKD leaves whole but a French reader types as two letters.
_LIGATURES = (("œ", "oe"), ("æ", "ae"))
# Combining marks of the Basic Multilingual Plane as one regex: removing them runs in C, several
# times faster than testing each character in Python (descriptions run to 10,000 characters).
_COMBINING_MARKS = re.compile(
    "["
    + "".join(re.escape(chr(c)) for c in range(0x300, 0x10000) if unicodedata.combining(chr(c)))
    + "]+"
)
_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")
# Most text is ASCII once its accents are gone: a byte table does that case in one C pass.
_ASCII_WORD_BYTES = bytes(c if chr(c).isalnum() else ord(" ") for c in range(128)) + b" " * 128

_FRENCH_STOP_WORDS = (
    "au aux avec ce ces cet cette chez dans de des du elle elles en entre est et il ils la le "
    "les leur leurs ne nos notre ou par pas pour qu que qui sa sans se ses son sont sous sur "
    "un une vos votre"
)
_ENGLISH_STOP_WORDS = (
    "an and are as at be by for from in into is it its of on or over per that the these this "
    "those to with without"
)
# Words that would match nearly every dataset and so rank nothing.
STOP_WORDS = frozenset(_FRENCH_STOP_WORDS.split() + _ENGLISH_STOP_WORDS.split())


@lru_cache(maxsize=16_384)
def normalize(text: str) -> str:
    """Lowercase unaccented words, single-spaced: "Énergie (kWh)" → "energie kwh"."""
    folded = text.casefold()
    for ligature, letters in _LIGATURES:
        if ligature in folded:
            folded = folded.replace(ligature, letters)
    bare = _COMBINING_MARKS.sub("", unicodedata.normalize("NFKD", folded))
    if bare.isascii():
        return " ".join(bare.encode("ascii").translate(_ASCII_WORD_BYTES).decode("ascii").split())
    return _NOT_ALPHANUMERIC.sub(" ", bare).strip()


def query_terms(query: str) -> list[str]:
    """The words of a query worth looking for, normalised, in order, each once."""
    terms: dict[str, None] = {}
    for token in normalize(query).split():
        if len(token) > 1 and token not in STOP_WORDS:
            terms[token] = None
    return list(terms)


def document_text(d: Dataset) -> str:
    """Every searchable word of a dataset, normalised, each once, space-separated: what the
    store keeps for its `LIKE '%term%'` prefilter."""
    words: dict[str, None] = {}
    for text in _searchable(d):
        for token in normalize(text).split():
            words[token] = None
    return " ".join(words)


def _searchable(d: Dataset) -> Iterable[str]:
    m = d.metadata
    yield m.title
    yield from m.keywords
    for c in d.schema.columns:
        yield c.name  # normalize splits snake_case names on "_"
    yield m.description
    for c in d.schema.columns:
        yield c.description


class _Field:
    """A field's normalised text: a set for whole-word matches, a padded string for prefixes."""

    __slots__ = ("padded", "words")

    def __init__(self, normalized: str) -> None:
        self.words = frozenset(normalized.split())
        self.padded = " " + normalized

    def match(self, term: str) -> float:
        if term in self.words:
            return 1.0
        # A word starting with the term is the term after a space (C-speed substring search).
        return PREFIX_MATCH if " " + term in self.padded else 0.0


def search_fields(d: Dataset) -> list[str]:
    """The normalised ranked fields of a dataset, in `_WEIGHTS` order: what the store keeps so
    that ranking needs neither the whole dataset nor normalising again."""
    m = d.metadata
    return [
        normalize(m.title),
        normalize(" ".join(m.keywords)),
        normalize(" ".join(c.name for c in d.schema.columns)),
        normalize(m.description),
        normalize(" ".join(c.description for c in d.schema.columns)),
    ]


_WEIGHTS = (TITLE, KEYWORDS, COLUMN_NAMES, DESCRIPTION, COLUMN_DESCRIPTIONS)


def rank(terms: list[str], d: Dataset) -> float:
    """How well `d` answers the query terms (see `rank_fields`)."""
    return rank_fields(terms, search_fields(d))


def rank_fields(terms: list[str], fields: Sequence[str]) -> float:
    """0.0 unless every term matches a word (or a word's beginning) somewhere; otherwise higher
    when terms match in the title, then keywords, column names, and the descriptions, and whole
    words rather than beginnings. `fields` come from `search_fields`."""
    if not terms:
        return 0.0
    weighted = [(w, _Field(f)) for w, f in zip(_WEIGHTS, fields, strict=True)]
    score = 0.0
    for term in terms:
        scores = [weight * f.match(term) for weight, f in weighted]
        best = max(scores)
        if best == 0.0:
            return 0.0
        score += best + ALSO_ELSEWHERE * (sum(scores) - best)
    return score
