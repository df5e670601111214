"""The `postgres_url` fixture: a real PostgreSQL for the test session (SQLAlchemy async URL)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdg_core.devstack import PostgresServer, Tools, free_port
from tdg_core.testing._availability import docker_available, unavailable

REQUIRED = (
    "PostgreSQL is required in CI: run `make setup` (or set TDG_TEST_POSTGRES_URL to a"
    " postgresql+asyncpg:// URL)"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """TDG_TEST_POSTGRES_URL, else a server from the system's binaries, else testcontainers."""
    given = os.environ.get("TDG_TEST_POSTGRES_URL")
    if given:
        yield given
        return

    if Tools.postgres_bindir() is not None:
        # Not under pytest's tmp dir: that one is private to us (0700), and when we run as root
        # the server runs as the `postgres` user, who must reach its data directory.
        base = Path(tempfile.mkdtemp(prefix="tdg-pg-"))
        base.chmod(0o755)
        server = PostgresServer(base / "data", free_port(), durable=False)
        try:
            server.start()
            server.wait_ready()
            yield server.url
        finally:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)
        return

    if docker_available():
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", dbname="tdg", driver="asyncpg").start()
        try:
            yield str(container.get_connection_url())
        finally:
            container.stop()
        return

    unavailable(REQUIRED)
