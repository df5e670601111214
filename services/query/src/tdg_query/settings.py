"""The query service's settings (TDG_QUERY_* for its own, TDG_LAKE_* for the tables)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from tdg_core.settings import ServiceSettings
from tdg_lake.settings import LakeSettings


class QuerySettings(ServiceSettings, LakeSettings):
    grpc_port: int = Field(default=50054, ge=0, le=65535)
    # Arrow Flight (GetFlightInfo / DoGet / ListFlights) on the same host.
    query_flight_port: int = Field(default=50055, ge=0, le=65535)
    # Caps per query: a result larger than this ends with RESOURCE_EXHAUSTED.
    query_max_rows: int = Field(default=50_000_000, ge=1)
    query_max_bytes: int = Field(default=4 * 1024**3, ge=1024)
    # Rows per Arrow record batch streamed back (each batch also stays under the gRPC message
    # limit: wider rows give smaller batches).
    query_batch_rows: int = Field(default=65_536, ge=1)
    # DuckDB: threads (0: one per core), memory before spilling to disk, and where it spills.
    query_duckdb_threads: int = Field(default=0, ge=0)
    query_duckdb_memory_limit: str = "2GB"
    query_spill_dir: str = "var/query/spill"
    # The consent service, for the subject sets of consent-based queries; its token (a JWT with
    # the platform-service role, from a Secret) or, in development, one signed with the HS256
    # secret.
    query_consent_address: str = "127.0.0.1:50052"
    query_service_token: SecretStr | None = None
    # A subject set is refreshed by consent events; without them (Kafka down) or after this long,
    # a query refreshes it itself first.
    query_consent_max_age_s: float = Field(default=30.0, gt=0)
    # How long a table's metadata is reused for reads of its current snapshot.
    query_table_ttl_s: float = Field(default=0.5, ge=0)
    # Arrow Flight tickets from GetFlightInfo are good for this long, once.
    query_ticket_ttl_s: float = Field(default=300.0, gt=0)
    # Audit records waiting for Kafka; when full, queries are refused (never unaudited).
    query_audit_queue: int = Field(default=10_000, ge=1)
    # The Iceberg audit table is appended from tdg.audit this often.
    query_audit_flush_s: float = Field(default=5.0, gt=0)
    # commune → EPCI reference (CSV with columns commune,epci) for `commune_to_epci` masks; the
    # built-in table covers the demonstration territory only.
    query_epci_file: str | None = None
    audit_topic_partitions: int = Field(default=3, ge=1)
    audit_topic_replication: int = Field(default=1, ge=1)
