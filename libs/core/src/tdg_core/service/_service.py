"""A service in one process: its settings, its components and its gRPC server, which starts last
and stops first (health goes NOT_SERVING, then calls in flight drain for the grace period).

The same object runs a service under `python -m tdg_<name>` (`run`: until SIGTERM or SIGINT)
and in a test's event loop (`start`, then `stop`), so tests start services the way production
does.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from tdg_core.grpc.server import GrpcEndpoint
from tdg_core.logging import configure_logging
from tdg_core.service._lifecycle import Component, Lifecycle
from tdg_core.settings import ServiceSettings

log = structlog.get_logger("tdg.core.service")

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")


class Service(Generic[S]):
    def __init__(self, settings: S, grpc: GrpcEndpoint, components: Sequence[Component]) -> None:
        self.settings = settings
        self.server = grpc.server
        self.monitor = grpc.monitor
        self.port = grpc.port  # the bound gRPC port (the settings may ask for 0: any free one)
        self._grace_s = settings.shutdown_grace_s
        self._lifecycle = Lifecycle(
            [*components, Component("grpc-server", self._open, self._close, grpc.server)]
        )

    @property
    def components(self) -> tuple[Component, ...]:
        return self._lifecycle.components

    def part(self, kind: type[T]) -> T:
        """The one component part of type `kind` (e.g. the outbox, in a test of an outage)."""
        return self._lifecycle.part(kind)

    async def start(self) -> None:
        await self._lifecycle.start()
        log.info("serving", port=self.port)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop every component in reverse; `grace_s` overrides the settings' drain period."""
        if grace_s is not None:
            self._grace_s = grace_s
        log.info("stopping", grace_s=self._grace_s)
        await self._lifecycle.stop()
        log.info("stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop."""
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await self.start()
        try:
            await signalled.wait()
        finally:
            await self.stop()

    async def _open(self) -> None:
        await self.server.start()
        self.monitor.start()

    async def _close(self) -> None:
        await self.monitor.stop()
        await self.server.stop(self._grace_s)


Build = Callable[[S], Awaitable[Service[S]]]


def run(build: Build[S], settings: S) -> None:
    """`python -m tdg_<name>`: logging as the settings say, then the service until a signal."""
    configure_logging(settings.log_format, settings.log_level)

    async def serve() -> None:
        service = await build(settings)
        await service.run()

    asyncio.run(serve())
