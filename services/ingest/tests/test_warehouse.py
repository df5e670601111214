"""The datasets' Iceberg tables on a real SQL catalog: what a data officer and the worker rely on —
tables partitioned by day, schemas that evolve, batches stored exactly once, erasures exact."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tdg_core.column_types import parse_type
from tdg_core.errors import InvalidArgument
from tdg_ingest.contract import OFFSETS_PROPERTY
from tdg_ingest.schema import ColumnSpec, TableSchema
from tdg_ingest.warehouse import Warehouse
from tdg_lake.offsets import StaleOffsets

DATASET = "metropole-lyon.energy-meters"
TOPIC = "tdg.ingest.metropole-lyon.energy-meters"
DAY1 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
DAY2 = datetime(2025, 3, 2, 8, 0, tzinfo=UTC)


def column(name: str, type_: str, nullable: bool = True) -> ColumnSpec:
    return ColumnSpec(name=name, type=type_, arrow_type=parse_type(type_), nullable=nullable)


SCHEMA_V1 = TableSchema(
    dataset_id=DATASET,
    version=1,
    columns=(
        column("ts", "timestamp", nullable=False),
        column("meter", "string", nullable=False),
        column("kwh", "float32"),
        column("pulses", "int32"),
        column("user_id", "string"),
        column("tags", "list<string>"),
        column("price", "decimal(10,2)"),
    ),
    event_time_column="ts",
    subject_column="user_id",
)

# v2: wider numbers, the meter may be unknown, and a new column.
SCHEMA_V2 = TableSchema(
    dataset_id=DATASET,
    version=2,
    columns=(
        column("ts", "timestamp", nullable=False),
        column("meter", "string"),
        column("kwh", "float64"),
        column("pulses", "int64"),
        column("user_id", "string"),
        column("tags", "list<string>"),
        column("price", "decimal(10,2)"),
        column("site", "string", nullable=False),
    ),
    event_time_column="ts",
    subject_column="user_id",
)


def rows(
    schema: TableSchema, meters: list[str], when: datetime = DAY1, **extra: list[Any]
) -> pa.Table:
    n = len(meters)
    data: dict[str, list[Any]] = {
        "ts": [when + timedelta(minutes=i) for i in range(n)],
        "meter": meters,
        "kwh": [1.5] * n,
        "pulses": [7] * n,
        "user_id": [f"user-{m}" for m in meters],
        "tags": [["a"]] * n,
        "price": [None] * n,
        **extra,
    }
    names = [c.name for c in schema.columns]
    return pa.table({k: data[k] for k in names}, schema=schema.arrow_schema())


def sqlite_properties(root: Path) -> dict[str, str]:
    return {
        "type": "sql",
        "uri": f"sqlite:///{root / 'catalog' / 'iceberg.db'}",
        "warehouse": (root / "warehouse").as_uri(),
    }


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(sqlite_properties(tmp_path))


def read(table: Table) -> pa.Table:
    table.refresh()
    return table.scan().to_arrow()


def current_summary(table: Table) -> dict[str, str]:
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    return snapshot.summary.additional_properties


def meters_of(table: Table) -> list[str]:
    return sorted(read(table)["meter"].to_pylist())


def test_new_dataset_gets_a_table_partitioned_by_day_of_event_time(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    assert (tmp_path / "catalog" / "iceberg.db").is_file()

    table = warehouse.load(DATASET)
    (field,) = table.spec().fields
    assert field.transform == DayTransform()
    assert table.schema().find_field(field.source_id).name == "ts"
    assert table.schema().find_field("ts").required

    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["m1"], DAY1), {0: 0}, {0: 1}, {})
    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["m2"], DAY2), {0: 1}, {0: 2}, {})
    days = {task.file.partition[0] for task in table.refresh().scan().plan_files()}
    epoch = date(1970, 1, 1)
    assert days == {(DAY1.date() - epoch).days, (DAY2.date() - epoch).days}
    files = list((tmp_path / "warehouse").rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"ts_day=2025-03-01", "ts_day=2025-03-02"}


def test_ensuring_an_existing_table_again_changes_nothing(warehouse: Warehouse) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    before = warehouse.load(DATASET).metadata_location
    warehouse.ensure_table(SCHEMA_V1)
    assert warehouse.load(DATASET).metadata_location == before


def test_replicas_racing_to_create_the_table_end_with_the_newest_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica_a = Warehouse(sqlite_properties(tmp_path))
    replica_b = Warehouse(sqlite_properties(tmp_path))
    real = replica_a.catalog.create_table_transaction

    def overtaken(*args: Any, **kwargs: Any) -> Any:
        replica_b.ensure_table(SCHEMA_V1)  # lands while A believes the table is absent
        return real(*args, **kwargs)

    monkeypatch.setattr(replica_a.catalog, "create_table_transaction", overtaken)

    replica_a.ensure_table(SCHEMA_V2)

    assert replica_b.stats(DATASET).fields[-1] == "site"
    assert [t[1] for t in replica_b.catalog.list_tables("metropole-lyon")] == ["energy-meters"]


def test_evolved_schema_adds_columns_widens_types_and_keeps_old_rows(
    warehouse: Warehouse,
) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["old"]), {0: 0}, {0: 1}, {})

    warehouse.ensure_table(SCHEMA_V2)
    table = warehouse.load(DATASET)
    schema = table.schema()
    assert str(schema.find_field("kwh").field_type) == "double"
    assert str(schema.find_field("pulses").field_type) == "long"
    assert not schema.find_field("meter").required
    assert not schema.find_field("site").required  # old files have no value for it

    new = rows(SCHEMA_V2, ["new"], DAY2, pulses=[2**40], site=["part-dieu"])
    warehouse.commit_batch(DATASET, TOPIC, new, {0: 1}, {0: 2}, {})
    stored = read(table).sort_by("ts").to_pylist()
    assert [(r["meter"], r["site"], r["pulses"]) for r in stored] == [
        ("old", None, 7),
        ("new", "part-dieu", 2**40),
    ]
    assert warehouse.stats(DATASET).fields[-1] == "site"

    # A replica still on v1 re-ensuring must not narrow anything back.
    warehouse.ensure_table(SCHEMA_V1)
    assert str(warehouse.load(DATASET).schema().find_field("pulses").field_type) == "long"


def test_offsets_of_every_partition_travel_with_each_snapshot(warehouse: Warehouse) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    assert warehouse.committed_offsets(DATASET, TOPIC) == {}

    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a", "b"]), {0: 0}, {0: 2}, {})
    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["c"]), {1: 40}, {1: 41}, {"k": "v"})

    assert warehouse.committed_offsets(DATASET, TOPIC) == {0: 2, 1: 41}
    assert warehouse.committed_offsets(DATASET, "tdg.ingest.other.topic") == {}
    summary = current_summary(warehouse.load(DATASET))
    assert summary["k"] == "v"
    assert '"0":2' in summary[OFFSETS_PROPERTY]  # the newest snapshot alone tells everything


def test_batch_whose_records_were_all_rejected_still_advances_offsets(
    warehouse: Warehouse,
) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a"]), {0: 0}, {0: 1}, {})
    before = warehouse.stats(DATASET)

    empty = rows(SCHEMA_V1, [])
    snapshot_id = warehouse.commit_batch(DATASET, TOPIC, empty, {0: 1}, {0: 9}, {})

    after = warehouse.stats(DATASET)
    assert snapshot_id == after.snapshot_id != before.snapshot_id
    assert after.total_records == before.total_records == 1
    assert warehouse.committed_offsets(DATASET, TOPIC) == {0: 9}


def test_zombie_batch_from_already_committed_offsets_is_refused(warehouse: Warehouse) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a", "b"]), {0: 0}, {0: 2}, {})

    with pytest.raises(StaleOffsets) as refused:
        warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a", "b"]), {0: 0}, {0: 2}, {})

    assert refused.value.committed == {0: 2}
    assert meters_of(warehouse.load(DATASET)) == ["a", "b"]


def _commit_first(
    loser: Warehouse, winner_commits: Callable[[], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make `winner_commits` land after `loser` read the table and before its commit arrives."""
    real = loser.catalog.commit_table
    pending = [winner_commits]

    def racing(*args: Any, **kwargs: Any) -> Any:
        while pending:
            pending.pop()()
        return real(*args, **kwargs)

    monkeypatch.setattr(loser.catalog, "commit_table", racing)


