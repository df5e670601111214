"""The processes of the run besides Kafka, OPA and the consent service (started as the policy
benchmark starts them): the query service, and the catalog event that makes the dataset known."""

from __future__ import annotations

from pathlib import Path

from common import python_service
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg_core import topics
from tdg_core.devstack import PythonService
from tdg_core.events import CloudEvent, EventProducer, TopicSpec, ensure_topics

from .scenario import DATASET, dataset


def query_service(
    tmp: Path,
    grpc_port: int,
    flight_port: int,
    *,
    kafka: str,
    opa_url: str,
    secret: str,
    catalog_url: str,
    consent_address: str,
) -> PythonService:
    """The query service on the run's Iceberg catalog, serving gRPC and Arrow Flight."""
    settings = {
        "TDG_KAFKA_BOOTSTRAP": kafka,
        "TDG_OPA_URL": opa_url,
        "TDG_AUTH_HS256_SECRET": secret,
        "TDG_LAKE_CATALOG_URL": catalog_url,
        "TDG_LAKE_WAREHOUSE": str(tmp / "warehouse"),
        "TDG_QUERY_FLIGHT_PORT": str(flight_port),
        "TDG_QUERY_CONSENT_ADDRESS": consent_address,
        "TDG_QUERY_SPILL_DIR": str(tmp / "spill"),
        # The per-query log line ("query", with its duration) is INFO.
        "TDG_LOG_LEVEL": "INFO",
        "TDG_LOG_FORMAT": "json",
    }
    return python_service(tmp, "query", "tdg_query", grpc_port, settings, (flight_port,))


async def publish_dataset(kafka: str) -> None:
    """The dataset's DatasetPublished event on tdg.catalog.events, as the catalog sends it (the
    query and consent services learn the dataset from it)."""
    await ensure_topics(kafka, [TopicSpec(topics.CATALOG_EVENTS, 1, config={"retention.ms": "-1"})])
    events = EventProducer(kafka, "bench")
    await events.send(
        topics.CATALOG_EVENTS,
        DATASET,
        CloudEvent.of(cev.DatasetPublished(dataset=dataset()), "bench"),
    )
    await events.stop()
