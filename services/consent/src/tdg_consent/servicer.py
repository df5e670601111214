"""tdg.consent.v1.ConsentService: proto ⇄ domain and nothing else (rules live in the use-case
modules, access in OPA)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tdg.consent.v1 import consent_pb2 as pb
from tdg.consent.v1 import consent_pb2_grpc
from tdg_core.errors import InvalidArgument, NotFound
from tdg_core.grpc import current_principal
from tdg_core.timestamps import to_timestamp

from tdg_consent.access import Access, AccessRequest
from tdg_consent.consents import Consents
from tdg_consent.convert import (
    agreement_to_pb,
    commitments_to_pb,
    conditions_from_pb,
    consent_to_pb,
    erasure_to_pb,
    from_pb_enum,
    party_from_pb,
    party_to_pb,
    to_pb_enum,
)
from tdg_consent.erasures import Erasures
from tdg_consent.model import (
    AccessKind,
    AgreementState,
    ErasureState,
    LegalBasis,
    PartyKind,
    PartyStatus,
)
from tdg_consent.parties import Parties
from tdg_consent.store import AgreementFilter, PartyFilter

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ConsentService"].full_name

_AGREEMENT_RPCS = frozenset(
    {
        "ApproveAccess",
        "RefuseAccess",
        "SuspendAgreement",
        "ResumeAgreement",
        "RevokeAgreement",
        "GetAgreement",
    }
)
_SUBJECT_RPCS = frozenset({"GiveConsent", "WithdrawConsent", "ListConsents", "RequestErasure"})


def _actor() -> str:
    return current_principal().party


def _required(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    return value


class ResourceFinder:
    """The policy input's `resource` for each RPC; agreements and parties are looked up so that
    OPA can decide on the dataset's publisher and the consumer's organisation."""

    def __init__(self, parties: Parties, access: Access, erasures: Erasures) -> None:
        self._parties = parties
        self._access = access
        self._erasures = erasures

    async def _org_of(self, party_id: str) -> str:
        if not party_id:
            return ""
        try:
            return (await self._parties.get(party_id)).organisation
        except NotFound:
            return ""  # unknown: the use case answers NOT_FOUND after the policy

    async def __call__(self, rpc: str, request: Any) -> dict[str, Any]:
        if request is None:
            return {}
        if rpc in _AGREEMENT_RPCS:
            agreement_id = _required("agreement_id", request.agreement_id)
            a = await self._access.find(agreement_id)
            if a is None:
                raise NotFound(f"agreement '{agreement_id}' not found")
            return {
                "agreement_id": a.id,
                "dataset_id": a.dataset_id,
                "publisher": a.publisher,
                "consumer": a.consumer,
                "consumer_org": a.consumer_org,
            }
        if rpc == "RequestAccess":
            consumer = request.consumer or current_principal().party
            publisher, _, _ = request.dataset_id.partition(".")
            return {
                "dataset_id": request.dataset_id,
                "publisher": publisher,
                "consumer": consumer,
                "consumer_org": await self._org_of(consumer),
            }
        if rpc == "ListAgreements":
            resource = {
                "publisher": request.publisher,
                "consumer": request.consumer,
                "consumer_org": await self._org_of(request.consumer),
                "dataset_id": request.dataset_id,
            }
            if request.dataset_id and not request.publisher:
                resource["publisher"] = request.dataset_id.partition(".")[0]
            return {k: v for k, v in resource.items() if v}
        if rpc in _SUBJECT_RPCS:
            return {"subject_id": request.subject_id}
        if rpc == "GetErasure":
            erasure = await self._erasures.get(_required("id", request.id))
            return {"subject_id": erasure.subject_id}
        if rpc == "ListErasures":
            return {"subject_id": request.subject_id} if request.subject_id else {}
        if rpc in ("StreamSubjectSet", "ListProducerGrants"):
            return {
                "dataset_id": request.dataset_id,
                "publisher": request.dataset_id.partition(".")[0],
            }
        if rpc in ("GetParty", "SuspendParty", "ReinstateParty"):
            return {"party_id": request.id}
        return {}


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    def __init__(
        self, parties: Parties, access: Access, consents: Consents, erasures: Erasures
    ) -> None:
        self._parties = parties
        self._access = access
        self._consents = consents
        self._erasures = erasures

    # --- parties -----------------------------------------------------------------------------

    async def RegisterParty(
        self, request: pb.RegisterPartyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterPartyResponse:
        if not request.HasField("party"):
            raise InvalidArgument("party", "required")
        party = await self._parties.register(party_from_pb(request.party))
        return pb.RegisterPartyResponse(party=party_to_pb(party))

    async def GetParty(
        self, request: pb.GetPartyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPartyResponse:
        party = await self._parties.get(_required("id", request.id))
        return pb.GetPartyResponse(party=party_to_pb(party))

    async def ListParties(
        self, request: pb.ListPartiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPartiesResponse:
        f = PartyFilter(
            kind=from_pb_enum(PartyKind, request.kind, "kind", required=False),
            organisation=request.organisation,
            status=from_pb_enum(PartyStatus, request.status, "status", required=False),
        )
        page, token = await self._parties.list_page(f, request.page_size, request.page_token)
        return pb.ListPartiesResponse(parties=[party_to_pb(p) for p in page], next_page_token=token)

    async def SuspendParty(
        self, request: pb.SuspendPartyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SuspendPartyResponse:
        party = await self._parties.suspend(_required("id", request.id), request.reason)
        return pb.SuspendPartyResponse(party=party_to_pb(party))

    async def ReinstateParty(
        self, request: pb.ReinstatePartyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReinstatePartyResponse:
        party = await self._parties.reinstate(_required("id", request.id))
        return pb.ReinstatePartyResponse(party=party_to_pb(party))

    # --- agreements --------------------------------------------------------------------------

    async def RequestAccess(
        self, request: pb.RequestAccessRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestAccessResponse:
        kind = from_pb_enum(AccessKind, request.kind, "kind", required=False) or AccessKind.READ
        legal_basis = from_pb_enum(LegalBasis, request.legal_basis, "legal_basis")
        assert legal_basis is not None
        agreement = await self._access.request(
            AccessRequest(
                dataset_id=request.dataset_id,
                consumer=request.consumer or _actor(),
                kind=kind,
                purposes=tuple(request.purposes),
                legal_basis=legal_basis,
                justification=request.justification,
                columns=tuple(request.columns),
            ),
            _actor(),
        )
        return pb.RequestAccessResponse(agreement=agreement_to_pb(agreement))

    async def ApproveAccess(
        self, request: pb.ApproveAccessRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApproveAccessResponse:
        conditions = conditions_from_pb(request.conditions)
        agreement = await self._access.approve(request.agreement_id, conditions, _actor())
        return pb.ApproveAccessResponse(agreement=agreement_to_pb(agreement))

    async def RefuseAccess(
        self, request: pb.RefuseAccessRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefuseAccessResponse:
        agreement = await self._access.refuse(request.agreement_id, request.reason, _actor())
        return pb.RefuseAccessResponse(agreement=agreement_to_pb(agreement))

    async def SuspendAgreement(
        self, request: pb.SuspendAgreementRequest, context: grpc.aio.ServicerContext
    ) -> pb.SuspendAgreementResponse:
        agreement = await self._access.suspend(request.agreement_id, request.reason, _actor())
        return pb.SuspendAgreementResponse(agreement=agreement_to_pb(agreement))

    async def ResumeAgreement(
        self, request: pb.ResumeAgreementRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeAgreementResponse:
        agreement = await self._access.resume(request.agreement_id, _actor())
        return pb.ResumeAgreementResponse(agreement=agreement_to_pb(agreement))

    async def RevokeAgreement(
        self, request: pb.RevokeAgreementRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeAgreementResponse:
        agreement = await self._access.revoke(request.agreement_id, request.reason, _actor())
        return pb.RevokeAgreementResponse(agreement=agreement_to_pb(agreement))

    async def GetAgreement(
        self, request: pb.GetAgreementRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAgreementResponse:
        agreement = await self._access.get(request.agreement_id)
        return pb.GetAgreementResponse(agreement=agreement_to_pb(agreement))

    async def ListAgreements(
        self, request: pb.ListAgreementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgreementsResponse:
        f = AgreementFilter(
            dataset_id=request.dataset_id,
            consumer=request.consumer,
            publisher=request.publisher,
            state=from_pb_enum(AgreementState, request.state, "state", required=False),
            kind=from_pb_enum(AccessKind, request.kind, "kind", required=False),
        )
        page, token = await self._access.list_page(f, request.page_size, request.page_token)
        return pb.ListAgreementsResponse(
            agreements=[agreement_to_pb(a) for a in page], next_page_token=token
        )

    async def ListProducerGrants(
        self, request: pb.ListProducerGrantsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProducerGrantsResponse:
        grants = await self._access.producer_grants(request.dataset_id)
        return pb.ListProducerGrantsResponse(
            grants=[
                pb.ProducerGrant(
                    party=g.party,
                    agreement_id=g.agreement_id,
                    commitments=commitments_to_pb(
                        g.agreement.conditions.commitments
                        if g.agreement and g.agreement.conditions
                        else None
                    ),
                    valid_until=to_timestamp(
                        g.agreement.conditions.valid_until
                        if g.agreement and g.agreement.conditions
                        else None
                    ),
                )
                for g in grants
            ]
        )

    async def ListPurposes(
        self, request: pb.ListPurposesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPurposesResponse:
        return pb.ListPurposesResponse(
            purposes=[pb.Purpose(code=c, description=d) for c, d in self._access.purposes.items()],
            legal_bases=[to_pb_enum(b) for b in LegalBasis],
        )

    # --- consent -----------------------------------------------------------------------------

    async def GiveConsent(
        self, request: pb.GiveConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GiveConsentResponse:
        consent = await self._consents.give(
            request.subject_id, request.purpose, request.dataset_id, request.source
        )
        return pb.GiveConsentResponse(consent=consent_to_pb(consent))

    async def WithdrawConsent(
        self, request: pb.WithdrawConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.WithdrawConsentResponse:
        consent = await self._consents.withdraw(
            request.subject_id, request.purpose, request.dataset_id, request.source
        )
        return pb.WithdrawConsentResponse(consent=consent_to_pb(consent))

    async def ListConsents(
        self, request: pb.ListConsentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConsentsResponse:
        consents = await self._consents.of_subject(request.subject_id)
        return pb.ListConsentsResponse(consents=[consent_to_pb(c) for c in consents])

    async def StreamSubjectSet(
        self, request: pb.StreamSubjectSetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubjectSetChunk]:
        async for chunk in self._consents.subject_set(
            request.dataset_id, request.purpose, request.since_revision
        ):
            yield pb.SubjectSetChunk(
                arrow_ipc=chunk.arrow_ipc, revision=chunk.revision, snapshot=chunk.snapshot
            )

    # --- erasure -----------------------------------------------------------------------------

    async def RequestErasure(
        self, request: pb.RequestErasureRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestErasureResponse:
        erasure = await self._erasures.request(
            request.subject_id, request.dataset_id, request.reason, request.source, _actor()
        )
        return pb.RequestErasureResponse(erasure=erasure_to_pb(erasure))

    async def GetErasure(
        self, request: pb.GetErasureRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetErasureResponse:
        erasure = await self._erasures.get(_required("id", request.id))
        return pb.GetErasureResponse(erasure=erasure_to_pb(erasure))

    async def ListErasures(
        self, request: pb.ListErasuresRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListErasuresResponse:
        state = from_pb_enum(ErasureState, request.state, "state", required=False)
        page, token = await self._erasures.list_page(
            request.subject_id, state, request.page_size, request.page_token
        )
        return pb.ListErasuresResponse(
            erasures=[erasure_to_pb(e) for e in page], next_page_token=token
        )
