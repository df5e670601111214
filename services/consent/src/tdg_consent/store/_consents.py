"""Citizens' consents: the current state of each (subject, purpose, dataset), the append-only log
of changes, and the subject sets (who has consented now, who changed since a revision)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, exists, insert, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from tdg_consent.model import Consent, ConsentState
from tdg_consent.store._rows import upsert, utc_or_none
from tdg_consent.store._tables import consent_log, consents


def _consent_of(r: Row[Any]) -> Consent:
    return Consent(
        receipt_id=r.receipt_id,
        subject_id=r.subject_id,
        purpose=r.purpose,
        dataset_id=r.dataset_id,
        state=ConsentState(r.state),
        source=r.source,
        given_at=utc_or_none(r.given_at),
        withdrawn_at=utc_or_none(r.withdrawn_at),
        revision=r.revision,
    )


async def find_consent(
    conn: AsyncConnection, subject_id: str, purpose: str, dataset_id: str
) -> Consent | None:
    c = consents.c
    row = (
        await conn.execute(
            select(consents).where(
                c.subject_id == subject_id, c.purpose == purpose, c.dataset_id == dataset_id
            )
        )
    ).first()
    return _consent_of(row) if row else None


async def record_consent(conn: AsyncConnection, consent: Consent, at: datetime) -> None:
    """Log the change and make it the current state of (subject, purpose, dataset)."""
    await conn.execute(
        insert(consent_log).values(
            revision=consent.revision,
            receipt_id=consent.receipt_id,
            subject_id=consent.subject_id,
            purpose=consent.purpose,
            dataset_id=consent.dataset_id,
            state=consent.state.value,
            source=consent.source,
            at=at,
        )
    )
    values = {
        "state": consent.state.value,
        "receipt_id": consent.receipt_id,
        "source": consent.source,
        "given_at": consent.given_at,
        "withdrawn_at": consent.withdrawn_at,
        "revision": consent.revision,
    }
    key = {
        "subject_id": consent.subject_id,
        "purpose": consent.purpose,
        "dataset_id": consent.dataset_id,
    }
    await upsert(conn, consents, key, values)


async def subject_consents(conn: AsyncConnection, subject_id: str) -> list[Consent]:
    c = consents.c
    query = select(consents).where(c.subject_id == subject_id).order_by(c.purpose, c.dataset_id)
    return [_consent_of(r) for r in (await conn.execute(query)).all()]


def _active_subjects(dataset_id: str, purpose: str) -> Any:
    """Subjects whose most specific consent for (dataset, purpose) is given: a dataset-specific
    record overrides the all-datasets one, in both directions."""
    c = consents.c
    specific = consents.alias("specific")
    s = specific.c
    for_dataset = select(c.subject_id).where(
        c.purpose == purpose, c.dataset_id == dataset_id, c.state == ConsentState.GIVEN.value
    )
    for_all = select(c.subject_id).where(
        c.purpose == purpose,
        c.dataset_id == "",
        c.state == ConsentState.GIVEN.value,
        ~exists().where(
            and_(s.subject_id == c.subject_id, s.purpose == purpose, s.dataset_id == dataset_id)
        ),
    )
    return union_all(for_dataset, for_all)


async def stream_subject_set(
    conn: AsyncConnection, dataset_id: str, purpose: str, chunk_rows: int
) -> AsyncIterator[list[str]]:
    """The subject ids with active consent, in chunks (a server-side cursor: bounded memory)."""
    result = await conn.stream(
        _active_subjects(dataset_id, purpose).execution_options(yield_per=chunk_rows)
    )
    async for partition in result.partitions(chunk_rows):
        yield [r[0] for r in partition]


async def subject_changes(
    conn: AsyncConnection, dataset_id: str, purpose: str, since: int
) -> list[tuple[str, bool]]:
    """(subject, active now) for each subject whose consent for (dataset, purpose) changed after
    revision `since` (one row per subject; `active` is the state now, not per change)."""
    log = consent_log.c
    changed = (
        select(log.subject_id)
        .where(
            log.purpose == purpose,
            log.revision > since,
            or_(log.dataset_id == "", log.dataset_id == dataset_id),
        )
        .distinct()
        .subquery()
    )
    active = _active_subjects(dataset_id, purpose).subquery()
    query = select(
        changed.c.subject_id,
        exists().where(active.c.subject_id == changed.c.subject_id).label("active"),
    ).order_by(changed.c.subject_id)
    return [(r.subject_id, bool(r.active)) for r in (await conn.execute(query)).all()]
