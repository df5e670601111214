"""The consent registry loaded before the run: parties, the datasets they publish and the
agreements between them, as rows of the consent service's tables."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tdg_consent.codec import conditions_to_dict
from tdg_consent.model import (
    ColumnMask,
    Commitments,
    Conditions,
    Generalisation,
    MaskMethod,
    TerritoryFilter,
)
from tdg_consent.settings import DEFAULT_PURPOSES

from .scenario import (
    COLUMNS,
    COMMUNES,
    READ_DATASET,
    READ_ORG,
    READ_PARTY,
    READ_PURPOSE,
    read_conditions,
)

PURPOSES = list(DEFAULT_PURPOSES)
PUBLISHERS = ["metropole-lyon", "ville-villeurbanne", "sytral", "eau-du-grand-lyon", "enedis-aura"]


def random_conditions(rng: random.Random, now: datetime, kind: str) -> Conditions:
    valid_from = now - timedelta(days=rng.randint(1, 700))
    valid_until = now + timedelta(days=rng.randint(30, 900)) if rng.random() < 0.5 else None
    if kind == "write":
        return Conditions(
            valid_from=valid_from,
            valid_until=valid_until,
            commitments=Commitments(rng.choice((60, 300, 3600)), 95.0, 99.0),
        )
    names = [name for name, _, _ in COLUMNS]
    columns = () if rng.random() < 0.3 else tuple(rng.sample(names, rng.randint(6, 11)))
    granted = set(columns or names)
    candidates = [
        ColumnMask("counter_id", MaskMethod.HASH),
        ColumnMask("cyclist_id", MaskMethod.HASH),
        ColumnMask(
            "ts", MaskMethod.GENERALISE, Generalisation(truncate_to=rng.choice(("hour", "day")))
        ),
        ColumnMask("count", MaskMethod.GENERALISE, Generalisation(round_to=10.0)),
        ColumnMask("speed_kmh", MaskMethod.GENERALISE, Generalisation(round_to=5.0)),
        ColumnMask("home_commune", MaskMethod.GENERALISE, Generalisation(commune_to_epci=True)),
        ColumnMask("age_band", MaskMethod.CLEAR),
        ColumnMask("health_flag", MaskMethod.NULL),
    ]
    masks = tuple(m for m in candidates if m.column in granted and rng.random() < 0.5)
    territory = None
    if "commune" in granted and rng.random() < 0.7:
        territory = TerritoryFilter("commune", tuple(rng.sample(COMMUNES, rng.randint(1, 40))))
    aggregate_only = rng.random() < 0.1
    return Conditions(
        columns=columns,
        masks=masks,
        territory_filter=territory,
        aggregate_only=aggregate_only,
        min_group_size=rng.choice((0, 20)) if aggregate_only else 0,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def dataset_row(
    dataset_id: str,
    access_level: str,
    columns: list[tuple[str, str, str]],
    subject: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": dataset_id,
        "publisher": dataset_id.partition(".")[0],
        "status": "published",
        "access_level": access_level,
        "columns": [{"name": n, "type": t, "sensitivity": s} for n, t, s in columns],
        "subject_column": subject,
        "updated_at": now,
    }


@dataclass
class Registry:
    parties: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    agreements: list[dict[str, Any]]
    read_agreement: str  # the agreement the measured decision rests on


def build_registry(n_parties: int, n_agreements: int, rng: random.Random) -> Registry:
    """Publishers (5%), consumer organisations (35%) and their applications, 10 datasets per
    publisher, and agreements spread over them (97% active, 3% suspended; 90% read)."""
    now = datetime.now(UTC)

    def party(pid: str, kind: str, organisation: str, roles: list[str]) -> dict[str, Any]:
        return {
            "id": pid,
            "kind": kind,
            "name": pid.replace("-", " ").title(),
            "organisation": organisation,
            "roles": roles,
            "siren": "",
            "contact": f"dpo@{pid}.example",
            "status": "active",
            "suspension_reason": "",
            "created_at": now,
            "updated_at": now,
        }

    n_publishers = max(len(PUBLISHERS), n_parties // 20)
    n_orgs = max(2, n_parties * 35 // 100)
    n_apps = n_parties - n_publishers - n_orgs
    publishers = PUBLISHERS + [f"commune-{k:03d}" for k in range(n_publishers - len(PUBLISHERS))]
    parties = [
        party(
            p, "public-company" if i in (2, 3, 4) else "municipality", p, ["publisher", "consumer"]
        )
        for i, p in enumerate(publishers)
    ]
    orgs = [READ_ORG] + [f"partner-{k:03d}" for k in range(n_orgs - 1)]
    for i, o in enumerate(orgs):
        kind = ("private-partner", "research-body", "private-partner")[i % 3]
        parties.append(party(o, kind, o, ["consumer", "producer"] if i % 4 == 0 else ["consumer"]))
    apps = [READ_PARTY] + [f"app-{k:04d}" for k in range(n_apps - 1)]
    owners = {READ_PARTY: READ_ORG}
    for a in apps[1:]:
        owners[a] = rng.choice(orgs[1:])
    for a in apps:
        parties.append(party(a, "application", owners[a], ["consumer"]))
    others = [p for p in parties[len(publishers) :] if p["id"] not in (READ_ORG, READ_PARTY)]
    for p in rng.sample(others, max(1, n_parties // 100)):
        p["status"], p["suspension_reason"] = "suspended", "late delivery reports"

    datasets = [dataset_row(READ_DATASET, "restricted", COLUMNS, "cyclist_id", now)]
    for publisher in publishers:
        for k in range(10):
            level = rng.choice(("restricted", "restricted", "personal", "open"))
            dataset_id = f"{publisher}.ds-{k:02d}"
            datasets.append(dataset_row(dataset_id, level, COLUMNS, "cyclist_id", now))
    consumers = orgs[1:] + apps[1:]

    def agreement(
        dataset_id: str,
        consumer: str,
        kind: str,
        purposes: list[str],
        c: Conditions,
        state: str,
        legal_basis: str = "",
    ) -> dict[str, Any]:
        publisher = dataset_id.partition(".")[0]
        return {
            "id": f"agr-{rng.getrandbits(128):032x}",
            "dataset_id": dataset_id,
            "publisher": publisher,
            "consumer": consumer,
            "consumer_org": owners.get(consumer, consumer),
            "kind": kind,
            "purposes": purposes,
            "legal_basis": legal_basis
            or rng.choice(("public-task", "contract", "legitimate-interest", "consent")),
            "justification": "mobility studies of the territory",
            "requested_columns": [],
            "state": state,
            "conditions": conditions_to_dict(c),
            "salt": f"{rng.getrandbits(256):064x}",
            "requested_by": consumer,
            "decided_by": f"dpo-{publisher}",
            "reason": "",
            "created_at": now,
            "updated_at": now,
            "valid_until": c.valid_until,
        }

    read_terms = dataclasses.replace(read_conditions(now), valid_from=now - timedelta(days=30))
    read = agreement(
        READ_DATASET,
        READ_PARTY,
        "read",
        [READ_PURPOSE, "urban-planning"],
        read_terms,
        "active",
        "public-task",
    )
    # The application's organisation holds one for another purpose (found, not usable), and the
    # application reads a few other datasets: the decision looks at more than one agreement.
    fixed = [
        read,
        agreement(
            READ_DATASET,
            READ_ORG,
            "read",
            ["research"],
            random_conditions(rng, now, "read"),
            "active",
        ),
    ]
    for d in rng.sample(datasets[1:], 4):
        fixed.append(
            agreement(
                d["id"],
                READ_PARTY,
                "read",
                [READ_PURPOSE],
                random_conditions(rng, now, "read"),
                "active",
            )
        )
    agreements = fixed[:n_agreements]
    while len(agreements) < n_agreements:
        kind = "write" if rng.random() < 0.1 else "read"
        d = rng.choice(datasets[1:])
        agreements.append(
            agreement(
                d["id"],
                rng.choice(consumers),
                kind,
                rng.sample(PURPOSES, rng.randint(1, 3)),
                random_conditions(rng, now, kind),
                "suspended" if rng.random() < 0.03 else "active",
            )
        )
    return Registry(parties, datasets, agreements, read["id"])


def registry_revision(registry: Registry) -> int:
    """As if each party and agreement had been one change; the service bumps it from there."""
    return len(registry.parties) + len(registry.agreements)
