"""Server bootstrap: interceptors, health (following dependencies), reflection; `tdg_core.service`
starts it and stops it gracefully."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tdg_core.auth import TokenVerifier
from tdg_core.background import Background, log_failure
from tdg_core.grpc.interceptors import (
    AuthenticationInterceptor,
    AuthorizationInterceptor,
    CallContextInterceptor,
    ResourceExtractor,
)
from tdg_core.policy import PolicyClient
from tdg_core.settings import ServiceSettings

log = structlog.get_logger("tdg.grpc")

Probe = Callable[[], Awaitable[bool]]


@dataclass
class GrpcService:
    """One service to host: its full name, how to register it, and what it depends on."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    resource_of: ResourceExtractor
    # Required dependencies: while one probe fails, health reports NOT_SERVING.
    dependencies: dict[str, Probe] = field(default_factory=dict)


class HealthMonitor:
    """Keeps the standard health service in step with the dependencies' probes."""

    def __init__(self, service_names: Sequence[str], probes: dict[str, Probe], interval_s: float):
        self.servicer = health.aio.HealthServicer()
        self._names = ["", *service_names]
        self._probes = probes
        self._interval_s = interval_s
        self._task = Background("health-monitor", self._run)
        self.down: list[str] = []

    async def check_once(self) -> None:
        results = await asyncio.gather(
            *(p() for p in self._probes.values()), return_exceptions=True
        )
        down = [n for n, ok in zip(self._probes, results, strict=True) if ok is not True]
        if down != self.down:
            log.warning("dependencies down", down=down) if down else log.info("dependencies up")
        self.down = down
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if down
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in self._names:
            await self.servicer.set(name, status)

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception as exc:
                # Probes' own failures are results; this is the monitor failing: keep watching.
                log_failure(log, "health check failed", exc)
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        # Waits for the cancelled probe: a probe cut off mid-query would leak its connection.
        await self._task.stop()
        for name in self._names:
            await self.servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)


class GrpcEndpoint(NamedTuple):
    """A built server, the monitor of its health, and the port it bound (0 asks for any)."""

    server: grpc.aio.Server
    monitor: HealthMonitor
    port: int


def build_server(
    settings: ServiceSettings,
    services: Sequence[GrpcService],
    verifier: TokenVerifier,
    policy: PolicyClient,
    health_interval_s: float = 2.0,
) -> GrpcEndpoint:
    """A server with every tdg interceptor, health and reflection, not started yet."""

    async def resource_of(rpc: str, request: object) -> dict[str, Any]:
        # One server hosts few services; the first that knows the rpc name answers.
        for svc in services:
            found = svc.resource_of(rpc, request)
            resource = await found if inspect.isawaitable(found) else found
            if resource:
                return resource
        return {}

    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(
        interceptors=[
            CallContextInterceptor(),
            AuthenticationInterceptor(verifier),
            AuthorizationInterceptor(policy, resource_of),
        ],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * limit),
        ],
    )
    probes: dict[str, Probe] = {"opa": policy.healthy}
    for svc in services:
        svc.register(server)
        probes.update(svc.dependencies)
    monitor = HealthMonitor([s.name for s in services], probes, health_interval_s)
    health_pb2_grpc.add_HealthServicer_to_server(monitor.servicer, server)
    reflection.enable_server_reflection(
        [*(s.name for s in services), health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    return GrpcEndpoint(server, monitor, port)
