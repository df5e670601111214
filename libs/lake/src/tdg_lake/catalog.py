"""Opening the lake's Iceberg SQL catalog, and the table a dataset id names."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.engine import make_url
from tdg_core.identifiers import parse_dataset_id

CATALOG_NAME = "tdg"

# Async drivers other services use in the same kind of URL; pyiceberg's catalog is synchronous.
_SYNC_DRIVERS = {"postgresql+asyncpg": "postgresql+psycopg2", "sqlite+aiosqlite": "sqlite"}


def open_catalog(properties: dict[str, str]) -> SqlCatalog:
    """The SQL catalog of `properties` (see `LakeSettings.iceberg_properties`), its SQLite file's
    directory and local warehouse directory made first: neither SQLite nor pyiceberg makes them.
    Blocks (it connects and may create the catalog's tables)."""
    props = dict(properties)
    if "uri" in props:
        props["uri"] = _sync_url(props["uri"])
        _make_sqlite_dir(props["uri"])
    if "warehouse" in props:
        _make_local_dir(props["warehouse"])
    return SqlCatalog(CATALOG_NAME, **props)


def table_identifier(dataset_id: str) -> tuple[str, str]:
    """(publisher namespace, table name); the id is checked first since it names a path."""
    return parse_dataset_id(dataset_id, "dataset_id")


def _sync_url(uri: str) -> str:
    url = make_url(uri)
    driver = _SYNC_DRIVERS.get(url.drivername)
    return url.set(drivername=driver).render_as_string(hide_password=False) if driver else uri


def _make_sqlite_dir(uri: str) -> None:
    url = make_url(uri)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _make_local_dir(warehouse: str) -> None:
    parsed = urlparse(warehouse)
    if parsed.scheme == "file":
        Path(unquote(parsed.path)).mkdir(parents=True, exist_ok=True)
    elif not parsed.scheme:
        Path(warehouse).mkdir(parents=True, exist_ok=True)
