"""A service's long-running task (relay, follower, sweep): started once, cancelled and awaited on
stop, so that nothing it holds (a connection, a consumer) leaks past the service.

Loops that retry say why they failed with `log_failure`: a dependency that is away (Kafka, the
database) is a one-line warning, anything else is a bug and is logged with its traceback; either
way the loop goes on. A task that ends with an exception is logged with its traceback at once,
not when the service stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from sqlalchemy.exc import InterfaceError, OperationalError

from tdg_core.errors import Unavailable

log = structlog.get_logger("tdg.core.background")

# What a dependency being away looks like (TimeoutError and ConnectionError are OSErrors).
DEPENDENCY_FAILURES: tuple[type[BaseException], ...] = (
    KafkaError,
    OSError,
    OperationalError,
    InterfaceError,
    Unavailable,
)


def log_failure(
    logger: Any,
    event: str,
    exc: BaseException,
    *,
    dependencies: tuple[type[BaseException], ...] = DEPENDENCY_FAILURES,
    **context: object,
) -> None:
    """Log a retried failure: a warning when a dependency is away (`dependencies`: what that looks
    like, these by default; a library adds its own, e.g. `tdg_lake.failures`), else with its
    traceback."""
    if isinstance(exc, dependencies):
        logger.warning(event, error=str(exc), **context)
    else:
        logger.error(event, exc_info=exc, **context)


class Background:
    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:

            async def run() -> None:
                await self._run()

            self._task = asyncio.create_task(run(), name=self._name)
            self._task.add_done_callback(self._report)

    def _report(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task ended by an error", task=self._name, exc_info=exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
