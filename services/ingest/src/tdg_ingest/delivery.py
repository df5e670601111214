"""What one micro-batch delivered, per producer and arrival hour.

The worker commits the tally in the batch's own Iceberg snapshot (summary property
`tdg.ingest.delivery`), so delivery is counted exactly when the data is: a batch retried after a
crash carries its tally again, a batch committed once is tallied once. Tallies merge by addition,
which is why freshness is kept as a fixed-bucket histogram rather than as raw lags.
Pure logic, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

HOUR_MS = 3_600_000
_FORMAT = 1

# Upper edges in seconds of the freshness-lag buckets: bucket i holds lags in (edge[i-1], edge[i]].
# Bucket 0 holds lags <= 0 (event time at or after arrival: clocks ahead), the last one beyond 7 d.
LAG_EDGES_S: tuple[float, ...] = (
    0, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
    3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, math.inf,
)  # fmt: skip
BUCKETS = len(LAG_EDGES_S)

# The commitments a producer may promise in its agreement; zero or absent means nothing promised.
COMMITMENT_KEYS = ("max_freshness_lag_s", "completeness_pct", "validity_rate_pct")


@dataclass
class HourDelivery:
    """What one producer delivered in one arrival hour."""

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason code -> records
    lag_histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    max_lag_s: float | None = None  # exact; None when no accepted record had an event time

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def received(self) -> int:
        return self.accepted + self.rejected_total

    def merge(self, other: HourDelivery) -> None:
        self.accepted += other.accepted
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        self.lag_histogram = [
            a + b for a, b in zip(self.lag_histogram, other.lag_histogram, strict=True)
        ]
        self.max_lag_s = _max(self.max_lag_s, other.max_lag_s)


def lag_quantile(histogram: Sequence[int], max_lag_s: float | None, q: float = 0.5) -> float | None:
    """The q-quantile of the lags, interpolated linearly within the bucket that holds it.

    The bucket's upper edge is clamped to the exact maximum lag, so the estimate never exceeds a
    lag that was seen; lags <= 0 read as 0. None when the histogram is empty.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(histogram):
        if n and seen + n >= rank:
            if i == 0:
                return 0.0
            lower, upper = LAG_EDGES_S[i - 1], LAG_EDGES_S[i]
            if max_lag_s is not None:
                upper = min(upper, max(max_lag_s, lower))
            if math.isinf(upper):  # no exact max known: the bucket's floor is all we can say
                return lower
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return max_lag_s


