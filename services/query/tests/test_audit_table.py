"""The audit table on a real (SQLite) Iceberg catalog: exactly-once appends by Kafka offsets, and
the searches a data protection officer runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from tdg.events.v1.query_events_pb2 import QueryAudited
from tdg.query.v1.query_pb2 import AuditRecord, ColumnTreatment
from tdg_core import topics
from tdg_core.events import CloudEvent
from tdg_lake.offsets import StaleOffsets
from tdg_lake.sink import Batch
from tdg_query.audit import audit_event
from tdg_query.audit_table import (
    AUDIT_TABLE,
    OFFSETS_PROPERTY,
    AuditTable,
    decode,
)

DAY = datetime(2025, 3, 10, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")


@pytest.fixture
def table(catalog: Catalog) -> AuditTable:
    return AuditTable(catalog)


def audit(
    query_id: str,
    minutes: float = 0,
    dataset_id: str = "lyon.bike-counters",
    party: str = "acme-mobility",
    purpose: str = "urban-planning",
    agreement_id: str = "agr-1",
) -> AuditRecord:
    record = AuditRecord(
        query_id=query_id,
        party=party,
        org="acme",
        dataset_id=dataset_id,
        snapshot_id=42,
        purpose=purpose,
        agreement_id=agreement_id,
        decision_id="d-" + query_id,
        allowed=True,
        reasons=["agreement agr-1 covers urban-planning"],
        treatments=[
            ColumnTreatment(column="counter_id", treatment="clear"),
            ColumnTreatment(column="email", treatment="hash"),
        ],
        request_json='{"columns":["counter_id"]}',
        row_filters_json='[{"column":"commune","op":"in","values":["69123"]}]',
        consent_required=True,
        consent_revision=7,
        min_group_size=5,
        rows=120,
        bytes=4096,
        duration_ms=35,
        outcome="ok",
        channel="grpc",
    )
    record.time.FromDatetime(DAY + timedelta(minutes=minutes))
    return record


def ids(records: list[AuditRecord]) -> list[str]:
    return [r.query_id for r in records]


def data_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "wh").rglob("*.parquet"))


def test_a_new_table_is_empty(table: AuditTable, catalog: Catalog) -> None:
    assert table.search() == []
    assert table.committed_offsets() == {}
    created = catalog.load_table(AUDIT_TABLE)
    assert [f.name for f in created.spec().fields] == ["time_day"]
    assert created.properties["commit.retry.num-retries"] == "0"


def test_records_come_back_whole_newest_first(table: AuditTable) -> None:
    records = [audit("q1", 0), audit("q2", 10), audit("q3", 5)]
    table.append(records, {0: 0}, {0: 3})
    found = table.search()
    assert ids(found) == ["q2", "q3", "q1"]
    assert found[2] == records[0]  # every field, the map and the lists included


def test_each_filter(table: AuditTable) -> None:
    table.append(
        [
            audit("q1", 0),
            audit("q2", 60, dataset_id="lyon.air-quality"),
            audit("q3", 24 * 60, party="univ-lyon"),
            audit("q4", 2 * 24 * 60, purpose="research"),
            audit("q5", 3 * 24 * 60, agreement_id="agr-2"),
        ],
        {0: 0, 1: 0},
        {0: 3, 1: 2},
    )
    assert ids(table.search(dataset_id="lyon.air-quality")) == ["q2"]
    assert ids(table.search(party="univ-lyon")) == ["q3"]
    assert ids(table.search(purpose="research")) == ["q4"]
    assert ids(table.search(agreement_id="agr-2")) == ["q5"]
    assert ids(table.search(query_id="q1")) == ["q1"]
    assert ids(table.search(dataset_id="lyon.bike-counters", party="acme-mobility")) == [
        "q5",
        "q4",
        "q1",
    ]
    # [since, until), across the day partitions
    assert ids(table.search(since=DAY + timedelta(minutes=60))) == ["q5", "q4", "q3", "q2"]
    assert ids(table.search(until=DAY + timedelta(minutes=60))) == ["q1"]
    assert ids(table.search(since=DAY + timedelta(days=1), until=DAY + timedelta(days=3))) == [
        "q4",
        "q3",
    ]
    # naive datetimes are UTC
    assert ids(table.search(since=datetime(2025, 3, 13))) == ["q5"]
    assert table.search(dataset_id="nobody.nothing") == []
    assert table.search(party="acme-mobility", purpose="research", agreement_id="agr-2") == []


def test_limit_keeps_the_newest_across_batches(table: AuditTable) -> None:
    for batch in range(3):
        records = [audit(f"q{batch}-{i}", batch * 100 + i) for i in range(4)]
        table.append(records, {0: batch * 4}, {0: batch * 4 + 4})
    assert ids(table.search(limit=3)) == ["q2-3", "q2-2", "q2-1"]
    assert len(table.search(limit=0)) == 12  # the default, 100


def test_a_record_stored_twice_is_found_once(table: AuditTable) -> None:
    table.append([audit("q1", 0), audit("q2", 1)], {0: 0}, {0: 2})
    table.append([audit("q1", 0)], {0: 2}, {0: 3})  # sent twice by the query service
    assert ids(table.search()) == ["q2", "q1"]
    assert ids(table.search(limit=1)) == ["q2"]


def test_a_second_append_continues_the_offsets(table: AuditTable) -> None:
    table.append([audit("q1")], {0: 0}, {0: 1})
    table.append([audit("q2", 1)], {0: 1, 2: 7}, {0: 2, 2: 8})
    assert table.committed_offsets() == {0: 2, 2: 8}
    # A partition not in the batch keeps its offset.
    table.append([audit("q3", 2)], {1: 0}, {1: 1})
    assert table.committed_offsets() == {0: 2, 1: 1, 2: 8}
    assert ids(table.search()) == ["q3", "q2", "q1"]


def test_an_empty_batch_moves_the_offsets(table: AuditTable) -> None:
    table.append([audit("q1")], {0: 0}, {0: 1})
    table.append([], {0: 1}, {0: 4})  # only malformed messages
    assert table.committed_offsets() == {0: 4}
    assert ids(table.search()) == ["q1"]


def test_stale_start_offsets_are_refused(
    table: AuditTable, catalog: Catalog, tmp_path: Path
) -> None:
    other = AuditTable(catalog)  # another replica of the sink, same table
    table.append([audit("q1"), audit("q2", 1)], {0: 0}, {0: 2})
    files = data_files(tmp_path)
    with pytest.raises(StaleOffsets) as refused:
        other.append([audit("q1"), audit("q2", 1)], {0: 0}, {0: 2})
    assert refused.value.committed == {0: 2}
    # Also a start past the table (a batch that would skip records).
    with pytest.raises(StaleOffsets):
        other.append([audit("q3", 2)], {0: 3}, {0: 4})
    assert data_files(tmp_path) == files  # the refused batches left no file behind
    assert ids(table.search()) == ["q2", "q1"]
    assert table.committed_offsets() == {0: 2}
    other.append([audit("q3", 2)], {0: 2}, {0: 3})
    assert ids(table.search()) == ["q3", "q2", "q1"]


def test_offsets_are_read_past_snapshots_without_them(table: AuditTable) -> None:
    table.append([audit("q1")], {0: 0}, {0: 1})
    iceberg = table.table()
    with iceberg.transaction() as tx:  # e.g. upkeep: no offsets in its summary
        tx.set_properties({"comment": "query audit"})
    iceberg.append(
        table.table().scan().to_arrow().slice(0, 0), snapshot_properties={"maintenance": "1"}
    )
    snapshot = table.table().current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.get(OFFSETS_PROPERTY) is None
    assert table.committed_offsets() == {0: 1}


# --- decoding the topic's messages ----------------------------------------------------------


class Message:
    """Stands in for aiokafka's ConsumerRecord."""

    def __init__(
        self, offset: int, value: bytes, headers: list[tuple[str, bytes]], partition: int = 0
    ) -> None:
        self.topic = topics.AUDIT
        self.partition = partition
        self.offset = offset
        self.value = value
        self.headers = headers


