"""The consent enums under their CLI names: the contract's spelling, both ways."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.consent.v1 import consent_pb2 as pb
from tdg_cli.vocabulary import (
    ACCESS_KINDS,
    AGREEMENT_STATES,
    CONSENT_STATES,
    ERASURE_STATES,
    LEGAL_BASES,
    MASK_METHODS,
    PARTY_KINDS,
    PARTY_STATUSES,
    OptionError,
    when,
)


def test_names_are_the_contracts_vocabulary() -> None:
    # policies/README.md, "Vocabulary".
    assert PARTY_KINDS.names == (
        "municipality",
        "intercommunality",
        "public-company",
        "private-partner",
        "research-body",
        "application",
    )
    assert PARTY_STATUSES.names == ("active", "suspended")
    assert ACCESS_KINDS.names == ("read", "write")
    assert LEGAL_BASES.names == ("consent", "public-task", "contract", "legitimate-interest")
    assert AGREEMENT_STATES.names == (
        "requested",
        "refused",
        "active",
        "suspended",
        "revoked",
        "expired",
    )
    assert MASK_METHODS.names == ("clear", "null", "hash", "generalise")
    assert CONSENT_STATES.names == ("given", "withdrawn")
    assert ERASURE_STATES.names == ("received", "in-progress", "completed", "failed")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("public-company", pb.PARTY_KIND_PUBLIC_COMPANY),
        ("PUBLIC_COMPANY", pb.PARTY_KIND_PUBLIC_COMPANY),
        (" application ", pb.PARTY_KIND_APPLICATION),
    ],
)
def test_a_name_gives_its_value_case_and_separator_ignored(text: str, expected: int) -> None:
    assert PARTY_KINDS.value(text, "--kind") == expected


def test_every_value_round_trips() -> None:
    for name in LEGAL_BASES.names:
        assert LEGAL_BASES.name(LEGAL_BASES.value(name, "--legal-basis")) == name


def test_an_unknown_name_is_an_error_naming_the_option_and_the_choices() -> None:
    with pytest.raises(OptionError) as info:
        LEGAL_BASES.value("public_interest", "--legal-basis")
    assert info.value.option == "--legal-basis"
    assert "'public_interest'" in str(info.value)
    assert "legitimate-interest" in str(info.value)


def test_unspecified_is_not_a_choice_but_empty_means_no_filter() -> None:
    with pytest.raises(OptionError):
        AGREEMENT_STATES.value("unspecified", "--state")
    with pytest.raises(OptionError):
        AGREEMENT_STATES.value("", "--state")
    assert AGREEMENT_STATES.optional("", "--state") == pb.AGREEMENT_STATE_UNSPECIFIED
    assert AGREEMENT_STATES.optional("revoked", "--state") == pb.AGREEMENT_STATE_REVOKED


def test_display_names() -> None:
    assert ERASURE_STATES.name(pb.ERASURE_STATE_IN_PROGRESS) == "in-progress"
    assert PARTY_STATUSES.name(pb.PARTY_STATUS_UNSPECIFIED) == ""
    assert PARTY_STATUSES.name(99) == "99"  # a value newer than this CLI
    assert ACCESS_KINDS.choices == "read|write"


def test_when() -> None:
    assert when(Timestamp()) == ""
    assert when(Timestamp(seconds=1767225600)) == "2026-01-01T00:00:00Z"
