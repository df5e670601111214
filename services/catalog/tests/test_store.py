"""The catalog's use cases on both databases it supports: SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from tdg_catalog.catalog import Catalog
from tdg_catalog.model import AccessLevel, Column, DraftScope, Metadata, Schema, Sensitivity, Status
from tdg_catalog.server import MIGRATIONS
from tdg_catalog.store import ListFilter, outbox
from tdg_core.db import create_engine, upgrade_to_head
from tdg_core.errors import AlreadyExists, FailedPrecondition, NotFound
from tdg_core.events import EventProducer
from tdg_core.outbox import Outbox

pytestmark = pytest.mark.integration

EVERYONE = DraftScope(all=True)


@pytest.fixture(params=["sqlite", "postgresql"])
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    async with engine.begin() as conn:
        # Each test starts from an empty database.
        for table in ("outbox", "schema_versions", "dataset_themes", "datasets", "alembic_version"):
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    await upgrade_to_head(engine, MIGRATIONS)
    # The relay is not started: these tests read the outbox table itself.
    relay = Outbox(outbox, engine, EventProducer("127.0.0.1:1", "unused"))
    yield Catalog(engine, relay, search_candidates=2000)
    await engine.dispose()


def _metadata(
    title: str, themes: tuple[str, ...] = ("TRAN",), access: AccessLevel = AccessLevel.OPEN
) -> Metadata:
    return Metadata(
        title=title,
        description="Comptages de vélos par capteur et par heure",
        themes=themes,
        keywords=("vélo", "mobilité"),
        licence="etalab-2.0",
        access_level=access,
        territory=("69123",),
        update_frequency="hourly",
    )


SCHEMA = Schema(
    columns=(
        Column("counter_id", "string", nullable=False),
        Column("date_observed", "timestamp", nullable=False),
        Column("intensity", "int32", nullable=False, unit="vehicles/h"),
    ),
    event_time_column="date_observed",
    key_columns=("counter_id", "date_observed"),
)


def _id(name: str = "bike") -> str:
    return f"metropole-lyon.{name}-{uuid.uuid4().hex[:6]}"


async def test_register_then_get_each_version(catalog: Catalog) -> None:
    dataset_id = _id()
    await catalog.register(dataset_id, _metadata("Compteurs vélo"), SCHEMA)
    wider = Schema(
        columns=(
            *SCHEMA.columns[:2],
            Column("intensity", "int64", nullable=False, unit="vehicles/h"),
            Column("lane", "string", nullable=True),
        ),
        event_time_column="date_observed",
        key_columns=("counter_id", "date_observed"),
    )
    evolved = await catalog.evolve_schema(dataset_id, wider, expected_version=1)
    assert evolved.latest_schema_version == 2
    v1 = await catalog.get(dataset_id, 1, EVERYONE)
    v2 = await catalog.get(dataset_id, 0, EVERYONE)
    assert [c.type for c in v1.schema.columns] == ["string", "timestamp", "int32"]
    assert v2.schema.column("lane") is not None
    with pytest.raises(NotFound):
        await catalog.get(dataset_id, 3, EVERYONE)


async def test_value_ranges_are_kept_per_version(catalog: Catalog) -> None:
    dataset_id = _id()
    ranged = Schema(
        columns=(
            *SCHEMA.columns[:2],
            Column("intensity", "int32", nullable=False, minimum=0.0, maximum=10_000.0),
        ),
        event_time_column="date_observed",
    )
    await catalog.register(dataset_id, _metadata("Compteurs vélo"), ranged)
    # Changing a range is a compatible evolution; each version keeps its own.
    no_maximum = Schema(
        columns=(*SCHEMA.columns[:2], Column("intensity", "int32", nullable=False, minimum=0.0)),
        event_time_column="date_observed",
    )
    await catalog.evolve_schema(dataset_id, no_maximum, expected_version=1)
    v1 = (await catalog.get(dataset_id, 1, EVERYONE)).schema.column("intensity")
    v2 = (await catalog.get(dataset_id, 0, EVERYONE)).schema.column("intensity")
    assert v1 is not None and (v1.minimum, v1.maximum) == (0.0, 10_000.0)
    assert v2 is not None and (v2.minimum, v2.maximum) == (0.0, None)


async def test_duplicate_registration_is_refused(catalog: Catalog) -> None:
    dataset_id = _id()
    await catalog.register(dataset_id, _metadata("Compteurs vélo"), SCHEMA)
    with pytest.raises(AlreadyExists):
        await catalog.register(dataset_id, _metadata("Compteurs vélo"), SCHEMA)


async def test_concurrent_evolutions_do_not_both_win(catalog: Catalog) -> None:
    dataset_id = _id()
    await catalog.register(dataset_id, _metadata("Compteurs vélo"), SCHEMA)
    extra = Schema(
        columns=(*SCHEMA.columns, Column("lane", "string")),
        event_time_column="date_observed",
        key_columns=("counter_id", "date_observed"),
    )
    results = await asyncio.gather(
        catalog.evolve_schema(dataset_id, extra, expected_version=1),
        catalog.evolve_schema(dataset_id, extra, expected_version=1),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, FailedPrecondition | AlreadyExists) for r in results if r not in wins)
    assert (await catalog.get(dataset_id, 0, EVERYONE)).latest_schema_version == 2


async def test_every_change_leaves_one_outbox_event_in_order(catalog: Catalog) -> None:
    dataset_id = _id()
    await catalog.register(dataset_id, _metadata("Compteurs vélo"), SCHEMA)
    await catalog.publish(dataset_id)
    await catalog.deprecate(dataset_id, "replaced")
    engine = catalog._engine
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT ce_type FROM outbox WHERE key = :k ORDER BY seq"), {"k": dataset_id}
            )
        ).all()
    assert [r[0] for r in rows] == [
        "tdg.events.v1.DatasetRegistered",
        "tdg.events.v1.DatasetPublished",
        "tdg.events.v1.DatasetDeprecated",
    ]


async def test_filters_pages_and_draft_scope(catalog: Catalog) -> None:
    energy = _id("energy")
    await catalog.register(energy, _metadata("Consommation électrique", ("ENER",)), SCHEMA)
    for _ in range(4):
        await catalog.publish(
            (await catalog.register(_id(), _metadata("Compteurs vélo"), SCHEMA)).id
        )
    page, token = await catalog.list_datasets(ListFilter(theme="TRAN"), EVERYONE, 3, "")
    assert len(page) == 3 and token
    rest, token2 = await catalog.list_datasets(ListFilter(theme="TRAN"), EVERYONE, 3, token)
    assert len(rest) == 1 and not token2
    outsider = DraftScope(publishers=frozenset({"grenoble-alpes"}))
    drafts, _ = await catalog.list_datasets(ListFilter(status=Status.DRAFT), outsider, 100, "")
    assert drafts == []
    own, _ = await catalog.list_datasets(
        ListFilter(theme="ENER"), DraftScope(publishers=frozenset({"metropole-lyon"})), 100, ""
    )
    assert [d.id for d in own] == [energy]


async def test_search_ignores_accents_and_case_and_ranks_title_first(catalog: Catalog) -> None:
    in_title = _id("energy")
    in_description = _id("meters")
    await catalog.register(in_title, _metadata("Énergie des bâtiments publics", ("ENER",)), SCHEMA)
    described = Metadata(
        title="Compteurs communaux",
        description="Relevés d'énergie des compteurs",
        themes=("ENER",),
        licence="etalab-2.0",
        access_level=AccessLevel.OPEN,
    )
    await catalog.register(in_description, described, SCHEMA)
    hits = await catalog.search("ENERGIE", 10, EVERYONE)
    ids = [d.id for d, _ in hits]
    assert ids.index(in_title) < ids.index(in_description)


async def test_personal_access_needs_a_subject_column(catalog: Catalog) -> None:
    from tdg_core.errors import InvalidArgument

    personal = Schema(
        columns=(
            Column("meter_id", "string", nullable=False, sensitivity=Sensitivity.PERSONAL),
            Column("date_observed", "timestamp", nullable=False),
        ),
        event_time_column="date_observed",
    )
    with pytest.raises(InvalidArgument) as info:
        await catalog.register(_id(), _metadata("Compteurs", access=AccessLevel.PERSONAL), personal)
    assert info.value.field == "schema.subject_column"
