"""The dataset's Iceberg table, written with pyiceberg as the ingest service makes it: day
partitions on `date_observed`, one append of one day per data file (not measured)."""

from __future__ import annotations

import os
from datetime import timedelta
from urllib.parse import unquote, urlsplit

import duckdb
from tdg_ingest.schema import TableSchema
from tdg_ingest.warehouse import Warehouse

from .scenario import COMMUNES, COUNTERS, DATASET, FILES, FIRST_DAY, dataset

# One day of hourly counts: COUNTERS counters, both directions, the rows spread over the day's
# hours; intensity pseudo-random in [0, 400); each counter in one commune.
DAY_SQL = f"""
SELECT 'CPT-' || lpad(CAST(c AS VARCHAR), 5, '0') AS counter_id,
  make_timestamptz(CAST($day_us + (i * 24 // $m) * 3600000000 AS BIGINT)) AS date_observed,
  CASE WHEN (i // {COUNTERS}) % 2 = 0 THEN 'forward' ELSE 'backward' END AS lane_direction,
  CAST(hash(i, $day_us) % 400 AS INTEGER) AS intensity,
  CAST(1 + c % 3 AS INTEGER) AS lane_id,
  CASE WHEN hash(i, $day_us, 1) % 10 = 0 THEN 'cargoBicycle' ELSE 'bicycle' END AS vehicle_type,
  'SEG-' || lpad(CAST(c // 3 AS VARCHAR), 5, '0') AS ref_road_segment,
  $communes[CAST(1 + hash(c) % {len(COMMUNES)} AS BIGINT)] AS commune_code,
  CAST(45.70 + (c % 97) * 0.0013 AS DOUBLE) AS latitude,
  CAST(4.78 + (c % 89) * 0.0017 AS DOUBLE) AS longitude
FROM (SELECT range AS i, range % {COUNTERS} AS c FROM range($m))
"""


def write_table(properties: dict[str, str], rows: int) -> tuple[list[str], int]:
    """The dataset's table as the ingest service makes it, FILES appends of one day each; the
    current snapshot's data files (local paths) and their bytes."""
    warehouse = Warehouse(properties)
    schema = TableSchema.from_proto(DATASET, dataset().schema)
    warehouse.ensure_table(schema)
    table = warehouse.load_for_write(DATASET)
    target = schema.arrow_schema()
    generator = duckdb.connect(config={"threads": os.cpu_count() or 1})
    generator.execute("SET TimeZone = 'UTC'")
    for day in range(FILES):
        m = rows // FILES + (1 if day < rows % FILES else 0)
        day_us = int((FIRST_DAY + timedelta(days=day)).timestamp() * 1_000_000)
        data = generator.sql(
            DAY_SQL, params={"day_us": day_us, "m": m, "communes": COMMUNES}
        ).to_arrow_table()
        table.append(data.cast(target))
    generator.close()
    table = warehouse.load(DATASET)
    tasks = list(table.scan().plan_files())
    return [local_path(t.file.file_path) for t in tasks], sum(
        t.file.file_size_in_bytes for t in tasks
    )


def local_path(uri: str) -> str:
    parts = urlsplit(uri)
    return unquote(parts.path) if parts.scheme == "file" else uri
