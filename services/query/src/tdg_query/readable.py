"""Which datasets a caller may read, and for which purposes (ListReadable, Flight ListFlights).

OPA decides, as for a query: `tdg.read` with no columns, for each catalogued dataset and each
purpose asked about (the one given, else every purpose of the territory's vocabulary).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg_core.auth import Principal
from tdg_core.catalog_view import CatalogView
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input

from tdg_query.engine import Entry

# Decisions asked at once: OPA answers each in about a millisecond.
CONCURRENCY = 16


@dataclass(frozen=True)
class ReadableDataset:
    dataset_id: str
    title: str
    purposes: list[str]


class Readable:
    def __init__(self, datasets: CatalogView[Entry], policy: PolicyClient) -> None:
        self._datasets = datasets
        self._policy = policy

    async def purposes(self) -> list[str]:
        settings = await self._policy.decide(DecisionPath.REGISTRY_SETTINGS, {})
        found = settings.get("purposes", [])
        return sorted(p for p in found if isinstance(p, str)) if isinstance(found, list) else []

    async def datasets(self, principal: Principal, purpose: str = "") -> list[ReadableDataset]:
        purposes = [purpose] if purpose else await self.purposes()
        entries = [
            e
            for e in self._datasets.entries()
            if e.dataset.status != cpb.DATASET_STATUS_DRAFT or e.dataset.publisher == principal.org
        ]
        gate = asyncio.Semaphore(CONCURRENCY)
        subject = principal.as_policy_input()

        async def allowed(dataset: cpb.Dataset, p: str) -> bool:
            async with gate:
                decision = await self._policy.decide(
                    DecisionPath.READ, read_input(dataset, subject, p)
                )
            return decision.get("allow") is True

        pairs = [(e.dataset, p) for e in entries for p in purposes]
        answers = await asyncio.gather(*(allowed(d, p) for d, p in pairs))
        found: dict[str, ReadableDataset] = {}
        for (dataset, p), ok in zip(pairs, answers, strict=True):
            if ok:
                item = found.setdefault(
                    dataset.id, ReadableDataset(dataset.id, dataset.metadata.title, [])
                )
                item.purposes.append(p)
        return sorted(found.values(), key=lambda d: d.dataset_id)
