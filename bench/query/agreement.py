"""The partner application of the masked query: registered, granted a read agreement (counter_id
hashed, a territory filter on three communes) through the consent service, and waited for in
OPA."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from common import Metadata, Retrying, bearer
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.consent.v1 import consent_pb2 as pb
from tdg.consent.v1 import consent_pb2_grpc
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input

from .scenario import DATASET, PUBLISHER, PURPOSE, TERRITORY, dataset

APPLICATION, PARTNER = "velo-app-bench", "velo-startup-bench"


async def agreement(consent_address: str, secret: str) -> Metadata:
    """A partner application with an active read agreement (counter_id hashed, the territory
    filter); its gRPC metadata."""
    org, app = PARTNER, APPLICATION
    admin = bearer(secret, "platform-ops", "tdg-platform", ["platform-admin"])
    officer = bearer(secret, "lyon-data-office", PUBLISHER, ["data-officer"])
    app_md = bearer(secret, app, org, [])
    async with grpc.aio.insecure_channel(consent_address) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        for party in (
            pb.Party(id=org, kind=pb.PARTY_KIND_PRIVATE_PARTNER, name="Vélo Startup"),
            pb.Party(
                id=app,
                kind=pb.PARTY_KIND_APPLICATION,
                name="Vélo planner",
                organisation=org,
                roles=["consumer"],
            ),
        ):
            await stub.RegisterParty(
                pb.RegisterPartyRequest(party=party), metadata=admin, timeout=30
            )
        columns = ["counter_id", "date_observed", "intensity", "commune_code"]
        # UNAVAILABLE while the consent service is still reading the catalog's events.
        requested = await Retrying(attempts=20)(
            lambda: stub.RequestAccess(
                pb.RequestAccessRequest(
                    dataset_id=DATASET,
                    purposes=[PURPOSE],
                    legal_basis=pb.LEGAL_BASIS_PUBLIC_TASK,
                    justification="Size the cycle lanes",
                    columns=columns,
                ),
                metadata=app_md,
                timeout=30,
            )
        )
        until = Timestamp()
        until.FromDatetime(datetime.now(UTC) + timedelta(days=1))
        await stub.ApproveAccess(
            pb.ApproveAccessRequest(
                agreement_id=requested.agreement.id,
                conditions=pb.Conditions(
                    columns=columns,
                    masks=[pb.ColumnMask(column="counter_id", method=pb.MASK_METHOD_HASH)],
                    territory_filter=pb.TerritoryFilter(column="commune_code", codes=TERRITORY),
                    valid_until=until,
                ),
            ),
            metadata=officer,
            timeout=30,
        )
    return app_md


async def until_allowed(opa_url: str, subject: dict[str, Any], timeout_s: float = 30) -> None:
    """Until OPA (its bundle pulled) allows the subject's aggregate under the agreement."""
    policy = PolicyClient(opa_url, 5.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            decision = await policy.decide(
                DecisionPath.READ,
                read_input(dataset(), subject, PURPOSE, group_by=["commune_code"]),
            )
            if decision.get("allow") and decision.get("agreement_id"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agreement is not in OPA: {decision.get('reasons')}")
            await asyncio.sleep(0.05)
    finally:
        await policy.close()
