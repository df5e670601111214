"""Delivery indicators: each producer's delivery per hour, in an Iceberg table of their own.

The roll-up reads the delivery tallies the worker committed in the dataset tables' snapshots and
upserts them into `tdg_ops.delivery_indicators`. It counts each snapshot exactly once: the id of
the last snapshot rolled up per dataset is written in the same commit as the rows (snapshot
property `tdg.indicators.through`), and that commit fails if anything else committed to the
indicators table since it was read (pyiceberg's rebasing retries are switched off for the table:
a rebased commit would add counts computed from stale rows). A crash or a lost race leaves the
rows and the marks as they were; the next roll-up does the work again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
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
from tdg_lake.tables import NO_COMMIT_RETRY, PartitionBy, create_or_load, eq, ge, is_in, le, lt

from tdg_ingest.contract import DELIVERY_PROPERTY, THROUGH_PROPERTY
from tdg_ingest.delivery import BUCKETS, LAG_EDGES_S, DeliveryTally, HourDelivery, lag_quantile

log = structlog.get_logger("tdg.ingest.indicators")

# The namespace has an underscore, which publisher slugs cannot: no collision with a dataset.
INDICATORS_TABLE = ("tdg_ops", "delivery_indicators")
PERIOD_HOURS = {"hour": 1, "day": 24}
_DEFAULT_PERIODS = {"hour": 24, "day": 7}  # the window when `since` is not given
_HOUR = timedelta(hours=1)

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
_COMMITMENT_COLUMNS = ("max_freshness_lag_s", "completeness_pct", "validity_rate_pct")


class TableSource(Protocol):
    """What the indicators need of the warehouse (tdg_ingest.warehouse.Warehouse fits)."""

    @property
    def catalog(self) -> Catalog: ...

    def load(self, dataset_id: str) -> Table: ...


@dataclass(frozen=True)
class Commitments:
    """A producer's promises; None: nothing promised."""

    max_freshness_lag_s: int | None = None
    completeness_pct: float | None = None
    validity_rate_pct: float | None = None


@dataclass(frozen=True)
class Indicator:
    """One producer's delivery over one period (an hour or a UTC day)."""

    dataset_id: str
    producer: str
    period_start: datetime
    period: str
    received: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    freshness_p50_s: float  # interpolated in the histogram, see delivery.lag_quantile; 0 if none
    freshness_max_s: float  # exact; 0 if nothing was accepted
    availability_pct: float  # hours with an accepted record / elapsed hours of the period
    validity_pct: float  # accepted / received; 100 when nothing was received
    commitments: Commitments = field(default_factory=Commitments)
    freshness_met: bool = True
    availability_met: bool = True
    validity_met: bool = True


