"""Conditions ⇄ JSON documents (as stored; the bundle has its own shape, see bundle.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tdg_consent.model import (
    ColumnMask,
    Commitments,
    Conditions,
    DatasetErasure,
    Generalisation,
    MaskMethod,
    TerritoryFilter,
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def generalisation_to_dict(g: Generalisation) -> dict[str, Any]:
    if g.truncate_to:
        return {"truncate_to": g.truncate_to}
    if g.round_to:
        return {"round_to": g.round_to}
    return {"commune_to_epci": True}


def conditions_to_dict(c: Conditions) -> dict[str, Any]:
    return {
        "columns": list(c.columns),
        "masks": [
            {
                "column": m.column,
                "method": m.method.value,
                "generalisation": generalisation_to_dict(m.generalisation)
                if m.generalisation
                else None,
            }
            for m in c.masks
        ],
        "territory_filter": (
            {"column": c.territory_filter.column, "codes": list(c.territory_filter.codes)}
            if c.territory_filter
            else None
        ),
        "aggregate_only": c.aggregate_only,
        "min_group_size": c.min_group_size,
        "valid_from": _time(c.valid_from),
        "valid_until": _time(c.valid_until),
        "commitments": (
            {
                "max_freshness_lag_s": c.commitments.max_freshness_lag_s,
                "completeness_pct": c.commitments.completeness_pct,
                "validity_rate_pct": c.commitments.validity_rate_pct,
            }
            if c.commitments
            else None
        ),
    }


def conditions_from_dict(d: dict[str, Any]) -> Conditions:
    tf = d.get("territory_filter")
    cm = d.get("commitments")
    return Conditions(
        columns=tuple(d.get("columns", ())),
        masks=tuple(
            ColumnMask(
                column=m["column"],
                method=MaskMethod(m["method"]),
                generalisation=Generalisation(**m["generalisation"])
                if m.get("generalisation")
                else None,
            )
            for m in d.get("masks", ())
        ),
        territory_filter=TerritoryFilter(tf["column"], tuple(tf["codes"])) if tf else None,
        aggregate_only=bool(d.get("aggregate_only", False)),
        min_group_size=int(d.get("min_group_size", 0)),
        valid_from=_parse_time(d.get("valid_from")),
        valid_until=_parse_time(d.get("valid_until")),
        commitments=Commitments(**cm) if cm else None,
    )


def erasures_to_list(items: tuple[DatasetErasure, ...]) -> list[dict[str, Any]]:
    return [
        {
            "dataset_id": e.dataset_id,
            "snapshot_id": e.snapshot_id,
            "rows_deleted": e.rows_deleted,
            "completed_at": e.completed_at.isoformat(),
        }
        for e in items
    ]


def erasures_from_list(items: list[dict[str, Any]]) -> tuple[DatasetErasure, ...]:
    return tuple(
        DatasetErasure(
            dataset_id=e["dataset_id"],
            snapshot_id=int(e["snapshot_id"]),
            rows_deleted=int(e["rows_deleted"]),
            completed_at=datetime.fromisoformat(e["completed_at"]),
        )
        for e in items
    )
