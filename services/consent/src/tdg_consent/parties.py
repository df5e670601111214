"""Parties: organisations and their applications. Registering, suspending and reinstating."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from tdg_core import paging
from tdg_core.errors import FailedPrecondition, NotFound

from tdg_consent import events, store, validation
from tdg_consent.changes import Changes
from tdg_consent.model import Party, PartyKind, PartyStatus

MAX_REASON = 2000


class Parties:
    def __init__(self, changes: Changes) -> None:
        self._changes = changes

    async def register(self, party: Party) -> Party:
        validation.validate_party(party)
        now = datetime.now(UTC)
        organisation = party.organisation if party.kind is PartyKind.APPLICATION else party.id
        new = dataclasses.replace(
            party,
            organisation=organisation,
            status=PartyStatus.ACTIVE,
            suspension_reason="",
            created_at=now,
            updated_at=now,
        )
        async with self._changes.write() as change:
            if party.kind is PartyKind.APPLICATION:
                owner = await store.find_party(change.conn, organisation)
                if owner is None:
                    raise NotFound(f"organisation '{organisation}' of application not found")
                if owner.kind is PartyKind.APPLICATION:
                    raise FailedPrecondition(
                        f"'{organisation}' is an application; an application belongs to an "
                        "organisation"
                    )
            await store.insert_party(change.conn, new)
            await change.registry(party=new.id)
            await change.emit(events.party_registered(new))
        return new

    async def get(self, party_id: str) -> Party:
        async with self._changes.read() as conn:
            return await store.get_party(conn, party_id)

    async def list_page(
        self, f: store.PartyFilter, page_size: int, page_token: str
    ) -> tuple[list[Party], str]:
        size = paging.page_size(page_size)
        after = paging.decode_page_token(page_token, "ListParties") if page_token else ""
        async with self._changes.read() as conn:
            return await store.list_parties(conn, f, size, after)

    async def suspend(self, party_id: str, reason: str) -> Party:
        validation.text("reason", reason, MAX_REASON, required=True)
        return await self._set_status(party_id, PartyStatus.SUSPENDED, reason)

    async def reinstate(self, party_id: str) -> Party:
        return await self._set_status(party_id, PartyStatus.ACTIVE, "")

    async def _set_status(self, party_id: str, status: PartyStatus, reason: str) -> Party:
        async with self._changes.write() as change:
            current = await store.get_party(change.conn, party_id)
            if current.status is status:
                raise FailedPrecondition(f"party '{party_id}' is already {status.value}")
            updated = dataclasses.replace(
                current, status=status, suspension_reason=reason, updated_at=datetime.now(UTC)
            )
            await store.save_party(change.conn, updated)
            await change.registry(party=updated.id)
            await change.emit(events.party_status_changed(updated, current.status))
        return updated
