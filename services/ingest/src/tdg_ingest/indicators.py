"""Delivery indicators: each producer's delivery per hour, in an Iceberg table of their own.

The roll-up reads the delivery tallies the worker committed in the dataset tables' snapshots and
upserts them into `tdg_ops.delivery_indicators`. It counts each snapshot exactly once: the id of
the last snapshot rolled up per dataset is written in the same commit as the rows (snapshot
property `tdg.indicators.through`), and that commit fails if anything else committed to the
indicators table since it was read (pyiceberg's rebasing retries are switched off for the table:
a rebased commit would add counts computed from stale rows). A crash or a lost race leaves the
rows and the marks as they were; the next roll-up does the work again.

The table itself (schema, rows, marks) is `tdg_ingest.indicator_table`; the periods a query sums
the hour rows into, and the commitments they are measured against, `tdg_ingest.indicator_periods`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from tdg_lake.tables import eq, ge, le, lt

from tdg_ingest.contract import DELIVERY_PROPERTY, THROUGH_PROPERTY
from tdg_ingest.delivery import DeliveryTally, HourDelivery
from tdg_ingest.indicator_periods import (
    HOUR,
    PERIOD_HOURS,
    Indicator,
    Period,
    fill_commitments,
    floor,
    utc,
)
from tdg_ingest.indicator_table import (
    commitment_values,
    hour_row,
    iso,
    open_table,
    read_rows,
    rolled_up_through,
    row_delivery,
    row_key,
    to_arrow,
    touched_region,
)

log = structlog.get_logger("tdg.ingest.indicators")

_DEFAULT_PERIODS = {"hour": 24, "day": 7}  # the window when `since` is not given


class TableSource(Protocol):
    """What the indicators need of the warehouse (tdg_ingest.warehouse.Warehouse fits)."""

    @property
    def catalog(self) -> Catalog: ...

    def load(self, dataset_id: str) -> Table: ...


class Indicators:
    def __init__(
        self, warehouse: TableSource, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._warehouse = warehouse
        self._clock = clock

    def roll_up(self, dataset_ids: Iterable[str]) -> int:
        """Add the datasets' new tallies to the indicators; returns the rows upserted."""
        table = self._table()  # read once: the commit below requires it unchanged
        through = rolled_up_through(table)
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
        region = touched_region(tallies)
        rows = {row_key(r): r for r in (read_rows(table, region) if region is not None else [])}
        found = bool(rows)
        upserted = 0
        for dataset_id, tally in tallies.items():
            for producer, hour, delivery in tally.hours():
                start = datetime.fromtimestamp(hour * 3600, UTC)
                row = rows.get((dataset_id, producer, start))
                merged = row_delivery(row) if row is not None else HourDelivery()
                merged.merge(delivery)
                promised = tally.commitments(producer)
                kept = row if promised is None else commitment_values(promised)
                rows[(dataset_id, producer, start)] = hour_row(
                    dataset_id, producer, start, merged, kept
                )
                upserted += 1
        properties = {THROUGH_PROPERTY: json.dumps(marks, separators=(",", ":"), sort_keys=True)}
        tx = table.transaction()
        if found and region is not None:  # every row of the region was read: rewrite it whole
            tx.delete(region, snapshot_properties=properties)
        # Also when no row changed (snapshots without tallies): the marks move on.
        tx.append(to_arrow(table, list(rows.values())), snapshot_properties=properties)
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
        now = utc(self._clock())
        current_hour = floor(now, "hour")
        length = timedelta(hours=PERIOD_HOURS[period])
        until = utc(until or now)
        since = utc(since or until - length * _DEFAULT_PERIODS[period])
        starts: list[datetime] = []
        start = floor(since, period)
        while start < until and start <= current_hour:  # periods that have begun
            starts.append(start)
            start += length
        if not starts:
            return []
        end = starts[-1] + length
        window = And(
            eq("dataset_id", dataset_id),
            ge("period_start", iso(starts[0])),
            lt("period_start", iso(end)),
            # the partition column, so that only the window's days are read
            ge("period_day", starts[0].date().isoformat()),
            le("period_day", (end - HOUR).date().isoformat()),
        )
        if producer:
            window = And(window, eq("producer", producer))
        table = self._table()
        by_producer: dict[str, list[dict[str, Any]]] = {producer: []} if producer else {}
        for row in sorted(read_rows(table, window), key=lambda r: r["period_start"]):
            by_producer.setdefault(row["producer"], []).append(row)
        out: list[Indicator] = []
        for name in sorted(by_producer):
            periods = [Period(dataset_id, name, s, period, current_hour) for s in starts]
            for row in by_producer[name]:
                index = int((row["period_start"] - starts[0]) / length)
                if 0 <= index < len(periods):
                    periods[index].add(row)
            promised = fill_commitments([p.commitments for p in periods])
            out.extend(
                p.indicator(c) for p, c in zip(periods, promised, strict=True) if p.elapsed_hours
            )
        return out

    def _table(self) -> Table:
        return open_table(self._warehouse.catalog)

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
