"""Bad requests to the consent service get the right status and a message naming the problem;
nothing is changed by a refused request."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from tdg.consent.v1 import consent_pb2 as pb

from tests.integration.fixtures.callers import CallerFactory, ConsentCaller
from tests.integration.helpers import partner_with_app, published

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"


async def refusal(call: Any, request: Any, who: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=who.md, timeout=10)
    return caught.value


@pytest.fixture
async def setup(consent_caller: CallerFactory[ConsentCaller]) -> dict[str, Any]:
    """A published dataset of Lyon, a partner with an application, and a pending request."""
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    lyon = consent_caller("lyon-data-office", LYON, "data-officer")
    grenoble = consent_caller("grenoble-data-office", "grenoble-alpes", "data-officer")
    dataset = await published(lyon, "bike-counters")
    org, app_id = await partner_with_app(admin)
    app = consent_caller(app_id, org)
    pending = await app.stub.RequestAccess(
        pb.RequestAccessRequest(
            dataset_id=dataset.id,
            purposes=["mobility-planning"],
            legal_basis=pb.LEGAL_BASIS_LEGITIMATE_INTEREST,
        ),
        metadata=app.md,
        timeout=10,
    )
    return {
        "admin": admin,
        "lyon": lyon,
        "grenoble": grenoble,
        "app": app,
        "dataset": dataset.id,
        "agreement": pending.agreement.id,
    }


async def test_unknown_dataset_and_party_are_not_found(setup) -> None:
    app, admin = setup["app"], setup["admin"]
    unknown_dataset = await refusal(
        app.stub.RequestAccess,
        pb.RequestAccessRequest(
            dataset_id=f"{LYON}.no-such-dataset",
            purposes=["research"],
            legal_basis=pb.LEGAL_BASIS_CONSENT,
        ),
        app,
    )
    assert unknown_dataset.code() == grpc.StatusCode.NOT_FOUND
    assert f"'{LYON}.no-such-dataset'" in (unknown_dataset.details() or "")
    unknown_party = await refusal(
        admin.stub.RequestAccess,
        pb.RequestAccessRequest(
            dataset_id=setup["dataset"],
            consumer="nobody-registered",
            purposes=["research"],
            legal_basis=pb.LEGAL_BASIS_CONSENT,
        ),
        admin,
    )
    assert unknown_party.code() == grpc.StatusCode.NOT_FOUND
    assert "party 'nobody-registered'" in (unknown_party.details() or "")
    missing = await refusal(admin.stub.GetParty, pb.GetPartyRequest(id="nobody"), admin)
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    no_agreement = await refusal(
        admin.stub.GetAgreement, pb.GetAgreementRequest(agreement_id="agr-nope"), admin
    )
    assert no_agreement.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("purposes", "legal_basis", "field"),
    [
        ([], pb.LEGAL_BASIS_CONSENT, "purposes"),
        (["Mobility Planning"], pb.LEGAL_BASIS_CONSENT, "purposes[0]"),
        (["research", "surveillance"], pb.LEGAL_BASIS_CONSENT, "purposes[1]"),
        (["research"], pb.LEGAL_BASIS_UNSPECIFIED, "legal_basis"),
    ],
)
async def test_malformed_requests_name_the_field(
    setup, purposes: list[str], legal_basis: int, field: str
) -> None:
    app = setup["app"]
    error = await refusal(
        app.stub.RequestAccess,
        pb.RequestAccessRequest(
            dataset_id=setup["dataset"],
            purposes=purposes,
            legal_basis=legal_basis,  # type: ignore[arg-type]
        ),
        app,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("conditions", "field"),
    [
        (pb.Conditions(columns=["no_such_column"]), "conditions.columns[0]"),
        (
            pb.Conditions(masks=[pb.ColumnMask(column="intensity", method=pb.MASK_METHOD_HASH)]),
            "conditions.masks[0].method",
        ),
        (
            pb.Conditions(
                masks=[
                    pb.ColumnMask(
                        column="intensity",
                        method=pb.MASK_METHOD_GENERALISE,
                        generalisation=pb.Generalisation(truncate_to="day"),
                    )
                ]
            ),
            "conditions.masks[0].generalisation.truncate_to",
        ),
        (
            pb.Conditions(
                territory_filter=pb.TerritoryFilter(column="commune_code", codes=["lyon"])
            ),
            "conditions.territory_filter.codes[0]",
        ),
        (pb.Conditions(min_group_size=5), "conditions.min_group_size"),
    ],
)
async def test_malformed_conditions_name_the_field(
    setup, conditions: pb.Conditions, field: str
) -> None:
    lyon = setup["lyon"]
    if field == "conditions.masks[0].method":
        # A hash mask is valid; an unspecified method is not.
        conditions.masks[0].method = pb.MASK_METHOD_UNSPECIFIED
    error = await refusal(
        lyon.stub.ApproveAccess,
        pb.ApproveAccessRequest(agreement_id=setup["agreement"], conditions=conditions),
        lyon,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(field)
    still = await lyon.stub.GetAgreement(
        pb.GetAgreementRequest(agreement_id=setup["agreement"]), metadata=lyon.md, timeout=10
    )
    assert still.agreement.state == pb.AGREEMENT_STATE_REQUESTED


async def test_approving_someone_elses_dataset_is_denied(setup) -> None:
    grenoble, app = setup["grenoble"], setup["app"]
    for who in (grenoble, app):
        error = await refusal(
            who.stub.ApproveAccess,
            pb.ApproveAccessRequest(agreement_id=setup["agreement"], conditions=pb.Conditions()),
            who,
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert LYON in (error.details() or "")


async def test_approving_twice_is_a_failed_precondition(setup) -> None:
    lyon = setup["lyon"]
    approve = pb.ApproveAccessRequest(agreement_id=setup["agreement"], conditions=pb.Conditions())
    await lyon.stub.ApproveAccess(approve, metadata=lyon.md, timeout=10)
    again = await refusal(lyon.stub.ApproveAccess, approve, lyon)
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "it is active" in (again.details() or "")
    refuse = await refusal(
        lyon.stub.RefuseAccess,
        pb.RefuseAccessRequest(agreement_id=setup["agreement"], reason="too late"),
        lyon,
    )
    assert refuse.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_only_the_platform_admin_registers_parties(setup) -> None:
    lyon = setup["lyon"]
    error = await refusal(
        lyon.stub.RegisterParty,
        pb.RegisterPartyRequest(
            party=pb.Party(id="sneaky", kind=pb.PARTY_KIND_PRIVATE_PARTNER, name="Sneaky")
        ),
        lyon,
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_citizens_see_only_their_own_consents(
    consent_caller: CallerFactory[ConsentCaller],
) -> None:
    alice = consent_caller("alice-1234", "", "citizen")
    own = await alice.stub.ListConsents(
        pb.ListConsentsRequest(subject_id="alice-1234"), metadata=alice.md, timeout=10
    )
    assert list(own.consents) == []
    error = await refusal(
        alice.stub.ListConsents, pb.ListConsentsRequest(subject_id="bob-5678"), alice
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
