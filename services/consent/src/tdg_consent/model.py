"""The consent service's domain objects: plain dataclasses, no gRPC, no SQL.

Enum values are the strings OPA sees in the bundle (see policies/README.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class PartyKind(enum.StrEnum):
    MUNICIPALITY = "municipality"
    INTERCOMMUNALITY = "intercommunality"
    PUBLIC_COMPANY = "public-company"
    PRIVATE_PARTNER = "private-partner"
    RESEARCH_BODY = "research-body"
    APPLICATION = "application"


class PartyStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class AccessKind(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class LegalBasis(enum.StrEnum):
    CONSENT = "consent"
    PUBLIC_TASK = "public-task"
    CONTRACT = "contract"
    LEGITIMATE_INTEREST = "legitimate-interest"


class AgreementState(enum.StrEnum):
    REQUESTED = "requested"
    REFUSED = "refused"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"


class MaskMethod(enum.StrEnum):
    CLEAR = "clear"
    NULL = "null"
    HASH = "hash"
    GENERALISE = "generalise"


class ConsentState(enum.StrEnum):
    GIVEN = "given"
    WITHDRAWN = "withdrawn"


class ErasureState(enum.StrEnum):
    RECEIVED = "received"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"


PARTY_ROLES = ("publisher", "producer", "consumer")


@dataclass(frozen=True, slots=True)
class Party:
    id: str
    kind: PartyKind
    name: str
    organisation: str  # an organisation's own id; an application's owner
    roles: tuple[str, ...] = ()
    siren: str = ""
    contact: str = ""
    status: PartyStatus = PartyStatus.ACTIVE
    suspension_reason: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Generalisation:
    """Exactly one of the three is set."""

    truncate_to: str = ""  # hour, day, week, month, year
    round_to: float = 0.0
    commune_to_epci: bool = False


@dataclass(frozen=True, slots=True)
class ColumnMask:
    column: str
    method: MaskMethod
    generalisation: Generalisation | None = None


@dataclass(frozen=True, slots=True)
class TerritoryFilter:
    column: str
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Commitments:
    max_freshness_lag_s: int = 0
    completeness_pct: float = 0.0
    validity_rate_pct: float = 0.0


@dataclass(frozen=True, slots=True)
class Conditions:
    columns: tuple[str, ...] = ()  # empty: every column
    masks: tuple[ColumnMask, ...] = ()
    territory_filter: TerritoryFilter | None = None
    aggregate_only: bool = False
    min_group_size: int = 0  # 0: the territory's default
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    commitments: Commitments | None = None


@dataclass(frozen=True, slots=True)
class AgreementEvent:
    state: AgreementState
    actor: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Agreement:
    id: str
    dataset_id: str
    publisher: str
    consumer: str
    consumer_org: str
    kind: AccessKind
    purposes: tuple[str, ...]
    legal_basis: LegalBasis
    justification: str
    requested_columns: tuple[str, ...]
    state: AgreementState
    requested_by: str
    created_at: datetime
    updated_at: datetime
    conditions: Conditions | None = None
    # Secret, per agreement: salts hashed columns; served to OPA only, never to callers.
    salt: str = ""
    decided_by: str = ""
    reason: str = ""
    history: tuple[AgreementEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Consent:
    receipt_id: str
    subject_id: str
    purpose: str
    dataset_id: str  # "" for every dataset
    state: ConsentState
    source: str
    given_at: datetime | None
    withdrawn_at: datetime | None
    revision: int


@dataclass(frozen=True, slots=True)
class DatasetErasure:
    dataset_id: str
    snapshot_id: int
    rows_deleted: int
    completed_at: datetime


@dataclass(frozen=True, slots=True)
class Erasure:
    id: str
    subject_id: str
    dataset_id: str  # "" for every dataset
    reason: str
    source: str
    state: ErasureState
    requested_by: str
    requested_at: datetime
    completed_at: datetime | None = None
    datasets: tuple[DatasetErasure, ...] = ()
    failure: str = ""


@dataclass(frozen=True, slots=True)
class DatasetColumn:
    name: str
    type: str
    sensitivity: str


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """What the consent service knows of a catalog dataset (followed from tdg.catalog.events)."""

    id: str
    publisher: str
    status: str  # draft, published, deprecated
    access_level: str
    columns: tuple[DatasetColumn, ...] = field(default=())
    subject_column: str = ""

    def column(self, name: str) -> DatasetColumn | None:
        return next((c for c in self.columns if c.name == name), None)
