"""Parties: organisations and applications, stamped with the registry revision of their latest
change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from tdg_core.errors import AlreadyExists, NotFound
from tdg_core.paging import encode_page_token

from tdg_consent.model import Party, PartyKind, PartyStatus
from tdg_consent.store._rows import utc
from tdg_consent.store._tables import parties


@dataclass(frozen=True, slots=True)
class PartyFilter:
    kind: PartyKind | None = None
    organisation: str = ""
    status: PartyStatus | None = None


def _party_of(r: Row[Any]) -> Party:
    return Party(
        id=r.id,
        kind=PartyKind(r.kind),
        name=r.name,
        organisation=r.organisation,
        roles=tuple(r.roles),
        siren=r.siren,
        contact=r.contact,
        status=PartyStatus(r.status),
        suspension_reason=r.suspension_reason,
        created_at=utc(r.created_at),
        updated_at=utc(r.updated_at),
    )


def _party_values(p: Party) -> dict[str, Any]:
    return {
        "kind": p.kind.value,
        "name": p.name,
        "organisation": p.organisation,
        "roles": list(p.roles),
        "siren": p.siren,
        "contact": p.contact,
        "status": p.status.value,
        "suspension_reason": p.suspension_reason,
        "updated_at": p.updated_at,
    }


async def insert_party(conn: AsyncConnection, p: Party) -> None:
    try:
        await conn.execute(
            insert(parties).values(id=p.id, created_at=p.created_at, **_party_values(p))
        )
    except IntegrityError as exc:
        raise AlreadyExists(f"party '{p.id}' already exists") from exc


async def save_party(conn: AsyncConnection, p: Party) -> None:
    await conn.execute(update(parties).where(parties.c.id == p.id).values(**_party_values(p)))


async def stamp_party(conn: AsyncConnection, party_id: str, revision: int) -> None:
    await conn.execute(
        update(parties).where(parties.c.id == party_id).values(registry_revision=revision)
    )


async def find_party(conn: AsyncConnection, party_id: str) -> Party | None:
    row = (await conn.execute(select(parties).where(parties.c.id == party_id))).first()
    return _party_of(row) if row else None


async def get_party(conn: AsyncConnection, party_id: str) -> Party:
    party = await find_party(conn, party_id)
    if party is None:
        raise NotFound(f"party '{party_id}' not found")
    return party


async def list_parties(
    conn: AsyncConnection, f: PartyFilter, size: int, after: str
) -> tuple[list[Party], str]:
    c = parties.c
    where: list[ColumnElement[bool]] = []
    if f.kind is not None:
        where.append(c.kind == f.kind.value)
    if f.organisation:
        where.append(c.organisation == f.organisation)
    if f.status is not None:
        where.append(c.status == f.status.value)
    if after:
        where.append(c.id > after)
    rows = (await conn.execute(select(parties).where(*where).order_by(c.id).limit(size + 1))).all()
    page = [_party_of(r) for r in rows[:size]]
    return page, encode_page_token(page[-1].id) if len(rows) > size else ""


async def parties_since(conn: AsyncConnection, revision: int | None) -> list[Party]:
    """Parties changed after `revision`; every party when it is None."""
    c = parties.c
    query = select(parties).order_by(c.id)
    if revision is not None:
        query = query.where(c.registry_revision > revision)
    return [_party_of(r) for r in (await conn.execute(query)).all()]
