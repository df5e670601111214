"""Base settings shared by every service: environment variables with the TDG_ prefix.

Each service subclasses `ServiceSettings`; values are read once at start-up and passed down.
`var/dev/dev.env` (written by `tdg dev up`) is read when present, so the CLI and the services
started by hand see the same development secret as the local stack.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_ENV_FILE = "var/dev/dev.env"


class TdgSettings(BaseSettings):
    """Connection settings every tdg process may need."""

    model_config = SettingsConfigDict(
        env_prefix="TDG_", env_file=DEV_ENV_FILE, extra="ignore", frozen=True
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    opa_url: str = "http://127.0.0.1:8181"
    # Each OPA decision must answer within this deadline, or the call is denied (fail closed).
    # A decision takes milliseconds; the margin covers OPA activating a new registry bundle.
    opa_timeout_s: float = Field(default=1.0, gt=0)

    # Development: an HS256 shared secret. Production: an RS256 public key (PEM) or a JWKS URL.
    auth_hs256_secret: SecretStr | None = None
    auth_rs256_public_key: SecretStr | None = None
    auth_jwks_url: str | None = None
    auth_issuer: str = "tdg"
    auth_audience: str = "tdg"

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"


class ServiceSettings(TdgSettings):
    """Settings of a gRPC service; subclasses add their own fields (with their own prefix)."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # Requests larger than this are refused by gRPC with RESOURCE_EXHAUSTED.
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0)
