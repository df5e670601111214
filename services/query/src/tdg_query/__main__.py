"""`python -m tdg_query` / `tdg-query`: settings → logging → serve (gRPC and Arrow Flight)."""

from __future__ import annotations

import asyncio

from tdg_core.grpc.server import serve
from tdg_core.logging import configure_logging

from tdg_query.server import build_app
from tdg_query.settings import QuerySettings


async def _run(settings: QuerySettings) -> None:
    app = await build_app(settings)
    app.start_background()
    await serve(app.server, app.monitor, settings.shutdown_grace_s, on_stop=[app.close])


def main() -> None:
    settings = QuerySettings()
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
