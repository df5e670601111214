"""The OPA client: one decision per call, under a deadline, failing closed.

Services never decide access in Python; they ask OPA and apply the typed answer. Any failure
(OPA down, timeout, error status, undefined decision) raises Unavailable, which callers turn into a
deny with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opa_client import AsyncOpaClient

from tdg_core.errors import Unavailable


class DecisionPath(StrEnum):
    """Every OPA document a service asks for, spelled once (`policies/tdg/<package>/`)."""

    RPC = "tdg/rpc/decision"  # may this caller make this call?
    READ = "tdg/read/decision"  # the query decision: treatments, row filters, consent, k
    WRITE = "tdg/write/decision"  # may this party produce to this dataset?
    REGISTRY_SETTINGS = "tdg/registry/settings"  # the registry's settings (no secrets)

    @property
    def package(self) -> str:
        return self.value.rpartition("/")[0]

    @property
    def rule(self) -> str:
        return self.value.rpartition("/")[2]


class PolicyClient:
    """Asks OPA for decisions documents (`POST /v1/data/<package>/<rule>`)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self._url = url
        self._timeout_s = timeout_s
        # Retries are ours to decide (none: the deadline is the policy); the client's own
        # timeout is only a backstop.
        self._client = AsyncOpaClient(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 8181,
            ssl=parts.scheme == "https",
            retries=0,
            timeout=timeout_s * 2,
        )
        self._opened = False

    async def _ensure_open(self) -> None:
        if not self._opened:
            await self._client.__aenter__()
            self._opened = True

    async def decide(self, path: DecisionPath, input_data: dict[str, Any]) -> dict[str, Any]:
        """The decision document, or Unavailable when OPA cannot give one in time."""
        result, _ = await self.decide_with_id(path, input_data)
        return result

    async def decide_with_id(
        self, path: DecisionPath, input_data: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """The decision document and OPA's decision id ("" unless OPA's decision logging is on),
        which ties an audit record to OPA's own log of the decision."""
        await self._ensure_open()
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._client.query_rule(input_data, path.package, path.rule)
        except TimeoutError as exc:
            raise Unavailable(
                f"policy engine at {self._url} did not answer within {self._timeout_s}s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"policy engine at {self._url} unreachable: {exc}") from exc
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict):
            raise Unavailable(
                f"policy {path.package}.{path.rule} is undefined in the policy engine"
            )
        decision_id = answer.get("decision_id", "") if isinstance(answer, dict) else ""
        return result, str(decision_id or "")

    async def healthy(self) -> bool:
        await self._ensure_open()
        try:
            async with asyncio.timeout(self._timeout_s):
                return bool(await self._client.check_health())
        except TimeoutError:
            return False

    async def close(self) -> None:
        if self._opened:
            await self._client.close_connection()
            self._opened = False
