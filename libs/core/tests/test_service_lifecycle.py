"""The service lifecycle: components start in order and stop in reverse, also when a start fails
half-way; the gRPC server starts last and stops first; background loops say what failed."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import structlog
from aiokafka.errors import KafkaConnectionError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tdg_core.background import Background, log_failure
from tdg_core.grpc.server import GrpcEndpoint, HealthMonitor
from tdg_core.service import Component, Lifecycle, Service, topics_to_create
from tdg_core.settings import ServiceSettings


class Part:
    """Records its starts and stops in a shared journal; may be told to fail either."""

    def __init__(
        self, name: str, journal: list[str], fail_start: bool = False, fail_stop: bool = False
    ) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.journal.append(f"start {self.name}")

    def stop(self) -> None:
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")
        self.journal.append(f"stop {self.name}")


def parts(journal: list[str], *names: str, **failing: str) -> list[Component]:
    return [
        Component.running(
            n,
            Part(
                n, journal, fail_start=failing.get("start") == n, fail_stop=failing.get("stop") == n
            ),
        )
        for n in names
    ]


async def test_components_start_in_order_and_stop_in_reverse() -> None:
    journal: list[str] = []
    lifecycle = Lifecycle(parts(journal, "database", "relay", "follower"))
    await lifecycle.start()
    assert lifecycle.started == ["database", "relay", "follower"]
    await lifecycle.stop()
    assert journal == [
        "start database",
        "start relay",
        "start follower",
        "stop follower",
        "stop relay",
        "stop database",
    ]
    assert lifecycle.started == []


async def test_a_failed_start_stops_what_started_in_reverse_and_raises() -> None:
    journal: list[str] = []
    lifecycle = Lifecycle(
        parts(journal, "database", "relay", "follower", "sweep", start="follower")
    )
    with pytest.raises(RuntimeError, match="follower cannot start"):
        await lifecycle.start()
    # The one that failed started nothing; the ones after it never started.
    assert journal == ["start database", "start relay", "stop relay", "stop database"]
    assert lifecycle.started == []


async def test_a_failed_stop_does_not_keep_the_others_running() -> None:
    journal: list[str] = []
    lifecycle = Lifecycle(parts(journal, "database", "relay", "follower", stop="relay"))
    await lifecycle.start()
    with structlog.testing.capture_logs() as logs, pytest.raises(RuntimeError, match="relay"):
        await lifecycle.stop()
    assert journal[-2:] == ["stop follower", "stop database"]
    (failure,) = [e for e in logs if e["event"] == "stop failed"]
    assert failure["component"] == "relay" and isinstance(failure["exc_info"], RuntimeError)


async def test_a_failed_start_whose_cleanup_fails_raises_the_start_error() -> None:
    journal: list[str] = []
    lifecycle = Lifecycle(parts(journal, "database", "relay", start="relay", stop="database"))
    with pytest.raises(RuntimeError, match="relay cannot start"):
        await lifecycle.start()


async def test_resources_are_only_released_and_parts_are_found_by_type() -> None:
    journal: list[str] = []
    engine = object()
    relay = Part("relay", journal)
    lifecycle = Lifecycle(
        [
            Component.resource("database", engine, lambda: journal.append("dispose")),
            Component.running("relay", relay),
        ]
    )
    await lifecycle.start()
    await lifecycle.stop()
    assert journal == ["start relay", "stop relay", "dispose"]
    assert lifecycle.part(Part) is relay
    with pytest.raises(LookupError):
        lifecycle.part(str)


def test_component_names_are_unique() -> None:
    with pytest.raises(ValueError, match="repeat"):
        Lifecycle(parts([], "relay", "relay"))


async def test_the_grpc_server_starts_last_and_stops_first() -> None:
    journal: list[str] = []
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    monitor = HealthMonitor([], {}, interval_s=0.05)
    health_pb2_grpc.add_HealthServicer_to_server(monitor.servicer, server)

    async def serving() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        return int(answer.status)

    class Probe:
        """A component that asks the server whether it serves while it starts and stops."""

        async def start(self) -> None:
            journal.append("relay starts, server up: " + str(await reachable()))

        async def stop(self) -> None:
            journal.append("relay stops, server up: " + str(await reachable()))

    async def reachable() -> bool:
        try:
            await serving()
        except grpc.aio.AioRpcError:
            return False
        return True

    settings = ServiceSettings(_env_file=None, grpc_port=0, shutdown_grace_s=0)
    service = Service(
        settings, GrpcEndpoint(server, monitor, port), [Component.running("relay", Probe())]
    )
    await service.start()
    await monitor.check_once()
    assert await serving() == health_pb2.HealthCheckResponse.SERVING
    await service.stop()
    assert journal == ["relay starts, server up: False", "relay stops, server up: False"]
    assert [c.name for c in service.components] == ["relay", "grpc-server"]


async def test_topics_to_create_retry_while_kafka_is_away_and_stop_cleanly() -> None:
    from tdg_core.events import TopicSpec

    component = topics_to_create("127.0.0.1:1", [TopicSpec("tdg.test")], retry_s=0.01)
    with structlog.testing.capture_logs() as logs:
        await Lifecycle([component]).start()
        await asyncio.sleep(0.3)
    assert any(e["event"] == "cannot create the topics yet" for e in logs)
    assert component.stop is not None
    await component.stop()  # type: ignore[misc]


def test_a_dependency_away_is_a_warning_and_a_bug_keeps_its_traceback() -> None:
    log = structlog.get_logger("test")
    bug = KeyError("partition")
    with structlog.testing.capture_logs() as logs:
        log_failure(log, "relay failed", KafkaConnectionError("refused"))
        log_failure(log, "relay failed", bug)
    away, broken = logs
    assert away["log_level"] == "warning" and "exc_info" not in away
    assert broken["log_level"] == "error" and broken["exc_info"] is bug


async def test_a_background_task_ended_by_an_error_is_logged_with_its_traceback() -> None:
    async def crash() -> None:
        raise ZeroDivisionError("bug")

    task = Background("crashing", crash)
    with structlog.testing.capture_logs() as logs:
        task.start()
        await asyncio.sleep(0.05)
    (entry,) = [e for e in logs if e["event"] == "background task ended by an error"]
    assert entry["task"] == "crashing" and isinstance(entry["exc_info"], ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        await task.stop()
