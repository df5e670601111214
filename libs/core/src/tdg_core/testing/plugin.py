"""The tdg pytest plugin (entry point `tdg`): session fixtures for the real dependencies.

- `kafka` → `KafkaBroker` (bootstrap, owned, stop/start)
- `opa` → `OpaEndpoint` (url, owned, stop/start, bundle_port), serving the repository's
  `policies/` and pulling the registry bundle from a consent bundle server that a test starts on
  127.0.0.1:`bundle_port` (None when that OPA pulls none: see `tdg_core.testing._opa`)
- `postgres_url` → a `postgresql+asyncpg://` URL

Each honours an environment variable naming a running one (TDG_KAFKA_BOOTSTRAP, TDG_OPA_URL,
TDG_TEST_POSTGRES_URL), else starts one from the tools provisioned by `make setup`, else from
Docker through testcontainers when a daemon answers; otherwise the test fails in CI and is skipped
elsewhere. What a fixture starts, it stops at the end of the session.

A test that asks for one of them must carry the `integration` marker (it fails at set-up
otherwise), so that `pytest -m "not integration"` runs with none of them provisioned.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from tdg_core.testing._kafka import KafkaBroker, kafka
from tdg_core.testing._opa import OpaEndpoint, opa
from tdg_core.testing._postgres import postgres_url

__all__ = ["kafka", "opa", "postgres_url", "restart_stopped_dependencies"]

REAL_PARTS = frozenset({"kafka", "opa", "postgres_url"})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse, before any fixture starts, a test that needs the real stack but is not marked."""
    needed = REAL_PARTS.intersection(getattr(item, "fixturenames", ()))
    if needed and item.get_closest_marker("integration") is None:
        pytest.fail(
            f"{item.nodeid} uses {', '.join(sorted(needed))}: mark it"
            " `pytest.mark.integration` (the unit run provisions none of them)",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def restart_stopped_dependencies(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stops the broker or OPA and fails before starting it again must not take the
    rest of the session down with it: start it again after the test."""
    yield
    for name in ("kafka", "opa"):
        # Only what this test actually got: asking for a fixture that skipped would skip again.
        dependency = getattr(request.node, "funcargs", {}).get(name)
        if isinstance(dependency, KafkaBroker | OpaEndpoint) and dependency.stopped:
            warnings.warn(
                f"{request.node.nodeid} left {name} stopped; starting it again",
                stacklevel=1,
            )
            dependency.start()
