"""The `opa` fixture: a real OPA server loading the repository's `policies/`.

The OPA it starts also pulls the consent service's registry bundle (`data.tdg.registry`) from
`http://127.0.0.1:<bundle_port>`, a port chosen once per session: a test that needs that data
starts the consent service's bundle server there (`TDG_CONSENT_BUNDLE_PORT=opa.bundle_port`) and
OPA picks it up within about two seconds (it retries every 1-2 s while nothing listens), then
follows every change through long polling. Nothing listens there between such tests; OPA keeps the
last bundle it pulled until the next server serves another one.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tdg_core.devstack import DevStackError, OpaServer, Tools, free_port
from tdg_core.testing._availability import docker_available, repo_root, unavailable, wait_http_ok

REQUIRED = "OPA is required in CI: run `make setup` (or set TDG_OPA_URL)"
OPA_IMAGE = "openpolicyagent/opa:1.22.3"
# With TDG_OPA_URL (an OPA this session does not start): the port that OPA pulls its registry
# bundle from on this machine's loopback, if it is configured to (`registry_bundle_config`).
BUNDLE_PORT_ENV = "TDG_TEST_OPA_BUNDLE_PORT"


@dataclass
class OpaEndpoint:
    """The session's OPA. `owned` servers can be stopped and started (to test failing closed).

    `bundle_port`: where this OPA pulls the registry bundle from (`http://127.0.0.1:<port>`), or
    None when it pulls none (a testcontainers OPA; TDG_OPA_URL without TDG_TEST_OPA_BUNDLE_PORT).
    """

    url: str
    owned: bool
    server: OpaServer | None = field(default=None, repr=False)
    container: Any = field(default=None, repr=False)
    bundle_port: int | None = None
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

    @property
    def bundle_url(self) -> str | None:
        """The bundle service URL this OPA pulls from (the consent bundle server's address)."""
        return None if self.bundle_port is None else f"http://127.0.0.1:{self.bundle_port}"

    def require_bundle_port(self) -> int:
        """`bundle_port`, or skip (fail in CI) when this OPA pulls no registry bundle."""
        if self.bundle_port is None:
            unavailable(
                f"OPA at {self.url} pulls no registry bundle: unset TDG_OPA_URL and run"
                f" `make setup`, or set {BUNDLE_PORT_ENV} to the port its configuration names"
            )
        return self.bundle_port

    def registry(self) -> dict[str, Any] | None:
        """`data.tdg.registry` as OPA holds it now; None when it has no registry bundle."""
        with urllib.request.urlopen(f"{self.url}/v1/data/tdg/registry", timeout=5) as response:
            result = json.loads(response.read()).get("result")
        return result if isinstance(result, dict) and result else None

    async def wait_for_registry(
        self, predicate: Callable[[dict[str, Any] | None], bool], timeout_s: float = 10.0
    ) -> dict[str, Any] | None:
        """Poll `registry()` until `predicate` holds (e.g. a revision is in); return what matched.

        OPA keeps the previous test's bundle until the next server serves one: wait for yours.
        """
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while True:
            try:
                last = await asyncio.to_thread(self.registry)
            except (urllib.error.URLError, OSError):
                last = None
            if predicate(last):
                return last
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"OPA at {self.url} did not hold the expected data.tdg.registry within"
                    f" {timeout_s:.0f}s (bundle port {self.bundle_port}); last seen: {last!r}"
                )
            await asyncio.sleep(0.05)


def _policies_dir(config: pytest.Config) -> Path:
    root = repo_root(config)
    if root is None:
        pytest.fail("the opa fixture cannot find the repository's policies/ directory")
    return root / "policies"


def _given_bundle_port() -> int | None:
    raw = os.environ.get(BUNDLE_PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        pytest.fail(f"{BUNDLE_PORT_ENV}={raw!r} is not a port number", pytrace=False)


@pytest.fixture(scope="session")
def opa(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpaEndpoint]:
    """TDG_OPA_URL, else OPA from `.tools/bin`, else a testcontainers one; both load `policies/`.

    The OPA from `.tools/bin` also pulls the registry bundle from 127.0.0.1:`bundle_port`.
    """
    given = os.environ.get("TDG_OPA_URL")
    if given:
        yield OpaEndpoint(url=given.rstrip("/"), owned=False, bundle_port=_given_bundle_port())
        return

    policies = _policies_dir(pytestconfig)
    try:
        tools: Tools | None = Tools.locate(repo_root(pytestconfig))
    except DevStackError:
        tools = None
    if tools is not None and tools.opa_ready:
        bundle_port = free_port()
        server = OpaServer(
            tools.opa_bin,
            policies,
            free_port(),
            state_dir=tmp_path_factory.mktemp("opa"),
            bundle_service_url=f"http://127.0.0.1:{bundle_port}",
        )
        try:
            server.start()
            server.wait_ready()
            yield OpaEndpoint(url=server.url, owned=True, server=server, bundle_port=bundle_port)
        finally:
            server.stop()
        return

    if docker_available():
        from testcontainers.core.container import DockerContainer

        # No registry bundle here (bundle_port None): the container would have to reach a bundle
        # server on the host, which binds loopback (TDG_CONSENT_BUNDLE_HOST) and which Docker
        # Desktop and Linux engines expose differently. Tests that need the bundle skip on None.
        container = (
            DockerContainer(OPA_IMAGE)
            .with_command(
                "run --server --addr 0.0.0.0:8181 --skip-version-check"
                " --ignore=*_test.rego /policies"
            )
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
