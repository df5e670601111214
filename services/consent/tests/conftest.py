"""Fixtures of the consent service's own tests: its use cases on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg_consent.access import Access
from tdg_consent.bundle import PolicySettings
from tdg_consent.bundle_server import BundleSource
from tdg_consent.changes import Changes
from tdg_consent.consents import Consents
from tdg_consent.datasets import DatasetDirectory
from tdg_consent.erasures import Erasures
from tdg_consent.parties import Parties
from tdg_consent.server import MIGRATIONS
from tdg_consent.settings import DEFAULT_PURPOSES
from tdg_consent.store import outbox
from tdg_core import topics
from tdg_core.db import create_engine, upgrade_to_head
from tdg_core.events import CloudEvent, EventProducer
from tdg_core.outbox import Outbox

SETTINGS = PolicySettings(
    purposes=tuple(DEFAULT_PURPOSES),
    default_min_group_size=10,
    default_personal_mask="hash",
    default_sensitive_mask="null",
)


@dataclass
class Service:
    engine: AsyncEngine
    relay: Outbox
    parties: Parties
    access: Access
    consents: Consents
    erasures: Erasures
    datasets: DatasetDirectory
    bundle: BundleSource

    async def add_dataset(
        self,
        dataset_id: str,
        access_level: cpb.AccessLevel.ValueType = cpb.ACCESS_LEVEL_RESTRICTED,
        status: cpb.DatasetStatus.ValueType = cpb.DATASET_STATUS_PUBLISHED,
    ) -> None:
        """As if the catalog had published it (the event the directory follows)."""
        dataset = cpb.Dataset(
            id=dataset_id,
            publisher=dataset_id.partition(".")[0],
            status=status,
            metadata=cpb.DatasetMetadata(title="t", access_level=access_level),
            schema=cpb.Schema(
                columns=[
                    cpb.Column(name="ts", type="timestamp", sensitivity=cpb.SENSITIVITY_PUBLIC),
                    cpb.Column(name="commune", type="string", sensitivity=cpb.SENSITIVITY_PUBLIC),
                    cpb.Column(name="kwh", type="float64", sensitivity=cpb.SENSITIVITY_PUBLIC),
                    cpb.Column(name="user_id", type="string", sensitivity=cpb.SENSITIVITY_PERSONAL),
                ],
                event_time_column="ts",
                subject_column="user_id",
            ),
        )
        await self.datasets.apply(CloudEvent.of(cev.DatasetPublished(dataset=dataset), "test"))


async def _fresh_postgres(url: str) -> str:
    """A new empty database on the session's server, so tests never see each other's tables."""
    base = make_url(url)
    name = f"consent_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(
        user=base.username,
        password=base.password,
        host=base.host,
        port=base.port,
        database=base.database,
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.set(database=name).render_as_string(hide_password=False)


# PostgreSQL is part of the real stack: that half runs only with the integration tests.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Service]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'consent.db'}"
    else:
        url = await _fresh_postgres(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    await upgrade_to_head(engine, MIGRATIONS)
    # The relay is not started: these tests read the outbox table itself.
    relay = Outbox(outbox, engine, EventProducer("127.0.0.1:1", "unused"))
    bundle = BundleSource(engine, SETTINGS, poll_s=0.05)
    changes = Changes(engine, relay, bundle.mark_dirty)
    datasets = DatasetDirectory(engine, "127.0.0.1:1", topics.CATALOG_EVENTS, catch_up_s=0)
    bundle.start()
    yield Service(
        engine=engine,
        relay=relay,
        parties=Parties(changes),
        access=Access(changes, datasets, DEFAULT_PURPOSES),
        consents=Consents(changes, datasets, list(DEFAULT_PURPOSES), batch_rows=2),
        erasures=Erasures(changes, datasets),
        datasets=datasets,
        bundle=bundle,
    )
    await bundle.stop()
    await engine.dispose()
