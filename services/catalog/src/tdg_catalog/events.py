"""Domain changes → the protobuf events of tdg.catalog.events, keyed by dataset id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tdg.events.v1 import catalog_events_pb2 as ev
from tdg_core.events import CloudEvent

from tdg_catalog.convert import dataset_to_pb, schema_to_pb
from tdg_catalog.model import Dataset

SOURCE = "tdg/catalog"

Change = Literal["registered", "metadata", "schema", "published", "deprecated"]


def event_for(
    change: Change,
    d: Dataset,
    changed_fields: Sequence[str] = (),
    previous_version: int = 0,
) -> tuple[str, CloudEvent]:
    payload: (
        ev.DatasetRegistered
        | ev.MetadataUpdated
        | ev.SchemaEvolved
        | ev.DatasetPublished
        | ev.DatasetDeprecated
    )
    if change == "registered":
        payload = ev.DatasetRegistered(dataset=dataset_to_pb(d))
    elif change == "metadata":
        payload = ev.MetadataUpdated(dataset=dataset_to_pb(d), changed_fields=changed_fields)
    elif change == "schema":
        payload = ev.SchemaEvolved(
            dataset_id=d.id, schema=schema_to_pb(d.schema), previous_version=previous_version
        )
    elif change == "published":
        payload = ev.DatasetPublished(dataset=dataset_to_pb(d))
    else:
        payload = ev.DatasetDeprecated(dataset_id=d.id, reason=d.deprecation_reason)
    return d.id, CloudEvent.of(payload, SOURCE, subject=d.id)
