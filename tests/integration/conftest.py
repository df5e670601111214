"""The services in-process on the real stack: Kafka, OPA (loading policies/ and pulling the consent
service's bundle), SQLite."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from tdg.catalog.v1 import catalog_pb2_grpc
from tdg.consent.v1 import consent_pb2_grpc
from tdg.ingest.v1 import ingest_pb2_grpc
from tdg_catalog.server import CatalogApp, build_app
from tdg_catalog.settings import CatalogSettings
from tdg_consent.server import ConsentApp
from tdg_consent.server import build_app as build_consent_app
from tdg_consent.settings import ConsentSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.integration


@dataclass
class Caller:
    """A party with a token, calling the catalog."""

    stub: catalog_pb2_grpc.CatalogServiceStub
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@pytest.fixture(scope="session")
def secret() -> str:
    return secrets.token_urlsafe(32)


def catalog_settings(tmp: Path, kafka: str, opa: str, secret: str) -> CatalogSettings:
    return CatalogSettings(
        _env_file=None,
        grpc_port=0,
        kafka_bootstrap=kafka,
        opa_url=opa,
        auth_hs256_secret=secret,
        catalog_database_url=f"sqlite+aiosqlite:///{tmp / 'catalog.db'}",
    )


@pytest.fixture(scope="session")
async def catalog_app(
    tmp_path_factory: pytest.TempPathFactory, kafka, opa, secret: str
) -> AsyncIterator[CatalogApp]:
    settings = catalog_settings(
        tmp_path_factory.mktemp("catalog"), kafka.bootstrap, opa.url, secret
    )
    app = await build_app(settings)
    await app.start()
    await app.monitor.check_once()
    yield app
    await app.server.stop(0)
    await app.monitor.stop()
    await app.close()


@pytest.fixture(scope="session")
async def channel(catalog_app: CatalogApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{catalog_app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def make_token(secret: str) -> Callable[..., str]:
    def make(
        party: str, org: str = "", roles: tuple[str, ...] = (), key: str = "", ttl_s: int = 600
    ) -> str:
        now = int(time.time())
        claims = {
            "sub": party,
            "org": org,
            "roles": list(roles),
            "iss": "tdg",
            "aud": "tdg",
            "iat": now - 5,
            "exp": now + ttl_s,
        }
        return jwt.encode(claims, key or secret, "HS256")

    return make


@pytest.fixture(scope="session")
def caller(channel: grpc.aio.Channel, make_token: Callable[..., str]) -> Callable[..., Caller]:
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)

    def make(party: str, org: str = "", *roles: str) -> Caller:
        return Caller(stub, make_token(party, org, roles))

    return make


# --- the consent service --------------------------------------------------------------------


@dataclass
class ConsentCaller:
    """A party with a token, calling the consent service (and the catalog with the same token)."""

    stub: consent_pb2_grpc.ConsentServiceStub
    catalog: catalog_pb2_grpc.CatalogServiceStub
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@pytest.fixture(scope="session")
async def consent_app(
    tmp_path_factory: pytest.TempPathFactory, kafka, opa, secret: str, catalog_app: CatalogApp
) -> AsyncIterator[ConsentApp]:
    """The consent service, serving its bundle on the port the session's OPA pulls from."""
    if opa.bundle_port is None:
        pytest.fail("the session's OPA pulls no bundle: set TDG_TEST_OPA_BUNDLE_PORT with it")
    tmp = tmp_path_factory.mktemp("consent")
    settings = ConsentSettings(
        _env_file=None,
        grpc_port=0,
        kafka_bootstrap=kafka.bootstrap,
        opa_url=opa.url,
        auth_hs256_secret=secret,
        consent_database_url=f"sqlite+aiosqlite:///{tmp / 'consent.db'}",
        consent_bundle_port=opa.bundle_port,
        consent_catalog_catch_up_s=8.0,
    )
    app = await build_consent_app(settings)
    await app.start()
    await app.monitor.check_once()
    yield app
    await app.server.stop(0)
    await app.monitor.stop()
    await app.close()


