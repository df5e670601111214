"""Wires the consent service: database (migrated), the followers of the catalog's and the ingest
service's events, the outbox relay, the OPA bundle server, the agreement expiry sweep and the gRPC
server.

Started in this order, stopped in reverse: database, producer, outbox relay, OPA client, bundle
server, bundle source, catalog follower, ingest follower, expiry sweep, gRPC. The followers and
the relay retry by themselves while Kafka is away.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tdg.consent.v1 import consent_pb2_grpc
from tdg_core import topics
from tdg_core.auth import TokenVerifier
from tdg_core.db import database_up
from tdg_core.events import TopicSpec
from tdg_core.grpc import GrpcService, build_server
from tdg_core.policy import PolicyClient
from tdg_core.service import Component, Service, ServiceDatabase

from tdg_consent.access import Access
from tdg_consent.bundle import PolicySettings
from tdg_consent.bundle_server import BundleServer, BundleSource
from tdg_consent.changes import Changes
from tdg_consent.consents import Consents
from tdg_consent.datasets import DatasetDirectory
from tdg_consent.erasure_progress import apply_ingest_event
from tdg_consent.erasures import Erasures
from tdg_consent.follower import TopicFollower
from tdg_consent.parties import Parties
from tdg_consent.servicer import SERVICE_NAME, ConsentServicer, ResourceFinder
from tdg_consent.settings import ConsentSettings
from tdg_consent.store import outbox

MIGRATIONS = Path(__file__).parent / "migrations"


async def build_service(settings: ConsentSettings) -> Service[ConsentSettings]:
    database = await ServiceDatabase.open(
        settings.consent_database_url,
        MIGRATIONS,
        settings.kafka_bootstrap,
        "tdg-consent",
        outbox,
        TopicSpec(topics.CONSENT_EVENTS, partitions=settings.consent_events_partitions),
    )
    engine, relay = database.engine, database.outbox
    policy_settings = PolicySettings(
        purposes=tuple(settings.consent_purposes),
        default_min_group_size=settings.consent_default_min_group_size,
        default_personal_mask=settings.consent_default_personal_mask,
        default_sensitive_mask=settings.consent_default_sensitive_mask,
    )
    bundle_source = BundleSource(engine, policy_settings, settings.consent_bundle_poll_s)
    changes = Changes(engine, relay, bundle_source.mark_dirty)
    datasets = DatasetDirectory(
        engine, settings.kafka_bootstrap, topics.CATALOG_EVENTS, settings.consent_catalog_catch_up_s
    )
    ingest_events = TopicFollower(
        engine, settings.kafka_bootstrap, topics.INGEST_EVENTS, apply_ingest_event
    )
    parties = Parties(changes)
    access = Access(changes, datasets, settings.consent_purposes)
    consents = Consents(
        changes, datasets, list(settings.consent_purposes), settings.consent_subject_batch_rows
    )
    erasures = Erasures(changes, datasets)
    policy = PolicyClient(settings.opa_url, settings.opa_timeout_s)

    service = GrpcService(
        name=SERVICE_NAME,
        register=lambda server: consent_pb2_grpc.add_ConsentServiceServicer_to_server(
            ConsentServicer(parties, access, consents, erasures), server
        ),
        resource_of=ResourceFinder(parties, access, erasures),
        # Kafka is not required to serve: the outbox keeps events until it returns.
        dependencies={"database": functools.partial(database_up, engine)},
    )
    grpc = build_server(settings, [service], TokenVerifier(settings), policy)
    bundle_server = BundleServer(
        bundle_source,
        settings.consent_bundle_host,
        settings.consent_bundle_port,
        settings.consent_bundle_max_wait_s,
    )
    return Service(
        settings,
        grpc,
        [
            *database.components(),
            Component.resource("opa", policy, policy.close),
            Component.running("bundle-server", bundle_server),
            Component.running("bundle-source", bundle_source),
            Component.running("catalog-follower", datasets),
            # Erasure progress reported by the ingest service.
            Component.running("ingest-follower", ingest_events),
            Component(
                "agreement-expiry",
                functools.partial(access.start_expiry, settings.consent_expiry_sweep_s),
                access.stop,
                access,
            ),
        ],
    )
