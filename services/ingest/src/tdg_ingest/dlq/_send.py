"""Dead letters onto the topic, and rejects replayed onto their dataset's topic: every record
queued, then every acknowledgement awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tdg_core import topics
from tdg_core.errors import Unavailable

from tdg_ingest.contract import H_PRODUCER, H_REPLAY_OF
from tdg_ingest.dlq._letter import DeadLetter, encode

Outgoing = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


async def send_all(producer: AIOKafkaProducer, outgoing: Sequence[Outgoing], what: str) -> None:
    """Queue every record, then await every acknowledgement: one batch, not a round trip each."""
    futures: list[asyncio.Future[Any]] = []
    try:
        for topic, key, value, headers in outgoing:
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
    except KafkaError as exc:
        await asyncio.gather(*futures, return_exceptions=True)  # no unretrieved exceptions
        raise Unavailable(f"cannot send {what}: {exc}") from exc
    results = await asyncio.gather(*futures, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise Unavailable(
            f"{len(failures)} of {len(futures)} {what} not acknowledged: {failures[0]}"
        ) from failures[0]


class DeadLetterWriter:
    """Sends the rejects of a batch; the caller commits its offsets only once this returned."""

    def __init__(self, producer: AIOKafkaProducer, topic: str = topics.INGEST_DLQ) -> None:
        self._producer = producer
        self._topic = topic

    async def send_all(self, letters: Sequence[DeadLetter]) -> None:
        """Raises Unavailable unless every letter was acknowledged."""
        outgoing = []
        for letter in letters:
            key, headers = encode(letter)
            outgoing.append((self._topic, key, letter.value, headers))
        await send_all(self._producer, outgoing, "dead letters")


def replayed(letter: DeadLetter) -> Outgoing:
    headers = [(k, v) for k, v in letter.extra_headers if k not in (H_PRODUCER, H_REPLAY_OF)]
    if letter.producer:
        headers.append((H_PRODUCER, letter.producer.encode()))
    if letter.id:
        headers.append((H_REPLAY_OF, letter.id.encode()))
    return letter.source_topic, letter.source_key, letter.value, headers
