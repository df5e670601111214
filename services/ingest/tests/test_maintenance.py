"""Table upkeep on real Iceberg tables: compaction merges the small files of each day without
losing, duplicating or resurrecting a row, even while ingestion keeps appending, and expiry
frees the disk."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.table import Table
from tdg_core.column_types import parse_type
from tdg_ingest.contract import MAINTENANCE_PROPERTY
from tdg_ingest.maintenance import compact
from tdg_ingest.schema import ColumnSpec, TableSchema
from tdg_ingest.warehouse import Warehouse

DATASET = "grand-nancy.water-meters"
TOPIC = "tdg.ingest.grand-nancy.water-meters"
DAY1 = datetime(2025, 6, 1, 6, 0, tzinfo=UTC)
DAY2 = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)

SCHEMA = TableSchema(
    dataset_id=DATASET,
    version=1,
    columns=tuple(
        ColumnSpec(name, type_, parse_type(type_), nullable)
        for name, type_, nullable in (
            ("ts", "timestamp", False),
            ("reading_id", "string", False),
            ("litres", "float64", True),
            ("user_id", "string", True),
        )
    ),
    event_time_column="ts",
    subject_column="user_id",
)


def batch(keys: list[str], users: list[str] | None = None) -> pa.Table:
    """One record per key, alternating between two days."""
    return pa.table(
        {
            "ts": [(DAY1 if i % 2 else DAY2) + timedelta(seconds=i) for i in range(len(keys))],
            "reading_id": keys,
            "litres": [float(i) for i in range(len(keys))],
            "user_id": users or ["someone"] * len(keys),
        },
        schema=SCHEMA.arrow_schema(),
    )


def _properties(root: Path) -> dict[str, str]:
    return {
        "type": "sql",
        "uri": f"sqlite:///{root / 'iceberg.db'}",
        "warehouse": (root / "warehouse").as_uri(),
    }


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    wh = Warehouse(_properties(tmp_path))
    wh.ensure_table(SCHEMA)
    return wh


def ingest(
    warehouse: Warehouse, batches: int, size: int = 4, first: int = 0, pause_s: float = 0
) -> None:
    for i in range(first, first + batches):
        keys = [f"r{i}-{j}" for j in range(size)]
        warehouse.commit_batch(DATASET, TOPIC, batch(keys), {0: i * size}, {0: (i + 1) * size}, {})
        time.sleep(pause_s)


def keys_of(table: Table) -> list[str]:
    table.refresh()
    return sorted(table.scan(selected_fields=("reading_id",)).to_arrow()["reading_id"].to_pylist())


def live_files(table: Table) -> set[str]:
    table.refresh()
    return {Path(t.file.file_path).name for t in table.scan().plan_files()}


def files_on_disk(root: Path) -> set[str]:
    return {p.name for p in (root / "warehouse").rglob("*.parquet")}


def test_compaction_merges_each_days_small_files_and_keeps_rows_and_offsets(
    warehouse: Warehouse,
) -> None:
    ingest(warehouse, batches=8)
    table = warehouse.load(DATASET)
    before = keys_of(table)
    assert len(live_files(table)) == 16  # every batch wrote one file per day

    result = compact(warehouse, DATASET)

    assert (result.files_rewritten, result.files_written) == (16, 2)
    assert len(live_files(table)) == 2
    assert keys_of(table) == before
    assert warehouse.stats(DATASET).total_records == len(before)
    assert warehouse.committed_offsets(DATASET, TOPIC) == {0: 32}
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.get(MAINTENANCE_PROPERTY) == "compaction"
    # Nothing left to merge: a second run changes nothing.
    assert compact(warehouse, DATASET).snapshot_id == 0


def _before_first_commit(
    warehouse: Warehouse, action: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run `action` (through another instance) just before `warehouse`'s next commit lands."""
    real = warehouse.catalog.commit_table
    pending = [action]

    def racing(*args: Any, **kwargs: Any) -> Any:
        while pending:
            pending.pop()()
        return real(*args, **kwargs)

    monkeypatch.setattr(warehouse.catalog, "commit_table", racing)


