"""The syntax of the identifiers every service checks: dataset ids, party ids, INSEE codes.

One place, so that the catalog, the consent service and the CLI agree on what a well-formed id is.
Every refusal is an `InvalidArgument` naming the request field.
"""

from __future__ import annotations

import re

from tdg_core.errors import InvalidArgument

MAX_PUBLISHER = 63  # a DNS label, so a publisher can name a Kubernetes namespace or a host
MAX_NAME = 100
MAX_PARTY = 63

# Lowercase letters, digits and single inner hyphens, starting with a letter.
_ID_PART = re.compile(r"[a-z](?:-?[a-z0-9])*")
_COMMUNE = re.compile(r"[0-9]{5}|2[AB][0-9]{3}")  # INSEE code officiel géographique
_EPCI = re.compile(r"[0-9]{9}")  # SIREN of the intercommunality
# Départements: 01-19, 21-95 (20 became 2A and 2B in 1976), Corsica, overseas 971-976.
_DEPARTEMENT = re.compile(r"0[1-9]|1[0-9]|2[1-9]|[3-8][0-9]|9[0-5]|2[AB]|97[1-6]")

_SLUG_RULE = (
    "lowercase letters, digits and single hyphens, starting with a letter and not ending with a "
    "hyphen"
)


def parse_dataset_id(dataset_id: str, field: str = "id") -> tuple[str, str]:
    """(publisher, name) of an id `<publisher>.<name>`."""
    example = "e.g. 'metropole-lyon.bike-counters'"
    if not dataset_id:
        raise InvalidArgument(field, f"is required: <publisher>.<name>, {example}")
    publisher, dot, name = dataset_id.partition(".")
    if not dot or "." in name:
        raise InvalidArgument(field, f"must be <publisher>.<name> with exactly one dot, {example}")
    for part, what, limit in ((publisher, "publisher", MAX_PUBLISHER), (name, "name", MAX_NAME)):
        if not _ID_PART.fullmatch(part):
            raise InvalidArgument(field, f"{what} {part!r} must be {_SLUG_RULE}, {example}")
        if len(part) > limit:
            raise InvalidArgument(field, f"{what} is longer than {limit} characters")
    return publisher, name


def check_party_id(party_id: str, field: str) -> str:
    """A party id (an organisation's id is the publisher part of its dataset ids)."""
    if not party_id:
        raise InvalidArgument(field, "is required, e.g. 'metropole-lyon' or 'velo-app'")
    if not _ID_PART.fullmatch(party_id):
        raise InvalidArgument(field, f"{party_id!r} must be {_SLUG_RULE}")
    if len(party_id) > MAX_PARTY:
        raise InvalidArgument(field, f"is longer than {MAX_PARTY} characters")
    return party_id


def territory_kind(code: str) -> str | None:
    """'commune', 'epci' or 'departement' for a well-formed INSEE code, else None."""
    if _COMMUNE.fullmatch(code):
        return "commune"
    if _EPCI.fullmatch(code):
        return "epci"
    if _DEPARTEMENT.fullmatch(code):
        return "departement"
    return None


def check_territory_codes(field: str, codes: tuple[str, ...] | list[str], limit: int) -> None:
    """Well-formed INSEE codes, none listed twice, at most `limit`."""
    if len(codes) > limit:
        raise InvalidArgument(field, f"at most {limit} codes, got {len(codes)}")
    seen: set[str] = set()
    for i, code in enumerate(codes):
        if territory_kind(code) is None:
            raise InvalidArgument(
                f"{field}[{i}]",
                f"{code!r} is not an INSEE commune code (5 characters, e.g. 69123 or 2A004), "
                "an EPCI SIREN (9 digits, e.g. 200046977) "
                "or a département code (e.g. 69, 2A, 974)",
            )
        if code in seen:
            raise InvalidArgument(f"{field}[{i}]", f"{code!r} is listed twice")
        seen.add(code)
