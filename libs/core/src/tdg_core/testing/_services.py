"""Any tdg service in the test's own process, started as `python -m tdg_<name>` starts it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from tdg_core.service import Build, Service
from tdg_core.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


@asynccontextmanager
async def in_process(build: Build[S], settings: S) -> AsyncIterator[Service[S]]:
    """The service built from `settings` and started in this event loop; its health is checked
    once before it is handed over (so it answers SERVING, or NOT_SERVING with a dependency down,
    from the first call), and it is stopped without a grace period."""
    service = await build(settings)
    await service.start()
    try:
        await service.monitor.check_once()
        yield service
    finally:
        await service.stop(grace_s=0)
