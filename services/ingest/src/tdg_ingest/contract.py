"""What ingestion writes beside the data, named once: the Kafka headers it reads and writes, and
the keys of the Iceberg snapshot properties it commits (readers such as `tdg ingest status`, the
query service's planner and maintenance rely on them, so they never change once released).
"""

from __future__ import annotations

# Headers on a dataset topic's record, set by the gRPC front door (a record produced straight to
# Kafka is attributed by the party it names, checked by the tdg.write decision).
PRODUCER_HEADER = "tdg-producer"
PRODUCER_ORG_HEADER = "tdg-producer-org"

# Headers of a dead letter on tdg.ingest.dlq: where the record came from and why it was refused.
H_DATASET = "tdg-dataset"
H_SOURCE_TOPIC = "tdg-source-topic"
H_SOURCE_PARTITION = "tdg-source-partition"
H_SOURCE_OFFSET = "tdg-source-offset"
H_SOURCE_KEY = "tdg-source-key"
H_PRODUCER = PRODUCER_HEADER
H_CATEGORY = "tdg-reason-category"
H_CODE = "tdg-reason-code"
H_MESSAGE = "tdg-reason-message"
H_SCHEMA_VERSION = "tdg-schema-version"
H_REJECTED_AT = "tdg-rejected-at"
# Added to a replayed record; not one of ours, so a replay rejected again keeps it.
H_REPLAY_OF = "tdg-replay-of"
DLQ_HEADERS = frozenset(
    {
        H_DATASET,
        H_SOURCE_TOPIC,
        H_SOURCE_PARTITION,
        H_SOURCE_OFFSET,
        H_SOURCE_KEY,
        H_PRODUCER,
        H_CATEGORY,
        H_CODE,
        H_MESSAGE,
        H_SCHEMA_VERSION,
        H_REJECTED_AT,
    }
)

# Snapshot properties of a dataset's table.
OFFSETS_PROPERTY = "tdg.ingest.offsets"  # the Kafka positions this snapshot stores through
SCHEMA_VERSION_PROPERTY = "tdg.ingest.schema-version"
MAX_EVENT_TIME_PROPERTY = "tdg.ingest.max-event-time"
DELIVERY_PROPERTY = "tdg.ingest.delivery"  # the batch's delivery tallies per producer
MAINTENANCE_PROPERTY = "tdg.ingest.maintenance"  # set on compaction snapshots
# Snapshot property of the delivery indicators table: the hour rolled up through.
THROUGH_PROPERTY = "tdg.indicators.through"
