"""Delivery indicators over periods: the hour rows of the indicators table summed per hour or UTC
day into an `Indicator`, measured against the producer's `Commitments`, and the period arithmetic
(UTC floors, elapsed hours, commitments carried across periods)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tdg_ingest.delivery import HourDelivery, lag_quantile
from tdg_ingest.indicator_table import COMMITMENT_COLUMNS, row_delivery

PERIOD_HOURS = {"hour": 1, "day": 24}
HOUR = timedelta(hours=1)


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


@dataclass
class Period:
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
        self.elapsed_hours = int((min(end, self.current_hour) - self.start) / HOUR)

    def add(self, row: dict[str, Any]) -> None:
        self.delivery.merge(row_delivery(row))
        # Hours ahead of the clock (a producer's clock, via Kafka timestamps) are not hours yet.
        if row["accepted"] > 0 and row["period_start"] <= self.current_hour:
            self.hours_available += 1
            if row["period_start"] == self.current_hour:  # counts once something arrived
                self.elapsed_hours += 1
        self.commitments = Commitments(*(row[c] for c in COMMITMENT_COLUMNS))  # rows sorted

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


def fill_commitments(found: list[Commitments | None]) -> list[Commitments]:
    """Each period's commitments: its own, else the latest before it, else the first after it."""
    out: list[Commitments | None] = []
    last: Commitments | None = None
    for c in found:
        last = c if c is not None else last
        out.append(last)
    first = next((c for c in found if c is not None), Commitments())
    return [c if c is not None else first for c in out]


def floor(moment: datetime, period: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == "day" else moment


def utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
