"""Test support: the fixture types of the pytest plugin `tdg_core.testing.plugin`."""

from tdg_core.testing._availability import docker_available, unavailable
from tdg_core.testing._bundles import RegistryBundleServer, registry_bundle
from tdg_core.testing._kafka import KafkaBroker
from tdg_core.testing._opa import OpaEndpoint

__all__ = [
    "KafkaBroker",
    "OpaEndpoint",
    "RegistryBundleServer",
    "docker_available",
    "registry_bundle",
    "unavailable",
]
