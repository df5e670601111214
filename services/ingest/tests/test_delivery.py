"""The delivery tally a batch commits with its rows: counts, freshness, and its round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from tdg_ingest.delivery import (
    BUCKETS,
    HOUR_MS,
    LAG_EDGES_S,
    DeliveryTally,
    lag_quantile,
)

HOUR = int(datetime(2025, 3, 10, 8, tzinfo=UTC).timestamp()) * 1000 // HOUR_MS  # 08:00 UTC


def accept(tally: DeliveryTally, producer: str, hour: int, lags_s: list[float]) -> None:
    """One accepted record per lag, arriving 10 minutes into `hour`."""
    arrival = [hour * HOUR_MS + 600_000] * len(lags_s)
    event = [
        datetime.fromtimestamp(a / 1000, UTC) - timedelta(seconds=lag)
        for a, lag in zip(arrival, lags_s, strict=True)
    ]
    tally.add_accepted(
        producer, pa.array(arrival, pa.int64()), pa.array(event, pa.timestamp("us", tz="UTC"))
    )


def bucket_of(lag_s: float) -> int:
    return next(i for i, edge in enumerate(LAG_EDGES_S) if lag_s <= edge)


def test_accepted_records_are_counted_per_producer_and_arrival_hour() -> None:
    tally = DeliveryTally()
    accept(tally, "sensors-north", HOUR, [3.0, 40.0, 40.5])
    accept(tally, "sensors-north", HOUR + 1, [1.0])
    accept(tally, "buses", HOUR, [7200.0])

    cells = {(p, h): d for p, h, d in tally.hours()}

    north = cells[("sensors-north", HOUR)]
    assert (north.accepted, north.received, north.max_lag_s) == (3, 3, 40.5)
    assert north.lag_histogram[bucket_of(3.0)] == 1
    assert north.lag_histogram[bucket_of(40.0)] == 2
    assert cells[("sensors-north", HOUR + 1)].accepted == 1
    assert cells[("buses", HOUR)].lag_histogram[bucket_of(7200.0)] == 1


def test_event_times_in_the_future_count_as_the_freshest() -> None:
    tally = DeliveryTally()
    accept(tally, "clock-ahead", HOUR, [-30.0, 0.0])

    [(_, _, cell)] = list(tally.hours())

    assert cell.lag_histogram[0] == 2
    assert lag_quantile(cell.lag_histogram, cell.max_lag_s) == 0.0


def test_event_time_in_milliseconds_and_chunked_arrays_are_accepted() -> None:
    tally = DeliveryTally()
    arrival = HOUR * HOUR_MS + 1_000
    tally.add_accepted(
        "p",
        pa.chunked_array([[arrival], [arrival]], pa.int64()),
        pa.chunked_array([[arrival - 2_500], [arrival - 500]], pa.timestamp("ms", tz="UTC")),
    )

    [(_, _, cell)] = list(tally.hours())

    assert cell.accepted == 2
    assert cell.max_lag_s == 2.5


def test_rejects_are_counted_by_reason_in_their_arrival_hour() -> None:
    tally = DeliveryTally()
    arrival = HOUR * HOUR_MS + 5
    tally.add_rejected("p", arrival, "schema/type_mismatch")
    tally.add_rejected("p", arrival, "schema/type_mismatch")
    tally.add_rejected("p", arrival, "format/invalid_json")
    accept(tally, "p", HOUR, [1.0])

    [(_, hour, cell)] = list(tally.hours())

    assert hour == HOUR
    assert cell.rejected == {"schema/type_mismatch": 2, "format/invalid_json": 1}
    assert (cell.received, cell.accepted, cell.rejected_total) == (4, 1, 3)


def test_tally_survives_the_snapshot_property_round_trip() -> None:
    tally = DeliveryTally()
    accept(tally, "a", HOUR, [0.2, 15.0, 90_000.0])
    tally.add_rejected("b", HOUR * HOUR_MS, "policy/write_denied")
    tally.set_commitments("a", {"max_freshness_lag_s": 300, "completeness_pct": 95.0})

    back = DeliveryTally.from_property(tally.to_property())

    assert back.to_property() == tally.to_property()
    assert list(back.hours()) == list(tally.hours())
    assert back.commitments("a") == {"max_freshness_lag_s": 300.0, "completeness_pct": 95.0}
    assert back.commitments("b") is None


def test_merge_adds_counts_and_the_later_commitments_win() -> None:
    first, second = DeliveryTally(), DeliveryTally()
    accept(first, "a", HOUR, [5.0, 5.0])
    first.set_commitments("a", {"validity_rate_pct": 99.0})
    accept(second, "a", HOUR, [700.0])
    second.add_rejected("a", HOUR * HOUR_MS, "schema/missing_field")
    second.set_commitments("a", {"validity_rate_pct": 95.0})

    first.merge(second)

    [(_, _, cell)] = list(first.hours())
    assert (cell.accepted, cell.rejected_total, cell.max_lag_s) == (3, 1, 700.0)
    assert sum(cell.lag_histogram) == 3
    assert first.commitments("a") == {"validity_rate_pct": 95.0}


def test_zero_commitments_mean_nothing_promised() -> None:
    tally = DeliveryTally()
    tally.set_commitments(
        "a", {"max_freshness_lag_s": 0, "completeness_pct": 0.0, "validity_rate_pct": 98.0}
    )

    assert tally.commitments("a") == {"validity_rate_pct": 98.0}
    assert tally.is_empty()  # promises alone deliver nothing


def test_p50_interpolates_in_the_histogram_and_max_is_exact() -> None:
    tally = DeliveryTally()
    accept(tally, "a", HOUR, [float(s) for s in range(1, 101)])

    [(_, _, cell)] = list(tally.hours())

    assert cell.max_lag_s == 100.0
    p50 = lag_quantile(cell.lag_histogram, cell.max_lag_s)
    assert p50 is not None and 45.0 <= p50 <= 55.0
    assert lag_quantile([0] * BUCKETS, None) is None


def test_p50_never_exceeds_the_largest_lag_seen() -> None:
    tally = DeliveryTally()
    accept(tally, "a", HOUR, [9 * 86400.0, 9 * 86400.0])  # beyond the last finite edge

    [(_, _, cell)] = list(tally.hours())

    p50 = lag_quantile(cell.lag_histogram, cell.max_lag_s)
    assert p50 is not None and 7 * 86400.0 < p50 <= 9 * 86400.0


def test_property_stays_small_for_tens_of_producers_over_a_few_hours() -> None:
    tally = DeliveryTally()
    for p in range(30):
        for h in range(3):
            accept(tally, f"producer-{p:02d}", HOUR + h, [1.0, 20.0, 200.0, 2000.0])
            tally.add_rejected(f"producer-{p:02d}", (HOUR + h) * HOUR_MS, "schema/type_mismatch")

    assert len(tally.to_property()) < 8_000


def test_unreadable_property_is_refused() -> None:
    with pytest.raises(ValueError):
        DeliveryTally.from_property('{"v":99}')
    with pytest.raises(ValueError):
        DeliveryTally.from_property("not json")
    with pytest.raises(ValueError):
        DeliveryTally.from_property('{"v":1,"p":{"a":{"1":[1]}}}')
