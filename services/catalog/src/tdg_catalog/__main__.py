"""`python -m tdg_catalog` / `tdg-catalog`: settings → logging → serve."""

from __future__ import annotations

import asyncio

from tdg_core.grpc.server import serve
from tdg_core.logging import configure_logging

from tdg_catalog.server import build_app
from tdg_catalog.settings import CatalogSettings


async def _run(settings: CatalogSettings) -> None:
    app = await build_app(settings)
    app.outbox.start()
    await serve(app.server, app.monitor, settings.shutdown_grace_s, on_stop=[app.close])


def main() -> None:
    settings = CatalogSettings()
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