class Indicators:
    def __init__(
        self, warehouse: TableSource, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._warehouse = warehouse
        self._clock = clock

    def roll_up(self, dataset_ids: Iterable[str]) -> int:
        """Add the datasets' new tallies to the indicators; returns the rows upserted."""
        table = self._table()  # read once: the commit below requires it unchanged
        through = _through(table)
        marks = dict(through)
        tallies: dict[str, DeliveryTally] = {}
        for dataset_id in dict.fromkeys(dataset_ids):
            pending = self._pending(dataset_id, through.get(dataset_id))
            if pending is not None:
                marks[dataset_id], tally = pending
                if not tally.is_empty():
                    tallies[dataset_id] = tally
        if marks == through:
            return 0
        region = _region(tallies)
        rows = {_key(r): r for r in (_read(table, region) if region is not None else [])}
        found = bool(rows)
        upserted = 0
        for dataset_id, tally in tallies.items():
            for producer, hour, delivery in tally.hours():
                start = datetime.fromtimestamp(hour * 3600, UTC)
                row = rows.get((dataset_id, producer, start))
                merged = _delivery(row) if row is not None else HourDelivery()
                merged.merge(delivery)
                promised = tally.commitments(producer)
                kept = row if promised is None else _commitment_values(promised)
                rows[(dataset_id, producer, start)] = _row(
                    dataset_id, producer, start, merged, kept
                )
                upserted += 1
        properties = {THROUGH_PROPERTY: json.dumps(marks, separators=(",", ":"), sort_keys=True)}
        tx = table.transaction()
        if found and region is not None:  # every row of the region was read: rewrite it whole
            tx.delete(region, snapshot_properties=properties)
        # Also when no row changed (snapshots without tallies): the marks move on.
        tx.append(_arrow(table, list(rows.values())), snapshot_properties=properties)
        try:
            tx.commit_transaction()
        except CommitFailedException:
            log.info("indicators rolled up concurrently; this round is dropped")
            return 0
        log.info("indicators rolled up", datasets=sorted(tallies), rows=upserted)
        return upserted

    def query(
        self,
        dataset_id: str,
        producer: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        period: str = "day",
    ) -> list[Indicator]:
        """Every period overlapping [since, until) that has begun, for each producer seen in it.

        A producer that delivered nothing in a period still gets it, with availability 0. Periods
        are whole UTC hours or days; the current one counts only its elapsed hours (the current
        hour once it has an accepted record), and a period with none of those is left out.
        """
        if period not in PERIOD_HOURS:
            raise ValueError(f"period must be one of {sorted(PERIOD_HOURS)}, not {period!r}")
        now = _utc(self._clock())
        current_hour = _floor(now, "hour")
        length = timedelta(hours=PERIOD_HOURS[period])
        until = _utc(until or now)
        since = _utc(since or until - length * _DEFAULT_PERIODS[period])
        starts: list[datetime] = []
        start = _floor(since, period)
        while start < until and start <= current_hour:  # periods that have begun
            starts.append(start)
            start += length
        if not starts:
            return []
        end = starts[-1] + length
        window = And(
            eq("dataset_id", dataset_id),
            ge("period_start", _iso(starts[0])),
            lt("period_start", _iso(end)),
            # the partition column, so that only the window's days are read
            ge("period_day", starts[0].date().isoformat()),
            le("period_day", (end - _HOUR).date().isoformat()),
        )
        if producer:
            window = And(window, eq("producer", producer))
        table = self._table()
        by_producer: dict[str, list[dict[str, Any]]] = {producer: []} if producer else {}
        for row in sorted(_read(table, window), key=lambda r: r["period_start"]):
            by_producer.setdefault(row["producer"], []).append(row)
        out: list[Indicator] = []
        for name in sorted(by_producer):
            periods = [_Period(dataset_id, name, s, period, current_hour) for s in starts]
            for row in by_producer[name]:
                index = int((row["period_start"] - starts[0]) / length)
                if 0 <= index < len(periods):
                    periods[index].add(row)
            promised = _fill([p.commitments for p in periods])
            out.extend(
                p.indicator(c) for p, c in zip(periods, promised, strict=True) if p.elapsed_hours
            )
        return out

    def _table(self) -> Table:
        table, _ = create_or_load(
            self._warehouse.catalog,
            INDICATORS_TABLE,
            SCHEMA,
            {**NO_COMMIT_RETRY, "tdg.lag_edges_s": ",".join(str(e) for e in LAG_EDGES_S)},
            (PartitionBy("period_day", IdentityTransform(), "period_day"),),
        )
        return table

    def _pending(self, dataset_id: str, last: int | None) -> tuple[int, DeliveryTally] | None:
        """(current snapshot id, merged tallies of the snapshots after `last`), None if none."""
        try:
            source = self._warehouse.load(dataset_id)
        except NoSuchTableError:
            log.warning("no table for dataset; indicators not rolled up", dataset=dataset_id)
            return None
        current = source.current_snapshot()
        if current is None or current.snapshot_id == last:
            return None
        newer = []
        reached = last is None
        for snapshot in ancestors_of(current, source.metadata):
            if snapshot.snapshot_id == last:
                reached = True
                break
            newer.append(snapshot)
        if not reached:
            log.warning(
                "last rolled-up snapshot gone from the history (expired?); counting what is left",
                dataset=dataset_id,
                snapshot_id=last,
                snapshots=len(newer),
            )
        tally = DeliveryTally()
        for snapshot in reversed(newer):  # oldest first: later commitments win
            text = snapshot.summary.get(DELIVERY_PROPERTY) if snapshot.summary else None
            if not text:
                continue  # compaction, erasure, schema change: nothing delivered
            try:
                tally.merge(DeliveryTally.from_property(text))
            except ValueError as e:
                log.error(
                    "unreadable delivery tally skipped",
                    dataset=dataset_id,
                    snapshot_id=snapshot.snapshot_id,
                    error=str(e),
                )
        return current.snapshot_id, tally


@dataclass
class _Period:
    """The hour rows of one producer in one period, and how many of its hours have elapsed."""

    dataset_id: str
    producer: str
    start: datetime
    period: str
    current_hour: datetime
    delivery: HourDelivery = field(default_factory=HourDelivery)
    hours_available: int = 0
    elapsed_hours: int = 0
    commitments: Commitments | None = None

    def __post_init__(self) -> None:
        end = self.start + timedelta(hours=PERIOD_HOURS[self.period])
        self.elapsed_hours = int((min(end, self.current_hour) - self.start) / _HOUR)

    def add(self, row: dict[str, Any]) -> None:
        self.delivery.merge(_delivery(row))
        # Hours ahead of the clock (a producer's clock, via Kafka timestamps) are not hours yet.
        if row["accepted"] > 0 and row["period_start"] <= self.current_hour:
            self.hours_available += 1
            if row["period_start"] == self.current_hour:  # counts once something arrived
                self.elapsed_hours += 1
        self.commitments = Commitments(*(row[c] for c in _COMMITMENT_COLUMNS))  # rows sorted

    def indicator(self, promised: Commitments) -> Indicator:
        d = self.delivery
        availability = 100.0 * self.hours_available / self.elapsed_hours
        validity = 100.0 * d.accepted / d.received if d.received else 100.0
        max_lag = d.max_lag_s or 0.0
        return Indicator(
            dataset_id=self.dataset_id,
            producer=self.producer,
            period_start=self.start,
            period=self.period,
            received=d.received,
            accepted=d.accepted,
            rejected=d.rejected_total,
            rejected_by_reason=dict(sorted(d.rejected.items())),
            freshness_p50_s=lag_quantile(d.lag_histogram, d.max_lag_s) or 0.0,
            freshness_max_s=max_lag,
            availability_pct=availability,
            validity_pct=validity,
            commitments=promised,
            freshness_met=promised.max_freshness_lag_s is None
            or max_lag <= promised.max_freshness_lag_s,
            availability_met=promised.completeness_pct is None
            or availability >= promised.completeness_pct,
            validity_met=promised.validity_rate_pct is None
            or validity >= promised.validity_rate_pct,
        )


def _through(table: Table) -> dict[str, int]:
    """The marks of the newest snapshot carrying them (maintenance snapshots carry none)."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        text = snapshot.summary.get(THROUGH_PROPERTY) if snapshot.summary else None
        if text:
            return {str(k): int(v) for k, v in json.loads(text).items()}
    return {}


def _region(tallies: dict[str, DeliveryTally]) -> BooleanExpression | None:
    """Every row of the hours the tallies touch, whatever the producer."""
    parts: list[BooleanExpression] = []
    for dataset_id, tally in tallies.items():
        starts = sorted({datetime.fromtimestamp(h * 3600, UTC) for _, h, _ in tally.hours()})
        days = sorted({s.date().isoformat() for s in starts})
        parts.append(
            And(
                eq("dataset_id", dataset_id),
                And(is_in("period_day", days), is_in("period_start", [_iso(s) for s in starts])),
            )
        )
    return functools.reduce(Or, parts) if parts else None


def _read(table: Table, where: BooleanExpression) -> list[dict[str, Any]]:
    if table.current_snapshot() is None:
        return []
    rows: list[dict[str, Any]] = table.scan(row_filter=where).to_arrow().to_pylist()
    return rows


def _key(row: dict[str, Any]) -> tuple[str, str, datetime]:
    return row["dataset_id"], row["producer"], row["period_start"]


def _delivery(row: dict[str, Any]) -> HourDelivery:
    hist = [int(n) for n in row["lag_histogram"] or []][:BUCKETS]
    return HourDelivery(
        accepted=row["accepted"],
        rejected=dict(row["rejected_by_reason"] or []),
        lag_histogram=hist + [0] * (BUCKETS - len(hist)),
        max_lag_s=row["freshness_max_s"],
    )


def _commitment_values(promised: dict[str, float]) -> dict[str, Any]:
    lag = promised.get("max_freshness_lag_s")
    return {
        "max_freshness_lag_s": None if lag is None else round(lag),
        "completeness_pct": promised.get("completeness_pct"),
        "validity_rate_pct": promised.get("validity_rate_pct"),
    }


def _row(
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
        **{c: None if commitments is None else commitments.get(c) for c in _COMMITMENT_COLUMNS},
    }


def _arrow(table: Table, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=table.schema().as_arrow())


def _fill(found: list[Commitments | None]) -> list[Commitments]:
    """Each period's commitments: its own, else the latest before it, else the first after it."""
    out: list[Commitments | None] = []
    last: Commitments | None = None
    for c in found:
        last = c if c is not None else last
        out.append(last)
    first = next((c for c in found if c is not None), Commitments())
    return [c if c is not None else first for c in out]


def _floor(moment: datetime, period: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == "day" else moment


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
