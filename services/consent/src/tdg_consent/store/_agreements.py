"""Access requests and agreements (one row each, whatever its state), their history of
decisions, and the queries of the registry bundle and of the expiry sweep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from tdg_core.errors import NotFound
from tdg_core.paging import encode_page_token

from tdg_consent.codec import conditions_from_dict, conditions_to_dict
from tdg_consent.model import AccessKind, Agreement, AgreementEvent, AgreementState, LegalBasis
from tdg_consent.store._rows import locked, utc
from tdg_consent.store._tables import agreement_history, agreements


@dataclass(frozen=True, slots=True)
class AgreementFilter:
    dataset_id: str = ""
    consumer: str = ""
    publisher: str = ""
    state: AgreementState | None = None
    kind: AccessKind | None = None


def _agreement_of(r: Row[Any], history: Sequence[AgreementEvent] = ()) -> Agreement:
    return Agreement(
        id=r.id,
        dataset_id=r.dataset_id,
        publisher=r.publisher,
        consumer=r.consumer,
        consumer_org=r.consumer_org,
        kind=AccessKind(r.kind),
        purposes=tuple(r.purposes),
        legal_basis=LegalBasis(r.legal_basis),
        justification=r.justification,
        requested_columns=tuple(r.requested_columns),
        state=AgreementState(r.state),
        requested_by=r.requested_by,
        created_at=utc(r.created_at),
        updated_at=utc(r.updated_at),
        conditions=conditions_from_dict(r.conditions) if r.conditions else None,
        salt=r.salt,
        decided_by=r.decided_by,
        reason=r.reason,
        history=tuple(history),
    )


def _agreement_values(a: Agreement) -> dict[str, Any]:
    return {
        "state": a.state.value,
        "conditions": conditions_to_dict(a.conditions) if a.conditions else None,
        "decided_by": a.decided_by,
        "reason": a.reason,
        "updated_at": a.updated_at,
        "valid_until": a.conditions.valid_until if a.conditions else None,
    }


async def insert_agreement(conn: AsyncConnection, a: Agreement) -> None:
    await conn.execute(
        insert(agreements).values(
            id=a.id,
            dataset_id=a.dataset_id,
            publisher=a.publisher,
            consumer=a.consumer,
            consumer_org=a.consumer_org,
            kind=a.kind.value,
            purposes=list(a.purposes),
            legal_basis=a.legal_basis.value,
            justification=a.justification,
            requested_columns=list(a.requested_columns),
            salt=a.salt,
            requested_by=a.requested_by,
            created_at=a.created_at,
            **_agreement_values(a),
        )
    )


async def save_agreement(conn: AsyncConnection, a: Agreement) -> None:
    await conn.execute(
        update(agreements).where(agreements.c.id == a.id).values(**_agreement_values(a))
    )


async def stamp_agreement(conn: AsyncConnection, agreement_id: str, revision: int) -> None:
    await conn.execute(
        update(agreements).where(agreements.c.id == agreement_id).values(registry_revision=revision)
    )


async def add_history(conn: AsyncConnection, agreement_id: str, e: AgreementEvent) -> None:
    await conn.execute(
        insert(agreement_history).values(
            agreement_id=agreement_id, state=e.state.value, actor=e.actor, reason=e.reason, at=e.at
        )
    )


async def find_agreement(
    conn: AsyncConnection, agreement_id: str, for_update: bool = False
) -> Agreement | None:
    query = locked(conn, select(agreements).where(agreements.c.id == agreement_id), for_update)
    row = (await conn.execute(query)).first()
    return _agreement_of(row) if row else None


async def get_agreement(
    conn: AsyncConnection, agreement_id: str, for_update: bool = False, history: bool = False
) -> Agreement:
    query = locked(conn, select(agreements).where(agreements.c.id == agreement_id), for_update)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"agreement '{agreement_id}' not found")
    events: list[AgreementEvent] = []
    if history:
        h = agreement_history.c
        rows = await conn.execute(
            select(agreement_history).where(h.agreement_id == agreement_id).order_by(h.seq)
        )
        events = [
            AgreementEvent(AgreementState(r.state), r.actor, r.reason, utc(r.at)) for r in rows
        ]
    return _agreement_of(row, events)


async def list_agreements(
    conn: AsyncConnection, f: AgreementFilter, size: int, after: str
) -> tuple[list[Agreement], str]:
    c = agreements.c
    where: list[ColumnElement[bool]] = []
    if f.dataset_id:
        where.append(c.dataset_id == f.dataset_id)
    if f.consumer:
        # An organisation sees its applications' agreements too.
        where.append(or_(c.consumer == f.consumer, c.consumer_org == f.consumer))
    if f.publisher:
        where.append(c.publisher == f.publisher)
    if f.state is not None:
        where.append(c.state == f.state.value)
    if f.kind is not None:
        where.append(c.kind == f.kind.value)
    if after:
        where.append(c.id > after)
    query = select(agreements).where(*where).order_by(c.id).limit(size + 1)
    rows = (await conn.execute(query)).all()
    page = [_agreement_of(r) for r in rows[:size]]
    return page, encode_page_token(page[-1].id) if len(rows) > size else ""


async def agreements_since(
    conn: AsyncConnection, revision: int | None, states: Sequence[AgreementState]
) -> list[Agreement]:
    """Agreements changed after `revision`, in any state (one may have left `states`); when it is
    None, every agreement in `states`."""
    c = agreements.c
    query = select(agreements).order_by(c.id)
    if revision is None:
        query = query.where(c.state.in_([s.value for s in states]))
    else:
        query = query.where(c.registry_revision > revision)
    return [_agreement_of(r) for r in (await conn.execute(query)).all()]


async def active_write_agreements(conn: AsyncConnection, dataset_id: str) -> list[Agreement]:
    c = agreements.c
    query = (
        select(agreements)
        .where(
            c.dataset_id == dataset_id,
            c.kind == AccessKind.WRITE.value,
            c.state == AgreementState.ACTIVE.value,
        )
        .order_by(c.consumer, c.id)
    )
    return [_agreement_of(r) for r in (await conn.execute(query)).all()]


async def past_end(conn: AsyncConnection, now: datetime, limit: int = 500) -> list[str]:
    """Ids of active or suspended agreements whose validity ended."""
    c = agreements.c
    query = (
        select(c.id)
        .where(
            c.state.in_([AgreementState.ACTIVE.value, AgreementState.SUSPENDED.value]),
            c.valid_until.is_not(None),
            c.valid_until <= now,
        )
        .limit(limit)
    )
    return [r.id for r in (await conn.execute(query)).all()]
