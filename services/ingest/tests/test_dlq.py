"""The dead-letter topic on a real broker: what a data officer lists, reads and replays."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp
from tdg.ingest.v1 import ingest_pb2 as ipb
from tdg_core import topics
from tdg_core.errors import FailedPrecondition, InvalidArgument, NotFound
from tdg_core.events import TopicSpec, ensure_topics
from tdg_core.testing import KafkaBroker
from tdg_ingest.convert import reject_filter_from_pb as filter_from_proto
from tdg_ingest.convert import reject_to_pb as to_proto
from tdg_ingest.dlq import DeadLetter, DeadLetterReader, DeadLetterWriter, RejectFilter, encode

NOT_UTF8 = b"\xff\xfe\x00{\xc3\x28 broken"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def letter(n: int = 0, **fields: object) -> DeadLetter:
    base = DeadLetter(
        dataset_id="metropole-lyon.bike-counters",
        source_topic=topics.dataset_topic("metropole-lyon.bike-counters"),
        source_partition=n % 2,
        source_offset=100 + n,
        producer="velo-partner",
        category="schema",
        code="type_mismatch",
        message=f"field 'count': expected int32, got \"twelve\" (#{n})",
        value=b'{"count": "twelve", "n": %d}' % n,
        source_key=b"counter-%d" % n,
        schema_version=3,
        rejected_at=T0 + timedelta(minutes=n),
        extra_headers=(("tdg-producer-org", b"velo-partner-sas"), ("x-trace", b"abc")),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def producer(kafka: KafkaBroker) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    yield p
    await p.stop()


async def new_topic(kafka: KafkaBroker, name: str = "", partitions: int = 3) -> str:
    name = name or f"tdg.test.dlq-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka.bootstrap, [TopicSpec(name, partitions=partitions)])
    return name


async def read_topic(bootstrap: str, topic: str, expected: int) -> list[object]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning(TopicPartition(topic, 0))
        records: list[object] = []
        while len(records) < expected:
            batches = await consumer.getmany(timeout_ms=10_000)
            if not batches:
                break
            records += [r for rs in batches.values() for r in rs]
        return records
    finally:
        await consumer.stop()


async def list_everything(reader: DeadLetterReader, f: RejectFilter | None = None) -> list[str]:
    letters, token = await reader.list(f, page_size=1000)
    assert token == ""
    return [x.message for x in letters]


# --- against the broker ------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_rejected_record_comes_back_byte_for_byte(
    kafka: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(kafka)
    sent = [
        letter(0, value=NOT_UTF8, source_key=b"\x00\xff"),
        letter(1, value=b"", source_key=None, producer=""),
        letter(2),
    ]
    await DeadLetterWriter(producer, topic).send_all(sent)

    got, token = await DeadLetterReader(kafka.bootstrap, topic).list()

    assert token == ""
    by_offset = {g.source_offset: g for g in got}
    assert sorted(by_offset) == [100, 101, 102]
    for original in sent:
        back = by_offset[original.source_offset]
        assert back.id.count(":") == 1
        assert replace(back, id="") == original
    assert by_offset[100].value == NOT_UTF8 and by_offset[100].source_key == b"\x00\xff"
    assert by_offset[101].value == b"" and by_offset[101].source_key is None


@pytest.mark.integration
async def test_the_dead_letter_carries_its_reason_in_headers(
    kafka: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(kafka, partitions=1)
    rejected = letter(7, extra_headers=(("tdg-producer-org", b"org"), ("tdg-dataset", b"forged")))
    await DeadLetterWriter(producer, topic).send_all([rejected])

    (record,) = await read_topic(kafka.bootstrap, topic, expected=1)

    assert record.key == b"tdg.ingest.metropole-lyon.bike-counters/1/107"  # type: ignore[attr-defined]
    headers = dict(record.headers)  # type: ignore[attr-defined]
    assert len(record.headers) == len(headers), "no header twice"  # type: ignore[attr-defined]
    assert headers == {
        "tdg-dataset": b"metropole-lyon.bike-counters",
        "tdg-source-topic": b"tdg.ingest.metropole-lyon.bike-counters",
        "tdg-source-partition": b"1",
        "tdg-source-offset": b"107",
        "tdg-source-key": b"counter-7",
        "tdg-producer": b"velo-partner",
        "tdg-reason-category": b"schema",
        "tdg-reason-code": b"type_mismatch",
        "tdg-reason-message": rejected.message.encode(),
        "tdg-schema-version": b"3",
        "tdg-rejected-at": b"2025-03-01T08:07:00+00:00",
        "tdg-producer-org": b"org",
    }


@pytest.mark.integration
async def test_a_reject_sent_again_after_a_crash_is_listed_once(
    kafka: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(kafka)
    writer = DeadLetterWriter(producer, topic)
    batch = [letter(n) for n in range(4)]
    await writer.send_all(batch)
    # The worker died before its snapshot: the same records are rejected again, later.
    await writer.send_all(
        [replace(x, rejected_at=x.rejected_at + timedelta(hours=1)) for x in batch]
    )

    got, _ = await DeadLetterReader(kafka.bootstrap, topic).list()

    assert sorted(g.source_offset for g in got) == [100, 101, 102, 103]
    assert all(g.rejected_at < T0 + timedelta(hours=1) for g in got), "the first copy is kept"


@pytest.mark.integration
async def test_filters_narrow_the_list(kafka: KafkaBroker, producer: AIOKafkaProducer) -> None:
    topic = await new_topic(kafka)
    other = "grand-est.air-quality"
    await DeadLetterWriter(producer, topic).send_all(
        [
            letter(0, message="a"),
            letter(1, message="b", category="format", code="invalid_json"),
            letter(2, message="c", producer="other-partner"),
            letter(3, message="d", dataset_id=other, source_topic=topics.dataset_topic(other)),
            letter(4, message="e", category="policy", code="write_denied"),
        ]
    )
    reader = DeadLetterReader(kafka.bootstrap, topic)

    assert sorted(await list_everything(reader)) == ["a", "b", "c", "d", "e"]
    assert await list_everything(reader, RejectFilter(dataset_id=other)) == ["d"]
    assert await list_everything(reader, RejectFilter(category="format")) == ["b"]
    assert await list_everything(reader, RejectFilter(code="write_denied")) == ["e"]
    assert await list_everything(reader, RejectFilter(producer="other-partner")) == ["c"]
    since = RejectFilter(since=T0 + timedelta(minutes=3))
    assert sorted(await list_everything(reader, since)) == ["d", "e"]
    both = RejectFilter(dataset_id="metropole-lyon.bike-counters", category="schema")
    assert sorted(await list_everything(reader, both)) == ["a", "c"]
    assert [x.message for x in await reader.list_all(RejectFilter(code="write_denied"))] == ["e"]
    with pytest.raises(FailedPrecondition):
        await reader.list_all(limit=4)


@pytest.mark.integration
async def test_pages_walk_every_partition_oldest_first(
    kafka: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(kafka, partitions=3)
    writer = DeadLetterWriter(producer, topic)
    sent = [letter(n, message=str(n)) for n in range(7)]
    for one in sent:  # one at a time, so that each has a later timestamp than the one before
        await writer.send_all([one])
        await asyncio.sleep(0.005)
    reader = DeadLetterReader(kafka.bootstrap, topic)

    first, token = await reader.list(page_size=3)
    # A copy of a letter of the first page arrives between pages: still listed once.
    await writer.send_all([sent[0]])
    second, token2 = await reader.list(page_size=3, page_token=token)
    third, token3 = await reader.list(page_size=3, page_token=token2)

    assert [len(first), len(second), len(third)] == [3, 3, 1]
    assert token and token2 and token3 == ""
    pages = first + second + third
    assert [p.message for p in pages] == [str(n) for n in range(7)]
    assert len({p.id.split(":")[0] for p in pages}) > 1, "spread over partitions"


@pytest.mark.integration
async def test_a_page_token_belongs_to_its_filter(
    kafka: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(kafka)
    await DeadLetterWriter(producer, topic).send_all([letter(n) for n in range(3)])
    reader = DeadLetterReader(kafka.bootstrap, topic)
    _, token = await reader.list(RejectFilter(category="schema"), page_size=1)

    with pytest.raises(InvalidArgument) as err:
        await reader.list(RejectFilter(category="format"), page_size=1, page_token=token)
    assert err.value.field == "page_token"


@pytest.mark.integration
async def test_a_reject_is_read_by_its_id(kafka: KafkaBroker, producer: AIOKafkaProducer) -> None:
    topic = await new_topic(kafka, partitions=2)
    await DeadLetterWriter(producer, topic).send_all([letter(n) for n in range(3)])
    reader = DeadLetterReader(kafka.bootstrap, topic)
    listed, _ = await reader.list()

    for one in listed:
        assert await reader.get(one.id) == one
    for missing in ("0:999999", "7:0"):
        with pytest.raises(NotFound):
            await reader.get(missing)
    with pytest.raises(InvalidArgument) as err:
        await reader.get("zero:1")
    assert err.value.field == "id"


@pytest.mark.integration
async def test_replay_puts_the_record_back_as_it_arrived(
    kafka: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    dataset = f"test-pub.replay-{uuid.uuid4().hex[:8]}"
    source = await new_topic(kafka, topics.dataset_topic(dataset), partitions=1)
    dlq = await new_topic(kafka)
    rejected = letter(0, dataset_id=dataset, source_topic=source, value=NOT_UTF8)
    await DeadLetterWriter(producer, dlq).send_all([rejected])
    reader = DeadLetterReader(kafka.bootstrap, dlq)
    (listed,), _ = await reader.list()

    assert await reader.replay([listed, listed], producer) == 1

    (record,) = await read_topic(kafka.bootstrap, source, expected=1)
    assert record.value == NOT_UTF8  # type: ignore[attr-defined]
    assert record.key == b"counter-0"  # type: ignore[attr-defined]
    assert sorted(record.headers) == [  # type: ignore[attr-defined]
        ("tdg-producer", b"velo-partner"),
        ("tdg-producer-org", b"velo-partner-sas"),
        ("tdg-replay-of", listed.id.encode()),
        ("x-trace", b"abc"),
    ]


@pytest.mark.integration
async def test_a_foreign_message_is_listed_not_fatal(
    kafka: KafkaBroker, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(kafka)
    await producer.send_and_wait(topic, b"not ours", headers=[("x-tool", b"1")])
    await producer.send_and_wait(
        topic,
        b"odd",
        key=b"k",
        headers=[("tdg-source-partition", b"two"), ("tdg-rejected-at", b"?")],
    )
    await DeadLetterWriter(producer, topic).send_all([letter(0)])
    reader = DeadLetterReader(kafka.bootstrap, topic)

    got, _ = await reader.list()

    assert len(got) == 3
    foreign = next(g for g in got if g.value == b"not ours")
    assert (foreign.dataset_id, foreign.source_partition, foreign.category) == ("", -1, "")
    assert foreign.extra_headers == (("x-tool", b"1"),)
    odd = next(g for g in got if g.value == b"odd")
    assert odd.source_partition == -1 and odd.rejected_at.year >= 2025
    only_ours, _ = await reader.list(RejectFilter(dataset_id="metropole-lyon.bike-counters"))
    assert [g.source_offset for g in only_ours] == [100]
    with pytest.raises(FailedPrecondition):
        await reader.replay([foreign], producer)


@pytest.mark.integration
async def test_a_topic_not_created_yet_has_no_rejects(kafka: KafkaBroker) -> None:
    reader = DeadLetterReader(kafka.bootstrap, f"tdg.test.none-{uuid.uuid4().hex[:8]}")
    assert await reader.list() == ([], "")


# --- pure --------------------------------------------------------------------------------------


def test_a_long_message_is_cut_and_our_headers_are_not_duplicated() -> None:
    long = letter(0, message="x" * 5000, extra_headers=(("tdg-reason-code", b"forged"),))
    key, headers = encode(long)
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))
    assert len(dict(headers)["tdg-reason-message"].decode()) == 1000
    assert dict(headers)["tdg-reason-code"] == b"type_mismatch"
    assert key == b"tdg.ingest.metropole-lyon.bike-counters/0/100"


@pytest.mark.parametrize(
    ("proto", "field"),
    [
        (ipb.RejectFilter(category="typo"), "filter.category"),
        (ipb.RejectFilter(dataset_id="no-dot"), "filter.dataset_id"),
        (ipb.RejectFilter(producer="Bad Party"), "filter.producer"),
        (ipb.RejectFilter(code="has space"), "filter.code"),
    ],
)
def test_a_malformed_filter_names_its_field(proto: ipb.RejectFilter, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        filter_from_proto(proto)
    assert err.value.field == field


def test_filter_and_reject_protos_translate() -> None:
    since = Timestamp()
    since.FromDatetime(T0)
    proto = ipb.RejectFilter(dataset_id="a.b", category="policy", producer="p", since=since)
    assert filter_from_proto(proto) == RejectFilter("a.b", "policy", "", "p", T0)
    assert filter_from_proto(ipb.RejectFilter()) == RejectFilter()

    reject = to_proto(letter(1, id="2:9"))
    assert (reject.id, reject.source_partition, reject.source_offset) == ("2:9", 1, 101)
    assert reject.reason.code == "type_mismatch" and reject.value.startswith(b'{"count"')
    assert reject.rejected_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("size", "token", "field"), [(-1, "", "page_size"), (0, "!!", "page_token")]
)
async def test_bad_paging_is_refused_before_reading(size: int, token: str, field: str) -> None:
    reader = DeadLetterReader("127.0.0.1:1", "unused")
    with pytest.raises(InvalidArgument) as err:
        await reader.list(page_size=size, page_token=token)
    assert err.value.field == field
