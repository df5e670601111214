"""The integration tests' fixtures, gathered from `tests/integration/fixtures/` (by concern);
Kafka, OPA and PostgreSQL come from the `tdg` pytest plugin (`tdg_core.testing`)."""

from __future__ import annotations

import pytest

from tests.integration.fixtures.callers import (
    caller,
    consent_caller,
    ingest_caller,
    query_caller,
)
from tests.integration.fixtures.services import (
    catalog_app,
    channel,
    consent_app,
    consent_channel,
    ingest_app,
    ingest_channel,
    query_app,
    query_channel,
)
from tests.integration.fixtures.tokens import make_token, secret

pytestmark = pytest.mark.integration

__all__ = [
    "caller",
    "catalog_app",
    "channel",
    "consent_app",
    "consent_caller",
    "consent_channel",
    "ingest_app",
    "ingest_caller",
    "ingest_channel",
    "make_token",
    "query_app",
    "query_caller",
    "query_channel",
    "secret",
]
