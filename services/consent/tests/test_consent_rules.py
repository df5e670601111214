"""Pure rules: the agreement state machine, party validation, enum translation."""

from __future__ import annotations

import pytest
from tdg.consent.v1 import consent_pb2 as pb
from tdg_consent import lifecycle
from tdg_consent.convert import from_pb_enum, to_pb_enum
from tdg_consent.model import AgreementState, LegalBasis, Party, PartyKind
from tdg_consent.validation import validate_party, validate_purposes
from tdg_core.errors import FailedPrecondition, InvalidArgument

S = AgreementState


@pytest.mark.parametrize(
    ("step", "before", "after"),
    [
        ("approve", S.REQUESTED, S.ACTIVE),
        ("refuse", S.REQUESTED, S.REFUSED),
        ("suspend", S.ACTIVE, S.SUSPENDED),
        ("resume", S.SUSPENDED, S.ACTIVE),
        ("revoke", S.ACTIVE, S.REVOKED),
        ("revoke", S.SUSPENDED, S.REVOKED),
        ("expire", S.ACTIVE, S.EXPIRED),
    ],
)
def test_allowed_steps(step: str, before: AgreementState, after: AgreementState) -> None:
    assert lifecycle.next_state(step, before, "agr-1") is after


@pytest.mark.parametrize(
    ("step", "before"),
    [
        ("approve", S.ACTIVE),
        ("approve", S.REFUSED),
        ("refuse", S.ACTIVE),
        ("resume", S.ACTIVE),
        ("suspend", S.REQUESTED),
        ("revoke", S.REQUESTED),
        ("revoke", S.REVOKED),
        ("resume", S.EXPIRED),
    ],
)
def test_refused_steps_say_why(step: str, before: AgreementState) -> None:
    with pytest.raises(FailedPrecondition, match=f"cannot {step} agreement 'agr-1': it is"):
        lifecycle.next_state(step, before, "agr-1")


def test_final_states_stay_out_of_the_bundle() -> None:
    assert {S.ACTIVE, S.SUSPENDED} == lifecycle.IN_BUNDLE


@pytest.mark.parametrize(
    ("party", "field"),
    [
        (Party("Bad Id", PartyKind.MUNICIPALITY, "x", ""), "party.id"),
        (Party("lyon", PartyKind.MUNICIPALITY, " ", ""), "party.name"),
        (Party("app", PartyKind.APPLICATION, "x", ""), "party.organisation"),
        (Party("app", PartyKind.APPLICATION, "x", "app"), "party.organisation"),
        (Party("lyon", PartyKind.MUNICIPALITY, "x", "other"), "party.organisation"),
        (Party("lyon", PartyKind.MUNICIPALITY, "x", "", roles=("admin",)), "party.roles[0]"),
        (Party("lyon", PartyKind.MUNICIPALITY, "x", "", siren="123"), "party.siren"),
    ],
)
def test_party_refusals_name_the_field(party: Party, field: str) -> None:
    with pytest.raises(InvalidArgument) as refusal:
        validate_party(party)
    assert refusal.value.field == field


def test_purposes_come_from_the_vocabulary() -> None:
    vocabulary = ["research", "mobility-planning"]
    validate_purposes(["research"], vocabulary)
    for bad, field in (
        ([], "purposes"),
        (["Research"], "purposes[0]"),
        (["research"] * 2, "purposes"),
    ):
        with pytest.raises(InvalidArgument) as refusal:
            validate_purposes(bad, vocabulary)
        assert refusal.value.field == field


def test_enums_map_by_name() -> None:
    assert to_pb_enum(LegalBasis.PUBLIC_TASK) == pb.LEGAL_BASIS_PUBLIC_TASK
    assert from_pb_enum(LegalBasis, pb.LEGAL_BASIS_LEGITIMATE_INTEREST, "legal_basis") is (
        LegalBasis.LEGITIMATE_INTEREST
    )
    assert from_pb_enum(PartyKind, 0, "kind", required=False) is None
    with pytest.raises(InvalidArgument, match=r"^legal_basis: required, one of LEGAL_BASIS_"):
        from_pb_enum(LegalBasis, 0, "legal_basis")
    with pytest.raises(InvalidArgument):
        from_pb_enum(LegalBasis, 42, "legal_basis")
