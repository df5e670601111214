"""Test support: the fixture types of the pytest plugin `tdg_core.testing.plugin`, and
`in_process`, which runs any tdg service in the test's event loop."""

from tdg_core.testing._availability import docker_available, unavailable
from tdg_core.testing._bundles import RegistryBundleServer, registry_bundle
from tdg_core.testing._kafka import KafkaBroker
from tdg_core.testing._opa import OpaEndpoint
from tdg_core.testing._services import in_process

__all__ = [
    "KafkaBroker",
    "OpaEndpoint",
    "RegistryBundleServer",
    "docker_available",
    "in_process",
    "registry_bundle",
    "unavailable",
]
