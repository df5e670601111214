"""A tdg gRPC service run as `python -m <module>`, ready when its health service says SERVING."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tdg_core.devstack._process import ManagedProcess, wait_until_ready

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the local stack: `python -m <module>` serving gRPC on `port`."""

    name: str
    module: str
    port: int
    # Extra environment of this service only (on top of the stack's shared TDG_ variables).
    env: Mapping[str, str] = field(default_factory=dict)
    # Other ports it listens on (e.g. the consent service's OPA bundle server), so `tdg dev` can
    # tell when one is taken by someone else. Setting them is the env's job (TDG_<NAME>_*_PORT).
    extra_ports: tuple[int, ...] = ()

    @property
    def ports(self) -> tuple[int, ...]:
        """The gRPC port first, then the extra ones."""
        return (self.port, *self.extra_ports)

    @property
    def installed(self) -> bool:
        """Whether the module can be imported in this environment."""
        return importlib.util.find_spec(self.module) is not None


def grpc_health(address: str, timeout: float = 1.0) -> str | None:
    """None when `grpc.health.v1.Health/Check` answers SERVING for the server, else why not."""
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.RpcError as exc:
        return f"health check: {exc.code().name}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}"
    return None


class PythonService:
    """A `ServiceSpec` run in the background with the given environment."""

    def __init__(
        self,
        spec: ServiceSpec,
        *,
        state_dir: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        full_env = {**env, "TDG_GRPC_HOST": HOST, "TDG_GRPC_PORT": str(spec.port), **spec.env}
        self._process = ManagedProcess(
            name=spec.name,
            argv=[python, "-m", spec.module],
            state_dir=state_dir,
            env=full_env,
            cwd=cwd,
        )

    @property
    def address(self) -> str:
        return f"{HOST}:{self.spec.port}"

    @property
    def log_file(self) -> Path:
        return self._process.log_file

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def start(self) -> None:
        self._process.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the health service answers SERVING (or raise DevStackError)."""
        address = self.address
        wait_until_ready(
            self._process,
            lambda: grpc_health(address),
            timeout=timeout,
            what=f"{self.name} on {address}",
        )

    def stop(self, timeout: float = 15.0) -> None:
        self._process.stop(timeout)
