"""Wires the query service: the catalog view, the consent follower, the engine, the gRPC server,
the Arrow Flight server (its own threads, on the Flight port) and the audit trail.

Started in this order, stopped in reverse: OPA client, consent subject sets, Iceberg catalog, the
audit topic (created in the background), catalog view, consent follower, audit log, audit sink,
Flight server, gRPC. Both servers stop before the parts a query uses; the audit log flushes its
records to Kafka before it stops, after the sink has committed what it read.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from pyiceberg.catalog import Catalog
from tdg_core import topics
from tdg_core.auth import TokenVerifier, issue_token
from tdg_core.catalog_view import CatalogView
from tdg_core.grpc import GrpcService, build_server
from tdg_core.policy import PolicyClient
from tdg_core.service import Component, Service, kafka_probe, topics_to_create
from tdg_lake.catalog import open_catalog
from tdg_lake.probe import iceberg_probe

from tdg_query import epci
from tdg_query.audit import AuditLog, audit_topic_spec
from tdg_query.audit_table import AuditSink, AuditTable
from tdg_query.consent_events import ConsentFollower
from tdg_query.consent_sets import ConsentSets
from tdg_query.engine import Engine, Entry, Limits
from tdg_query.flight import QueryFlightServer
from tdg_query.planner import Planner
from tdg_query.readable import Readable
from tdg_query.revocations import Revocations
from tdg_query.servicer import SERVICE_NAME, QueryServicer, ResourceFinder, register
from tdg_query.settings import QuerySettings

SERVICE_PARTY = "tdg-query"
SERVICE_ORG = "tdg-platform"
SERVICE_ROLE = "platform-service"


def service_token(settings: QuerySettings) -> Callable[[], str]:
    """The query service's own bearer token, for the consent service: configured (production),
    else signed with the development secret and renewed before it expires."""
    if settings.query_service_token is not None:
        configured = settings.query_service_token.get_secret_value()
        return lambda: configured
    lifetime_s = 3600
    cached: list[tuple[str, float]] = []

    def token() -> str:
        if not cached or time.monotonic() > cached[0][1]:
            fresh = issue_token(settings, SERVICE_PARTY, SERVICE_ORG, [SERVICE_ROLE], lifetime_s)
            cached[:] = [(fresh, time.monotonic() + lifetime_s / 2)]
        return cached[0][0]

    return token


def open_database(settings: QuerySettings, reference_file: str | None) -> duckdb.DuckDBPyConnection:
    spill = Path(settings.query_spill_dir)
    spill.mkdir(parents=True, exist_ok=True)
    database = duckdb.connect(
        ":memory:",
        config={
            "threads": settings.query_duckdb_threads or os.cpu_count() or 1,
            "memory_limit": settings.query_duckdb_memory_limit,
            "temp_directory": str(spill),
        },
    )
    # Instants are shown and truncated in UTC whatever the host's zone (ICU is loaded by now;
    # it is not yet when the connection's config is read).
    database.execute("SET GLOBAL TimeZone = 'UTC'")
    if settings.lake_warehouse.startswith("s3://"):
        database.execute(s3_secret(settings))
    epci.install(database, epci.load_reference(reference_file))
    return database


def s3_secret(settings: QuerySettings) -> str:
    """DuckDB's credentials for the warehouse's bucket (httpfs), from the lake settings. Values
    come from configuration, never from a request; quoted all the same."""

    def text(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    options = ["TYPE s3"]
    if settings.lake_s3_access_key_id is not None:
        options.append(f"KEY_ID {text(settings.lake_s3_access_key_id.get_secret_value())}")
    if settings.lake_s3_secret_access_key is not None:
        options.append(f"SECRET {text(settings.lake_s3_secret_access_key.get_secret_value())}")
    if settings.lake_s3_region:
        options.append(f"REGION {text(settings.lake_s3_region)}")
    if settings.lake_s3_endpoint:
        endpoint = settings.lake_s3_endpoint
        options.append(f"ENDPOINT {text(endpoint.split('://', 1)[-1])}")
        options.append(f"USE_SSL {'false' if endpoint.startswith('http://') else 'true'}")
        options.append("URL_STYLE 'path'")
    return f"CREATE OR REPLACE SECRET tdg_lake ({', '.join(options)})"


def flight_server(flight: QueryFlightServer) -> Component:
    """The Arrow Flight server in its own thread. Stopping it ends the queries it runs as
    cancelled (answered UNAVAILABLE) and audits the tickets never fetched."""
    threads: list[threading.Thread] = []

    def start() -> None:
        thread = threading.Thread(target=flight.serve, name="flight-server", daemon=True)
        thread.start()
        threads.append(thread)

    async def stop() -> None:
        await asyncio.to_thread(flight.shutdown)
        for thread in threads:
            await asyncio.to_thread(thread.join, 10.0)
        threads.clear()

    return Component("flight-server", start, stop, flight)


async def build_service(settings: QuerySettings) -> Service[QuerySettings]:
    catalog: Catalog = await asyncio.to_thread(open_catalog, settings.iceberg_properties())
    datasets: CatalogView[Entry] = CatalogView(
        settings.kafka_bootstrap, topics.CATALOG_EVENTS, "tdg-query-catalog", Entry
    )
    policy = PolicyClient(settings.opa_url, settings.opa_timeout_s)
    revocations = Revocations()
    follower_ref: list[ConsentFollower] = []
    consent_sets = ConsentSets(
        settings.query_consent_address,
        service_token(settings),
        max_age_s=settings.query_consent_max_age_s,
        following=lambda: bool(follower_ref) and follower_ref[0].following(),
    )
    follower = ConsentFollower(
        settings.kafka_bootstrap, topics.CONSENT_EVENTS, consent_sets, revocations
    )
    follower_ref.append(follower)
    audit = AuditLog(settings.kafka_bootstrap, settings.query_audit_queue)
    audit_table = AuditTable(catalog)
    audit_sink = AuditSink(settings.kafka_bootstrap, audit_table, settings.query_audit_flush_s)
    database = await asyncio.to_thread(open_database, settings, settings.query_epci_file)
    engine = Engine(
        datasets,
        Planner(catalog, settings.query_table_ttl_s),
        policy,
        consent_sets,
        revocations,
        audit,
        database,
        Limits(settings.query_max_rows, settings.query_max_bytes, settings.query_batch_rows),
    )
    readable = Readable(datasets, policy)
    servicer = QueryServicer(engine, readable, audit_table)
    verifier = TokenVerifier(settings)
    kafka_up = kafka_probe(settings.kafka_bootstrap)

    async def catalog_up() -> bool:
        return datasets.caught_up.is_set() and await kafka_up()

    service = GrpcService(
        name=SERVICE_NAME,
        register=lambda server: register(servicer, server),
        resource_of=ResourceFinder(datasets),
        dependencies={"iceberg-catalog": iceberg_probe(catalog), "catalog": catalog_up},
    )
    grpc = build_server(settings, [service], verifier, policy)
    flight = QueryFlightServer(
        f"grpc+tcp://{settings.grpc_host}:{settings.query_flight_port}",
        engine,
        readable,
        verifier,
        policy,
        asyncio.get_running_loop(),
        settings.query_ticket_ttl_s,
    )
    audit_topic = audit_topic_spec(
        settings.audit_topic_partitions, settings.audit_topic_replication
    )
    return Service(
        settings,
        grpc,
        [
            Component.resource("opa", policy, policy.close),
            Component.resource("consent-sets", consent_sets, consent_sets.close),
            Component.resource("iceberg-catalog", catalog),
            topics_to_create(settings.kafka_bootstrap, [audit_topic]),
            Component.running("catalog-view", datasets),
            Component.running("consent-follower", follower),
            Component.running("audit-log", audit),
            Component.running("audit-sink", audit_sink),
            flight_server(flight),
        ],
    )
