"""The `kafka` fixture: a real Apache Kafka broker for the test session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tdg_core.devstack import DevStackError, KafkaNode, Tools, free_port
from tdg_core.testing._availability import docker_available, repo_root, unavailable

REQUIRED = "Kafka is required in CI: run `make setup` (or set TDG_KAFKA_BOOTSTRAP)"


@dataclass
class KafkaBroker:
    """The session's broker. `owned` brokers can be stopped and started (an outage, then recovery).

    Starting again reuses the same ports and data, and returns once the broker is ready.
    """

    bootstrap: str
    owned: bool
    node: KafkaNode | None = field(default=None, repr=False)
    # A testcontainers KafkaContainer; an outage is a paused container (ports and data are kept).
    container: Any = field(default=None, repr=False)
    stopped: bool = field(default=False, init=False)

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        elif self.container is not None:
            self.container.get_wrapped_container().pause()
        else:
            raise RuntimeError(f"Kafka at {self.bootstrap} is not owned by this test session")
        self.stopped = True

    def start(self) -> None:
        if self.node is not None:
            self.node.start()
            self.node.wait_ready()
        elif self.container is not None:
            self.container.get_wrapped_container().unpause()
        else:
            raise RuntimeError(f"Kafka at {self.bootstrap} is not owned by this test session")
        self.stopped = False

    async def stop_async(self) -> None:
        """`stop` without blocking the test's event loop."""
        await asyncio.to_thread(self.stop)

    async def start_async(self) -> None:
        """`start` without blocking the test's event loop (the broker takes seconds to start)."""
        if self.node is None:
            await asyncio.to_thread(self.start)
            return
        await asyncio.to_thread(self.node.start)
        await self.node.wait_ready_async()
        self.stopped = False


def _provisioned(config: pytest.Config, tmp: pytest.TempPathFactory) -> KafkaNode | None:
    try:
        tools = Tools.locate(repo_root(config))
    except DevStackError:
        return None
    if not tools.kafka_ready:
        return None
    data_dir = tmp.mktemp("kafka")
    return KafkaNode(tools.kafka_home, data_dir, free_port(), free_port())


@pytest.fixture(scope="session")
def kafka(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaBroker]:
    """TDG_KAFKA_BOOTSTRAP, else a broker from `.tools/`, else a testcontainers one."""
    given = os.environ.get("TDG_KAFKA_BOOTSTRAP")
    if given:
        yield KafkaBroker(bootstrap=given, owned=False)
        return

    node = _provisioned(pytestconfig, tmp_path_factory)
    if node is not None:
        try:
            node.start()
            node.wait_ready()
            yield KafkaBroker(bootstrap=node.bootstrap, owned=True, node=node)
        finally:
            node.stop()
        return

    if docker_available():
        from testcontainers.community.kafka import KafkaContainer

        container = KafkaContainer().start()
        try:
            yield KafkaBroker(
                bootstrap=container.get_bootstrap_server(), owned=True, container=container
            )
        finally:
            container.stop()
        return

    unavailable(REQUIRED)
