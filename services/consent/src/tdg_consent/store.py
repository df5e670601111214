"""Persistence of the consent service: SQLAlchemy Core tables and queries (SQLite or PostgreSQL).

Every function takes the caller's connection, so a change, its outbox event and the revision
counters share one transaction. The schema is created by the Alembic migrations beside this module.

Two counters order the changes: `registry` (parties and agreements: the OPA bundle's revision) and
`consent` (the consent log). Each is a row incremented inside the writing transaction, so the row
lock orders commits: a reader that saw revision N has seen every change up to N (a sequence would
let N+1 commit before N).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    and_,
    exists,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from tdg_core.errors import AlreadyExists, NotFound
from tdg_core.outbox import outbox_table
from tdg_core.paging import encode_page_token

from tdg_consent.codec import (
    conditions_from_dict,
    conditions_to_dict,
    erasures_from_list,
    erasures_to_list,
)
from tdg_consent.model import (
    AccessKind,
    Agreement,
    AgreementEvent,
    AgreementState,
    Consent,
    ConsentState,
    DatasetColumn,
    DatasetRef,
    Erasure,
    ErasureState,
    LegalBasis,
    Party,
    PartyKind,
    PartyStatus,
)

metadata_obj = MetaData()

parties = Table(
    "parties",
    metadata_obj,
    Column("id", String(63), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("organisation", String(63), nullable=False, index=True),
    Column("roles", JSON, nullable=False),
    Column("siren", String(9), nullable=False),
    Column("contact", String(320), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("suspension_reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The registry revision of its latest change: the OPA bundle reloads only what changed.
    Column("registry_revision", BigInteger, nullable=False, index=True, default=0),
)

datasets = Table(
    "datasets",
    metadata_obj,
    Column("id", String(200), primary_key=True),
    Column("publisher", String(63), nullable=False),
    Column("status", String(16), nullable=False),
    Column("access_level", String(16), nullable=False),
    Column("columns", JSON, nullable=False),
    Column("subject_column", String(63), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

agreements = Table(
    "agreements",
    metadata_obj,
    Column("id", String(40), primary_key=True),
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("publisher", String(63), nullable=False, index=True),
    Column("consumer", String(63), nullable=False, index=True),
    Column("consumer_org", String(63), nullable=False, index=True),
    Column("kind", String(8), nullable=False),
    Column("purposes", JSON, nullable=False),
    Column("legal_basis", String(32), nullable=False),
    Column("justification", Text, nullable=False),
    Column("requested_columns", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("conditions", JSON, nullable=True),
    Column("salt", String(64), nullable=False),
    Column("requested_by", String(63), nullable=False),
    Column("decided_by", String(63), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The end of validity, denormalised from conditions so the expiry sweep finds it by index.
    Column("valid_until", DateTime(timezone=True), nullable=True, index=True),
    Column("registry_revision", BigInteger, nullable=False, index=True, default=0),
)

agreement_history = Table(
    "agreement_history",
    metadata_obj,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("agreement_id", String(40), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("actor", String(63), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# The current state of each (subject, purpose, dataset); dataset "" means every dataset.
consents = Table(
    "consents",
    metadata_obj,
    Column("subject_id", String(200), primary_key=True),
    Column("purpose", String(63), primary_key=True),
    Column("dataset_id", String(200), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("receipt_id", String(40), nullable=False),
    Column("source", String(100), nullable=False),
    Column("given_at", DateTime(timezone=True), nullable=True),
    Column("withdrawn_at", DateTime(timezone=True), nullable=True),
    Column("revision", BigInteger, nullable=False),
    Index("ix_consents_set", "purpose", "dataset_id", "state", "subject_id"),
)

# Every change, append-only: receipts and the changes since a revision.
consent_log = Table(
    "consent_log",
    metadata_obj,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("receipt_id", String(40), nullable=False, unique=True),
    Column("subject_id", String(200), nullable=False),
    Column("purpose", String(63), nullable=False),
    Column("dataset_id", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("source", String(100), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_consent_log_purpose", "purpose", "revision"),
)

erasures = Table(
    "erasures",
    metadata_obj,
    Column("id", String(40), primary_key=True),
    Column("subject_id", String(200), nullable=False, index=True),
    Column("dataset_id", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", String(100), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("requested_by", String(63), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("datasets", JSON, nullable=False),
    Column("failure", Text, nullable=False),
)

# Where each topic follower (tdg_consent.follower) is in each partition, written with what it
# applied.
consumed_offsets = Table(
    "consumed_offsets",
    metadata_obj,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

counters = Table(
    "counters",
    metadata_obj,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

outbox = outbox_table(metadata_obj)

REGISTRY = "registry"
CONSENT = "consent"


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every time we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


async def _upsert(
    conn: AsyncConnection, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    """Update the row with `key`, or insert it (portable across SQLite and PostgreSQL)."""
    where = [table.c[name] == value for name, value in key.items()]
    result = await conn.execute(update(table).where(*where).values(**values))
    if result.rowcount == 0:
        await conn.execute(insert(table).values(**key, **values))


# --- counters -------------------------------------------------------------------------------


async def stamp_party(conn: AsyncConnection, party_id: str, revision: int) -> None:
    await conn.execute(
        update(parties).where(parties.c.id == party_id).values(registry_revision=revision)
    )


async def stamp_agreement(conn: AsyncConnection, agreement_id: str, revision: int) -> None:
    await conn.execute(
        update(agreements).where(agreements.c.id == agreement_id).values(registry_revision=revision)
    )


async def parties_since(conn: AsyncConnection, revision: int | None) -> list[Party]:
    """Parties changed after `revision`; every party when it is None."""
    c = parties.c
    query = select(parties).order_by(c.id)
    if revision is not None:
        query = query.where(c.registry_revision > revision)
    return [_party_of(r) for r in (await conn.execute(query)).all()]


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


async def bump(conn: AsyncConnection, name: str) -> int:
    """The next value of a counter, taken inside the caller's transaction (see module doc)."""
    c = counters.c
    value = await conn.scalar(
        update(counters).where(c.name == name).values(value=c.value + 1).returning(c.value)
    )
    if value is None:
        raise RuntimeError(f"counter {name!r} missing: migrations not applied")
    return int(value)


