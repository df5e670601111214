"""The consent service's settings (TDG_ prefix; TDG_CONSENT_* for its own)."""

from __future__ import annotations

from pydantic import Field
from tdg_core.settings import ServiceSettings

# The territory's controlled vocabulary of purposes (configurable: TDG_CONSENT_PURPOSES as JSON).
DEFAULT_PURPOSES = {
    "public-statistics": "Official and public statistics about the territory",
    "mobility-planning": "Planning of transport networks and mobility services",
    "energy-planning": "Energy transition and renovation planning",
    "service-operation": "Operating a public service (delivery, maintenance, supervision)",
    "research": "Scientific research under a research agreement",
    "urban-planning": "Urban planning and land use",
    "environment-monitoring": "Monitoring of air, water, noise and biodiversity",
    "public-health": "Public health surveillance and prevention",
    "citizen-information": "Information published to citizens",
}


class ConsentSettings(ServiceSettings):
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    consent_database_url: str = "sqlite+aiosqlite:///var/consent.db"
    consent_events_partitions: int = Field(default=3, ge=1)
    # The OPA bundle server (bundle service API with long polling).
    consent_bundle_host: str = "127.0.0.1"
    consent_bundle_port: int = Field(default=8282, ge=0, le=65535)
    # Longest a bundle request is held when OPA asks for long polling.
    consent_bundle_max_wait_s: float = Field(default=30.0, gt=0)
    # How often a replica looks for changes made by the others (its own are seen at once).
    consent_bundle_poll_s: float = Field(default=0.25, gt=0)
    consent_purposes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PURPOSES))
    consent_default_min_group_size: int = Field(default=10, ge=2)
    # Default treatment of personal and sensitive columns that an agreement does not mention.
    consent_default_personal_mask: str = Field(default="hash", pattern="^(null|hash)$")
    consent_default_sensitive_mask: str = Field(default="null", pattern="^(null|hash)$")
    # How long a request for an unknown dataset waits for the catalog's events to catch up.
    consent_catalog_catch_up_s: float = Field(default=3.0, ge=0)
    # How often agreements past their end are marked expired (OPA denies them at once anyway).
    consent_expiry_sweep_s: float = Field(default=30.0, gt=0)
    # Rows per Arrow record batch of a subject-set stream.
    consent_subject_batch_rows: int = Field(default=65_536, ge=1)
