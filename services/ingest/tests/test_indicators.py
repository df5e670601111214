"""Delivery indicators rolled up from real Iceberg snapshots, exactly once, as a data officer sees
them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table, Transaction
from tdg_ingest.contract import DELIVERY_PROPERTY
from tdg_ingest.convert import indicator_to_pb as to_proto
from tdg_ingest.delivery import HOUR_MS, DeliveryTally
from tdg_ingest.indicator_table import INDICATORS_TABLE
from tdg_ingest.indicators import Indicators

DAY = datetime(2025, 3, 10, tzinfo=UTC)
ROWS = pa.schema([pa.field("reading", pa.int64()), pa.field("t", pa.timestamp("us", tz="UTC"))])


@dataclass
class Tables:
    """Stands in for the warehouse: a SQL catalog and one table per dataset."""

    catalog: Catalog
    on_load: dict[str, Callable[[], object]] = field(default_factory=dict)

    def load(self, dataset_id: str) -> Table:
        hook = self.on_load.pop(dataset_id, None)
        if hook is not None:
            hook()
        return self.catalog.load_table(("mobility", dataset_id))

    def create(self, dataset_id: str) -> Table:
        self.catalog.create_namespace_if_not_exists("mobility")
        return self.catalog.create_table(("mobility", dataset_id), ROWS)


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    catalog = load_catalog(
        "t", type="sql", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh"
    )
    return Tables(catalog)


def at(hours: float) -> Callable[[], datetime]:
    return lambda: DAY + timedelta(hours=hours)


def deliver(
    table: Table,
    producer: str,
    hour: int,
    accepted: int = 1,
    lag_s: float = 10.0,
    rejected: dict[str, int] | None = None,
    commitments: dict[str, float] | None = None,
) -> None:
    """One micro-batch committed the way the worker does: rows and tally in one snapshot."""
    arrival_ms = int((DAY + timedelta(hours=hour, minutes=20)).timestamp() * 1000)
    event = datetime.fromtimestamp(arrival_ms / 1000, UTC) - timedelta(seconds=lag_s)
    tally = DeliveryTally()
    times = pa.array([event] * accepted, pa.timestamp("us", tz="UTC"))
    tally.add_accepted(producer, pa.array([arrival_ms] * accepted, pa.int64()), times)
    for code, n in (rejected or {}).items():
        for _ in range(n):
            tally.add_rejected(producer, arrival_ms, code)
    if commitments is not None:
        tally.set_commitments(producer, commitments)
    rows = pa.table({"reading": pa.array(range(accepted), pa.int64()), "t": times}, schema=ROWS)
    table.append(rows, snapshot_properties={DELIVERY_PROPERTY: tally.to_property()})


def only(
    indicators: Indicators, dataset: str, producer: str, period: str = "day"
) -> dict[str, object]:
    [found] = indicators.query(
        dataset, producer, since=DAY, until=DAY + timedelta(days=1), period=period
    )
    return found.__dict__


def test_roll_up_adds_up_every_new_snapshot_per_producer_and_hour(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(parking, "sensors-north", 8, accepted=5, lag_s=30, rejected={"schema/type_mismatch": 1})
    deliver(parking, "sensors-north", 8, accepted=3, lag_s=90)
    deliver(parking, "city-app", 9, accepted=2, rejected={"format/invalid_json": 2})
    indicators = Indicators(tables, clock=at(24))

    assert indicators.roll_up(["parking"]) == 2

    hourly = indicators.query(
        "parking", since=DAY + timedelta(hours=8), until=DAY + timedelta(hours=10), period="hour"
    )
    seen = {(i.producer, i.period_start.hour): i for i in hourly}
    north = seen[("sensors-north", 8)]
    assert (north.received, north.accepted, north.rejected) == (9, 8, 1)
    assert north.rejected_by_reason == {"schema/type_mismatch": 1}
    assert north.freshness_max_s == 90.0
    assert seen[("sensors-north", 9)].received == 0  # a silent hour appears too
    assert seen[("city-app", 9)].rejected_by_reason == {"format/invalid_json": 2}
    # The indicators are an Iceberg table like any dataset.
    stored = tables.catalog.load_table(INDICATORS_TABLE).scan().to_arrow()
    assert sorted(stored["accepted"].to_pylist()) == [2, 8]


def test_rolling_up_again_adds_nothing_and_then_only_what_is_new(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(parking, "sensors-north", 8, accepted=5)
    indicators = Indicators(tables, clock=at(24))
    indicators.roll_up(["parking"])

    assert indicators.roll_up(["parking"]) == 0
    assert only(indicators, "parking", "sensors-north")["accepted"] == 5

    deliver(parking, "sensors-north", 8, accepted=2)
    assert indicators.roll_up(["parking"]) == 1
    assert only(indicators, "parking", "sensors-north")["accepted"] == 7
    assert tables.catalog.load_table(INDICATORS_TABLE).scan().to_arrow().num_rows == 1


def test_a_crash_before_the_commit_never_double_counts(
    tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    parking, buses = tables.create("parking"), tables.create("buses")
    deliver(parking, "sensors-north", 8, accepted=5)
    deliver(buses, "operator", 8, accepted=4)
    indicators = Indicators(tables, clock=at(24))
    indicators.roll_up(["parking"])  # a subset first
    deliver(parking, "sensors-north", 8, accepted=1)

    def crash(self: Transaction) -> Table:
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(Transaction, "commit_transaction", crash)
        with pytest.raises(RuntimeError):
            indicators.roll_up(["parking", "buses"])
    indicators.roll_up(["parking", "buses"])
    indicators.roll_up(["parking", "buses"])

    assert only(indicators, "parking", "sensors-north")["accepted"] == 6
    assert only(indicators, "buses", "operator")["accepted"] == 4
    assert tables.catalog.load_table(INDICATORS_TABLE).scan().to_arrow().num_rows == 2


def test_two_replicas_rolling_up_at_once_count_once(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(parking, "sensors-north", 8, accepted=5)
    mine, theirs = Indicators(tables, clock=at(24)), Indicators(tables, clock=at(24))
    # The other replica commits while this one is reading the dataset's snapshots.
    tables.on_load["parking"] = lambda: theirs.roll_up(["parking"])

    assert mine.roll_up(["parking"]) == 0  # lost the race: nothing written
    assert mine.roll_up(["parking"]) == 0  # and nothing left to do
    assert only(mine, "parking", "sensors-north")["accepted"] == 5


def test_snapshots_without_a_tally_are_skipped(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(parking, "sensors-north", 8, accepted=5)
    parking.append(pa.table({"reading": [1], "t": [DAY]}, schema=ROWS))  # a backfill, say
    parking.delete("reading = 1")  # an erasure
    indicators = Indicators(tables, clock=at(24))

    assert indicators.roll_up(["parking"]) == 1
    assert only(indicators, "parking", "sensors-north")["received"] == 5


def test_an_expired_mark_counts_what_is_left(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(parking, "sensors-north", 8, accepted=5)
    indicators = Indicators(tables, clock=at(24))
    indicators.roll_up(["parking"])
    counted = parking.refresh().current_snapshot()
    assert counted is not None
    deliver(parking, "sensors-north", 9, accepted=2)
    parking.maintenance.expire_snapshots().by_id(counted.snapshot_id).commit()

    assert indicators.roll_up(["parking"]) == 1
    assert only(indicators, "parking", "sensors-north")["accepted"] == 7


def test_a_silent_hour_lowers_availability_below_the_commitment(tables: Tables) -> None:
    parking = tables.create("parking")
    promised = {"completeness_pct": 99.0}
    for hour in range(24):
        if hour != 5:
            deliver(parking, "sensors-north", hour, commitments=promised)
    indicators = Indicators(tables, clock=at(30))
    indicators.roll_up(["parking"])

    day = only(indicators, "parking", "sensors-north")
    hourly = indicators.query(
        "parking", "sensors-north", since=DAY, until=DAY + timedelta(days=1), period="hour"
    )

    assert day["availability_pct"] == pytest.approx(100 * 23 / 24)
    assert day["availability_met"] is False
    assert [i.availability_pct for i in hourly].count(0.0) == 1
    assert hourly[5].received == 0 and hourly[5].availability_pct == 0.0
    assert hourly[4].availability_pct == 100.0


def test_a_producer_silent_for_a_whole_day_still_shows(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(parking, "sensors-north", 10, commitments={"completeness_pct": 90.0})
    indicators = Indicators(tables, clock=at(48))
    indicators.roll_up(["parking"])

    days = indicators.query("parking", since=DAY, until=DAY + timedelta(days=2))

    assert [(d.period_start.day, d.received, d.availability_pct) for d in days] == [
        (10, 1, pytest.approx(100 / 24)),
        (11, 0, 0.0),
    ]
    assert days[1].commitments.completeness_pct == 90.0
    assert days[1].availability_met is False


def test_the_current_day_counts_only_its_elapsed_hours(tables: Tables) -> None:
    parking = tables.create("parking")
    for hour in range(9):  # 00:00 to 08:59; nothing yet at 09:xx
        deliver(parking, "sensors-north", hour)
    indicators = Indicators(tables, clock=at(9.5))
    indicators.roll_up(["parking"])

    assert only(indicators, "parking", "sensors-north")["availability_pct"] == 100.0

    deliver(parking, "sensors-north", 10)  # 10:20 arrives; 09:00 stayed silent
    later = Indicators(tables, clock=at(10.5))
    later.roll_up(["parking"])

    assert only(later, "parking", "sensors-north")["availability_pct"] == pytest.approx(
        100 * 10 / 11
    )


def test_validity_is_measured_against_the_commitment(tables: Tables) -> None:
    parking = tables.create("parking")
    promise = {"validity_rate_pct": 95.0}
    deliver(
        parking,
        "careless",
        8,
        accepted=90,
        rejected={"schema/type_mismatch": 10},
        commitments=promise,
    )
    deliver(
        parking,
        "careful",
        8,
        accepted=99,
        rejected={"schema/type_mismatch": 1},
        commitments=promise,
    )
    deliver(parking, "unbound", 8, accepted=1, rejected={"schema/type_mismatch": 9}, commitments={})
    indicators = Indicators(tables, clock=at(24))
    indicators.roll_up(["parking"])

    careless, careful = (
        only(indicators, "parking", "careless"),
        only(indicators, "parking", "careful"),
    )
    unbound = only(indicators, "parking", "unbound")

    assert (careless["validity_pct"], careless["validity_met"]) == (90.0, False)
    assert (careful["validity_pct"], careful["validity_met"]) == (99.0, True)
    assert (unbound["validity_pct"], unbound["validity_met"]) == (10.0, True)  # nothing promised


def test_freshness_is_measured_against_the_commitment(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(parking, "late", 8, accepted=3, lag_s=400, commitments={"max_freshness_lag_s": 300})
    deliver(parking, "prompt", 8, accepted=3, lag_s=20, commitments={"max_freshness_lag_s": 300})
    indicators = Indicators(tables, clock=at(24))
    indicators.roll_up(["parking"])

    assert only(indicators, "parking", "late")["freshness_met"] is False
    assert only(indicators, "parking", "prompt")["freshness_met"] is True


def test_a_day_adds_up_its_24_hours(tables: Tables) -> None:
    parking = tables.create("parking")
    for hour in range(24):
        deliver(
            parking,
            "sensors-north",
            hour,
            accepted=10,
            lag_s=float(hour + 1) * 10,
            rejected={"schema/type_mismatch": 1} if hour % 2 else {"format/invalid_json": 1},
        )
    indicators = Indicators(tables, clock=at(30))
    indicators.roll_up(["parking"])

    [day] = indicators.query("parking", since=DAY, until=DAY + timedelta(days=1))

    assert (day.received, day.accepted, day.rejected) == (264, 240, 24)
    assert day.rejected_by_reason == {"format/invalid_json": 12, "schema/type_mismatch": 12}
    assert day.freshness_max_s == 240.0
    assert 60.0 < day.freshness_p50_s <= 130.0  # the true median lag is 120 s
    assert day.availability_pct == 100.0
    assert day.validity_pct == pytest.approx(100 * 240 / 264)


def test_an_indicator_converts_to_its_wire_form(tables: Tables) -> None:
    parking = tables.create("parking")
    deliver(
        parking,
        "sensors-north",
        8,
        accepted=4,
        rejected={"schema/type_mismatch": 1},
        commitments={"max_freshness_lag_s": 300, "validity_rate_pct": 95.0},
    )
    indicators = Indicators(tables, clock=at(24))
    indicators.roll_up(["parking"])
    [indicator] = indicators.query("parking", since=DAY, until=DAY + timedelta(days=1))

    message = to_proto(indicator)

    assert message.period_start.ToDatetime(tzinfo=UTC) == DAY
    assert (message.period, message.received, message.accepted) == ("day", 5, 4)
    assert dict(message.rejected_by_reason) == {"schema/type_mismatch": 1}
    assert message.commitments.max_freshness_lag_s == 300
    assert message.commitments.completeness_pct == 0.0  # nothing promised
    assert message.validity_pct == 80.0 and not message.validity_met
    assert message.availability_met  # nothing promised


def test_rolled_up_arrival_hours_keep_their_hour_boundaries(tables: Tables) -> None:
    parking = tables.create("parking")
    tally = DeliveryTally()
    start = int(DAY.timestamp() * 1000) + 8 * HOUR_MS
    arrivals = pa.array([start + HOUR_MS - 1, start + HOUR_MS], pa.int64())
    times = pa.array([DAY, DAY], pa.timestamp("us", tz="UTC"))
    tally.add_accepted("edge", arrivals, times)
    parking.append(
        pa.table({"reading": [1, 2], "t": times}, schema=ROWS),
        snapshot_properties={DELIVERY_PROPERTY: tally.to_property()},
    )
    indicators = Indicators(tables, clock=at(24))
    indicators.roll_up(["parking"])

    hourly = indicators.query(
        "parking",
        "edge",
        since=DAY + timedelta(hours=8),
        until=DAY + timedelta(hours=10),
        period="hour",
    )

    assert [(i.period_start.hour, i.accepted) for i in hourly] == [(8, 1), (9, 1)]
