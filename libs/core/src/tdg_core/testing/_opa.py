"""The `opa` fixture: a real OPA server loading the repository's `policies/`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tdg_core.devstack import DevStackError, OpaServer, Tools, free_port
from tdg_core.testing._availability import docker_available, repo_root, unavailable, wait_http_ok

REQUIRED = "OPA is required in CI: run `make setup` (or set TDG_OPA_URL)"
OPA_IMAGE = "openpolicyagent/opa:1.22.3"


@dataclass
class OpaEndpoint:
    """The session's OPA. `owned` servers can be stopped and started (to test failing closed)."""

    url: str
    owned: bool
    server: OpaServer | None = field(default=None, repr=False)
    container: Any = field(default=None, repr=False)
    stopped: bool = field(default=False, init=False)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        elif self.container is not None:
            self.container.get_wrapped_container().pause()
        else:
            raise RuntimeError(f"OPA at {self.url} is not owned by this test session")
        self.stopped = True

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
            self.server.wait_ready()
        elif self.container is not None:
            self.container.get_wrapped_container().unpause()
        else:
            raise RuntimeError(f"OPA at {self.url} is not owned by this test session")
        self.stopped = False


def _policies_dir(config: pytest.Config) -> Path:
    root = repo_root(config)
    if root is None:
        pytest.fail("the opa fixture cannot find the repository's policies/ directory")
    return root / "policies"


@pytest.fixture(scope="session")
def opa(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpaEndpoint]:
    """TDG_OPA_URL, else OPA from `.tools/bin`, else a testcontainers one; both load `policies/`."""
    given = os.environ.get("TDG_OPA_URL")
    if given:
        yield OpaEndpoint(url=given.rstrip("/"), owned=False)
        return

    policies = _policies_dir(pytestconfig)
    try:
        tools: Tools | None = Tools.locate(repo_root(pytestconfig))
    except DevStackError:
        tools = None
    if tools is not None and tools.opa_ready:
        server = OpaServer(
            tools.opa_bin, policies, free_port(), state_dir=tmp_path_factory.mktemp("opa")
        )
        try:
            server.start()
            server.wait_ready()
            yield OpaEndpoint(url=server.url, owned=True, server=server)
        finally:
            server.stop()
        return

    if docker_available():
        from testcontainers.core.container import DockerContainer

        container = (
            DockerContainer(OPA_IMAGE)
            .with_command("run --server --addr 0.0.0.0:8181 --disable-telemetry /policies")
            .with_volume_mapping(str(policies), "/policies", "ro")
            .with_exposed_ports(8181)
            .start()
        )
        try:
            host = container.get_container_host_ip()
            url = f"http://{host}:{container.get_exposed_port(8181)}"
            wait_http_ok(f"{url}/health", timeout=30)
            yield OpaEndpoint(url=url, owned=True, container=container)
        finally:
            container.stop()
        return

    unavailable(REQUIRED)
