"""Wires the catalog: database (migrated), outbox relay to Kafka, gRPC server.

Started in this order, stopped in reverse: database, producer, outbox relay, OPA client, gRPC.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tdg.catalog.v1 import catalog_pb2_grpc
from tdg_core import topics
from tdg_core.auth import TokenVerifier
from tdg_core.db import database_up
from tdg_core.events import TopicSpec
from tdg_core.grpc import GrpcService, build_server
from tdg_core.policy import PolicyClient
from tdg_core.service import Component, Service, ServiceDatabase

from tdg_catalog.catalog import Catalog
from tdg_catalog.servicer import SERVICE_NAME, CatalogServicer, resource_of
from tdg_catalog.settings import CatalogSettings
from tdg_catalog.store import outbox

MIGRATIONS = Path(__file__).parent / "migrations"


async def build_service(settings: CatalogSettings) -> Service[CatalogSettings]:
    database = await ServiceDatabase.open(
        settings.catalog_database_url,
        MIGRATIONS,
        settings.kafka_bootstrap,
        "tdg-catalog",
        outbox,
        # Kept for ever: the change log from which other services rebuild their view.
        TopicSpec(
            topics.CATALOG_EVENTS,
            partitions=settings.catalog_events_partitions,
            config={"retention.ms": "-1"},
        ),
    )
    engine, relay = database.engine, database.outbox
    catalog = Catalog(engine, relay, settings.catalog_search_candidates)
    policy = PolicyClient(settings.opa_url, settings.opa_timeout_s)

    service = GrpcService(
        name=SERVICE_NAME,
        register=lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(
            CatalogServicer(catalog, settings.catalog_public_base_uri), server
        ),
        resource_of=resource_of,
        # Kafka is not required to serve: the outbox keeps events until it returns.
        dependencies={"database": functools.partial(database_up, engine)},
    )
    grpc = build_server(settings, [service], TokenVerifier(settings), policy)
    return Service(
        settings,
        grpc,
        [
            *database.components(),
            Component.resource("opa", policy, policy.close),
        ],
    )