async def current(conn: AsyncConnection, name: str) -> int:
    return int(await conn.scalar(select(counters.c.value).where(counters.c.name == name)) or 0)


# --- parties --------------------------------------------------------------------------------


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
        created_at=_utc(r.created_at),
        updated_at=_utc(r.updated_at),
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


async def find_party(conn: AsyncConnection, party_id: str) -> Party | None:
    row = (await conn.execute(select(parties).where(parties.c.id == party_id))).first()
    return _party_of(row) if row else None


async def get_party(conn: AsyncConnection, party_id: str) -> Party:
    party = await find_party(conn, party_id)
    if party is None:
        raise NotFound(f"party '{party_id}' not found")
    return party


@dataclass(frozen=True, slots=True)
class PartyFilter:
    kind: PartyKind | None = None
    organisation: str = ""
    status: PartyStatus | None = None


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


# --- datasets (followed from the catalog) -----------------------------------------------------


def _dataset_of(r: Row[Any]) -> DatasetRef:
    return DatasetRef(
        id=r.id,
        publisher=r.publisher,
        status=r.status,
        access_level=r.access_level,
        columns=tuple(DatasetColumn(**c) for c in r.columns),
        subject_column=r.subject_column,
    )


async def find_dataset(conn: AsyncConnection, dataset_id: str) -> DatasetRef | None:
    row = (await conn.execute(select(datasets).where(datasets.c.id == dataset_id))).first()
    return _dataset_of(row) if row else None


async def upsert_dataset(conn: AsyncConnection, d: DatasetRef) -> None:
    values = {
        "publisher": d.publisher,
        "status": d.status,
        "access_level": d.access_level,
        "columns": [
            {"name": c.name, "type": c.type, "sensitivity": c.sensitivity} for c in d.columns
        ],
        "subject_column": d.subject_column,
        "updated_at": datetime.now(UTC),
    }
    await _upsert(conn, datasets, {"id": d.id}, values)


async def update_dataset_fields(conn: AsyncConnection, dataset_id: str, **values: Any) -> None:
    await conn.execute(
        update(datasets)
        .where(datasets.c.id == dataset_id)
        .values(updated_at=datetime.now(UTC), **values)
    )


async def consumed(conn: AsyncConnection, topic: str) -> dict[int, int]:
    """The next offset to read in each partition of `topic` (partitions never read are absent)."""
    c = consumed_offsets.c
    rows = await conn.execute(select(c.partition, c.next_offset).where(c.topic == topic))
    return {r.partition: r.next_offset for r in rows}


async def position(
    conn: AsyncConnection, topic: str, partition: int, for_update: bool = False
) -> int:
    """The next offset to apply in a partition (0 when never read); locked with `for_update`
    (PostgreSQL; SQLite's write transaction holds the database lock anyway)."""
    c = consumed_offsets.c
    query = select(c.next_offset).where(c.topic == topic, c.partition == partition)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return int(await conn.scalar(query) or 0)


