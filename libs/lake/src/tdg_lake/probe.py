"""The health probe of the lake's Iceberg catalog, for the services that read or write tables."""

from __future__ import annotations

import asyncio

from pyiceberg.catalog import Catalog
from tdg_core.grpc.server import Probe


def iceberg_probe(catalog: Catalog, timeout_s: float = 2.0) -> Probe:
    """A health dependency: the catalog lists its namespaces within `timeout_s`."""

    async def reachable() -> bool:
        try:
            await asyncio.wait_for(asyncio.to_thread(catalog.list_namespaces), timeout_s)
        except Exception:
            return False
        return True

    return reachable
