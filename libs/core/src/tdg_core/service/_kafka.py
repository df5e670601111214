"""What every service needs of Kafka: the topics it writes, created in the background (a service
starts while Kafka is away and creates them once it returns; the broker creates none by itself),
and the probe that says whether the broker answers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import structlog

from tdg_core.background import Background, log_failure
from tdg_core.events import TopicSpec, ensure_topics, kafka_reachable
from tdg_core.grpc.server import Probe
from tdg_core.service._lifecycle import Component

log = structlog.get_logger("tdg.core.service")


def topics_to_create(bootstrap: str, specs: Sequence[TopicSpec], retry_s: float = 1.0) -> Component:
    names = [s.name for s in specs]

    async def create() -> None:
        while True:
            try:
                await ensure_topics(bootstrap, specs)
                return
            except Exception as exc:
                log_failure(log, "cannot create the topics yet", exc, topics=names)
                await asyncio.sleep(retry_s)

    return Component.running("topics-to-create", Background("topics-to-create", create))


def kafka_probe(bootstrap: str) -> Probe:
    """A health dependency: the broker answers a metadata request within two seconds."""
    return functools.partial(kafka_reachable, bootstrap)
