"""Start a service's components in order; stop them in reverse.

    start:  c1 → c2 → … → cn        (the gRPC server is cn: calls arrive once all else runs)
    stop:   cn → … → c2 → c1        (the gRPC server first: no call meets a stopped part)

A component whose start fails has started nothing (it cleans up after itself): the ones started
before it are stopped, in reverse, and the start's error is raised. Stopping goes on past a
component whose stop fails: that failure is logged with its traceback, and the first one is
raised once every component has been stopped.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog

log = structlog.get_logger("tdg.core.service")

# A start or a stop: plain or async.
Action = Callable[[], Awaitable[None] | None]
T = TypeVar("T")


class Startable(Protocol):
    """A part that runs by itself once started (a relay, a follower, a sweep, a bundle server)."""

    def start(self) -> Awaitable[None] | None: ...

    def stop(self) -> Awaitable[None] | None: ...


@dataclass(frozen=True)
class Component:
    """One part of a service: how to start it, how to stop it, and the part itself (see
    `Lifecycle.part`). A part with nothing to start is only released on stop."""

    name: str
    start: Action | None = None
    stop: Action | None = None
    part: object = None

    @classmethod
    def running(cls, name: str, part: Startable) -> Component:
        return cls(name, part.start, part.stop, part)

    @classmethod
    def resource(cls, name: str, part: object, release: Action | None = None) -> Component:
        """A client, an engine, a catalog: built before start, `release`d on stop."""
        return cls(name, None, release, part)


async def _do(action: Action | None) -> None:
    if action is not None:
        result = action()
        if inspect.isawaitable(result):
            await result


class Lifecycle:
    def __init__(self, components: Sequence[Component]) -> None:
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names repeat: {names}")
        self.components = tuple(components)
        self._started: list[Component] = []

    @property
    def started(self) -> list[str]:
        """The names of the components started, in order."""
        return [c.name for c in self._started]

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("already started")
        for component in self.components:
            try:
                await _do(component.start)
            except BaseException:
                log.error(
                    "start failed, stopping what started",
                    component=component.name,
                    started=self.started,
                )
                # Each stop failure is logged by `stop`; the start's error is the one to raise.
                with contextlib.suppress(Exception):
                    await self.stop()
                raise
            self._started.append(component)

    async def stop(self) -> None:
        first: Exception | None = None
        while self._started:
            component = self._started.pop()
            try:
                await _do(component.stop)
            except Exception as exc:
                log.error("stop failed", component=component.name, exc_info=exc)
                first = first or exc
        if first is not None:
            raise first

    def part(self, kind: type[T]) -> T:
        """The one part of type `kind` (for tests and tools that look inside a service)."""
        found = [c.part for c in self.components if isinstance(c.part, kind)]
        if len(found) != 1:
            raise LookupError(f"{len(found)} parts of type {kind.__name__}, not one")
        return found[0]
