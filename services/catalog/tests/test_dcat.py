"""DCAT-AP export: what an open-data portal harvesting the catalogue reads."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tdg_catalog.dcat import export_dcat
from tdg_catalog.model import AccessLevel, Column, Dataset, Metadata, Schema, Sensitivity, Status

BASE = "https://data.grandlyon.example/"
AUTHORITY = "http://publications.europa.eu/resource/authority"

BIKES = Dataset(
    id="metropole-lyon.bike-counters",
    publisher="metropole-lyon",
    metadata=Metadata(
        title="Comptages vélo horaires",
        description="Nombre de vélos par compteur et par heure.",
        contact="donnees@grandlyon.example",
        themes=("TRAN", "REGI"),
        keywords=("vélo", "comptage"),
        licence="etalab-2.0",
        access_level=AccessLevel.OPEN,
        territory=("200046977", "69123", "69", "2A004"),
        update_frequency="hourly",
    ),
    schema=Schema(
        columns=(
            Column("counter_id", "string", nullable=False, description="Compteur"),
            Column("date_observed", "timestamp", nullable=False),
            Column("intensity", "int32", unit="bicycles/h"),
        ),
        event_time_column="date_observed",
        key_columns=("counter_id", "date_observed"),
        version=2,
    ),
    status=Status.PUBLISHED,
    latest_schema_version=2,
    created_at=datetime(2024, 3, 1, 8, 30, tzinfo=UTC),
    updated_at=datetime(2024, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=1))),
)


def _export(*datasets: Dataset) -> dict[str, Any]:
    document = export_dcat(datasets, BASE, catalogue_title="Grand Lyon data space")
    # What the servicer sends: it must survive JSON serialisation unchanged.
    parsed: dict[str, Any] = json.loads(json.dumps(document))
    return parsed


def _only(**changes: Any) -> dict[str, Any]:
    metadata = dataclasses.replace(BIKES.metadata, **changes)
    datasets: list[dict[str, Any]] = _export(dataclasses.replace(BIKES, metadata=metadata))[
        "dcat:dataset"
    ]
    return datasets[0]


def test_the_catalogue_declares_the_dcat_vocabularies() -> None:
    document = _export(BIKES)
    context = document["@context"]
    for prefix in ("dcat", "dct", "foaf", "vcard", "adms", "xsd"):
        assert prefix in context
    assert context["dcat"] == "http://www.w3.org/ns/dcat#"
    assert context["dct"] == "http://purl.org/dc/terms/"
    assert document["@type"] == "dcat:Catalog"
    assert document["dct:title"] == "Grand Lyon data space"


def test_each_dataset_is_identified_under_the_base_uri() -> None:
    (d,) = _export(BIKES)["dcat:dataset"]
    assert d["@type"] == "dcat:Dataset"
    assert d["@id"] == "https://data.grandlyon.example/datasets/metropole-lyon.bike-counters"
    assert d["dct:identifier"] == "metropole-lyon.bike-counters"
    assert d["dct:title"] == "Comptages vélo horaires"
    assert d["dct:description"] == "Nombre de vélos par compteur et par heure."
    assert d["dct:publisher"]["@id"] == "https://data.grandlyon.example/publishers/metropole-lyon"
    assert d["dct:publisher"]["@type"] == "foaf:Agent"


def test_themes_are_eu_authority_iris() -> None:
    assert _only()["dcat:theme"] == [
        {"@id": f"{AUTHORITY}/data-theme/TRAN"},
        {"@id": f"{AUTHORITY}/data-theme/REGI"},
    ]


def test_keywords_are_listed() -> None:
    assert _only()["dcat:keyword"] == ["vélo", "comptage"]


@pytest.mark.parametrize(
    ("licence", "iri"),
    [
        ("etalab-2.0", "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"),
        ("ODbL-1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
        ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"),
        ("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    ],
)
def test_open_licences_are_their_iris(licence: str, iri: str) -> None:
    assert _only(licence=licence)["dct:license"] == {"@id": iri}


def test_a_proprietary_licence_is_a_named_licence_document() -> None:
    licence = _only(licence="proprietary:convention-dsp-irve")["dct:license"]
    assert licence["@type"] == "dct:LicenseDocument"
    assert licence["rdfs:label"] == "convention-dsp-irve"


@pytest.mark.parametrize(
    ("frequency", "code"),
    [
        ("continuous", "CONT"),
        ("hourly", "HOURLY"),
        ("daily", "DAILY"),
        ("weekly", "WEEKLY"),
        ("monthly", "MONTHLY"),
        ("quarterly", "QUARTERLY"),
        ("annual", "ANNUAL"),
        ("irregular", "IRREG"),
    ],
)
def test_update_frequency_is_an_eu_frequency_iri(frequency: str, code: str) -> None:
    periodicity = _only(update_frequency=frequency)["dct:accrualPeriodicity"]
    assert periodicity == {"@id": f"{AUTHORITY}/frequency/{code}"}


def test_an_unstated_frequency_is_left_out() -> None:
    assert "dct:accrualPeriodicity" not in _only(update_frequency="")


@pytest.mark.parametrize(
    ("access", "code"),
    [
        (AccessLevel.OPEN, "PUBLIC"),
        (AccessLevel.RESTRICTED, "RESTRICTED"),
        (AccessLevel.PERSONAL, "NON_PUBLIC"),
    ],
)
def test_access_level_is_an_eu_access_right(access: AccessLevel, code: str) -> None:
    assert _only(access_level=access)["dct:accessRights"] == {
        "@id": f"{AUTHORITY}/access-right/{code}"
    }


def test_territory_codes_are_insee_geographic_iris() -> None:
    spatial = {s["dct:identifier"]: s["@id"] for s in _only()["dct:spatial"]}
    assert spatial == {
        "200046977": "http://id.insee.fr/geo/intercommunalite/200046977",
        "69123": "http://id.insee.fr/geo/commune/69123",
        "69": "http://id.insee.fr/geo/departement/69",
        "2A004": "http://id.insee.fr/geo/commune/2A004",
    }


def test_contact_point_is_a_vcard() -> None:
    email = _only()["dcat:contactPoint"]
    assert email["@type"] == "vcard:Kind"
    assert email["vcard:hasEmail"] == {"@id": "mailto:donnees@grandlyon.example"}
    url = _only(contact="https://data.grandlyon.example/contact")["dcat:contactPoint"]
    assert url["vcard:hasURL"] == {"@id": "https://data.grandlyon.example/contact"}
    assert "dcat:contactPoint" not in _only(contact="")


def test_dates_are_utc_xsd_datetimes() -> None:
    d = _only()
    assert d["dct:issued"] == {"@value": "2024-03-01T08:30:00Z", "@type": "xsd:dateTime"}
    assert d["dct:modified"] == {"@value": "2024-03-02T09:00:00Z", "@type": "xsd:dateTime"}


def test_the_distribution_is_arrow_flight_with_the_columns() -> None:
    (distribution,) = _only()["dcat:distribution"]
    assert distribution["@type"] == "dcat:Distribution"
    assert distribution["dcat:accessURL"]["@id"].startswith(BASE.rstrip("/"))
    assert "Arrow" in distribution["dct:format"]["rdfs:label"]
    assert distribution["dcat:mediaType"]["@id"].endswith("application/vnd.apache.arrow.stream")
    assert "Flight" in json.dumps(distribution["dcat:accessService"])
    table = distribution["dct:conformsTo"]["csvw:tableSchema"]
    assert [c["csvw:name"] for c in table["csvw:column"]] == [
        "counter_id",
        "date_observed",
        "intensity",
    ]
    assert table["csvw:column"][0]["csvw:required"] is True
    assert table["csvw:column"][2]["csvw:datatype"] == "int32"
    assert table["csvw:primaryKey"] == ["counter_id", "date_observed"]
    assert distribution["dct:conformsTo"]["@id"].endswith("/schemas/2")


def test_every_dataset_given_is_exported_in_order() -> None:
    other = dataclasses.replace(BIKES, id="metropole-lyon.waste-bins")
    personal = dataclasses.replace(
        BIKES,
        id="metropole-lyon.meters",
        schema=Schema(
            columns=(Column("household_id", "string", sensitivity=Sensitivity.PERSONAL),),
            subject_column="household_id",
        ),
    )
    ids = [d["dct:identifier"] for d in _export(BIKES, other, personal)["dcat:dataset"]]
    assert ids == [
        "metropole-lyon.bike-counters",
        "metropole-lyon.waste-bins",
        "metropole-lyon.meters",
    ]


def test_an_empty_catalogue_is_still_a_catalogue() -> None:
    document = _export()
    assert document["@type"] == "dcat:Catalog"
    assert document["dcat:dataset"] == []
