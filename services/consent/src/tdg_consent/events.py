"""Domain changes → the protobuf events of tdg.consent.events (key, CloudEvent)."""

from __future__ import annotations

from tdg.events.v1 import consent_events_pb2 as ev
from tdg_core.events import CloudEvent

from tdg_consent.convert import (
    agreement_to_pb,
    consent_to_pb,
    erasure_to_pb,
    party_to_pb,
    to_pb_enum,
)
from tdg_consent.model import Agreement, AgreementState, Consent, Erasure, Party, PartyStatus

SOURCE = "tdg/consent"

Keyed = tuple[str, CloudEvent]


def party_registered(p: Party) -> Keyed:
    return p.id, CloudEvent.of(ev.PartyRegistered(party=party_to_pb(p)), SOURCE, subject=p.id)


def party_status_changed(p: Party, previous: PartyStatus) -> Keyed:
    payload = ev.PartyStatusChanged(party=party_to_pb(p), previous_status=to_pb_enum(previous))
    return p.id, CloudEvent.of(payload, SOURCE, subject=p.id)


def agreement_changed(a: Agreement, previous: AgreementState | None) -> Keyed:
    # History is not repeated in each event: consumers follow the stream of changes.
    payload = ev.AgreementStateChanged(agreement=agreement_to_pb(a))
    if previous is not None:
        payload.previous_state = to_pb_enum(previous)
    payload.agreement.ClearField("history")
    return a.id, CloudEvent.of(payload, SOURCE, subject=a.dataset_id)


def consent_changed(c: Consent) -> Keyed:
    payload = ev.ConsentChanged(consent=consent_to_pb(c))
    return c.subject_id, CloudEvent.of(payload, SOURCE, subject=c.dataset_id)


def erasure_requested(e: Erasure) -> Keyed:
    payload = ev.ErasureRequested(erasure=erasure_to_pb(e))
    return e.subject_id, CloudEvent.of(payload, SOURCE, subject=e.dataset_id)
