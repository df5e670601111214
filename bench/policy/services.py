"""The processes of the run besides OPA: the consent service instances, and what tells when OPA
has their registry bundle."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from common import python_service
from tdg_consent.bundle_server import PATH as BUNDLE_PATH
from tdg_core.devstack import PythonService


@dataclass(frozen=True)
class Ports:
    opa: int
    grpc: int
    bundle: int
    export_grpc: int
    export_bundle: int
    kafka: int  # nobody listens there: the service runs without Kafka


def consent_service(
    tmp: Path,
    name: str,
    db: Path,
    grpc_port: int,
    bundle_port: int,
    *,
    opa_url: str,
    secret: str,
    kafka: str,
) -> PythonService:
    """An instance of the consent service on `db`, serving gRPC and its registry bundle."""
    settings = {
        "TDG_CONSENT_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "TDG_CONSENT_BUNDLE_PORT": str(bundle_port),
        "TDG_OPA_URL": opa_url,
        "TDG_AUTH_HS256_SECRET": secret,
        "TDG_KAFKA_BOOTSTRAP": kafka,
        "TDG_LOG_FORMAT": "json",
    }
    return python_service(tmp, name, "tdg_consent", grpc_port, settings, (bundle_port,))


async def opa_get(http: aiohttp.ClientSession, opa_url: str, path: str) -> Any:
    async with http.get(f"{opa_url}/v1/data/{path}") as response:
        response.raise_for_status()
        return (await response.json()).get("result")


async def wait_registry(opa_url: str, revision: int, timeout_s: float = 120) -> None:
    """Until OPA's data.tdg.registry.revision reaches `revision` (the bundle pulled, activated)."""
    deadline = time.monotonic() + timeout_s
    seen = None
    async with aiohttp.ClientSession() as http:
        while True:
            seen = await opa_get(http, opa_url, "tdg/registry/revision")
            if isinstance(seen, int) and seen >= revision:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"OPA's registry revision is {seen}, not {revision}")
            await asyncio.sleep(0.05)


async def fetch_bundle(bundle_port: int, to: Path) -> int:
    """The registry bundle as OPA pulls it, saved to `to` (for `opa bench`); its size in bytes."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{bundle_port}{BUNDLE_PATH}") as response,
    ):
        response.raise_for_status()
        body = await response.read()
    await asyncio.to_thread(to.write_bytes, body)
    return len(body)
