"""What a data officer reads about ingestion: the status of datasets (lag, rate, rows, rejects)
and a producer's delivery indicators against its commitments. No gRPC here: the servicer
translates."""

from __future__ import annotations

import asyncio
from datetime import datetime

from tdg_core.errors import InvalidArgument
from tdg_core.identifiers import check_party_id

from tdg_ingest.datasets import DatasetDirectory
from tdg_ingest.indicator_periods import Indicator
from tdg_ingest.indicators import Indicators
from tdg_ingest.status import DatasetFigures, StatusReader
from tdg_ingest.upkeep import TableUpkeep

PERIODS = ("hour", "day")


class Reports:
    def __init__(
        self,
        directory: DatasetDirectory,
        status: StatusReader,
        indicators: Indicators,
        upkeep: TableUpkeep,
    ) -> None:
        self._directory = directory
        self._status = status
        self._indicators = indicators
        self._upkeep = upkeep

    async def status(self, dataset_id: str, org: str) -> list[DatasetFigures]:
        """The figures of one published dataset, or ("" for dataset_id) of every dataset the
        organisation publishes."""
        if dataset_id:
            entries = [await self._directory.published(dataset_id)]
        else:
            entries = [e for e in self._directory.with_tables() if e.publisher == org]
        return list(await asyncio.gather(*(self._status.figures(e) for e in entries)))

    async def delivery_indicators(
        self,
        dataset_id: str,
        producer: str,
        period: str,
        since: datetime | None,
        until: datetime | None,
    ) -> list[Indicator]:
        """Per producer ("" for all) and period ("" for day) overlapping [since, until), rolled up
        to the last committed snapshot first."""
        entry = await self._directory.published(dataset_id)
        if producer:
            check_party_id(producer, "producer")
        period = period or "day"
        if period not in PERIODS:
            raise InvalidArgument("period", f"must be hour or day, not {period!r}")
        if since and until and since >= until:
            raise InvalidArgument("since", "must be before until")
        await self._upkeep.roll_up([entry.id])
        return await asyncio.to_thread(
            self._indicators.query, entry.id, producer, since, until, period
        )
