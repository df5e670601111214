"""What is measured: the read decision (who reads which dataset, for what, on which terms), the
subject set exported, and the sizes of a run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg_consent.model import ColumnMask, Conditions, Generalisation, MaskMethod, TerritoryFilter
from tdg_core.read_policy import read_input

# The read decision measured: an application of a private partner, holding an active agreement
# (masks, territory filter, a column withheld) on a restricted dataset of 12 columns.
READ_DATASET = "metropole-lyon.bike-counters"
READ_PARTY, READ_ORG = "velo-app", "velo-startup"
READ_PURPOSE = "mobility-planning"
# Registered over gRPC for the revocation runs: no agreement of theirs is in the bulk data.
REVOKE_PARTY, REVOKE_ORG = "revocation-app", "revocation-partner"
# The subject set exported, and a small one exported first to warm the service up.
EXPORT_DATASET = "metropole-lyon.mobility-survey"
EXPORT_PURPOSE = "public-statistics"
WARMUP_PURPOSE = "research"
WARMUP_SUBJECTS = 1_000

COLUMNS: list[tuple[str, str, str]] = [
    ("counter_id", "string", "public"),
    ("commune", "string", "public"),
    ("ts", "timestamp", "public"),
    ("count", "int64", "public"),
    ("direction", "string", "public"),
    ("lane", "string", "internal"),
    ("speed_kmh", "float64", "internal"),
    ("device_serial", "string", "internal"),
    ("cyclist_id", "string", "personal"),
    ("age_band", "string", "personal"),
    ("home_commune", "string", "personal"),
    ("health_flag", "bool", "sensitive"),
]
SURVEY_COLUMNS: list[tuple[str, str, str]] = [
    ("respondent_id", "string", "personal"),
    ("commune", "string", "public"),
    ("answered_at", "timestamp", "public"),
    ("main_mode", "string", "public"),
    ("trips_per_week", "int32", "public"),
]
# INSEE-shaped commune codes of the Rhône (syntax is what the service checks).
COMMUNES = [f"69{k:03d}" for k in range(1, 300)]


@dataclass(frozen=True)
class Sizes:
    parties: int
    agreements: int
    subjects: int
    decisions: int  # one caller, for the latency percentiles
    concurrent_decisions: int  # across `concurrency` callers, for the throughput
    concurrency: int
    revocations: int


def read_conditions(now: datetime) -> Conditions:
    """The conditions of the measured agreement (and of each approval in the revocation runs)."""
    return Conditions(
        columns=tuple(name for name, _, _ in COLUMNS if name != "device_serial"),
        masks=(
            ColumnMask("counter_id", MaskMethod.HASH),
            ColumnMask("ts", MaskMethod.GENERALISE, Generalisation(truncate_to="hour")),
            ColumnMask("speed_kmh", MaskMethod.GENERALISE, Generalisation(round_to=5.0)),
            ColumnMask("age_band", MaskMethod.CLEAR),
            ColumnMask("home_commune", MaskMethod.GENERALISE, Generalisation(commune_to_epci=True)),
        ),
        territory_filter=TerritoryFilter("commune", tuple(COMMUNES[:20])),
        valid_until=now + timedelta(days=365),
    )


def read_dataset_pb() -> cpb.Dataset:
    """The measured dataset as the catalog serves it (the query service builds its input so)."""
    return cpb.Dataset(
        id=READ_DATASET,
        publisher=READ_DATASET.partition(".")[0],
        status=cpb.DATASET_STATUS_PUBLISHED,
        metadata=cpb.DatasetMetadata(
            title="Comptages vélo",
            access_level=cpb.ACCESS_LEVEL_RESTRICTED,
            territory=["200046977"],
        ),
        schema=cpb.Schema(
            columns=[
                cpb.Column(
                    name=n, type=t, sensitivity=cpb.Sensitivity.Value(f"SENSITIVITY_{s.upper()}")
                )
                for n, t, s in COLUMNS
            ],
            event_time_column="ts",
            subject_column="cyclist_id",
        ),
    )


def read_request(party: str, org: str) -> dict[str, Any]:
    """A detail query: eight columns (hashed, generalised, defaulted), filtered and ordered."""
    return read_input(
        read_dataset_pb(),
        {"party": party, "org": org, "roles": []},
        READ_PURPOSE,
        columns=[
            "counter_id",
            "commune",
            "ts",
            "count",
            "direction",
            "speed_kmh",
            "cyclist_id",
            "age_band",
        ],
        filter_columns=["commune", "direction"],
        order_by=["count"],
    )
