"""The catalog's settings (TDG_ prefix; TDG_CATALOG_* for its own)."""

from __future__ import annotations

from pydantic import Field
from tdg_core.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    catalog_database_url: str = "sqlite+aiosqlite:///var/catalog.db"
    catalog_public_base_uri: str = "https://data.example.org/tdg"
    catalog_events_partitions: int = Field(default=3, ge=1)
    # Search ranks at most this many prefiltered candidates per query.
    catalog_search_candidates: int = Field(default=20_000, ge=10)
