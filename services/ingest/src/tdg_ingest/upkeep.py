"""Upkeep of the dataset tables, the one place that orders it: delivery indicators rolled up, then,
under the table's lock, small files merged and old snapshots expired (`maintenance.compact`).

The order matters: indicators are read from the snapshots' summaries, so they are rolled up before
any snapshot expires; and the table's lock keeps this process's own commits (a micro-batch, an
erasure) from racing the rewrite. The `CompactTable` RPC and the background loop both come here.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import structlog
from tdg_core.background import log_failure
from tdg_core.errors import InvalidArgument
from tdg_lake.failures import LAKE_FAILURES

from tdg_ingest.datasets import DatasetDirectory
from tdg_ingest.indicators import Indicators
from tdg_ingest.locks import TableLocks
from tdg_ingest.maintenance import CompactionResult, compact
from tdg_ingest.warehouse import Warehouse

log = structlog.get_logger("tdg.ingest.upkeep")

DEFAULT_EXPIRE_H = 24
DEFAULT_TARGET_FILE_BYTES = 64 * 1024 * 1024


class TableUpkeep:
    def __init__(
        self,
        directory: DatasetDirectory,
        warehouse: Warehouse,
        indicators: Indicators,
        locks: TableLocks,
    ) -> None:
        self._directory = directory
        self._warehouse = warehouse
        self._indicators = indicators
        self._locks = locks

    async def roll_up(self, dataset_ids: Sequence[str]) -> None:
        """Delivery indicators of the datasets brought up to the last committed snapshot."""
        await asyncio.to_thread(self._indicators.roll_up, dataset_ids)

    async def compact(
        self,
        dataset_ids: Sequence[str],
        target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES,
        expire_older_than: timedelta = timedelta(hours=DEFAULT_EXPIRE_H),
    ) -> list[CompactionResult]:
        """Roll up, then compact each table in turn under its lock; the first failure stops."""
        await self.roll_up(dataset_ids)
        results = []
        for dataset_id in dataset_ids:
            async with self._locks.of(dataset_id):
                results.append(
                    await asyncio.to_thread(
                        compact, self._warehouse, dataset_id, target_file_bytes, expire_older_than
                    )
                )
        return results

    async def compact_table(
        self, dataset_id: str, expire_older_than_h: int, target_file_bytes: int
    ) -> CompactionResult:
        """A data officer's compaction of one published dataset; 0 means the default."""
        entry = await self._directory.published(dataset_id)
        if expire_older_than_h < 0:
            raise InvalidArgument("expire_older_than_h", "must be 0 (default) or more")
        if target_file_bytes < 0:
            raise InvalidArgument("target_file_bytes", "must be 0 (default) or more")
        expire = timedelta(hours=expire_older_than_h or DEFAULT_EXPIRE_H)
        (result,) = await self.compact(
            [entry.id], target_file_bytes or DEFAULT_TARGET_FILE_BYTES, expire
        )
        return result

    async def keep_rolled_up(self, every_s: float) -> None:
        """Roll up every dataset's indicators every `every_s` seconds, forever."""
        await self._every(every_s, self.roll_up, "indicator roll-up failed, will retry")

    async def keep_compacted(self, every_s: float, retention: timedelta) -> None:
        """Compact every dataset's table every `every_s` seconds, expiring snapshots older than
        `retention`, forever."""
        compact = functools.partial(self.compact, expire_older_than=retention)
        await self._every(every_s, compact, "table maintenance failed, will retry")

    async def _every(
        self, every_s: float, work: Callable[[Sequence[str]], Awaitable[object]], failed: str
    ) -> None:
        """`work` on every dataset with a table every `every_s` seconds; a failure is logged and
        the loop goes on."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await work([e.id for e in self._directory.with_tables()])
            except Exception as exc:
                log_failure(log, failed, exc, dependencies=LAKE_FAILURES)
