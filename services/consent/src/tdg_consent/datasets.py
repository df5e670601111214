"""The datasets the consent service knows: followed from tdg.catalog.events into its own table
(by a `TopicFollower`: the table and its position in the topic are written together).

Access requests and conditions are checked against a dataset's publisher, status and columns
without a call to the catalog. A request naming a dataset not seen yet waits until this replica's
follower has read the topic up to its end (the dataset may have been registered a moment
ago), and only then answers NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg_core.db import transaction
from tdg_core.errors import NotFound, Unavailable
from tdg_core.events import CloudEvent

from tdg_consent import store
from tdg_consent.follower import TopicFollower
from tdg_consent.model import DatasetColumn, DatasetRef

# The events that carry the whole dataset.
_WHOLE_DATASET: dict[
    str, type[cev.DatasetRegistered | cev.MetadataUpdated | cev.DatasetPublished]
] = {
    m.DESCRIPTOR.full_name: m
    for m in (cev.DatasetRegistered, cev.MetadataUpdated, cev.DatasetPublished)
}


def _short(enum_type: object, number: int, prefix: str) -> str:
    name: str = enum_type.Name(number)  # type: ignore[attr-defined]
    return name.removeprefix(prefix).lower()


def _columns(schema: cpb.Schema) -> tuple[DatasetColumn, ...]:
    return tuple(
        DatasetColumn(c.name, c.type, _short(cpb.Sensitivity, c.sensitivity, "SENSITIVITY_"))
        for c in schema.columns
    )


def dataset_ref(d: cpb.Dataset) -> DatasetRef:
    return DatasetRef(
        id=d.id,
        publisher=d.publisher,
        status=_short(cpb.DatasetStatus, d.status, "DATASET_STATUS_"),
        access_level=_short(cpb.AccessLevel, d.metadata.access_level, "ACCESS_LEVEL_"),
        columns=_columns(d.schema),
        subject_column=d.schema.subject_column,
    )


class DatasetDirectory:
    def __init__(self, engine: AsyncEngine, bootstrap: str, topic: str, catch_up_s: float) -> None:
        self._engine = engine
        self._catch_up_s = catch_up_s
        self.follower = TopicFollower(engine, bootstrap, topic, _apply_catalog_event)

    async def get(self, dataset_id: str, published: bool = False) -> DatasetRef:
        """The dataset; with `published`, a dataset seen as a draft is looked up again after
        catching up (it may have been published a moment ago)."""
        found = await self._find(dataset_id)
        stale = found is None or (published and found.status == "draft")
        if stale and self._catch_up_s > 0:
            deadline = time.monotonic() + self._catch_up_s
            try:
                await self.follower.catch_up(self._catch_up_s)
                found = await self._find(dataset_id)
                # A draft just published: its event leaves the catalog's outbox a moment after
                # the call that published it returns, so the topic's end may not hold it yet.
                while published and found is not None and found.status == "draft":
                    if time.monotonic() >= deadline:
                        break
                    await asyncio.sleep(0.1)
                    await self.follower.catch_up(max(deadline - time.monotonic(), 0.1))
                    found = await self._find(dataset_id)
            except Unavailable as exc:
                raise Unavailable(f"{exc}: cannot tell whether the dataset exists") from exc
        if found is None:
            raise NotFound(f"dataset '{dataset_id}' not found in the catalog")
        return found

    async def _find(self, dataset_id: str) -> DatasetRef | None:
        async with transaction(self._engine, write=False, name="consent") as conn:
            return await store.find_dataset(conn, dataset_id)

    async def apply(self, event: CloudEvent) -> None:
        """Apply one catalog event that does not come from the topic (tests, tools)."""
        await self.follower.apply(event)

    def start(self) -> None:
        self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()


async def _apply_catalog_event(conn: AsyncConnection, event: CloudEvent) -> None:
    whole = _WHOLE_DATASET.get(event.type)
    if whole is not None:
        await store.upsert_dataset(conn, dataset_ref(event.parse(whole).dataset))
    elif event.type == cev.SchemaEvolved.DESCRIPTOR.full_name:
        evolved = event.parse(cev.SchemaEvolved)
        await store.update_dataset_fields(
            conn,
            evolved.dataset_id,
            columns=[
                {"name": c.name, "type": c.type, "sensitivity": c.sensitivity}
                for c in _columns(evolved.schema)
            ],
            subject_column=evolved.schema.subject_column,
        )
    elif event.type == cev.DatasetDeprecated.DESCRIPTOR.full_name:
        deprecated = event.parse(cev.DatasetDeprecated)
        await store.update_dataset_fields(conn, deprecated.dataset_id, status="deprecated")
