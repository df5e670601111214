"""One write transaction of the consent service: the change, its events (outbox) and, for the
parties and agreements OPA decides on, the registry revision, all committed together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tdg_core import topics
from tdg_core.db import transaction
from tdg_core.outbox import Outbox

from tdg_consent import store
from tdg_consent.events import Keyed


@dataclass
class Change:
    conn: AsyncConnection
    _outbox: Outbox
    emitted: int = 0
    registry_changed: bool = field(default=False)

    async def emit(self, keyed: Keyed) -> None:
        key, event = keyed
        await self._outbox.add(self.conn, topics.CONSENT_EVENTS, key, event)
        self.emitted += 1

    async def registry(self, party: str = "", agreement: str = "") -> int:
        """A change OPA decides on: the next registry revision, stamped on the party or agreement
        changed, in this transaction (the bundle reloads what carries a newer stamp)."""
        self.registry_changed = True
        revision = await store.bump(self.conn, store.REGISTRY)
        if party:
            await store.stamp_party(self.conn, party, revision)
        if agreement:
            await store.stamp_agreement(self.conn, agreement, revision)
        return revision


class Changes:
    """Opens write transactions; after each commit, wakes the outbox relay and the bundle."""

    def __init__(
        self, engine: AsyncEngine, outbox: Outbox, on_registry_change: Callable[[], None]
    ) -> None:
        self.engine = engine
        self._outbox = outbox
        self._on_registry_change = on_registry_change

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Change]:
        async with transaction(self.engine, write=True, name="consent") as conn:
            change = Change(conn, self._outbox)
            yield change
        if change.emitted:
            self._outbox.notify()
        if change.registry_changed:
            self._on_registry_change()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with transaction(self.engine, write=False, name="consent") as conn:
            yield conn
