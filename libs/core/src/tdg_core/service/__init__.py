"""One lifecycle for every tdg service: components started in order and stopped in reverse, the
gRPC server last in and first out, and the parts every service shares (the topics to create, the
Kafka probe; the Iceberg probe is `tdg_lake.probe`, since tdg-core knows nothing of the lake).

A service's `server.py` builds a `Service` from its settings; its `__main__.py` calls `run`.
"""

from tdg_core.service._database import ServiceDatabase
from tdg_core.service._kafka import kafka_probe, topics_to_create
from tdg_core.service._lifecycle import Component, Lifecycle, Startable
from tdg_core.service._service import Build, Service, run

__all__ = [
    "Build",
    "Component",
    "Lifecycle",
    "Service",
    "ServiceDatabase",
    "Startable",
    "kafka_probe",
    "run",
    "topics_to_create",
]
