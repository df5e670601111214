"""The ingest service's settings (TDG_ prefix; TDG_INGEST_* for its own)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from tdg_core.settings import ServiceSettings

CATALOG_EVENTS_TOPIC = "tdg.catalog.events"
CONSENT_EVENTS_TOPIC = "tdg.consent.events"
EVENTS_TOPIC = "tdg.ingest.events"
DLQ_TOPIC = "tdg.ingest.dlq"
TOPIC_PREFIX = "tdg.ingest."
CONSUMER_GROUP = "tdg-ingest"
ERASURE_GROUP = "tdg-ingest-erasure"


def topic_for(dataset_id: str) -> str:
    """The Kafka topic of a dataset (its id is already validated: `<publisher>.<name>`, so it
    cannot collide with `tdg.ingest.dlq` or `tdg.ingest.events`, which have no second dot)."""
    return TOPIC_PREFIX + dataset_id


class IngestSettings(ServiceSettings):
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    # The worker's consumer group: replicas of one deployment share it.
    ingest_consumer_group: str = CONSUMER_GROUP
    # Partitions of each dataset topic created on DatasetPublished.
    ingest_topic_partitions: int = Field(default=3, ge=1)
    ingest_topic_replication: int = Field(default=1, ge=1)
    # Iceberg SQL catalog (SQLite by default, PostgreSQL by URL) and its warehouse (a local
    # directory by default; s3://bucket/prefix with the S3 settings below).
    ingest_catalog_url: str = "sqlite:///var/ingest/iceberg-catalog.db"
    ingest_warehouse: str = "var/warehouse"
    ingest_s3_endpoint: str | None = None
    ingest_s3_region: str | None = None
    ingest_s3_access_key_id: SecretStr | None = None
    ingest_s3_secret_access_key: SecretStr | None = None
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

    def iceberg_properties(self) -> dict[str, str]:
        """pyiceberg catalog properties for `load_catalog(..., **props)`."""
        props = {"type": "sql", "uri": self.ingest_catalog_url, "warehouse": self.warehouse_uri()}
        if self.ingest_s3_endpoint:
            props["s3.endpoint"] = self.ingest_s3_endpoint
        if self.ingest_s3_region:
            props["s3.region"] = self.ingest_s3_region
        if self.ingest_s3_access_key_id:
            props["s3.access-key-id"] = self.ingest_s3_access_key_id.get_secret_value()
        if self.ingest_s3_secret_access_key:
            props["s3.secret-access-key"] = self.ingest_s3_secret_access_key.get_secret_value()
        return props

    def warehouse_uri(self) -> str:
        """file:// for a local directory (made absolute), the URI itself otherwise."""
        if "://" in self.ingest_warehouse:
            return self.ingest_warehouse
        from pathlib import Path

        return Path(self.ingest_warehouse).resolve().as_uri()