def test_rows_appended_during_a_rewrite_survive_it(
    warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(warehouse, batches=4)
    replica = Warehouse(_properties(tmp_path))
    _before_first_commit(warehouse, lambda: ingest(replica, batches=1, first=4), monkeypatch)

    result = compact(warehouse, DATASET)

    assert result.files_rewritten == 8
    keys = keys_of(warehouse.load(DATASET))
    assert keys == sorted(f"r{i}-{j}" for i in range(5) for j in range(4))
    assert warehouse.committed_offsets(DATASET, TOPIC) == {0: 20}


def test_rewrite_overtaken_by_an_erasure_does_not_bring_erased_rows_back(
    warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = ["alice", "bob", "carol", "dan"]
    for i in range(3):
        keys = [f"r{i}-{j}" for j in range(4)]
        warehouse.commit_batch(DATASET, TOPIC, batch(keys, users), {0: i * 4}, {0: i * 4 + 4}, {})
    replica = Warehouse(_properties(tmp_path))
    _before_first_commit(
        warehouse, lambda: replica.delete_rows(DATASET, "user_id", "alice"), monkeypatch
    )

    compact(warehouse, DATASET)

    table = warehouse.load(DATASET)
    table.refresh()
    left = table.scan().to_arrow()
    assert "alice" not in left["user_id"].to_pylist()
    assert left.num_rows == 9
    assert len(live_files(table)) == 2


def test_compaction_while_ingestion_keeps_appending_loses_and_duplicates_nothing(
    warehouse: Warehouse,
) -> None:
    ingest(warehouse, batches=6)
    total_batches = 30
    done = threading.Event()
    failures: list[BaseException] = []

    def appender() -> None:
        # The same instance from another thread, as the worker and a maintenance task would.
        try:
            # Several commits a second: busier than one dataset's worker (a batch a second).
            ingest(warehouse, batches=total_batches - 6, first=6, pause_s=0.05)
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=appender)
    thread.start()
    rewritten_while_appending = 0
    while not done.is_set():
        result = compact(warehouse, DATASET, expire_older_than=timedelta(0))
        rewritten_while_appending += result.files_rewritten
    thread.join()
    compact(warehouse, DATASET)

    assert failures == []
    assert rewritten_while_appending > 0
    table = warehouse.load(DATASET)
    keys = keys_of(table)
    assert keys == sorted(f"r{i}-{j}" for i in range(total_batches) for j in range(4))
    assert len(keys) == len(set(keys))
    assert warehouse.committed_offsets(DATASET, TOPIC) == {0: total_batches * 4}
    assert len(live_files(table)) == 2


def test_expiry_drops_old_snapshots_and_the_files_only_they_used(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    ingest(warehouse, batches=5)
    first = compact(warehouse, DATASET, expire_older_than=timedelta(0))
    assert first.snapshots_expired == 4  # all but the current one
    # The files just replaced stay until the next run, for queries planned before the rewrite.
    assert len(files_on_disk(tmp_path)) == 10 + 2

    second = compact(warehouse, DATASET, expire_older_than=timedelta(0))

    table = warehouse.load(DATASET)
    assert second.snapshots_expired == 1
    assert len(table.metadata.snapshots) == 1
    assert files_on_disk(tmp_path) == live_files(table)
    assert len(keys_of(table)) == 20
    assert warehouse.committed_offsets(DATASET, TOPIC) == {0: 20}


def test_recent_snapshots_are_kept(warehouse: Warehouse) -> None:
    ingest(warehouse, batches=3)
    result = compact(warehouse, DATASET, expire_older_than=timedelta(hours=1))
    assert result.snapshots_expired == 0
    assert len(warehouse.load(DATASET).metadata.snapshots) == 4  # three batches, one rewrite
