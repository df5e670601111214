"""The local stack as background processes: Kafka, OPA, PostgreSQL and the tdg services.

Used by `tdg dev` (a long-lived stack under `var/dev/`) and by the pytest fixtures in
`tdg_core.testing` (a throw-away stack per test session, on ports the OS picks). Every component
has a pid file and a log file under a state directory, so a second `start()` is a no-op and
`stop()` works from another process.
"""

from tdg_core.devstack._kafka import KafkaNode, list_topics, server_properties
from tdg_core.devstack._opa import (
    REGISTRY_BUNDLE,
    REGISTRY_RESOURCE,
    REGISTRY_ROOT,
    OpaServer,
    registry_bundle_config,
)
from tdg_core.devstack._ports import free_port, port_in_use
from tdg_core.devstack._postgres import PostgresServer
from tdg_core.devstack._process import Component, DevStackError, ManagedProcess
from tdg_core.devstack._service import PythonService, ServiceSpec, grpc_health
from tdg_core.devstack._tools import KAFKA_VERSION, OPA_VERSION, Tools, find_repo_root, provision

__all__ = [
    "KAFKA_VERSION",
    "OPA_VERSION",
    "REGISTRY_BUNDLE",
    "REGISTRY_RESOURCE",
    "REGISTRY_ROOT",
    "Component",
    "DevStackError",
    "KafkaNode",
    "ManagedProcess",
    "OpaServer",
    "PostgresServer",
    "PythonService",
    "ServiceSpec",
    "Tools",
    "find_repo_root",
    "free_port",
    "grpc_health",
    "list_topics",
    "port_in_use",
    "provision",
    "registry_bundle_config",
    "server_properties",
]
