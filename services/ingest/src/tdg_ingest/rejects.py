"""The dead letters of a dataset as a data officer handles them: listed, read one by one, and
replayed onto the dataset's topic once the cause is fixed. No gRPC here: the servicer translates;
the topic itself is read and written by `tdg_ingest.dlq`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaProducer
from tdg_core.errors import InvalidArgument

from tdg_ingest.dlq import DeadLetter, DeadLetterReader, RejectFilter

MAX_REPLAY = 100_000


class Rejects:
    def __init__(
        self,
        reader: DeadLetterReader,
        replay_producer: Callable[[], Awaitable[AIOKafkaProducer]],
    ) -> None:
        self._reader = reader
        self._replay_producer = replay_producer

    async def list_page(
        self, filter: RejectFilter, page_size: int, page_token: str
    ) -> tuple[list[DeadLetter], str]:
        return await self._reader.list(filter, page_size, page_token)

    async def get(self, reject_id: str, field: str = "id") -> DeadLetter:
        return await self._reader.get(reject_id, field)

    async def replay_ids(self, ids: Sequence[str]) -> int:
        """The named rejects, all of one dataset, back onto its topic; how many were sent."""
        letters = [await self._reader.get(i, f"ids[{n}]") for n, i in enumerate(ids)]
        datasets = {letter.dataset_id for letter in letters}
        if len(datasets) > 1:
            raise InvalidArgument("ids", f"name rejects of one dataset, not {sorted(datasets)}")
        return await self._replay(letters)

    async def replay_matching(self, filter: RejectFilter) -> int:
        """Every reject the filter matches (at most MAX_REPLAY) back onto its topic."""
        return await self._replay(await self._reader.list_all(filter, MAX_REPLAY))

    async def _replay(self, letters: Sequence[DeadLetter]) -> int:
        producer = await self._replay_producer()
        return await self._reader.replay(letters, producer)
