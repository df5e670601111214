"""`python -m tdg_consent` / `tdg-consent`: settings → logging → serve."""

from __future__ import annotations

import asyncio

from tdg_core.grpc.server import serve
from tdg_core.logging import configure_logging

from tdg_consent.server import build_app
from tdg_consent.settings import ConsentSettings


async def _run(settings: ConsentSettings) -> None:
    app = await build_app(settings)
    await app.start_background()
    await serve(app.server, app.monitor, settings.shutdown_grace_s, on_stop=[app.close])


def main() -> None:
    settings = ConsentSettings()
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
