"""Search: "energie" finds "Énergie", title matches rank first, every word must match."""

from __future__ import annotations

import random
import time

import pytest
from tdg_catalog.model import Column, Dataset, Metadata, Schema
from tdg_catalog.search import document_text, normalize, query_terms, rank


def _dataset(
    title: str,
    description: str = "",
    keywords: tuple[str, ...] = (),
    columns: tuple[Column, ...] = (Column("id", "string"),),
    dataset_id: str = "metropole-lyon.d",
) -> Dataset:
    return Dataset(
        id=dataset_id,
        publisher="metropole-lyon",
        metadata=Metadata(
            title=title,
            description=description,
            keywords=keywords,
            themes=("ENER",),
            licence="etalab-2.0",
        ),
        schema=Schema(columns=columns),
    )


def _score(query: str, d: Dataset) -> float:
    return rank(query_terms(query), d)


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Énergie", "energie"),
        ("ÉLECTRICITÉ", "electricite"),
        ("Cœur de ville", "coeur de ville"),
        ("Straße", "strasse"),
        ("Vélo'v", "velo v"),
        ("energy_kwh", "energy kwh"),
        ("  Qualité de l'air — PM2.5 (µg/m³)  ", "qualite de l air pm2 5 μg m3"),
        ("Code 2A004", "code 2a004"),
    ],
)
def test_normalize_drops_accents_case_and_punctuation(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


def test_query_terms_drop_stop_words_short_tokens_and_repeats() -> None:
    assert query_terms("Les comptages de vélos à Lyon, les VÉLOS !") == [
        "comptages",
        "velos",
        "lyon",
    ]
    assert query_terms("the energy of a city") == ["energy", "city"]


def test_a_query_of_only_stop_words_has_no_terms() -> None:
    assert query_terms("de la et les") == []


# --- the text the store prefilters on --------------------------------------------------------


def test_document_text_covers_every_searchable_field_once() -> None:
    d = _dataset(
        "Énergie des bâtiments",
        description="Relevés d'énergie",
        keywords=("chaleur",),
        columns=(Column("energy_kwh", "float64", description="Consommation mesurée"),),
    )
    words = document_text(d).split()
    assert {"energie", "batiments", "releves", "chaleur", "energy", "kwh", "consommation"} <= set(
        words
    )
    assert len(words) == len(set(words))


def test_every_ranked_hit_passes_the_like_prefilter() -> None:
    # The store keeps only datasets whose document_text contains each term: a dataset that
    # rank would score must never be dropped by that prefilter.
    rng = random.Random(7)
    words = [
        "Énergie",
        "électricité",
        "vélo",
        "déchets",
        "Qualité",
        "air",
        "compteur",
        "énergétique",
        "eau",
        "Œuvre",
    ]
    for i in range(200):
        d = _dataset(
            " ".join(rng.sample(words, 3)),
            description=" ".join(rng.sample(words, 4)),
            keywords=tuple(rng.sample(words, 2)),
            columns=(Column(f"col_{i}", "int32", description=rng.choice(words)),),
        )
        text = document_text(d)
        for query in ("energ", "velo electricite", "qualite air", "oeuvre", "col", "compteurs"):
            terms = query_terms(query)
            if rank(terms, d) > 0:
                assert all(t in text for t in terms), (query, text)


# --- ranking ---------------------------------------------------------------------------------


def test_energie_finds_accented_title() -> None:
    assert _score("energie", _dataset("Énergie des bâtiments publics")) > 0
    assert _score("ÉNERGIE", _dataset("energie des batiments publics")) > 0


def test_a_title_match_ranks_above_a_description_match() -> None:
    in_title = _dataset("Énergie des bâtiments publics")
    in_description = _dataset("Compteurs communaux", description="Relevés d'énergie")
    assert _score("energie", in_title) > _score("energie", in_description) > 0


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        (_dataset("Vélo"), _dataset("x", keywords=("vélo",))),
        (_dataset("x", keywords=("vélo",)), _dataset("x", columns=(Column("velo", "int32"),))),
        (
            _dataset("x", columns=(Column("velo_count", "int32"),)),
            _dataset("x", description="vélo"),
        ),
    ],
    ids=["title>keywords", "keywords>column names", "column names>description"],
)
def test_fields_weigh_in_order(higher: Dataset, lower: Dataset) -> None:
    assert _score("velo", higher) > _score("velo", lower) > 0


def test_column_descriptions_are_searched() -> None:
    d = _dataset("Compteurs", columns=(Column("kwh", "float64", description="Énergie active"),))
    assert _score("energie", d) > 0


def test_whole_word_beats_word_beginning() -> None:
    whole = _dataset("Énergie solaire")
    beginning = _dataset("Énergies renouvelables")
    assert _score("energie", whole) > _score("energie", beginning) > 0


def test_a_word_beginning_matches() -> None:
    assert _score("energ", _dataset("Énergie solaire")) > 0


def test_a_word_inside_another_does_not_match() -> None:
    assert _score("energie", _dataset("Bioénergie")) == 0.0


def test_every_term_must_match_somewhere() -> None:
    d = _dataset("Énergie solaire", description="Production des panneaux")
    assert _score("energie production", d) > 0
    assert _score("energie velo", d) == 0.0


def test_more_matching_fields_rank_higher() -> None:
    title_only = _dataset("Énergie solaire")
    title_and_keywords = _dataset("Énergie solaire", keywords=("énergie",))
    assert _score("energie", title_and_keywords) > _score("energie", title_only)


def test_no_terms_rank_nothing() -> None:
    assert rank([], _dataset("Énergie")) == 0.0


def test_ranking_a_few_hundred_candidates_is_fast() -> None:
    rng = random.Random(3)
    vocabulary = [
        "énergie",
        "électricité",
        "vélo",
        "déchets",
        "qualité",
        "air",
        "compteur",
        "eau",
        "chaleur",
        "bus",
    ]
    candidates = [
        _dataset(
            " ".join(rng.sample(vocabulary, 4)),
            description=" ".join(rng.choices(vocabulary, k=300)),
            keywords=tuple(rng.sample(vocabulary, 3)),
            columns=tuple(
                Column(f"c{j}", "float64", description=rng.choice(vocabulary)) for j in range(20)
            ),
            dataset_id=f"metropole-lyon.d{i}",
        )
        for i in range(500)
    ]
    terms = query_terms("énergie vélo")
    started = time.perf_counter()
    scores = [rank(terms, d) for d in candidates]
    elapsed = time.perf_counter() - started
    assert any(scores)
    # Generous bound for a loaded CI machine; a warm run takes a few milliseconds.
    assert elapsed < 1.0