def test_writer_overtaken_on_the_same_partition_is_refused_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica_a = Warehouse(sqlite_properties(tmp_path))
    replica_b = Warehouse(sqlite_properties(tmp_path))
    replica_a.ensure_table(SCHEMA_V1)
    _commit_first(
        replica_a,
        lambda: replica_b.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["b"]), {0: 0}, {0: 1}, {}),
        monkeypatch,
    )

    with pytest.raises(StaleOffsets):
        replica_a.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a"]), {0: 0}, {0: 1}, {})

    table = replica_a.load(DATASET)
    assert meters_of(table) == ["b"]
    assert replica_a.committed_offsets(DATASET, TOPIC) == {0: 1}
    on_disk = {p.name for p in (tmp_path / "warehouse").rglob("*.parquet")}
    assert on_disk == {Path(t.file.file_path).name for t in table.scan().plan_files()}


def test_writers_of_different_partitions_both_land_with_all_offsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica_a = Warehouse(sqlite_properties(tmp_path))
    replica_b = Warehouse(sqlite_properties(tmp_path))
    replica_a.ensure_table(SCHEMA_V1)
    _commit_first(
        replica_a,
        lambda: replica_b.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["b"]), {1: 0}, {1: 5}, {}),
        monkeypatch,
    )

    replica_a.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a"]), {0: 0}, {0: 3}, {})

    assert meters_of(replica_a.load(DATASET)) == ["a", "b"]
    # Re-checked and re-based by us, not rebased by pyiceberg with a stale summary.
    assert replica_b.committed_offsets(DATASET, TOPIC) == {0: 3, 1: 5}


