"""The Iceberg table `tdg_ops.delivery_indicators`: one row per producer, dataset and arrival hour.

What it holds (schema, partitioning by day, commit retries off), how a row is written from and read
back into an `HourDelivery`, and the marks (`tdg.indicators.through`) saying which dataset snapshot
each roll-up counted up to. `tdg_ingest.indicators` rolls up into it and queries it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, Or
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    DateType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)
from tdg_lake.tables import NO_COMMIT_RETRY, PartitionBy, create_or_load, eq, is_in

from tdg_ingest.contract import THROUGH_PROPERTY
from tdg_ingest.delivery import BUCKETS, LAG_EDGES_S, DeliveryTally, HourDelivery, lag_quantile

# The namespace has an underscore, which publisher slugs cannot: no collision with a dataset.
INDICATORS_TABLE = ("tdg_ops", "delivery_indicators")

SCHEMA = Schema(
    NestedField(1, "dataset_id", StringType(), required=True),
    NestedField(2, "producer", StringType(), required=True),
    NestedField(3, "period_start", TimestamptzType(), required=True),  # the arrival hour, UTC
    NestedField(4, "period_day", DateType(), required=True),  # the partition (no pyiceberg-core)
    NestedField(5, "received", LongType(), required=True),
    NestedField(6, "accepted", LongType(), required=True),
    NestedField(7, "rejected", LongType(), required=True),
    NestedField(8, "rejected_by_reason", MapType(15, StringType(), 16, LongType()), required=False),
    # Records per freshness-lag bucket; the edges are in the table property tdg.lag_edges_s.
    NestedField(9, "lag_histogram", ListType(17, LongType()), required=False),
    NestedField(10, "freshness_p50_s", DoubleType(), required=False),
    NestedField(11, "freshness_max_s", DoubleType(), required=False),
    # The producer's commitments at its latest batch of the hour; null: nothing promised.
    NestedField(12, "max_freshness_lag_s", IntegerType(), required=False),
    NestedField(13, "completeness_pct", DoubleType(), required=False),
    NestedField(14, "validity_rate_pct", DoubleType(), required=False),
    identifier_field_ids=[1, 2, 3],
)
COMMITMENT_COLUMNS = ("max_freshness_lag_s", "completeness_pct", "validity_rate_pct")


def open_table(catalog: Catalog) -> Table:
    table, _ = create_or_load(
        catalog,
        INDICATORS_TABLE,
        SCHEMA,
        {**NO_COMMIT_RETRY, "tdg.lag_edges_s": ",".join(str(e) for e in LAG_EDGES_S)},
        (PartitionBy("period_day", IdentityTransform(), "period_day"),),
    )
    return table


def rolled_up_through(table: Table) -> dict[str, int]:
    """The marks of the newest snapshot carrying them (maintenance snapshots carry none)."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        text = snapshot.summary.get(THROUGH_PROPERTY) if snapshot.summary else None
        if text:
            return {str(k): int(v) for k, v in json.loads(text).items()}
    return {}


def touched_region(tallies: dict[str, DeliveryTally]) -> BooleanExpression | None:
    """Every row of the hours the tallies touch, whatever the producer."""
    parts: list[BooleanExpression] = []
    for dataset_id, tally in tallies.items():
        starts = sorted({datetime.fromtimestamp(h * 3600, UTC) for _, h, _ in tally.hours()})
        days = sorted({s.date().isoformat() for s in starts})
        parts.append(
            And(
                eq("dataset_id", dataset_id),
                And(is_in("period_day", days), is_in("period_start", [iso(s) for s in starts])),
            )
        )
    return functools.reduce(Or, parts) if parts else None


def read_rows(table: Table, where: BooleanExpression) -> list[dict[str, Any]]:
    if table.current_snapshot() is None:
        return []
    rows: list[dict[str, Any]] = table.scan(row_filter=where).to_arrow().to_pylist()
    return rows


def row_key(row: dict[str, Any]) -> tuple[str, str, datetime]:
    return row["dataset_id"], row["producer"], row["period_start"]


def row_delivery(row: dict[str, Any]) -> HourDelivery:
    hist = [int(n) for n in row["lag_histogram"] or []][:BUCKETS]
    return HourDelivery(
        accepted=row["accepted"],
        rejected=dict(row["rejected_by_reason"] or []),
        lag_histogram=hist + [0] * (BUCKETS - len(hist)),
        max_lag_s=row["freshness_max_s"],
    )


def commitment_values(promised: dict[str, float]) -> dict[str, Any]:
    lag = promised.get("max_freshness_lag_s")
    return {
        "max_freshness_lag_s": None if lag is None else round(lag),
        "completeness_pct": promised.get("completeness_pct"),
        "validity_rate_pct": promised.get("validity_rate_pct"),
    }


def hour_row(
    dataset_id: str,
    producer: str,
    start: datetime,
    d: HourDelivery,
    commitments: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "producer": producer,
        "period_start": start,
        "period_day": start.date(),
        "received": d.received,
        "accepted": d.accepted,
        "rejected": d.rejected_total,
        "rejected_by_reason": sorted(d.rejected.items()),
        "lag_histogram": d.lag_histogram,
        "freshness_p50_s": lag_quantile(d.lag_histogram, d.max_lag_s),
        "freshness_max_s": d.max_lag_s,
        **{c: None if commitments is None else commitments.get(c) for c in COMMITMENT_COLUMNS},
    }


def to_arrow(table: Table, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=table.schema().as_arrow())


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
