"""The datasets ingestion knows: followed in memory from tdg.catalog.events.

The view itself is `tdg_core.catalog_view.CatalogView`; this module adds what ingestion needs of
an entry (its table schema, its topic). An entry keeps the catalog's `Dataset` message as the
catalog's events carried it (the view is shared with the other services in that form); its
properties are what the rest of ingestion reads. What the events imply outside this
process (the dataset's Kafka topic and Iceberg table) is reconciled separately and idempotently
(`Provisioner`), so replaying the history is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg_core import topics
from tdg_core.catalog_view import CatalogView
from tdg_core.errors import NotFound
from tdg_core.identifiers import parse_dataset_id
from tdg_core.read_policy import dataset_input

from tdg_ingest.schema import TableSchema


@dataclass(frozen=True)
class DatasetEntry:
    dataset: cpb.Dataset
    schema: TableSchema

    @property
    def id(self) -> str:
        return self.dataset.id

    @property
    def publisher(self) -> str:
        return self.dataset.publisher

    @property
    def status(self) -> str:
        return str(dataset_input(self.dataset)["status"])

    @property
    def topic(self) -> str:
        return topics.dataset_topic(self.dataset.id)

    @property
    def deprecation_reason(self) -> str:
        return self.dataset.deprecation_reason

    @property
    def accepting(self) -> bool:
        return self.dataset.status == cpb.DATASET_STATUS_PUBLISHED

    @property
    def has_table(self) -> bool:
        """Published once: deprecated datasets keep their topic and table (records to them are
        dead-lettered, the data stays readable)."""
        return self.dataset.status in (
            cpb.DATASET_STATUS_PUBLISHED,
            cpb.DATASET_STATUS_DEPRECATED,
        )

    def policy_input(self) -> dict[str, str]:
        return {"id": self.id, "publisher": self.publisher, "status": self.status}


def _entry(dataset: cpb.Dataset) -> DatasetEntry:
    return DatasetEntry(dataset, TableSchema.from_proto(dataset.id, dataset.schema))


class DatasetDirectory(CatalogView[DatasetEntry]):
    def __init__(self, bootstrap: str, topic: str, catch_up_s: float = 3.0) -> None:
        super().__init__(bootstrap, topic, "tdg-ingest-catalog", _entry, catch_up_s)

    def by_topic(self, topic: str) -> DatasetEntry | None:
        dataset_id = topics.dataset_of_topic(topic)
        if dataset_id is None:
            return None
        return self._entries.get(dataset_id)

    def with_tables(self) -> list[DatasetEntry]:
        """The datasets published once, whose topic and table exist (or are being made)."""
        return [e for e in self.entries() if e.has_table]

    async def published(self, dataset_id: str, field: str = "dataset_id") -> DatasetEntry:
        """The dataset, read up to date, if it was published once; NotFound otherwise."""
        parse_dataset_id(dataset_id, field)
        entry = await self.fresh(dataset_id)
        if entry is None or not entry.has_table:
            raise NotFound(f"dataset '{dataset_id}' is not a published dataset")
        return entry
