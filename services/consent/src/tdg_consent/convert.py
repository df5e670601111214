"""Proto ⇄ domain translation, shared by the servicer and the events.

Enums map by name: the proto value `AGREEMENT_STATE_ACTIVE` is the domain value `active`
(`-` in a domain value is `_` in the proto name).
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from tdg.consent.v1 import consent_pb2 as pb
from tdg_core.errors import InvalidArgument
from tdg_core.timestamps import from_timestamp, to_timestamp

from tdg_consent.model import (
    AccessKind,
    Agreement,
    AgreementState,
    ColumnMask,
    Commitments,
    Conditions,
    Consent,
    ConsentState,
    Erasure,
    ErasureState,
    Generalisation,
    LegalBasis,
    MaskMethod,
    Party,
    PartyKind,
    PartyStatus,
    TerritoryFilter,
)

E = TypeVar("E", bound=enum.StrEnum)

_PREFIX: dict[type[enum.StrEnum], tuple[str, Any]] = {
    PartyKind: ("PARTY_KIND_", pb.PartyKind),
    PartyStatus: ("PARTY_STATUS_", pb.PartyStatus),
    AccessKind: ("ACCESS_KIND_", pb.AccessKind),
    LegalBasis: ("LEGAL_BASIS_", pb.LegalBasis),
    AgreementState: ("AGREEMENT_STATE_", pb.AgreementState),
    MaskMethod: ("MASK_METHOD_", pb.MaskMethod),
    ConsentState: ("CONSENT_STATE_", pb.ConsentState),
    ErasureState: ("ERASURE_STATE_", pb.ErasureState),
}


def to_pb_enum(value: enum.StrEnum) -> Any:
    prefix, pb_enum = _PREFIX[type(value)]
    return pb_enum.Value(prefix + value.value.upper().replace("-", "_"))


def from_pb_enum(cls: type[E], number: int, field: str, required: bool = True) -> E | None:
    """The domain value of a proto enum number; None for UNSPECIFIED when not required."""
    prefix, pb_enum = _PREFIX[cls]
    if number == 0 and not required:
        return None
    choices = ", ".join(prefix + v.value.upper().replace("-", "_") for v in cls)
    try:
        name: str = pb_enum.Name(number)
    except ValueError:
        name = ""
    value = name.removeprefix(prefix).lower().replace("_", "-")
    if number == 0 or value not in {v.value for v in cls}:
        raise InvalidArgument(field, f"required, one of {choices}")
    return cls(value)


# --- parties --------------------------------------------------------------------------------


def party_to_pb(p: Party) -> pb.Party:
    return pb.Party(
        id=p.id,
        kind=to_pb_enum(p.kind),
        name=p.name,
        organisation=p.organisation if p.kind is PartyKind.APPLICATION else "",
        roles=list(p.roles),
        siren=p.siren,
        contact=p.contact,
        status=to_pb_enum(p.status),
        suspension_reason=p.suspension_reason,
        created_at=to_timestamp(p.created_at),
        updated_at=to_timestamp(p.updated_at),
    )


def party_from_pb(m: pb.Party) -> Party:
    kind = from_pb_enum(PartyKind, m.kind, "party.kind")
    assert kind is not None
    return Party(
        id=m.id,
        kind=kind,
        name=m.name,
        organisation=m.organisation,
        roles=tuple(m.roles),
        siren=m.siren,
        contact=m.contact,
    )


# --- agreements -----------------------------------------------------------------------------


def _generalisation_from_pb(m: pb.ColumnMask) -> Generalisation | None:
    if not m.HasField("generalisation"):
        return None
    g = m.generalisation
    which = g.WhichOneof("method")
    if which == "truncate_to":
        return Generalisation(truncate_to=g.truncate_to)
    if which == "round_to":
        return Generalisation(round_to=g.round_to)
    if which == "commune_to_epci":
        return Generalisation(commune_to_epci=g.commune_to_epci)
    return Generalisation()


def conditions_from_pb(m: pb.Conditions) -> Conditions:
    masks = []
    for i, mask in enumerate(m.masks):
        method = from_pb_enum(MaskMethod, mask.method, f"conditions.masks[{i}].method")
        assert method is not None
        masks.append(ColumnMask(mask.column, method, _generalisation_from_pb(mask)))
    tf = m.territory_filter if m.HasField("territory_filter") else None
    cm = m.commitments if m.HasField("commitments") else None
    return Conditions(
        columns=tuple(m.columns),
        masks=tuple(masks),
        territory_filter=TerritoryFilter(tf.column, tuple(tf.codes)) if tf else None,
        aggregate_only=m.aggregate_only,
        min_group_size=m.min_group_size,
        valid_from=from_timestamp(m, "valid_from"),
        valid_until=from_timestamp(m, "valid_until"),
        commitments=Commitments(cm.max_freshness_lag_s, cm.completeness_pct, cm.validity_rate_pct)
        if cm
        else None,
    )


def _generalisation_to_pb(g: Generalisation) -> pb.Generalisation:
    if g.truncate_to:
        return pb.Generalisation(truncate_to=g.truncate_to)
    if g.round_to:
        return pb.Generalisation(round_to=g.round_to)
    return pb.Generalisation(commune_to_epci=g.commune_to_epci)


def commitments_to_pb(c: Commitments | None) -> pb.DeliveryCommitments | None:
    if c is None:
        return None
    return pb.DeliveryCommitments(
        max_freshness_lag_s=c.max_freshness_lag_s,
        completeness_pct=c.completeness_pct,
        validity_rate_pct=c.validity_rate_pct,
    )


def conditions_to_pb(c: Conditions) -> pb.Conditions:
    return pb.Conditions(
        columns=list(c.columns),
        masks=[
            pb.ColumnMask(
                column=m.column,
                method=to_pb_enum(m.method),
                generalisation=_generalisation_to_pb(m.generalisation)
                if m.generalisation
                else None,
            )
            for m in c.masks
        ],
        territory_filter=pb.TerritoryFilter(
            column=c.territory_filter.column, codes=list(c.territory_filter.codes)
        )
        if c.territory_filter
        else None,
        aggregate_only=c.aggregate_only,
        min_group_size=c.min_group_size,
        valid_from=to_timestamp(c.valid_from),
        valid_until=to_timestamp(c.valid_until),
        commitments=commitments_to_pb(c.commitments),
    )


def agreement_to_pb(a: Agreement) -> pb.Agreement:
    """The agreement as callers see it: never the salt."""
    return pb.Agreement(
        id=a.id,
        dataset_id=a.dataset_id,
        consumer=a.consumer,
        kind=to_pb_enum(a.kind),
        purposes=list(a.purposes),
        legal_basis=to_pb_enum(a.legal_basis),
        justification=a.justification,
        requested_columns=list(a.requested_columns),
        state=to_pb_enum(a.state),
        conditions=conditions_to_pb(a.conditions) if a.conditions else None,
        requested_by=a.requested_by,
        decided_by=a.decided_by,
        reason=a.reason,
        created_at=to_timestamp(a.created_at),
        updated_at=to_timestamp(a.updated_at),
        history=[
            pb.AgreementEvent(
                state=to_pb_enum(e.state), actor=e.actor, reason=e.reason, at=to_timestamp(e.at)
            )
            for e in a.history
        ],
    )


# --- consents and erasures ------------------------------------------------------------------


def consent_to_pb(c: Consent) -> pb.Consent:
    return pb.Consent(
        receipt_id=c.receipt_id,
        subject_id=c.subject_id,
        purpose=c.purpose,
        dataset_id=c.dataset_id,
        state=to_pb_enum(c.state),
        source=c.source,
        given_at=to_timestamp(c.given_at),
        withdrawn_at=to_timestamp(c.withdrawn_at),
        revision=c.revision,
    )


def erasure_to_pb(e: Erasure) -> pb.Erasure:
    return pb.Erasure(
        id=e.id,
        subject_id=e.subject_id,
        dataset_id=e.dataset_id,
        reason=e.reason,
        source=e.source,
        state=to_pb_enum(e.state),
        requested_by=e.requested_by,
        requested_at=to_timestamp(e.requested_at),
        completed_at=to_timestamp(e.completed_at),
        datasets=[
            pb.DatasetErasure(
                dataset_id=d.dataset_id,
                snapshot_id=d.snapshot_id,
                rows_deleted=d.rows_deleted,
                completed_at=to_timestamp(d.completed_at),
            )
            for d in e.datasets
        ],
        failure=e.failure,
    )
