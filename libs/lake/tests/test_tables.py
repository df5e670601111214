"""The lake's table plumbing on a real (SQLite) Iceberg catalog, and what it relies on of
pyiceberg's private functions: a pyiceberg upgrade that moves or changes them fails here first."""

from __future__ import annotations

import inspect
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue, And, EqualTo, In, IsNull, NotNull
from pyiceberg.io import pyarrow as pyiceberg_arrow
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from tdg_lake import tables
from tdg_lake.tables import BATCH_TABLE_PROPERTIES, PartitionBy

IDENT = ("tdg_ops", "readings")
SCHEMA = pa.schema(
    [
        pa.field("reading_id", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("value", pa.float64()),
    ]
)
BY_DAY = (PartitionBy("time", DayTransform(), "time_day"),)


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    return SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"reading_id": f"r{i}", "time": datetime(2026, 3, 1 + i % 2, tzinfo=UTC), "value": i}
            for i in range(start, start + n)
        ],
        schema=SCHEMA,
    )


def create(catalog: SqlCatalog) -> tuple[Table, bool]:
    return tables.create_or_load(catalog, IDENT, SCHEMA, BATCH_TABLE_PROPERTIES, BY_DAY)


# --- creation and loading -------------------------------------------------------------------------


def test_the_first_call_creates_the_table_partitioned_and_set_for_conditional_commits(
    catalog: SqlCatalog,
) -> None:
    table, created = create(catalog)
    assert created
    assert [f.name for f in table.spec().fields] == ["time_day"]
    assert table.properties["commit.retry.num-retries"] == "0"
    assert table.properties["write.metadata.delete-after-commit.enabled"] == "true"
    again, created_again = create(catalog)
    assert not created_again
    assert again.metadata.table_uuid == table.metadata.table_uuid


def test_processes_racing_to_create_the_table_all_get_the_winners(tmp_path: Path) -> None:
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    go = threading.Barrier(4, timeout=30)
    # Each its own catalog, as separate processes would have.
    catalogs = [
        SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
        for _ in range(4)
    ]

    def race(own: SqlCatalog) -> None:
        go.wait()
        try:
            table, created = create(own)
            results.append((str(table.metadata.table_uuid), created))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(own,)) for own in catalogs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({uuid for uuid, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1


def test_load_for_write_sets_the_property_on_a_table_made_elsewhere(catalog: SqlCatalog) -> None:
    catalog.create_namespace(IDENT[0])
    catalog.create_table(IDENT, SCHEMA)  # by another tool: pyiceberg's rebasing retry on
    table = tables.load_for_write(lambda: catalog.load_table(IDENT))
    assert table.properties["commit.retry.num-retries"] == "0"
    assert catalog.load_table(IDENT).properties["commit.retry.num-retries"] == "0"


def test_load_for_write_leaves_a_table_already_set_alone(catalog: SqlCatalog) -> None:
    table, _ = create(catalog)
    metadata = table.metadata_location
    assert tables.load_for_write(lambda: catalog.load_table(IDENT)).metadata_location == metadata


# --- pyiceberg's private functions --------------------------------------------------------------


def test_the_private_functions_relied_on_are_still_there() -> None:
    write = inspect.signature(pyiceberg_arrow._dataframe_to_data_files)
    assert {"table_metadata", "df", "io", "write_uuid"} <= set(write.parameters)
    check = inspect.signature(pyiceberg_arrow._check_pyarrow_schema_compatible)
    assert {"requested_schema", "provided_schema", "format_version"} <= set(check.parameters)


def test_data_files_written_apart_are_committed_by_a_fast_append(catalog: SqlCatalog) -> None:
    table, _ = create(catalog)
    assert tables.write_data_files(table, rows(0)) == []
    files = tables.write_data_files(table, rows(6))
    assert len(files) == 2  # one per day partition
    assert all(f.file_path.endswith(".parquet") for f in files)
    assert sum(f.record_count for f in files) == 6
    tx = table.transaction()
    with tx.update_snapshot().fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)
    tx.commit_transaction()
    stored = catalog.load_table(IDENT).scan().to_arrow()
    assert sorted(stored["reading_id"].to_pylist()) == [f"r{i}" for i in range(6)]


def test_check_writable_accepts_the_tables_schema_and_refuses_another(catalog: SqlCatalog) -> None:
    table, _ = create(catalog)
    tables.check_writable(table, SCHEMA)
    tables.check_writable(table, SCHEMA.remove(2))  # an optional column left out
    with pytest.raises(ValueError):
        tables.check_writable(table, SCHEMA.set(2, pa.field("value", pa.string())))
    with pytest.raises(ValueError):
        tables.check_writable(table, SCHEMA.append(pa.field("unknown", pa.int32())))


# --- predicates ---------------------------------------------------------------------------------


def test_predicates_are_pyicebergs() -> None:
    assert tables.eq("a", 1) == EqualTo("a", 1)  # type: ignore[call-arg]
    assert tables.is_in("a", [1, 2, 2]) == In("a", {1, 2})  # type: ignore[call-arg]
    assert tables.is_null("a") == IsNull("a")  # type: ignore[call-arg]
    assert tables.not_null("a") == NotNull("a")  # type: ignore[call-arg]
    assert tables.all_of([]) == AlwaysTrue()
    assert tables.all_of([tables.eq("a", 1)]) == tables.eq("a", 1)
    both = tables.all_of([tables.eq("a", 1), tables.gt("b", 2)])
    assert isinstance(both, And)


def test_predicates_prune_what_they_say(catalog: SqlCatalog) -> None:
    table, _ = create(catalog)
    table.append(rows(6))
    table = catalog.load_table(IDENT)

    def ids(where: object) -> list[str]:
        found = table.scan(row_filter=where).to_arrow()  # type: ignore[arg-type]
        return sorted(found["reading_id"].to_pylist())

    assert ids(tables.eq("reading_id", "r1")) == ["r1"]
    assert ids(tables.ne("reading_id", "r1")) == ["r0", "r2", "r3", "r4", "r5"]
    assert ids(tables.all_of([tables.ge("value", 2), tables.lt("value", 4)])) == ["r2", "r3"]
    assert ids(tables.all_of([tables.gt("value", 2), tables.le("value", 4)])) == ["r3", "r4"]
    assert ids(tables.is_in("reading_id", ["r0", "r5"])) == ["r0", "r5"]
    assert ids(tables.ge("time", "2026-03-02T00:00:00+00:00")) == ["r1", "r3", "r5"]
    assert ids(tables.is_null("value")) == []
    assert len(ids(tables.not_null("value"))) == 6