@pytest.fixture(scope="session")
async def consent_channel(consent_app: ConsentApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{consent_app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def consent_caller(
    consent_channel: grpc.aio.Channel, channel: grpc.aio.Channel, make_token: Callable[..., str]
) -> Callable[..., ConsentCaller]:
    stub = consent_pb2_grpc.ConsentServiceStub(consent_channel)
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel)

    def make(party: str, org: str = "", *roles: str) -> ConsentCaller:
        return ConsentCaller(stub, catalog, make_token(party, org, roles))

    return make


# --- the ingest service ---------------------------------------------------------------------


def ingest_settings(tmp: Path, kafka: str, opa: str, secret: str, **overrides: object):
    from tdg_ingest.settings import IngestSettings

    values: dict[str, object] = {
        "grpc_port": 0,
        "kafka_bootstrap": kafka,
        "opa_url": opa,
        "auth_hs256_secret": secret,
        "lake_catalog_url": f"sqlite:///{tmp / 'iceberg-catalog.db'}",
        "lake_warehouse": str(tmp / "warehouse"),
        "ingest_batch_max_wait_s": 0.3,
        "ingest_write_cache_s": 2.0,
        "ingest_indicators_every_s": 3600.0,
        **overrides,
    }
    return IngestSettings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def ingest_app(
    tmp_path_factory: pytest.TempPathFactory, kafka, opa, secret: str, consent_app: ConsentApp
):
    """The ingest service (worker and front door) on its own warehouse and Iceberg catalog."""
    from tdg_ingest.server import build_app as build_ingest_app

    settings = ingest_settings(tmp_path_factory.mktemp("ingest"), kafka.bootstrap, opa.url, secret)
    app = await build_ingest_app(settings)
    await app.start()
    await app.monitor.check_once()
    yield app
    await app.server.stop(0)
    await app.monitor.stop()
    await app.close()


@dataclass
class IngestCaller:
    """A party with a token, calling the ingest, consent and catalog services."""

    stub: ingest_pb2_grpc.IngestServiceStub
    consent: consent_pb2_grpc.ConsentServiceStub
    catalog: catalog_pb2_grpc.CatalogServiceStub
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@pytest.fixture(scope="session")
async def ingest_channel(ingest_app) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest_app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def ingest_caller(
    ingest_channel: grpc.aio.Channel,
    consent_channel: grpc.aio.Channel,
    channel: grpc.aio.Channel,
    make_token: Callable[..., str],
) -> Callable[..., IngestCaller]:
    stub = ingest_pb2_grpc.IngestServiceStub(ingest_channel)
    consent = consent_pb2_grpc.ConsentServiceStub(consent_channel)
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel)

    def make(party: str, org: str = "", *roles: str) -> IngestCaller:
        return IngestCaller(stub, consent, catalog, make_token(party, org, roles))

    return make


# --- the query service ----------------------------------------------------------------------


@pytest.fixture(scope="session")
async def query_app(
    tmp_path_factory: pytest.TempPathFactory,
    kafka,
    opa,
    secret: str,
    consent_app: ConsentApp,
    ingest_app,
):
    """The query service on the ingest service's tables, asking the session's consent service for
    subject sets; gRPC and Arrow Flight on free ports."""
    from tdg_query.server import build_app as build_query_app
    from tdg_query.settings import QuerySettings

    tmp = tmp_path_factory.mktemp("query")
    lake = ingest_app.settings
    settings = QuerySettings(
        _env_file=None,
        grpc_port=0,
        query_flight_port=0,
        kafka_bootstrap=kafka.bootstrap,
        opa_url=opa.url,
        auth_hs256_secret=secret,
        lake_catalog_url=lake.lake_catalog_url,
        lake_warehouse=lake.lake_warehouse,
        query_consent_address=f"127.0.0.1:{consent_app.port}",
        query_spill_dir=str(tmp / "spill"),
        query_audit_flush_s=0.5,
        query_table_ttl_s=0.0,
    )
    app = await build_query_app(settings)
    await app.start()
    await app.monitor.check_once()
    yield app
    await app.server.stop(0)
    await app.monitor.stop()
    await app.close()


@dataclass
class QueryCaller:
    """A party with a token, calling the query service (gRPC and Flight) and the others."""

    stub: Any
    flight_location: str
    consent: consent_pb2_grpc.ConsentServiceStub
    catalog: catalog_pb2_grpc.CatalogServiceStub
    ingest: ingest_pb2_grpc.IngestServiceStub
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@pytest.fixture(scope="session")
async def query_channel(query_app) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{query_app.port}",
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    ) as ch:
        yield ch


@pytest.fixture(scope="session")
def query_caller(
    query_app,
    query_channel: grpc.aio.Channel,
    ingest_channel: grpc.aio.Channel,
    consent_channel: grpc.aio.Channel,
    channel: grpc.aio.Channel,
    make_token: Callable[..., str],
) -> Callable[..., QueryCaller]:
    from tdg.query.v1 import query_pb2_grpc

    stub = query_pb2_grpc.QueryServiceStub(query_channel)
    location = f"grpc+tcp://127.0.0.1:{query_app.flight_port}"

    def make(party: str, org: str = "", *roles: str) -> QueryCaller:
        return QueryCaller(
            stub,
            location,
            consent_pb2_grpc.ConsentServiceStub(consent_channel),
            catalog_pb2_grpc.CatalogServiceStub(channel),
            ingest_pb2_grpc.IngestServiceStub(ingest_channel),
            make_token(party, org, roles),
        )

    return make
