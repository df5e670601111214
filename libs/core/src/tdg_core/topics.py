"""Every Kafka topic tdg uses, named once (DESIGN.md, "Events").

Services, the CLI, the benches and the tests import these names; none spells a topic itself.
"""

from __future__ import annotations

CATALOG_EVENTS = "tdg.catalog.events"
CONSENT_EVENTS = "tdg.consent.events"
# Ingestion's own events (erasure progress) for the consent service.
INGEST_EVENTS = "tdg.ingest.events"
INGEST_DLQ = "tdg.ingest.dlq"
AUDIT = "tdg.audit"
# A dataset's records arrive on `tdg.ingest.<dataset id>`.
DATASET_PREFIX = "tdg.ingest."


def dataset_topic(dataset_id: str) -> str:
    """The Kafka topic of a dataset (its id is already validated: `<publisher>.<name>`, so it
    cannot collide with `tdg.ingest.dlq` or `tdg.ingest.events`, which have no second dot)."""
    return DATASET_PREFIX + dataset_id


def dataset_of_topic(topic: str) -> str | None:
    """The dataset id a dataset topic carries, None for any other topic."""
    if not topic.startswith(DATASET_PREFIX):
        return None
    return topic.removeprefix(DATASET_PREFIX)
