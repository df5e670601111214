"""How an erasure request advances as the ingest service reports back on tdg.ingest.events.

received ─ErasureApplied─► in-progress ─ErasureCompleted─► completed
    └──────────┴─ErasureApplied or ErasureCompleted with a failure─► failed

ErasureApplied (one per dataset) is keyed by dataset and ErasureCompleted by erasure, so they may
sit on different partitions and arrive in either order: a dataset reported after the completion is
still recorded, and only the completion decides the final state (a dataset that failed and was
retried successfully ends completed). Applying an event again changes nothing.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncConnection
from tdg.events.v1 import ingest_events_pb2 as iev
from tdg_core.events import CloudEvent

from tdg_consent import store
from tdg_consent.model import DatasetErasure, Erasure, ErasureState

log = structlog.get_logger("tdg.consent.erasures")

_OPEN = frozenset({ErasureState.RECEIVED, ErasureState.IN_PROGRESS})


def dataset_applied(erasure: Erasure, entry: DatasetErasure, failure: str) -> Erasure:
    """The erasure once one dataset reported: its entry recorded (replacing an earlier report of
    the same dataset), or, on failure, an open erasure failed (the rows are still there)."""
    if failure:
        if erasure.state not in _OPEN:
            return erasure
        return dataclasses.replace(erasure, state=ErasureState.FAILED, failure=failure)
    others = tuple(d for d in erasure.datasets if d.dataset_id != entry.dataset_id)
    datasets = tuple(sorted((*others, entry), key=lambda d: d.dataset_id))
    state = ErasureState.IN_PROGRESS if erasure.state == ErasureState.RECEIVED else erasure.state
    return dataclasses.replace(erasure, state=state, datasets=datasets)


def completed(erasure: Erasure, at: datetime, failure: str) -> Erasure:
    """The erasure once the ingest service reported it carried out (or failed) everywhere."""
    state = ErasureState.FAILED if failure else ErasureState.COMPLETED
    return dataclasses.replace(erasure, state=state, completed_at=at, failure=failure)


def _time(stamp: Timestamp, fallback: datetime) -> datetime:
    # An unset timestamp (zero) means the producer gave none: the event's own time stands in.
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else fallback


async def apply_ingest_event(conn: AsyncConnection, event: CloudEvent) -> None:
    """Apply one event of tdg.ingest.events in the follower's transaction; other types are not
    the consent service's concern."""
    if event.type == iev.ErasureApplied.DESCRIPTOR.full_name:
        applied = event.parse(iev.ErasureApplied)
        erasure = await _reported(conn, applied.erasure_id, applied.subject_id, event)
        if erasure is not None:
            entry = DatasetErasure(
                dataset_id=applied.dataset_id,
                snapshot_id=applied.snapshot_id,
                rows_deleted=applied.rows_deleted,
                completed_at=_time(applied.applied_at, event.time),
            )
            await _save(conn, erasure, dataset_applied(erasure, entry, applied.failure))
    elif event.type == iev.ErasureCompleted.DESCRIPTOR.full_name:
        done = event.parse(iev.ErasureCompleted)
        erasure = await _reported(conn, done.erasure_id, done.subject_id, event)
        if erasure is not None:
            at = _time(done.completed_at, event.time)
            await _save(conn, erasure, completed(erasure, at, done.failure))


async def _reported(
    conn: AsyncConnection, erasure_id: str, subject_id: str, event: CloudEvent
) -> Erasure | None:
    """The erasure an event reports on, locked; None (logged) when this service has no such
    erasure for that subject: another deployment's, or one this database lost."""
    erasure = await store.find_erasure(conn, erasure_id, for_update=True)
    if erasure is None or (subject_id and subject_id != erasure.subject_id):
        log.warning(
            "skipping progress of an unknown erasure",
            type=event.type,
            erasure_id=erasure_id,
            event_id=event.id,
        )
        return None
    return erasure


async def _save(conn: AsyncConnection, before: Erasure, after: Erasure) -> None:
    if after != before:  # a duplicate report writes nothing
        await store.save_erasure_progress(conn, after)
        log.info("erasure progressed", erasure_id=after.id, state=after.state.value)
