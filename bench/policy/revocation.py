"""3. From the moment `RevokeAgreement` returns until OPA's `tdg.read` decision stops allowing
(and, on the way, from `ApproveAccess` until it allows)."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import grpc
from common import Retrying, bearer, say
from tdg.consent.v1 import consent_pb2 as pb
from tdg.consent.v1 import consent_pb2_grpc
from tdg_consent.convert import conditions_to_pb
from tdg_core.devstack import PythonService
from tdg_core.policy import DecisionPath, PolicyClient

from .scenario import (
    READ_DATASET,
    READ_PURPOSE,
    REVOKE_ORG,
    REVOKE_PARTY,
    read_conditions,
    read_request,
)
from .services import wait_registry


async def wait_decision(
    policy: PolicyClient,
    inp: dict[str, Any],
    allowed: bool,
    agreement_id: str,
    timeout_s: float = 30,
) -> float:
    """Poll the decision every ~2 ms until it allows by `agreement_id` (or stops allowing);
    the seconds until the answer that showed it arrived."""
    t0 = time.perf_counter()
    while True:
        answer = await policy.decide(DecisionPath.READ, inp)
        now = time.perf_counter()
        if allowed == (answer["allow"] and answer["agreement_id"] == agreement_id):
            return now - t0
        if now - t0 > timeout_s:
            raise TimeoutError(f"decision still {answer['allow']} after {timeout_s}s: {answer}")
        await asyncio.sleep(0.002)


async def revocation_phase(
    service: PythonService, opa_url: str, secret: str, revision: int, repeats: int
) -> dict[str, float]:
    admin = bearer(secret, "ops", "tdg", ["platform-admin"])
    app = bearer(secret, REVOKE_PARTY, REVOKE_ORG, [])
    officer = bearer(secret, "dpo-lyon", READ_DATASET.partition(".")[0], ["data-officer"])
    inp = read_request(REVOKE_PARTY, REVOKE_ORG)
    conditions = conditions_to_pb(read_conditions(datetime.now(UTC)))
    policy = PolicyClient(opa_url, timeout_s=5.0)
    call = Retrying()
    approvals: list[float] = []
    revocations: list[float] = []
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = consent_pb2_grpc.ConsentServiceStub(channel)
            organisation = pb.Party(
                id=REVOKE_ORG,
                kind=pb.PARTY_KIND_PRIVATE_PARTNER,
                name="Revocation partner",
                roles=["consumer"],
            )
            application = pb.Party(
                id=REVOKE_PARTY,
                kind=pb.PARTY_KIND_APPLICATION,
                name="Revocation app",
                organisation=REVOKE_ORG,
                roles=["consumer"],
            )
            for party in (organisation, application):
                request = pb.RegisterPartyRequest(party=party)
                await call(partial(stub.RegisterParty, request, metadata=admin, timeout=30))
            # Each registration bumped the registry: start once OPA has both.
            await wait_registry(opa_url, revision + 2)
            for _ in range(repeats):
                access = pb.RequestAccessRequest(
                    dataset_id=READ_DATASET,
                    kind=pb.ACCESS_KIND_READ,
                    purposes=[READ_PURPOSE],
                    legal_basis=pb.LEGAL_BASIS_PUBLIC_TASK,
                    justification="counting cyclists for the network plan",
                )
                requested = await call(
                    partial(stub.RequestAccess, access, metadata=app, timeout=30)
                )
                agreement_id = requested.agreement.id
                approve = pb.ApproveAccessRequest(agreement_id=agreement_id, conditions=conditions)
                await call(partial(stub.ApproveAccess, approve, metadata=officer, timeout=30))
                approvals.append(await wait_decision(policy, inp, True, agreement_id))
                await asyncio.sleep(0.2)  # OPA is back in its long poll (or its polling)
                revoke = pb.RevokeAgreementRequest(
                    agreement_id=agreement_id, reason="end of the study"
                )
                await call(partial(stub.RevokeAgreement, revoke, metadata=officer, timeout=30))
                # From here (the revocation returned) until OPA stops allowing.
                revocations.append(await wait_decision(policy, inp, False, agreement_id))
    finally:
        await policy.close()
    revoke_ms = [s * 1000 for s in revocations]
    approve_ms = [s * 1000 for s in approvals]
    say(
        f"revocation → OPA denies: median {statistics.median(revoke_ms):.0f} ms, "
        f"max {max(revoke_ms):.0f} ms ({', '.join(f'{v:.0f}' for v in revoke_ms)})"
    )
    say(f"approval → OPA allows: median {statistics.median(approve_ms):.0f} ms")
    return {
        "revocation_propagation_ms": round(statistics.median(revoke_ms), 1),
        "revocation_propagation_max_ms": round(max(revoke_ms), 1),
        "approval_propagation_ms": round(statistics.median(approve_ms), 1),
        "revocation_rpc_retries": call.retries,
    }
