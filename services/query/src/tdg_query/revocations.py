"""Agreements revoked and parties suspended while queries run.

OPA decides when a query starts; a long stream must also stop when its agreement is revoked or
suspended, or its party (or the party's organisation) suspended, while it runs. The consent events
say so; each running stream holds a `Watch` and checks it before every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdg.consent.v1 import consent_pb2 as cpb


@dataclass(frozen=True)
class Watch:
    revocations: Revocations
    agreement_id: str
    parties: tuple[str, ...]

    def problem(self) -> str | None:
        """Why the stream must stop now, or None."""
        if self.agreement_id:
            state = self.revocations.ended.get(self.agreement_id)
            if state is not None:
                return f"agreement '{self.agreement_id}' was {state} while the query ran"
        for party in self.parties:
            if party in self.revocations.suspended:
                return f"party '{party}' was suspended while the query ran"
        return None


class Revocations:
    def __init__(self) -> None:
        # Read from many threads (Flight), written by the event loop: single dict/set operations.
        self.ended: dict[str, str] = {}
        self.suspended: set[str] = set()

    def watch(self, agreement_id: str, party: str, org: str) -> Watch:
        return Watch(self, agreement_id, tuple(p for p in (party, org) if p))

    def agreement_changed(self, agreement: cpb.Agreement) -> None:
        if agreement.state == cpb.AGREEMENT_STATE_ACTIVE:
            self.ended.pop(agreement.id, None)
        elif agreement.state in (
            cpb.AGREEMENT_STATE_SUSPENDED,
            cpb.AGREEMENT_STATE_REVOKED,
            cpb.AGREEMENT_STATE_EXPIRED,
        ):
            name = cpb.AgreementState.Name(agreement.state).removeprefix("AGREEMENT_STATE_")
            self.ended[agreement.id] = name.lower()

    def party_changed(self, party: cpb.Party) -> None:
        if party.status == cpb.PARTY_STATUS_SUSPENDED:
            self.suspended.add(party.id)
        else:
            self.suspended.discard(party.id)
