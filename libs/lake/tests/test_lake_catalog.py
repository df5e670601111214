"""Opening the lake's catalog and naming a dataset's table."""

from __future__ import annotations

from pathlib import Path

import pytest
from tdg_core.errors import InvalidArgument
from tdg_lake.catalog import open_catalog, table_identifier
from tdg_lake.settings import LakeSettings


def test_open_catalog_makes_its_directories_and_is_usable(tmp_path: Path) -> None:
    db = tmp_path / "not-yet" / "iceberg-catalog.db"
    warehouse = tmp_path / "warehouse"
    settings = LakeSettings(
        _env_file=None,
        lake_catalog_url=f"sqlite+aiosqlite:///{db}",  # an async URL is made synchronous
        lake_warehouse=str(warehouse),
    )
    catalog = open_catalog(settings.iceberg_properties())
    assert db.parent.is_dir()
    assert warehouse.is_dir()
    catalog.create_namespace("metropole-lyon")
    assert ("metropole-lyon",) in catalog.list_namespaces()
    # A second process (another service) sees the same catalog.
    assert ("metropole-lyon",) in open_catalog(settings.iceberg_properties()).list_namespaces()


def test_table_identifier() -> None:
    assert table_identifier("metropole-lyon.bike-counters") == ("metropole-lyon", "bike-counters")


@pytest.mark.parametrize("dataset_id", ["../etc", "../etc.passwd", "a.b/../c", ""])
def test_table_identifier_refuses_a_path(dataset_id: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        table_identifier(dataset_id)
    assert info.value.field == "dataset_id"
