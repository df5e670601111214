"""The lake's settings: what the services opening the same tables read from TDG_LAKE_*."""

from __future__ import annotations

from pathlib import Path

import pytest
from tdg_lake.settings import LakeSettings


def settings(**values: object) -> LakeSettings:
    # No dev.env: a developer's local stack must not leak into the test.
    return LakeSettings(_env_file=None, **values)  # type: ignore[arg-type]


def test_read_from_the_lake_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDG_LAKE_CATALOG_URL", "postgresql+psycopg2://u:p@db:5432/iceberg")
    monkeypatch.setenv("TDG_LAKE_WAREHOUSE", "s3://tdg-warehouse/")
    monkeypatch.setenv("TDG_LAKE_S3_ENDPOINT", "https://s3.example.org")
    monkeypatch.setenv("TDG_LAKE_S3_REGION", "fr-par")
    monkeypatch.setenv("TDG_LAKE_S3_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("TDG_LAKE_S3_SECRET_ACCESS_KEY", "s3-secret-value")
    s = settings()
    assert s.lake_catalog_url == "postgresql+psycopg2://u:p@db:5432/iceberg"
    assert s.lake_warehouse == "s3://tdg-warehouse/"
    assert s.lake_s3_endpoint == "https://s3.example.org"
    assert s.lake_s3_region == "fr-par"
    assert s.lake_s3_access_key_id is not None
    assert s.lake_s3_access_key_id.get_secret_value() == "key-id"
    assert "s3-secret-value" not in repr(s)  # the keys stay out of logs


def test_properties_of_a_local_lake(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    props = settings(lake_catalog_url=url, lake_warehouse=str(tmp_path / "wh")).iceberg_properties()
    assert props == {"type": "sql", "uri": url, "warehouse": (tmp_path / "wh").as_uri()}


def test_properties_of_a_lake_on_s3() -> None:
    props = settings(
        lake_catalog_url="postgresql+psycopg2://u:p@db:5432/iceberg",
        lake_warehouse="s3://tdg-warehouse/",
        lake_s3_endpoint="https://s3.example.org",
        lake_s3_region="fr-par",
        lake_s3_access_key_id="key-id",
        lake_s3_secret_access_key="secret",
    ).iceberg_properties()
    assert props == {
        "type": "sql",
        "uri": "postgresql+psycopg2://u:p@db:5432/iceberg",
        "warehouse": "s3://tdg-warehouse/",
        "s3.endpoint": "https://s3.example.org",
        "s3.region": "fr-par",
        "s3.access-key-id": "key-id",
        "s3.secret-access-key": "secret",
    }


def test_relative_warehouse_becomes_an_absolute_file_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = settings(lake_warehouse="var/warehouse").warehouse_uri()
    assert uri == (tmp_path / "var" / "warehouse").resolve().as_uri()
    assert uri.startswith("file:///")
