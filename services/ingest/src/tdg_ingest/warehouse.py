"""The datasets' Apache Iceberg tables: creation and evolution, exactly-once batch commits,
row-level erasure and figures for the indicators.

Exactly once rests on one rule: the Kafka offsets a batch ends at are written in the summary of
the very snapshot that holds its rows (`OFFSETS_PROPERTY`), and a batch is committed only if the
table's offsets are still those it started from. The commit is conditional on the snapshot read
(pyiceberg asserts the branch head; the SQL catalog swaps the metadata location atomically), so
two writers of the same partitions cannot both succeed.

Every table is set to `commit.retry.num-retries = 0` (why: `tdg_lake.tables`) and each method here
re-reads and re-checks itself on a conflict.

Every method blocks; the worker calls them through `asyncio.to_thread`. An instance holds no
mutable state besides its catalog, so threads may use it at once (conflicts on one table are
resolved by the catalog, as between processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import structlog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from tdg_lake import offsets as lake_offsets
from tdg_lake import tables
from tdg_lake.catalog import open_catalog, table_identifier
from tdg_lake.offsets import append_exactly_once
from tdg_lake.tables import BATCH_TABLE_PROPERTIES, COMMIT_ATTEMPTS, PartitionBy

from tdg_ingest.contract import OFFSETS_PROPERTY
from tdg_ingest.schema import TableSchema

log = structlog.get_logger("tdg.ingest.warehouse")


@dataclass(frozen=True)
class TableStats:
    snapshot_id: int  # 0 before the first commit
    total_records: int
    last_commit: datetime | None  # UTC
    schema_id: int
    fields: tuple[str, ...]


class Warehouse:
    def __init__(self, properties: dict[str, str]) -> None:
        self.catalog = open_catalog(properties)

    # --- tables ---------------------------------------------------------------------------

    def ensure_table(self, schema: TableSchema) -> None:
        """Create the table (partitioned by day of event time) or evolve it to `schema`."""
        ident = table_identifier(schema.dataset_id)
        time_column = schema.event_time_column
        partition_by = (
            (PartitionBy(time_column, DayTransform(), f"{time_column}_day"),) if time_column else ()
        )
        for _ in range(COMMIT_ATTEMPTS):
            table, created = tables.create_or_load(
                self.catalog, ident, schema.arrow_schema(), BATCH_TABLE_PROPERTIES, partition_by
            )
            if created:
                return
            try:
                _evolve(table, schema.arrow_schema())
                return
            except CommitFailedException:
                continue  # evolved meanwhile by another replica: look again
        raise CommitFailedException(f"{ident}: {COMMIT_ATTEMPTS} conflicts while provisioning")

    def load(self, dataset_id: str) -> Table:
        return self.catalog.load_table(table_identifier(dataset_id))

    def load_for_write(self, dataset_id: str) -> Table:
        """The table, made sure first that pyiceberg will not rebase a conflicting commit."""
        return tables.load_for_write(lambda: self.load(dataset_id))

    # --- offsets and batches --------------------------------------------------------------

    def committed_offsets(self, dataset_id: str, topic: str) -> dict[int, int]:
        """Next offset per partition of `topic`, as of the table's current snapshot."""
        return offsets_in(self.load(dataset_id), topic)

    def commit_batch(
        self,
        dataset_id: str,
        topic: str,
        data: pa.Table,
        start: dict[int, int],
        end: dict[int, int],
        properties: dict[str, str],
    ) -> int:
        """Append `data` (possibly empty) in one snapshot carrying the offsets advanced to `end`;
        StaleOffsets when the table is not at `start`. Returns the new snapshot id."""
        table = self.load_for_write(dataset_id)
        tables.check_writable(table, data.schema)
        return append_exactly_once(
            table,
            lambda: self.load(dataset_id),
            data,
            topic,
            OFFSETS_PROPERTY,
            start,
            end,
            properties,
        )

    # --- erasure --------------------------------------------------------------------------

    def delete_rows(self, dataset_id: str, column: str, value: str) -> tuple[int, int]:
        """Delete the rows whose `column` equals `value`: (snapshot id or 0, rows deleted)."""
        predicate = tables.eq(column, value)
        for _ in range(COMMIT_ATTEMPTS):
            table = self.load_for_write(dataset_id)
            # Counted on the snapshot the delete is conditional on, so the count is exact.
            rows = table.scan(row_filter=predicate, selected_fields=(column,)).count()
            if rows == 0:
                return 0, 0
            tx = table.transaction()
            tx.delete(predicate, snapshot_properties=carried_offsets(table))
            try:
                tx.commit_transaction()
            except CommitFailedException:
                log.info("delete conflict, retrying", dataset=dataset_id)
                continue
            snapshot = table.current_snapshot()
            assert snapshot is not None  # a delete that removed rows made one
            return snapshot.snapshot_id, rows
        raise CommitFailedException(f"{dataset_id}: {COMMIT_ATTEMPTS} commit conflicts in a row")

    # --- figures --------------------------------------------------------------------------

    def stats(self, dataset_id: str) -> TableStats:
        table = self.load(dataset_id)
        schema = table.schema()
        fields = tuple(f.name for f in schema.fields)
        snapshot = table.current_snapshot()
        if snapshot is None:
            return TableStats(0, 0, None, schema.schema_id, fields)
        total = snapshot.summary.get("total-records") if snapshot.summary else None
        return TableStats(
            snapshot_id=snapshot.snapshot_id,
            total_records=int(total or 0),
            last_commit=datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=UTC),
            schema_id=schema.schema_id,
            fields=fields,
        )


# --- helpers shared with maintenance --------------------------------------------------------


def offsets_in(table: Table, topic: str) -> dict[int, int]:
    """The offsets of `topic` in the newest ancestor of the current snapshot carrying any."""
    return lake_offsets.offsets_in(table, topic, OFFSETS_PROPERTY)


def carried_offsets(table: Table) -> dict[str, str]:
    """Snapshot properties that carry the current offsets into a snapshot made by something
    other than a batch (a delete, a compaction), so that it is the newest to hold them."""
    for summary in lake_offsets.offset_summaries(table, OFFSETS_PROPERTY):
        return {OFFSETS_PROPERTY: summary}
    return {}


def _evolve(table: Table, target: pa.Schema) -> None:
    """Add the new columns (always nullable: old files have none), widen int32/float32, make
    columns nullable, and relax required columns the schema no longer has."""
    current = table.schema()
    present = {f.name for f in current.fields}
    wanted = pa.schema([f if f.name in present else f.with_nullable(True) for f in target])
    dropped = [f.name for f in current.fields if f.required and f.name not in target.names]
    with table.transaction() as tx:
        with tx.update_schema() as update:
            update.union_by_name(wanted)
            for name in dropped:
                update.make_column_optional(name)
        if any(table.properties.get(k) != v for k, v in BATCH_TABLE_PROPERTIES.items()):
            tx.set_properties(dict(BATCH_TABLE_PROPERTIES))
