"""The table sink's pure parts: what a batch holds, where it ends, when it is due, how long a
failed one waits. The loop itself runs on a real broker in the services' tests
(services/ingest/tests/test_worker.py, services/query/tests/test_audit.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from tdg_lake.sink import Batch, BatchBounds, backoff_s


@dataclass
class Message:
    """Stands in for aiokafka's ConsumerRecord."""

    partition: int
    offset: int
    value: bytes | None = b"0123456789"
    topic: str = "tdg.ingest.lyon.readings"


def messages(partition: int, first: int, last: int) -> list[Message]:
    return [Message(partition, o) for o in range(first, last + 1)]


def test_a_batch_holds_each_message_once_and_ends_past_the_last() -> None:
    batch: Batch[Message] = Batch("t")
    batch.add(messages(0, 0, 2))
    batch.add(messages(0, 1, 4))  # a seek back fetches 1-2 again
    batch.add(messages(1, 7, 7))
    batch.add([])
    assert [(m.partition, m.offset) for m in batch.records] == [
        *((0, o) for o in range(5)),
        (1, 7),
    ]
    assert batch.messages == 6
    assert batch.nbytes == 60
    assert batch.ends() == {0: 5, 1: 8}


def test_a_batch_of_nothing_new_is_unchanged() -> None:
    batch: Batch[Message] = Batch("t")
    batch.add(messages(0, 0, 2))
    opened = batch.opened
    batch.add(messages(0, 0, 2))
    assert (batch.messages, batch.ends(), batch.opened) == (3, {0: 3}, opened)


def test_decode_keeps_what_it_makes_and_counts_every_message() -> None:
    batch: Batch[int] = Batch("t", decode=lambda m: None if m.offset % 2 else m.offset * 10)
    batch.add(messages(0, 0, 5))
    assert batch.records == [0, 20, 40]
    assert batch.messages == 6
    assert batch.ends() == {0: 6}  # the skipped messages are committed past too


def test_a_message_without_value_counts_no_bytes() -> None:
    batch: Batch[Message] = Batch("t")
    batch.add([Message(0, 0, None)])
    assert (batch.messages, batch.nbytes) == (1, 0)


@pytest.mark.parametrize(
    ("count", "nbytes", "age_s", "due"),
    [
        (9, 0, 0.0, False),
        (10, 0, 0.0, True),  # records
        (1, 1000, 0.0, True),  # bytes
        (1, 999, 0.0, False),
        (1, 0, 2.0, True),  # age
        (1, 0, 1.99, False),
    ],
)
def test_a_batch_is_due_at_its_first_bound(
    count: int, nbytes: int, age_s: float, due: bool
) -> None:
    batch: Batch[Message] = Batch("t", messages=count, nbytes=nbytes, opened=100.0)
    assert batch.due(BatchBounds(records=10, bytes=1000, wait_s=2.0), now=100.0 + age_s) is due


def test_without_a_bytes_bound_size_never_makes_a_batch_due() -> None:
    batch: Batch[Message] = Batch("t", messages=1, nbytes=10**12, opened=100.0)
    assert not batch.due(BatchBounds(records=10, bytes=None, wait_s=2.0), now=100.0)


def test_a_batch_opens_when_its_first_message_arrives() -> None:
    batch: Batch[Message] = Batch("t", opened=0.0)
    batch.add(messages(0, 0, 0))
    assert batch.opened > 0.0
    assert not batch.due(BatchBounds(records=10, wait_s=60.0), now=batch.opened + 1)


def test_failed_batches_wait_longer_each_time_up_to_five_seconds() -> None:
    waits = [backoff_s(n) for n in range(1, 8)]
    assert waits[:3] == [0.4, 0.8, 1.6]
    assert waits == sorted(waits)
    assert max(waits) == 5.0
