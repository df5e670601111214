"""OPA's `tdg.read` decision, typed (policies/README.md, "The read decision").

The decision is read strictly: anything the engine does not understand (an unknown treatment, a
row filter it cannot apply, a malformed field) is a failure of the policy engine, which denies the
query with UNAVAILABLE rather than guessing. Fail closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tdg_core.errors import Unavailable

TREATMENTS = ("clear", "null", "hash", "generalise", "deny")
TRUNCATE_UNITS = ("hour", "day", "week", "month", "year")


@dataclass(frozen=True)
class Treatment:
    kind: str  # one of TREATMENTS
    salt: str = field(default="", repr=False)  # hash only; never logged, never answered
    truncate_to: str = ""
    round_to: float = 0.0
    commune_to_epci: bool = False

    def describe(self) -> str:
        """The treatment as answers and the audit trail show it (no salt)."""
        if self.kind != "generalise":
            return self.kind
        if self.truncate_to:
            return f"generalise(truncate_to={self.truncate_to})"
        if self.round_to:
            return f"generalise(round_to={self.round_to:g})"
        return "generalise(commune_to_epci)"


@dataclass(frozen=True)
class RowFilter:
    column: str
    values: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"column": self.column, "op": "in", "values": list(self.values)}


@dataclass(frozen=True)
class Decision:
    allow: bool
    reasons: tuple[str, ...]
    agreement_id: str
    columns: dict[str, Treatment]
    row_filters: tuple[RowFilter, ...]
    consent_required: bool
    consent_purpose: str
    subject_column: str
    aggregate_only: bool
    min_group_size: int
    decision_id: str = ""

    def treatment(self, column: str) -> Treatment:
        return self.columns.get(column, Treatment("deny"))

    def row_filters_json(self) -> str:
        return json.dumps([f.as_json() for f in self.row_filters], sort_keys=True)


def _fail(problem: str) -> Unavailable:
    return Unavailable(f"the policy engine's read decision is malformed: {problem}")


def _treatment(name: str, value: Any) -> Treatment:
    if not isinstance(value, dict) or value.get("treatment") not in TREATMENTS:
        raise _fail(f"column {name!r} has no known treatment")
    kind = value["treatment"]
    if kind == "hash":
        salt = value.get("salt")
        if not isinstance(salt, str) or not salt:
            raise _fail(f"column {name!r} is hashed without a salt")
        return Treatment("hash", salt=salt)
    if kind == "generalise":
        params = value.get("generalise")
        if not isinstance(params, dict):
            raise _fail(f"column {name!r} is generalised without parameters")
        unit = params.get("truncate_to")
        step = params.get("round_to")
        if isinstance(unit, str) and unit in TRUNCATE_UNITS:
            return Treatment("generalise", truncate_to=unit)
        if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
            return Treatment("generalise", round_to=float(step))
        if params.get("commune_to_epci") is True:
            return Treatment("generalise", commune_to_epci=True)
        raise _fail(f"column {name!r} has unknown generalisation {params!r}")
    return Treatment(kind)


def parse_decision(result: dict[str, Any], decision_id: str = "") -> Decision:
    allow = result.get("allow")
    if not isinstance(allow, bool):
        raise _fail("no allow")
    reasons = result.get("reasons", [])
    if not isinstance(reasons, list):
        raise _fail("reasons is not a list")
    if not allow:
        return Decision(
            False,
            tuple(str(r) for r in reasons) or ("read refused",),
            "",
            {},
            (),
            False,
            "",
            "",
            False,
            0,
            decision_id,
        )
    columns = result.get("columns")
    if not isinstance(columns, dict):
        raise _fail("no columns")
    raw_filters = result.get("row_filters", [])
    if not isinstance(raw_filters, list):
        raise _fail("row_filters is not a list")
    filters = []
    for raw in raw_filters:
        if (
            not isinstance(raw, dict)
            or raw.get("op") != "in"
            or not isinstance(raw.get("column"), str)
            or not isinstance(raw.get("values"), list)
        ):
            raise _fail(f"row filter {raw!r} cannot be applied")
        filters.append(RowFilter(raw["column"], tuple(str(v) for v in raw["values"])))
    consent = result.get("consent") or {}
    if not isinstance(consent, dict):
        raise _fail("consent is not an object")
    size = result.get("min_group_size", 0)
    if not isinstance(size, int) or size < 0:
        raise _fail("min_group_size is not a count")
    aggregate_only = result.get("aggregate_only", False)
    if not isinstance(aggregate_only, bool):
        raise _fail("aggregate_only is not a boolean")
    if aggregate_only and size < 1:
        raise _fail("aggregate-only without a minimum group size")
    required = consent.get("required", False)
    if not isinstance(required, bool):
        raise _fail("consent.required is not a boolean")
    subject_column = str(consent.get("subject_column", ""))
    if required and not subject_column:
        raise _fail("consent required without a subject column")
    return Decision(
        allow=True,
        reasons=(),
        agreement_id=str(result.get("agreement_id", "")),
        columns={str(n): _treatment(str(n), v) for n, v in columns.items()},
        row_filters=tuple(filters),
        consent_required=required,
        consent_purpose=str(consent.get("purpose", "")),
        subject_column=subject_column,
        aggregate_only=aggregate_only,
        min_group_size=size,
        decision_id=decision_id,
    )
