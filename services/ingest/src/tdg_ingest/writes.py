"""Who may write to a dataset: OPA's `tdg.write` decision per (producer, dataset), reused briefly.

A batch of thousands of records from one producer costs one decision, not thousands. Decisions are
forgotten after `ttl_s`, and at once when anything changes in the consent registry (an agreement
revoked, a party suspended): a follower of tdg.consent.events clears the cache on every event.
OPA unreachable raises Unavailable: the records wait, they are never dead-lettered for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.topic_reader import TopicReader


@dataclass(frozen=True)
class WriteDecision:
    allow: bool
    reasons: tuple[str, ...] = ()
    agreement_id: str = ""
    commitments: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, answer: dict[str, Any]) -> WriteDecision:
        commitments = answer.get("commitments") or {}
        return cls(
            allow=answer.get("allow") is True,
            reasons=tuple(str(r) for r in answer.get("reasons") or ()),
            agreement_id=str(answer.get("agreement_id") or ""),
            commitments={k: float(v) for k, v in commitments.items() if isinstance(v, int | float)},
        )


class WritePermissions:
    def __init__(
        self, policy: PolicyClient, ttl_s: float, bootstrap: str = "", consent_topic: str = ""
    ) -> None:
        self._policy = policy
        self._ttl_s = ttl_s
        self._cache: dict[tuple[str, str, str], tuple[float, WriteDecision]] = {}
        # Every replica sees every event; decisions taken before it was watching may be stale.
        self._reader = (
            TopicReader(
                bootstrap,
                consent_topic,
                "tdg-ingest-consent",
                self._no_positions,
                self._follow,
                from_end=True,
                on_connect=self.invalidate,
            )
            if consent_topic
            else None
        )

    async def decide(
        self, party: str, dataset: dict[str, str], org: str = "", roles: tuple[str, ...] = ()
    ) -> WriteDecision:
        key = (party, org, f"{dataset['id']}|{dataset['status']}")
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        answer = await self._policy.decide(
            DecisionPath.WRITE,
            {"subject": {"party": party, "org": org, "roles": list(roles)}, "dataset": dataset},
        )
        decision = WriteDecision.of(answer)
        self._cache[key] = (now, decision)
        return decision

    def invalidate(self) -> None:
        self._cache.clear()

    async def _no_positions(self) -> dict[int, int]:
        return {}

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        """Clear the cache on every consent event from now on."""
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            if any(batches.values()):
                self.invalidate()

    def start(self) -> None:
        if self._reader is not None:
            self._reader.start()

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
