"""The ingest service's settings (TDG_ prefix; TDG_INGEST_* for its own, TDG_LAKE_* for the
Iceberg catalog and warehouse it shares with the query service)."""

from __future__ import annotations

from pydantic import Field
from tdg_core.settings import ServiceSettings
from tdg_lake.settings import LakeSettings

CONSUMER_GROUP = "tdg-ingest"
ERASURE_GROUP = "tdg-ingest-erasure"


class IngestSettings(ServiceSettings, LakeSettings):
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    # The worker's consumer group: replicas of one deployment share it.
    ingest_consumer_group: str = CONSUMER_GROUP
    # Partitions of each dataset topic created on DatasetPublished.
    ingest_topic_partitions: int = Field(default=3, ge=1)
    ingest_topic_replication: int = Field(default=1, ge=1)
    # Micro-batches: a snapshot is committed when either bound is reached.
    ingest_batch_max_records: int = Field(default=100_000, ge=1)
    ingest_batch_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    ingest_batch_max_wait_s: float = Field(default=1.0, gt=0)
    # Records larger than this are rejected unread (category format, code too_large).
    ingest_max_record_bytes: int = Field(default=1024 * 1024, ge=256)
    # How long a tdg.write decision is reused (consent events invalidate it sooner).
    ingest_write_cache_s: float = Field(default=10.0, ge=0)
    # Table maintenance of every dataset (small files rewritten, snapshots older than the
    # retention expired); each commit adds a snapshot, so the tables' metadata must be trimmed.
    ingest_maintenance_every_s: float = Field(default=900.0, gt=0)
    ingest_snapshot_retention_h: float = Field(default=6.0, gt=0)
    # How often delivery indicators are rolled up into their table.
    ingest_indicators_every_s: float = Field(default=60.0, gt=0)
    # Run the worker (the consumer of the dataset topics) in this process; off for replicas that
    # only serve the gRPC front door.
    ingest_run_worker: bool = True