async def mark_consumed(conn: AsyncConnection, topic: str, partition: int, offset: int) -> None:
    await _upsert(
        conn,
        consumed_offsets,
        {"topic": topic, "partition": partition},
        {"next_offset": offset + 1},
    )


# --- agreements -----------------------------------------------------------------------------


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
        created_at=_utc(r.created_at),
        updated_at=_utc(r.updated_at),
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


async def add_history(conn: AsyncConnection, agreement_id: str, e: AgreementEvent) -> None:
    await conn.execute(
        insert(agreement_history).values(
            agreement_id=agreement_id, state=e.state.value, actor=e.actor, reason=e.reason, at=e.at
        )
    )


async def find_agreement(
    conn: AsyncConnection, agreement_id: str, for_update: bool = False
) -> Agreement | None:
    query = select(agreements).where(agreements.c.id == agreement_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _agreement_of(row) if row else None


async def get_agreement(
    conn: AsyncConnection, agreement_id: str, for_update: bool = False, history: bool = False
) -> Agreement:
    query = select(agreements).where(agreements.c.id == agreement_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
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
            AgreementEvent(AgreementState(r.state), r.actor, r.reason, _utc(r.at)) for r in rows
        ]
    return _agreement_of(row, events)


@dataclass(frozen=True, slots=True)
class AgreementFilter:
    dataset_id: str = ""
    consumer: str = ""
    publisher: str = ""
    state: AgreementState | None = None
    kind: AccessKind | None = None


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


# --- consents -------------------------------------------------------------------------------


def _consent_of(r: Row[Any]) -> Consent:
    return Consent(
        receipt_id=r.receipt_id,
        subject_id=r.subject_id,
        purpose=r.purpose,
        dataset_id=r.dataset_id,
        state=ConsentState(r.state),
        source=r.source,
        given_at=_utc_or_none(r.given_at),
        withdrawn_at=_utc_or_none(r.withdrawn_at),
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
    await _upsert(conn, consents, key, values)


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


# --- erasures -------------------------------------------------------------------------------


def _erasure_of(r: Row[Any]) -> Erasure:
    return Erasure(
        id=r.id,
        subject_id=r.subject_id,
        dataset_id=r.dataset_id,
        reason=r.reason,
        source=r.source,
        state=ErasureState(r.state),
        requested_by=r.requested_by,
        requested_at=_utc(r.requested_at),
        completed_at=_utc_or_none(r.completed_at),
        datasets=erasures_from_list(r.datasets),
        failure=r.failure,
    )


async def insert_erasure(conn: AsyncConnection, e: Erasure) -> None:
    await conn.execute(
        insert(erasures).values(
            id=e.id,
            subject_id=e.subject_id,
            dataset_id=e.dataset_id,
            reason=e.reason,
            source=e.source,
            state=e.state.value,
            requested_by=e.requested_by,
            requested_at=e.requested_at,
            completed_at=e.completed_at,
            datasets=erasures_to_list(e.datasets),
            failure=e.failure,
        )
    )


async def find_erasure(
    conn: AsyncConnection, erasure_id: str, for_update: bool = False
) -> Erasure | None:
    query = select(erasures).where(erasures.c.id == erasure_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _erasure_of(row) if row else None


async def save_erasure_progress(conn: AsyncConnection, e: Erasure) -> None:
    """Store what the ingest service reported: state, datasets done, completion, failure."""
    await conn.execute(
        update(erasures)
        .where(erasures.c.id == e.id)
        .values(
            state=e.state.value,
            datasets=erasures_to_list(e.datasets),
            completed_at=e.completed_at,
            failure=e.failure,
        )
    )


async def get_erasure(conn: AsyncConnection, erasure_id: str) -> Erasure:
    row = (await conn.execute(select(erasures).where(erasures.c.id == erasure_id))).first()
    if row is None:
        raise NotFound(f"erasure request '{erasure_id}' not found")
    return _erasure_of(row)


async def list_erasures(
    conn: AsyncConnection, subject_id: str, state: ErasureState | None, size: int, after: str
) -> tuple[list[Erasure], str]:
    c = erasures.c
    where: list[ColumnElement[bool]] = []
    if subject_id:
        where.append(c.subject_id == subject_id)
    if state is not None:
        where.append(c.state == state.value)
    if after:
        where.append(c.id > after)
    rows = (await conn.execute(select(erasures).where(*where).order_by(c.id).limit(size + 1))).all()
    page = [_erasure_of(r) for r in rows[:size]]
    return page, encode_page_token(page[-1].id) if len(rows) > size else ""
