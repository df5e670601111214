"""Table upkeep as the service runs it (the CompactTable call and the maintenance loop): the
delivery indicators survive the expiry of the snapshots they are read from, because they are
rolled up first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from tdg_core.column_types import parse_type
from tdg_ingest.contract import DELIVERY_PROPERTY
from tdg_ingest.datasets import DatasetDirectory
from tdg_ingest.delivery import DeliveryTally
from tdg_ingest.indicators import Indicators
from tdg_ingest.locks import TableLocks
from tdg_ingest.schema import ColumnSpec, TableSchema
from tdg_ingest.upkeep import TableUpkeep
from tdg_ingest.warehouse import Warehouse

DATASET = "grand-nancy.water-meters"
TOPIC = "tdg.ingest.grand-nancy.water-meters"
DAY = datetime(2025, 6, 1, tzinfo=UTC)
SCHEMA = TableSchema(
    dataset_id=DATASET,
    version=1,
    columns=tuple(
        ColumnSpec(name, type_, parse_type(type_), False)
        for name, type_ in (("ts", "timestamp"), ("reading_id", "string"))
    ),
    event_time_column="ts",
)


def deliver(warehouse: Warehouse, batch: int, readings: int) -> None:
    """A micro-batch of one producer committed the way the worker does: rows, offsets, tally."""
    arrival_ms = int((DAY + timedelta(hours=8, minutes=batch)).timestamp() * 1000)
    times = pa.array([DAY + timedelta(hours=8)] * readings, pa.timestamp("us", tz="UTC"))
    tally = DeliveryTally()
    tally.add_accepted("meters-partner", pa.array([arrival_ms] * readings, pa.int64()), times)
    rows = pa.table(
        {"ts": times, "reading_id": [f"r{batch}-{i}" for i in range(readings)]},
        schema=SCHEMA.arrow_schema(),
    )
    start, end = {0: batch * readings if batch else -1}, {0: (batch + 1) * readings}
    properties = {DELIVERY_PROPERTY: tally.to_property()}
    warehouse.commit_batch(DATASET, TOPIC, rows, start, end, properties)


async def test_compaction_keeps_the_indicators_of_the_snapshots_it_expires(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(
        {
            "type": "sql",
            "uri": f"sqlite:///{tmp_path / 'iceberg.db'}",
            "warehouse": (tmp_path / "warehouse").as_uri(),
        }
    )
    warehouse.ensure_table(SCHEMA)
    for batch in range(4):
        deliver(warehouse, batch, readings=5)
    indicators = Indicators(warehouse, clock=lambda: DAY + timedelta(days=1))
    directory = DatasetDirectory("127.0.0.1:1", "unused")  # never started: not consulted here
    upkeep = TableUpkeep(directory, warehouse, indicators, TableLocks())

    (result,) = await upkeep.compact([DATASET], expire_older_than=timedelta(0))

    assert result.snapshots_expired == 3 and result.files_rewritten == 4
    [day] = indicators.query(DATASET, "meters-partner", DAY, DAY + timedelta(days=1), "day")
    assert (day.received, day.accepted) == (20, 20)