class DeliveryTally:
    """What one micro-batch delivered per (producer, arrival hour), and the producers' promises."""

    def __init__(self) -> None:
        self._hours: dict[tuple[str, int], HourDelivery] = {}
        self._commitments: dict[str, dict[str, float]] = {}

    def add_accepted(
        self,
        producer: str,
        arrival_ms: pa.Array | pa.ChunkedArray,
        event_time: pa.Array | pa.ChunkedArray,
    ) -> None:
        """Count accepted records; `arrival_ms` (Kafka timestamps) and `event_time` are aligned."""
        if len(arrival_ms) != len(event_time):
            raise ValueError("arrival_ms and event_time must be aligned")
        if len(arrival_ms) == 0:
            return
        arrival = pc.cast(arrival_ms, pa.int64())
        lag_s = pc.divide(
            pc.cast(pc.subtract(pc.multiply(arrival, 1000), _micros(event_time)), pa.float64()),
            1e6,
        )
        hour = pc.cast(pc.floor(pc.divide(pc.cast(arrival, pa.float64()), HOUR_MS)), pa.int64())
        # bucket = how many edges the lag exceeds; a null lag (no event time) stays null
        bucket = pc.cast(pc.greater(lag_s, LAG_EDGES_S[0]), pa.int8())
        for edge in LAG_EDGES_S[1:-1]:
            bucket = pc.add(bucket, pc.cast(pc.greater(lag_s, edge), pa.int8()))
        rows = pa.table({"hour": hour, "bucket": bucket, "lag": lag_s})
        for g in rows.group_by("hour").aggregate([("lag", "max"), ([], "count_all")]).to_pylist():
            cell = self._cell(producer, g["hour"])
            cell.accepted += g["count_all"]
            cell.max_lag_s = _max(cell.max_lag_s, g["lag_max"])
        by_bucket = rows.group_by(["hour", "bucket"]).aggregate([([], "count_all")])
        for g in by_bucket.to_pylist():
            if g["bucket"] is not None:  # no event time: counted as accepted, not as fresh or stale
                self._cell(producer, g["hour"]).lag_histogram[g["bucket"]] += g["count_all"]

    def add_rejected(self, producer: str, arrival_ms: int, reason_code: str) -> None:
        cell = self._cell(producer, arrival_ms // HOUR_MS)
        cell.rejected[reason_code] = cell.rejected.get(reason_code, 0) + 1

    def set_commitments(self, producer: str, commitments: Mapping[str, float]) -> None:
        """The producer's promises at the time of this batch ({} when none)."""
        self._commitments[producer] = {
            k: float(commitments[k]) for k in COMMITMENT_KEYS if commitments.get(k, 0) > 0
        }

    def hours(self) -> Iterator[tuple[str, int, HourDelivery]]:
        """(producer, hours since the epoch, delivery) of every hour with a record."""
        for (producer, hour), cell in sorted(self._hours.items()):
            yield producer, hour, cell

    def commitments(self, producer: str) -> dict[str, float] | None:
        """None when this tally says nothing of the producer's promises."""
        found = self._commitments.get(producer)
        return None if found is None else dict(found)

    def is_empty(self) -> bool:
        return not self._hours

    def merge(self, other: DeliveryTally) -> None:
        """Add `other`, a later batch: its commitments replace earlier ones."""
        for (producer, hour), cell in other._hours.items():
            self._cell(producer, hour).merge(cell)
        for producer, promised in other._commitments.items():
            self._commitments[producer] = dict(promised)

    def to_property(self) -> str:
        producers: dict[str, dict[str, list[Any]]] = {}
        for producer, hour, cell in self.hours():
            hist = list(cell.lag_histogram)
            while hist and hist[-1] == 0:  # trailing empty buckets cost bytes, not meaning
                hist.pop()
            max_lag = None if cell.max_lag_s is None else round(cell.max_lag_s, 3)
            producers.setdefault(producer, {})[str(hour)] = [
                cell.accepted,
                cell.rejected,
                hist,
                max_lag,
            ]
        body = {"v": _FORMAT, "p": producers, "c": self._commitments}
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_property(cls, text: str) -> DeliveryTally:
        """Raises ValueError on a property this version cannot read."""
        try:
            body = json.loads(text)
            if body.get("v") != _FORMAT:
                raise ValueError(f"unknown delivery tally format {body.get('v')!r}")
            tally = cls()
            for producer, hours in body.get("p", {}).items():
                for hour, (accepted, rejected, hist, max_lag) in hours.items():
                    if len(hist) > BUCKETS:
                        raise ValueError("lag histogram has too many buckets")
                    tally._hours[(str(producer), int(hour))] = HourDelivery(
                        accepted=int(accepted),
                        rejected={str(k): int(v) for k, v in rejected.items()},
                        lag_histogram=[int(n) for n in hist] + [0] * (BUCKETS - len(hist)),
                        max_lag_s=None if max_lag is None else float(max_lag),
                    )
            for producer, promised in body.get("c", {}).items():
                tally._commitments[str(producer)] = {str(k): float(v) for k, v in promised.items()}
            return tally
        except (TypeError, AttributeError, KeyError) as e:
            raise ValueError(f"malformed delivery tally: {e}") from e

    def _cell(self, producer: str, hour: int) -> HourDelivery:
        cell = self._hours.get((producer, hour))
        if cell is None:
            cell = self._hours[(producer, hour)] = HourDelivery()
        return cell


def _micros(event_time: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Event times as int64 microseconds since the epoch, whatever the timestamp unit."""
    if not pa.types.is_timestamp(event_time.type):
        raise TypeError(f"event_time must be a timestamp, not {event_time.type}")
    if event_time.type.unit != "us":
        event_time = pc.cast(event_time, pa.timestamp("us", tz=event_time.type.tz))
    return pc.cast(event_time, pa.int64())


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
