"""The exactly-once append on a real (SQLite) Iceberg catalog: a commit that meets a table moved on
under it re-checks the offsets and commits on the new head."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from tdg_lake import tables
from tdg_lake.offsets import append_exactly_once, offsets_in

IDENT = ("tdg_ops", "events")
SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False)])
PROP = "tdg.test.offsets"


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    return SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")


def ids(*values: str) -> pa.Table:
    return pa.table({"id": list(values)}, schema=SCHEMA)


def test_an_append_whose_parent_snapshot_was_expired_meanwhile_commits_on_the_new_head(
    catalog: SqlCatalog,
) -> None:
    table, _ = tables.create_or_load(catalog, IDENT, SCHEMA, tables.BATCH_TABLE_PROPERTIES, ())
    append_exactly_once(table, table.refresh, ids("a"), "t", PROP, {0: 0}, {0: 1})
    stale = catalog.load_table(IDENT)  # a writer loads the table, then maintenance runs:
    parent = stale.current_snapshot()
    assert parent is not None
    other = catalog.load_table(IDENT)
    other.append(ids("b"))  # another snapshot on top, and the parent expired with its files
    other.maintenance.expire_snapshots().by_ids([parent.snapshot_id]).commit()
    os.remove(parent.manifest_list.removeprefix("file://"))

    append_exactly_once(
        stale, lambda: catalog.load_table(IDENT), ids("c"), "t", PROP, {0: 1}, {0: 2}
    )

    head = catalog.load_table(IDENT)
    assert sorted(head.scan().to_arrow()["id"].to_pylist()) == ["a", "b", "c"]
    assert offsets_in(head, "t", PROP) == {0: 2}
