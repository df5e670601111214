"""DCAT-AP (2.x / 3) JSON-LD of the catalogue, for open-data portals such as data.gouv.fr.

Controlled values use the EU Publications Office authority tables (data themes, frequencies,
access rights) and INSEE's geographic identifiers, so harvesters can map them without a
lookup table of ours. The caller chooses which datasets to export (the published ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from tdg_core.identifiers import territory_kind

from tdg_catalog.model import AccessLevel, Dataset, Schema
from tdg_catalog.validation import PROPRIETARY

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "adms": "http://www.w3.org/ns/adms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "csvw": "http://www.w3.org/ns/csvw#",
}

_AUTHORITY = "http://publications.europa.eu/resource/authority"
LICENCE_IRIS = {
    "etalab-2.0": "https://www.etalab.gouv.fr/licence-ouverte-open-licence/",
    "ODbL-1.0": "https://opendatacommons.org/licenses/odbl/1-0/",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
}
FREQUENCY_CODES = {
    "continuous": "CONT",
    "hourly": "HOURLY",
    "daily": "DAILY",
    "weekly": "WEEKLY",
    "monthly": "MONTHLY",
    "quarterly": "QUARTERLY",
    "annual": "ANNUAL",
    "irregular": "IRREG",
}
ACCESS_RIGHTS_CODES = {
    AccessLevel.OPEN: "PUBLIC",
    AccessLevel.RESTRICTED: "RESTRICTED",
    AccessLevel.PERSONAL: "NON_PUBLIC",
}
SPATIAL_IRIS = {
    "commune": "http://id.insee.fr/geo/commune/{}",
    "departement": "http://id.insee.fr/geo/departement/{}",
    "epci": "http://id.insee.fr/geo/intercommunalite/{}",
}
# Registered IANA media type of the Arrow IPC stream format, which Arrow Flight carries.
ARROW_STREAM = "https://www.iana.org/assignments/media-types/application/vnd.apache.arrow.stream"
ARROW_FLIGHT = "https://arrow.apache.org/docs/format/Flight.html"

Node = dict[str, object]


def export_dcat(
    datasets: Sequence[Dataset], base_uri: str, catalogue_title: str = "tdg"
) -> dict[str, object]:
    """A JSON-LD document: one dcat:Catalog holding a dcat:Dataset per dataset given."""
    base = base_uri.rstrip("/")
    return {
        "@context": CONTEXT,
        "@id": f"{base}/catalog",
        "@type": "dcat:Catalog",
        "dct:title": catalogue_title,
        "foaf:homepage": {"@id": base},
        "dcat:dataset": [_dataset(d, base) for d in datasets],
    }


def _iri(value: str) -> Node:
    return {"@id": value}


def _datetime(value: datetime) -> Node:
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return {"@value": utc.isoformat().replace("+00:00", "Z"), "@type": "xsd:dateTime"}


def _dataset(d: Dataset, base: str) -> Node:
    m = d.metadata
    iri = f"{base}/datasets/{d.id}"
    node: Node = {
        "@id": iri,
        "@type": "dcat:Dataset",
        "dct:identifier": d.id,
        "dct:title": m.title,
        "dct:description": m.description or m.title,  # mandatory in DCAT-AP
        "dct:publisher": {
            "@id": f"{base}/publishers/{d.publisher}",
            "@type": "foaf:Agent",
            "foaf:name": d.publisher,
        },
        "dcat:theme": [_iri(f"{_AUTHORITY}/data-theme/{t}") for t in m.themes],
        "dcat:keyword": list(m.keywords),
        "dct:accessRights": _iri(
            f"{_AUTHORITY}/access-right/{ACCESS_RIGHTS_CODES[m.access_level]}"
        ),
        "dcat:landingPage": _iri(iri),
        "dcat:distribution": [_distribution(d, iri, base)],
    }
    if m.licence:
        node["dct:license"] = _licence(m.licence)
    if m.update_frequency in FREQUENCY_CODES:
        code = FREQUENCY_CODES[m.update_frequency]
        node["dct:accrualPeriodicity"] = _iri(f"{_AUTHORITY}/frequency/{code}")
    spatial = [_spatial(code) for code in m.territory]
    if spatial:
        node["dct:spatial"] = spatial
    if m.contact:
        node["dcat:contactPoint"] = _contact(m.contact, d.publisher)
    if d.created_at:
        node["dct:issued"] = _datetime(d.created_at)
    if d.updated_at:
        node["dct:modified"] = _datetime(d.updated_at)
    return node


def _licence(licence: str) -> Node:
    iri = LICENCE_IRIS.get(licence)
    if iri:
        return _iri(iri)
    return {"@type": "dct:LicenseDocument", "rdfs:label": licence.removeprefix(PROPRIETARY)}


def _spatial(code: str) -> Node:
    template = SPATIAL_IRIS.get(territory_kind(code) or "")
    location: Node = {"@type": "dct:Location", "dct:identifier": code}
    if template:
        location["@id"] = template.format(code)
    return location


def _contact(contact: str, publisher: str) -> Node:
    node: Node = {"@type": "vcard:Kind", "vcard:fn": publisher}
    if "@" in contact and not contact.startswith("https://"):
        node["vcard:hasEmail"] = _iri(f"mailto:{contact}")
    else:
        node["vcard:hasURL"] = _iri(contact)
    return node


def _distribution(d: Dataset, dataset_iri: str, base: str) -> Node:
    """The one way to the data: tdg's query service, answering in Arrow over gRPC/Arrow Flight."""
    return {
        "@id": f"{dataset_iri}/distributions/arrow-flight",
        "@type": "dcat:Distribution",
        "dct:title": f"{d.metadata.title} (Apache Arrow Flight)",
        "dcat:accessURL": _iri(dataset_iri),
        "dct:format": {
            "@type": "dct:MediaTypeOrExtent",
            "rdfs:label": "Apache Arrow IPC stream, served over Arrow Flight",
        },
        "dcat:mediaType": _iri(ARROW_STREAM),
        "dcat:accessService": {
            "@type": "dcat:DataService",
            "dct:title": "tdg query service (gRPC and Arrow Flight)",
            "dcat:endpointURL": _iri(base),
            "dct:conformsTo": _iri(ARROW_FLIGHT),
        },
        "dct:conformsTo": _schema(d.schema, dataset_iri),
    }


def _schema(s: Schema, dataset_iri: str) -> Node:
    """The columns as a CSVW table schema, so a portal can show them without calling tdg."""
    return {
        "@id": f"{dataset_iri}/schemas/{s.version}",
        "@type": "dct:Standard",
        "dct:title": f"schema version {s.version}",
        "csvw:tableSchema": {
            "csvw:column": [
                {
                    "csvw:name": c.name,
                    "csvw:datatype": c.type,
                    "csvw:required": not c.nullable,
                    **({"dct:description": c.description} if c.description else {}),
                    **({"rdfs:comment": f"unit: {c.unit}"} if c.unit else {}),
                }
                for c in s.columns
            ],
            **({"csvw:primaryKey": list(s.key_columns)} if s.key_columns else {}),
        },
    }
