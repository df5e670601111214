"""The lake's settings (TDG_LAKE_*): one Iceberg SQL catalog and warehouse, shared by every
service that reads or writes the datasets' tables (ingest writes them, query reads them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from tdg_core.settings import TdgSettings


class LakeSettings(TdgSettings):
    """Mixed into a service's settings (next to `ServiceSettings`), so that the services opening
    the lake are configured by the same variables and cannot point at different catalogs."""

    # Iceberg SQL catalog (SQLite by default, PostgreSQL by URL) and its warehouse (a local
    # directory by default; s3://bucket/prefix with the S3 settings below).
    lake_catalog_url: str = "sqlite:///var/lake/iceberg-catalog.db"
    lake_warehouse: str = "var/warehouse"
    lake_s3_endpoint: str | None = None
    lake_s3_region: str | None = None
    lake_s3_access_key_id: SecretStr | None = None
    lake_s3_secret_access_key: SecretStr | None = None

    def iceberg_properties(self) -> dict[str, str]:
        """pyiceberg catalog properties, for `tdg_lake.catalog.open_catalog`."""
        props = {"type": "sql", "uri": self.lake_catalog_url, "warehouse": self.warehouse_uri()}
        if self.lake_s3_endpoint:
            props["s3.endpoint"] = self.lake_s3_endpoint
        if self.lake_s3_region:
            props["s3.region"] = self.lake_s3_region
        if self.lake_s3_access_key_id:
            props["s3.access-key-id"] = self.lake_s3_access_key_id.get_secret_value()
        if self.lake_s3_secret_access_key:
            props["s3.secret-access-key"] = self.lake_s3_secret_access_key.get_secret_value()
        return props

    def warehouse_uri(self) -> str:
        """file:// for a local directory (made absolute, so table locations do not depend on the
        working directory of whoever wrote them), the URI itself otherwise."""
        if "://" in self.lake_warehouse:
            return self.lake_warehouse
        return Path(self.lake_warehouse).resolve().as_uri()
