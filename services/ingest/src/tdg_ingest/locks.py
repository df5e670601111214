"""One lock per table: commits of this process to a table (a micro-batch, an erasure, a
compaction) take turns, so they do not make each other retry on Iceberg's commit conflicts."""

from __future__ import annotations

import asyncio


class TableLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def of(self, dataset_id: str) -> asyncio.Lock:
        lock = self._locks.get(dataset_id)
        if lock is None:
            lock = self._locks[dataset_id] = asyncio.Lock()
        return lock