def test_erasure_deletes_exactly_the_subject_rows_and_keeps_offsets(
    warehouse: Warehouse,
) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    day1 = rows(SCHEMA_V1, ["m1", "m2", "m3"], DAY1, user_id=["alice", "bob", "alice"])
    day2 = rows(SCHEMA_V1, ["m4", "m5"], DAY2, user_id=["alice", "carol"])
    warehouse.commit_batch(DATASET, TOPIC, day1, {0: 0}, {0: 3}, {})
    warehouse.commit_batch(DATASET, TOPIC, day2, {1: 0}, {1: 2}, {})

    snapshot_id, deleted = warehouse.delete_rows(DATASET, "user_id", "alice")

    assert deleted == 3
    assert warehouse.stats(DATASET).snapshot_id == snapshot_id
    left = read(warehouse.load(DATASET))
    assert sorted(left["user_id"].to_pylist()) == ["bob", "carol"]
    assert warehouse.committed_offsets(DATASET, TOPIC) == {0: 3, 1: 2}
    assert warehouse.delete_rows(DATASET, "user_id", "alice") == (0, 0)
    # Exactly once still holds after the delete: the next batch continues from the offsets.
    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["m6"]), {0: 3}, {0: 4}, {})
    with pytest.raises(StaleOffsets):
        warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["m6"]), {0: 3}, {0: 4}, {})


def test_stats_tell_the_size_and_freshness_of_a_table(warehouse: Warehouse) -> None:
    warehouse.ensure_table(SCHEMA_V1)
    assert warehouse.stats(DATASET).snapshot_id == 0

    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a", "b", "c"]), {0: 0}, {0: 3}, {})

    stats = warehouse.stats(DATASET)
    assert stats.total_records == 3
    assert stats.last_commit is not None
    assert abs(datetime.now(UTC) - stats.last_commit) < timedelta(minutes=1)
    assert stats.fields == tuple(c.name for c in SCHEMA_V1.columns)


@pytest.mark.parametrize("dataset_id", ["../x.y", "a.b/../../c", "A.b", "x", "a.b.c", ""])
def test_dataset_id_that_could_escape_the_warehouse_is_refused(
    warehouse: Warehouse, tmp_path: Path, dataset_id: str
) -> None:
    with pytest.raises(InvalidArgument):
        warehouse.ensure_table(TableSchema(dataset_id, 1, SCHEMA_V1.columns, "ts"))
    with pytest.raises(InvalidArgument):
        warehouse.committed_offsets(dataset_id, TOPIC)
    with pytest.raises(InvalidArgument):
        warehouse.delete_rows(dataset_id, "user_id", "alice")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "warehouse"]
    assert not any((tmp_path / "warehouse").iterdir())


@pytest.fixture
def postgres_catalog_url(postgres_url: str) -> str:
    """A new empty database on the session's server; given in the async form other services
    use, which the warehouse turns into its synchronous driver."""
    base = make_url(postgres_url)
    name = f"iceberg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base.set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.mark.integration
def test_catalog_on_postgresql_keeps_offsets_exactly_once(
    postgres_catalog_url: str, tmp_path: Path
) -> None:
    properties = {
        "type": "sql",
        "uri": postgres_catalog_url,
        "warehouse": (tmp_path / "warehouse").as_uri(),
    }
    warehouse = Warehouse(properties)
    warehouse.ensure_table(SCHEMA_V1)
    warehouse.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a", "b"]), {0: 0}, {0: 2}, {})

    replica = Warehouse(properties)
    assert replica.committed_offsets(DATASET, TOPIC) == {0: 2}
    with pytest.raises(StaleOffsets):
        replica.commit_batch(DATASET, TOPIC, rows(SCHEMA_V1, ["a", "b"]), {0: 0}, {0: 2}, {})
    assert replica.delete_rows(DATASET, "user_id", "user-a")[1] == 1
    assert meters_of(replica.load(DATASET)) == ["b"]
