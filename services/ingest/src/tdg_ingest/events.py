"""Ingestion's events on the wire: the erasure requests it follows on tdg.consent.events, and what
it announces on tdg.ingest.events (`ErasureApplied` per dataset, then `ErasureCompleted`), each
a protobuf payload in a CloudEvent. The eraser sees only the dataclasses here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tdg.events.v1 import consent_events_pb2 as consent_ev
from tdg.events.v1 import ingest_events_pb2 as ingest_ev
from tdg_core.events import CloudEvent
from tdg_core.timestamps import to_timestamp

SOURCE = "tdg-ingest"
_REQUESTED = consent_ev.ErasureRequested.DESCRIPTOR.full_name

Keyed = tuple[str, CloudEvent]


@dataclass(frozen=True)
class ErasureRequest:
    id: str
    subject_id: str
    dataset_id: str  # "" for every dataset


@dataclass(frozen=True)
class ErasureApplied:
    dataset_id: str
    snapshot_id: int  # of the delete; 0 when the table held none of the subject's rows
    rows_deleted: int
    applied_at: datetime
    failure: str = ""


def erasure_request(headers: Iterable[tuple[str, bytes]], value: bytes) -> ErasureRequest | None:
    """The erasure request a message carries; None for a message that is not one (another event,
    or no CloudEvent at all). Raises on a malformed request."""
    try:
        event = CloudEvent.from_headers(headers, value)
    except ValueError:
        return None
    if event.type != _REQUESTED:
        return None
    erasure = event.parse(consent_ev.ErasureRequested).erasure
    return ErasureRequest(erasure.id, erasure.subject_id, erasure.dataset_id)


def erasure_carried_out(
    request: ErasureRequest, applied: Sequence[ErasureApplied], completed_at: datetime
) -> list[Keyed]:
    """One `ErasureApplied` per dataset (keyed by dataset), then `ErasureCompleted` (keyed by
    the erasure), with the failures of every dataset joined in its `failure`."""
    events: list[Keyed] = []
    for a in applied:
        payload = ingest_ev.ErasureApplied(
            erasure_id=request.id,
            subject_id=request.subject_id,
            dataset_id=a.dataset_id,
            snapshot_id=a.snapshot_id,
            rows_deleted=a.rows_deleted,
            applied_at=to_timestamp(a.applied_at),
            failure=a.failure,
        )
        events.append((a.dataset_id, CloudEvent.of(payload, SOURCE, a.dataset_id)))
    completed = ingest_ev.ErasureCompleted(
        erasure_id=request.id,
        subject_id=request.subject_id,
        dataset_ids=[a.dataset_id for a in applied],
        completed_at=to_timestamp(completed_at),
        failure="; ".join(f"{a.dataset_id}: {a.failure}" for a in applied if a.failure),
    )
    events.append((request.id, CloudEvent.of(completed, SOURCE, request.id)))
    return events
