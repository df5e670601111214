"""A service's own database and the outbox that publishes its changes: opened the same way by every
service that owns state (catalog, consent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from tdg_core.db import create_engine, upgrade_to_head
from tdg_core.events import EventProducer, TopicSpec
from tdg_core.outbox import Outbox
from tdg_core.service._lifecycle import Component


@dataclass(frozen=True)
class ServiceDatabase:
    engine: AsyncEngine
    producer: EventProducer
    outbox: Outbox

    @classmethod
    async def open(
        cls,
        url: str,
        migrations: Path,
        bootstrap: str,
        client_id: str,
        outbox_table: Table,
        topic: TopicSpec,
    ) -> ServiceDatabase:
        """The database migrated to head, and the relay of its outbox to `topic` (created when
        missing, with its settings)."""
        engine = create_engine(url)
        await upgrade_to_head(engine, migrations)
        producer = EventProducer(bootstrap, client_id=client_id)
        return cls(engine, producer, Outbox(outbox_table, engine, producer, topics=[topic]))

    def components(self) -> list[Component]:
        """Started in this order: the database, the producer, the outbox relay."""
        return [
            Component.resource("database", self.engine, self.engine.dispose),
            Component.resource("producer", self.producer, self.producer.stop),
            Component.running("outbox-relay", self.outbox),
        ]