def message(offset: int, record: AuditRecord, partition: int = 0) -> Message:
    event = audit_event(record)
    return Message(offset, event.data, event.headers(), partition)


def test_messages_that_are_not_query_audited_events_are_skipped() -> None:
    other = CloudEvent.of(AuditRecord(query_id="x"), "someone")  # a CloudEvent of another type
    untimed = AuditRecord(query_id="q9")
    batch = Batch(topics.AUDIT, decode)
    batch.add(
        [
            message(0, audit("q1")),
            Message(1, b"not protobuf", []),
            Message(2, other.data, other.headers()),
            Message(3, b"\xff\xff", audit_event(audit("q2")).headers()),
            message(4, untimed),
        ]
    )
    assert ids(batch.records) == ["q1", "q9"]
    assert batch.records[1].HasField("time")  # from the CloudEvent's time
    assert batch.messages == 5
    assert batch.ends() == {0: 5}


def test_a_batch_never_holds_a_message_twice() -> None:
    batch = Batch(topics.AUDIT, decode)
    batch.add([message(0, audit("q1")), message(1, audit("q2"))])
    batch.add([message(1, audit("q2")), message(2, audit("q3"))])
    batch.add([message(5, audit("q4"), partition=1)])
    assert ids(batch.records) == ["q1", "q2", "q3", "q4"]
    assert batch.ends() == {0: 3, 1: 6}


def test_decode_reads_the_record() -> None:
    record = audit("q1")
    decoded = decode(message(0, record))
    assert decoded == record
    assert QueryAudited(record=decoded).record == record
