"""The CLI's settings: where the services are, and the caller's token."""

from __future__ import annotations

from pydantic import Field, SecretStr
from tdg_core.settings import TdgSettings


class CliSettings(TdgSettings):
    catalog_addr: str = "127.0.0.1:50051"
    consent_addr: str = "127.0.0.1:50052"
    ingest_addr: str = "127.0.0.1:50053"
    query_addr: str = "127.0.0.1:50054"
    # The caller's bearer token (`tdg token issue …` prints one for development).
    token: SecretStr | None = None
    call_timeout_s: float = Field(default=10.0, gt=0)
    # The deadline of the calls that last as long as the data is big: `tdg ingest send` (the whole
    # upload) and `tdg ingest compact`.
    ingest_long_call_timeout_s: float = Field(default=3600.0, gt=0)
    # `tdg query`: the deadline of a whole query (its stream included) and the largest message
    # received (one Arrow batch; the service cuts them under 2 MiB).
    query_timeout_s: float = Field(default=3600.0, gt=0)
    query_max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
