"""Access requests and data-sharing agreements: request, approve with conditions, refuse,
suspend, resume, revoke, expire; each step kept as history and published as an event.

Who may take each step is decided by OPA (tdg.rpc) before these run; here are the rules of the
agreement itself (states, conditions against the dataset's schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from tdg_core import paging
from tdg_core.background import Background
from tdg_core.errors import FailedPrecondition, InvalidArgument
from tdg_core.identifiers import parse_dataset_id

from tdg_consent import events, lifecycle, store, validation
from tdg_consent.changes import Change, Changes
from tdg_consent.datasets import DatasetDirectory
from tdg_consent.model import (
    AccessKind,
    Agreement,
    AgreementEvent,
    AgreementState,
    Conditions,
    LegalBasis,
    PartyStatus,
)

log = structlog.get_logger("tdg.consent.access")

MAX_REASON = 2000
SYSTEM_ACTOR = "tdg-consent"


@dataclasses.dataclass(frozen=True, slots=True)
class AccessRequest:
    dataset_id: str
    consumer: str
    kind: AccessKind
    purposes: tuple[str, ...]
    legal_basis: LegalBasis
    justification: str
    columns: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ProducerGrant:
    party: str
    agreement_id: str = ""
    agreement: Agreement | None = None


class Access:
    def __init__(
        self, changes: Changes, datasets: DatasetDirectory, purposes: Mapping[str, str]
    ) -> None:
        self._changes = changes
        self._datasets = datasets
        self.purposes = dict(purposes)
        self._purposes = list(purposes)
        self._sweeper: Background | None = None

    async def request(self, r: AccessRequest, actor: str) -> Agreement:
        publisher, _ = parse_dataset_id(r.dataset_id, "dataset_id")
        validation.validate_purposes(r.purposes, self._purposes)
        validation.text("justification", r.justification, MAX_REASON)
        dataset = await self._datasets.get(r.dataset_id, published=True)
        if dataset.status != "published":
            raise FailedPrecondition(
                f"dataset '{r.dataset_id}' is {dataset.status}: access is requested to "
                "published datasets only"
            )
        validation.validate_columns("columns", r.columns, dataset)
        async with self._changes.write() as change:
            consumer = await store.get_party(change.conn, r.consumer)
            if consumer.status is PartyStatus.SUSPENDED:
                raise FailedPrecondition(f"party '{consumer.id}' is suspended")
            if consumer.organisation == publisher:
                raise FailedPrecondition(
                    f"'{consumer.id}' belongs to the publisher '{publisher}', which needs no "
                    "agreement for its own datasets"
                )
            now = datetime.now(UTC)
            agreement = Agreement(
                id=f"agr-{uuid.uuid4().hex}",
                dataset_id=r.dataset_id,
                publisher=dataset.publisher,
                consumer=consumer.id,
                consumer_org=consumer.organisation,
                kind=r.kind,
                purposes=r.purposes,
                legal_basis=r.legal_basis,
                justification=r.justification,
                requested_columns=r.columns,
                state=AgreementState.REQUESTED,
                requested_by=actor,
                created_at=now,
                updated_at=now,
                salt=secrets.token_hex(32),
            )
            await store.insert_agreement(change.conn, agreement)
            await self._record(change, agreement, None, actor, r.justification)
        return agreement

    async def approve(self, agreement_id: str, conditions: Conditions, actor: str) -> Agreement:
        now = datetime.now(UTC)
        async with self._changes.write() as change:
            current = await store.get_agreement(change.conn, agreement_id, for_update=True)
            state = lifecycle.next_state("approve", current.state, agreement_id)
            dataset = await store.find_dataset(change.conn, current.dataset_id)
            if dataset is None or dataset.status != "published":
                status = dataset.status if dataset else "gone"
                raise FailedPrecondition(f"dataset '{current.dataset_id}' is {status}")
            validation.validate_conditions(conditions, dataset, current.kind)
            if conditions.valid_until is not None and conditions.valid_until <= now:
                raise InvalidArgument("conditions.valid_until", "is in the past")
            settled = dataclasses.replace(conditions, valid_from=conditions.valid_from or now)
            updated = dataclasses.replace(
                current,
                state=state,
                conditions=settled,
                decided_by=actor,
                reason="",
                updated_at=now,
            )
            await self._save(change, updated, current.state, actor, "")
        return updated

    async def refuse(self, agreement_id: str, reason: str, actor: str) -> Agreement:
        return await self._step("refuse", agreement_id, actor, reason, reason_required=True)

    async def suspend(self, agreement_id: str, reason: str, actor: str) -> Agreement:
        return await self._step("suspend", agreement_id, actor, reason, reason_required=True)

    async def resume(self, agreement_id: str, actor: str) -> Agreement:
        return await self._step("resume", agreement_id, actor, "")

    async def revoke(self, agreement_id: str, reason: str, actor: str) -> Agreement:
        return await self._step("revoke", agreement_id, actor, reason, reason_required=True)

    async def _step(
        self, step: str, agreement_id: str, actor: str, reason: str, reason_required: bool = False
    ) -> Agreement:
        validation.text("reason", reason, MAX_REASON, required=reason_required)
        async with self._changes.write() as change:
            current = await store.get_agreement(change.conn, agreement_id, for_update=True)
            state = lifecycle.next_state(step, current.state, agreement_id)
            updated = dataclasses.replace(
                current,
                state=state,
                decided_by=actor if step in ("refuse", "expire") else current.decided_by,
                reason=reason,
                updated_at=datetime.now(UTC),
            )
            await self._save(change, updated, current.state, actor, reason)
        return updated

    async def _save(
        self, change: Change, a: Agreement, previous: AgreementState, actor: str, reason: str
    ) -> None:
        await store.save_agreement(change.conn, a)
        await self._record(change, a, previous, actor, reason)

    async def _record(
        self,
        change: Change,
        a: Agreement,
        previous: AgreementState | None,
        actor: str,
        reason: str,
    ) -> None:
        await store.add_history(
            change.conn, a.id, AgreementEvent(a.state, actor, reason, a.updated_at)
        )
        if a.state in lifecycle.IN_BUNDLE or previous in lifecycle.IN_BUNDLE:
            await change.registry(agreement=a.id)
        await change.emit(events.agreement_changed(a, previous))

    # --- reads -------------------------------------------------------------------------------

    async def get(self, agreement_id: str) -> Agreement:
        async with self._changes.read() as conn:
            return await store.get_agreement(conn, agreement_id, history=True)

    async def find(self, agreement_id: str) -> Agreement | None:
        async with self._changes.read() as conn:
            return await store.find_agreement(conn, agreement_id)

    async def list_page(
        self, f: store.AgreementFilter, page_size: int, page_token: str
    ) -> tuple[list[Agreement], str]:
        size = paging.page_size(page_size)
        after = paging.decode_page_token(page_token, "ListAgreements") if page_token else ""
        async with self._changes.read() as conn:
            return await store.list_agreements(conn, f, size, after)

    async def producer_grants(self, dataset_id: str) -> list[ProducerGrant]:
        """The publisher, then every partner with an active write agreement valid now."""
        parse_dataset_id(dataset_id, "dataset_id")
        dataset = await self._datasets.get(dataset_id)
        now = datetime.now(UTC)
        async with self._changes.read() as conn:
            writers = await store.active_write_agreements(conn, dataset_id)
        grants = [ProducerGrant(dataset.publisher)]
        for a in writers:
            c = a.conditions
            if c is None or (c.valid_from and c.valid_from > now):
                continue
            if c.valid_until and c.valid_until <= now:
                continue
            grants.append(ProducerGrant(a.consumer, a.id, a))
        return grants

    # --- expiry ------------------------------------------------------------------------------

    async def expire_due(self) -> int:
        """Mark agreements past their end as expired (OPA already denies them by their dates)."""
        async with self._changes.read() as conn:
            due = await store.past_end(conn, datetime.now(UTC))
        for agreement_id in due:
            with contextlib.suppress(FailedPrecondition):  # changed meanwhile
                await self._step("expire", agreement_id, SYSTEM_ACTOR, "validity period ended")
        return len(due)

    def start_expiry(self, every_s: float) -> None:
        async def sweep() -> None:
            while True:
                try:
                    await self.expire_due()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("expiry sweep failed, will retry", error=str(exc))
                await asyncio.sleep(every_s)

        if self._sweeper is None:
            self._sweeper = Background("agreement-expiry", sweep)
            self._sweeper.start()

    async def stop(self) -> None:
        if self._sweeper is not None:
            await self._sweeper.stop()
            self._sweeper = None
