"""`tdg ingest …`: files turned into Publish messages (JSON lines byte for byte, CSV and Parquet as
bounded Arrow IPC streams), bad options refused with exit 2 naming them before any call, the
dead-letter filters, the indicators table, and (against an in-process fake service) what a user
sees of a send, a reject list, a replay. The real ingest service is tested in tests/integration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from tdg.ingest.v1 import ingest_pb2 as pb
from tdg.ingest.v1 import ingest_pb2_grpc
from tdg_cli.client import Service
from tdg_cli.ingest import (
    NOT_PROMISED,
    duration,
    indicator_table,
    indicators_request,
    ingest_app,
)
from tdg_cli.ingest_dlq import (
    describe_replay,
    dlq_app,
    hex_dump,
    reject_filter,
    replay_request,
    value_text,
)
from tdg_cli.ingest_send import (
    CsvFile,
    JsonLinesFile,
    ParquetFile,
    Reading,
    file_format,
    publish_requests,
)
from tdg_cli.vocabulary import OptionError
from typer.testing import CliRunner

runner = CliRunner()

JSONL = (
    b'{"counter_id": "c1", "count": 12}\n'
    b"\n"
    b'{ "count" : 1e3,"counter_id":"c2" }\r\n'
    b"   \n"
    b'{"commune": "Saint-\xc3\x89tienne", "note": "caf\\u00e9"}\n'
    b'{"truncated": \n'
    b'{"last": "no newline at the end"}'
)


def _flat(text: str) -> str:
    """The output without rich's box drawing and line breaks."""
    return " ".join(text.replace("│", " ").split())


def _ts(text: str) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(text))
    return ts


def _table(n: int) -> pa.Table:
    return pa.table(
        {
            "counter_id": pa.array([f"c{i % 7}" for i in range(n)]),
            "count": pa.array(range(n), pa.int64()),
            "comment": pa.array([f"passage {i} " * 8 for i in range(n)]),
        }
    )


def _decoded(payloads: list[bytes]) -> pa.Table:
    return pa.concat_tables([pa.ipc.open_stream(p).read_all() for p in payloads])


# --- JSON lines --------------------------------------------------------------------------------


def test_json_lines_go_byte_for_byte_without_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "counts.jsonl"
    path.write_bytes(JSONL)
    source = JsonLinesFile(path)
    chunks = list(source.chunks(batch_rows=5000))
    records = [r for c in chunks for r in c.json]
    assert records == [
        b'{"counter_id": "c1", "count": 12}',
        b'{ "count" : 1e3,"counter_id":"c2" }',
        b'{"commune": "Saint-\xc3\x89tienne", "note": "caf\\u00e9"}',
        b'{"truncated": ',  # not ours to judge: the service refuses it with its index
        b'{"last": "no newline at the end"}',
    ]
    assert chunks[-1].position == len(JSONL)
    # Blank lines are no records: an index from the service names the line it came from.
    assert [source.where(i) for i in range(5)] == [
        "line 1",
        "line 3",
        "line 5",
        "line 6",
        "line 7",
    ]


def test_json_lines_are_grouped_by_count_and_by_bytes() -> None:
    lines = [b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * 100) for i in range(25)]
    by_count = list(JsonLinesFile(Path("-")).chunks_of(lines, batch_rows=10))
    assert [c.records for c in by_count] == [10, 10, 5]
    by_bytes = list(JsonLinesFile(Path("-")).chunks_of(lines, batch_rows=1000, max_bytes=600))
    assert all(sum(len(r) + 6 for r in c.json) <= 600 for c in by_bytes)
    assert [r for c in by_bytes for r in c.json] == [line.rstrip(b"\n") for line in lines]
    # A record over the bound still goes, alone.
    huge = [b"1\n", b'"' + b"y" * 1000 + b'"\n', b"2\n"]
    assert [c.records for c in JsonLinesFile(Path("-")).chunks_of(huge, 10, 600)] == [1, 1, 1]


def test_the_first_message_names_the_dataset_and_carries_the_records(tmp_path: Path) -> None:
    path = tmp_path / "counts.jsonl"
    path.write_bytes(JSONL)
    requests = list(publish_requests("lyon.counts", JsonLinesFile(path).chunks(batch_rows=2)))
    assert [r.dataset_id for r in requests] == ["lyon.counts", "", ""]
    assert [r.WhichOneof("payload") for r in requests] == ["json"] * 3
    assert [len(r.json.records) for r in requests] == [2, 2, 1]
    assert requests[1].json.records[0].decode("utf-8").startswith('{"commune": "Saint-É')


# --- CSV and Parquet ---------------------------------------------------------------------------


def test_csv_arrives_as_arrow_batches_holding_the_files_rows(tmp_path: Path) -> None:
    table = _table(2000)
    path = tmp_path / "counts.csv"
    pa_csv.write_csv(table, path)
    chunks = list(CsvFile(path).chunks(batch_rows=300, max_bytes=20_000))
    assert all(len(c.arrow_ipc) <= 20_000 for c in chunks)
    assert all(c.records <= 300 for c in chunks)
    assert sum(c.records for c in chunks) == 2000
    assert _decoded([c.arrow_ipc for c in chunks]).equals(table)
    assert chunks[-1].position == path.stat().st_size


def test_parquet_arrives_as_arrow_batches_holding_the_files_rows(tmp_path: Path) -> None:
    table = _table(5000).append_column(
        "ts", pa.array([datetime(2026, 3, 1, tzinfo=UTC)] * 5000, pa.timestamp("us", "UTC"))
    )
    path = tmp_path / "counts.parquet"
    pq.write_table(table, path, row_group_size=1234)
    source = ParquetFile(path)
    assert (source.total, source.unit) == (5000, "rows")
    chunks = list(source.chunks(batch_rows=1000, max_bytes=50_000))
    assert all(len(c.arrow_ipc) <= 50_000 for c in chunks)
    assert all(c.records <= 1000 for c in chunks)
    assert _decoded([c.arrow_ipc for c in chunks]).equals(table)
    assert [c.position for c in chunks][-1] == 5000
    requests = list(publish_requests("lyon.counts", chunks))
    assert requests[0].dataset_id == "lyon.counts"
    assert {r.WhichOneof("payload") for r in requests} == {"arrow_ipc"}


def test_batch_rows_groups_small_batches_into_fuller_messages(tmp_path: Path) -> None:
    path = tmp_path / "small-groups.parquet"
    pq.write_table(_table(1000), path, row_group_size=70)
    chunks = list(ParquetFile(path).chunks(batch_rows=400))
    assert [c.records for c in chunks] == [400, 400, 200]


def test_a_read_error_midway_ends_the_stream_and_is_kept(tmp_path: Path) -> None:
    # Types are inferred from the first block (1 MiB): a word far below cannot be an int64.
    path = tmp_path / "late-typo.csv"
    path.write_bytes(b"count\n" + b"1\n" * 600_000 + b"twelve\n")
    reading = Reading(CsvFile(path).chunks(batch_rows=100_000))
    sent = list(reading)
    assert sent
    assert reading.records == sum(c.records for c in sent) < 600_000
    assert reading.error is not None
    assert "twelve" in str(reading.error)


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("a.jsonl", "auto", "jsonl"),
        ("a.NDJSON", "auto", "jsonl"),
        ("a.csv", "auto", "csv"),
        ("a.parquet", "auto", "parquet"),
        ("a.txt", "csv", "csv"),
        ("a.csv", " Parquet ", "parquet"),
    ],
)
def test_the_format_comes_from_the_option_or_the_suffix(name: str, fmt: str, expected: str) -> None:
    assert file_format(Path(name), fmt) == expected


# --- options refused before any call -----------------------------------------------------------


@pytest.fixture
def no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call to a service fails the test: a bad option must be refused before calling."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the service was called")

    for method in ("rpc", "rpc_pages", "pages", "stream"):
        monkeypatch.setattr(Service, method, refuse)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "counts.jsonl").write_bytes(JSONL)
    (tmp_path / "counts.txt").write_bytes(JSONL)
    (tmp_path / "fake.parquet").write_bytes(b"counter_id,count\nc1,12\n")
    (tmp_path / "empty.csv").write_bytes(b"counter_id,count\n")
    return tmp_path


@pytest.mark.parametrize(
    ("app", "args", "option", "says"),
    [
        (ingest_app, ["send", "d.s", "{d}/counts.jsonl", "--format", "xml"], "--format", "jsonl"),
        (ingest_app, ["send", "d.s", "{d}/counts.txt"], "--format", "'counts.txt'"),
        (ingest_app, ["send", "d.s", "{d}/missing.jsonl"], "FILE", "does not exist"),
        (ingest_app, ["send", "d.s", "{d}"], "FILE", "is a directory"),
        (ingest_app, ["send", "d.s", "{d}/fake.parquet"], "FILE", "as parquet"),
        (ingest_app, ["send", "d.s", "{d}/counts.jsonl", "--batch-rows", "0"], "--batch-rows", ""),
        (ingest_app, ["indicators", "d.s", "--period", "week"], "--period", "hour, day"),
        (ingest_app, ["indicators", "d.s", "--since", "2026-03-01", "--days", "3"], "--days", ""),
        (ingest_app, ["indicators", "d.s", "--days", "0"], "--days", ""),
        (ingest_app, ["indicators", "d.s", "--until", "tomorrow"], "--until", "ISO 8601"),
        (ingest_app, ["compact", "d.s", "--target-file-mb", "0"], "--target-file-mb", ""),
        (dlq_app, ["list", "--since", "last week"], "--since", "ISO 8601"),
        (dlq_app, ["list", "--limit", "0"], "--limit", ""),
        (dlq_app, ["replay", "--yes"], "--id", "nothing to replay"),
        (dlq_app, ["replay", "--code", "type_mismatch", "--yes"], "--dataset", "--code"),
        (dlq_app, ["replay", "--id", "0:1", "--dataset", "d.s", "--yes"], "--id", "not both"),
    ],
)
@pytest.mark.usefixtures("no_call")
def test_a_bad_option_exits_2_naming_it(
    files: Path, app: typer.Typer, args: list[str], option: str, says: str
) -> None:
    result = runner.invoke(app, [a.format(d=files) for a in args])
    assert result.exit_code == 2, result.output
    output = _flat(result.output)
    assert f"Invalid value for '{option}'" in output
    assert says in output


@pytest.mark.usefixtures("no_call")
def test_a_file_without_records_sends_nothing(files: Path) -> None:
    result = runner.invoke(ingest_app, ["send", "d.s", str(files / "empty.csv")])
    assert result.exit_code == 0, result.output
    assert "nothing to send" in result.output


def test_main_registers_the_ingest_group() -> None:
    from tdg_cli.main import app

    result = runner.invoke(app, ["ingest", "--help"])
    assert result.exit_code == 0
    for command in ("send", "status", "dlq", "indicators", "compact"):
        assert command in result.output


# --- dead-letter filters -----------------------------------------------------------------------


def test_list_filter_holds_the_options_given() -> None:
    f = reject_filter("lyon.counts", "schema", "", " partner-a ", "2026-03-01T08:00+01:00")
    assert (f.dataset_id, f.category, f.code, f.producer) == (
        "lyon.counts",
        "schema",
        "",
        "partner-a",
    )
    assert f.since == _ts("2026-03-01T07:00+00:00")
    assert not reject_filter().HasField("since")


def test_replay_takes_ids_or_a_dataset_filter() -> None:
    by_id = replay_request(["0:12", "1:40", "0:12", " "])
    assert list(by_id.ids) == ["0:12", "1:40"]
    assert not by_id.HasField("filter")
    assert describe_replay(by_id) == "2 rejects (0:12, 1:40)"
    by_filter = replay_request([], "lyon.counts", code="type_mismatch", since="2026-03-01")
    assert not by_filter.ids
    assert by_filter.filter.dataset_id == "lyon.counts"
    assert by_filter.filter.code == "type_mismatch"
    assert by_filter.filter.since == _ts("2026-03-01T00:00+00:00")
    assert describe_replay(by_filter) == (
        "every reject of lyon.counts with code type_mismatch, rejected since 2026-03-01T00:00:00Z"
    )
    with pytest.raises(OptionError) as info:
        replay_request(["0:1"], producer="partner-a")
    assert info.value.option == "--id"


def test_a_value_is_text_when_it_is_printable_utf8_else_a_hex_dump() -> None:
    assert value_text('{"commune": "Saint-Étienne"}\n'.encode()) == '{"commune": "Saint-Étienne"}\n'
    assert value_text(b"\xff\xfe{") is None
    assert value_text(b"a\x00b") is None
    assert hex_dump(b"\x00ABC" + bytes(range(250, 256)) + b"0123456789") == (
        "00000000  00 41 42 43 fa fb fc fd fe ff 30 31 32 33 34 35  .ABC......012345\n"
        "00000010  36 37 38 39                                      6789"
    )


# --- delivery indicators -----------------------------------------------------------------------


def test_indicators_window_is_days_before_until_or_now() -> None:
    now = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    default = indicators_request("d.s", now=now)
    assert default.since == _ts("2026-03-01T12:00+00:00")
    assert not default.HasField("until")
    assert default.period == "day"
    bounded = indicators_request("d.s", days=2, until="2026-03-05", period="HOUR", now=now)
    assert bounded.since == _ts("2026-03-03T00:00+00:00")
    assert bounded.until == _ts("2026-03-05T00:00+00:00")
    assert bounded.period == "hour"
    assert indicators_request("d.s", since="2026-02-01", now=now).since == _ts(
        "2026-02-01T00:00+00:00"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0s"), (9.94, "9.9s"), (35.4, "35s"), (400, "6m40s"), (3600, "1h"), (200_000, "2d7h")],
)
def test_freshness_is_short_and_unbreakable(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def _indicator(producer: str, day: str, **fields: Any) -> pb.DeliveryIndicator:
    return pb.DeliveryIndicator(
        dataset_id="lyon.counts",
        producer=producer,
        period_start=_ts(f"{day}T00:00+00:00"),
        period="day",
        **fields,
    )


def _render(indicators: list[pb.DeliveryIndicator]) -> list[str]:
    console = Console(width=300, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(indicator_table(indicators))
    return [_flat(line) for line in console.export_text().splitlines() if "2026-" in line]


def test_indicators_show_each_promise_met_missed_or_not_made() -> None:
    promised = pb.Commitments(max_freshness_lag_s=300, completeness_pct=95, validity_rate_pct=99)
    rows = _render(
        [
            _indicator(
                "partner-b",
                "2026-03-02",
                received=100,
                accepted=90,
                rejected=10,
                availability_pct=50,
                validity_pct=90,
                freshness_p50_s=42,
                freshness_max_s=900,
                commitments=promised,
                freshness_met=False,
                availability_met=False,
                validity_met=False,
            ),
            _indicator(
                "partner-b",
                "2026-03-01",
                received=100,
                accepted=100,
                availability_pct=100,
                validity_pct=100,
                freshness_p50_s=4.25,
                freshness_max_s=61,
                commitments=promised,
                freshness_met=True,
                availability_met=True,
                validity_met=True,
            ),
            _indicator(
                "partner-a",
                "2026-03-01",
                availability_pct=0,
                freshness_met=True,
                availability_met=True,
                validity_met=True,
            ),
        ]
    )
    assert rows == [
        "partner-a 2026-03-01 0 0 0 0.0 % - - " + " ".join([NOT_PROMISED] * 3),
        "partner-b 2026-03-01 100 100 0 100.0 % 100.0 % 4.2s / 1m1s ✓ ≤ 5m ✓ ≥ 95 % ✓ ≥ 99 %",
        "partner-b 2026-03-02 100 90 10 50.0 % 90.0 % 42s / 15m ✗ ≤ 5m ✗ ≥ 95 % ✗ ≥ 99 %",
    ]


# --- against an in-process fake service --------------------------------------------------------


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.authorizations: list[str] = []

    def _seen(self, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        self.authorizations.append(dict(context.invocation_metadata()).get("authorization", ""))

    def Publish(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        received, problems = 0, []
        for request in request_iterator:
            self._seen(request, context)
            for record in request.json.records:
                if not record.rstrip().endswith(b"}"):
                    reason = pb.Reason(category="format", code="invalid_json", message="cut short")
                    problems.append(pb.RecordProblem(index=received, reason=reason))
                received += 1
            if request.arrow_ipc:
                received += pa.ipc.open_stream(request.arrow_ipc).read_all().num_rows
        return pb.PublishResponse(
            received=received,
            queued=received - len(problems),
            refused=len(problems),
            problems=problems,
            topic="tdg.ingest.lyon.counts",
        )

    def ListRejects(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        start = int(request.page_token or 0)
        size = min(request.page_size, 4)  # the service's own cap
        rejects = [
            pb.Reject(
                id=f"0:{n}",
                dataset_id="lyon.counts",
                source_partition=1,
                source_offset=100 + n,
                producer="partner-a",
                reason=pb.Reason(category="schema", code="type_mismatch", message="[bold]no[/]"),
                value=b'{"count": "twelve"}',
            )
            for n in range(start, min(start + size, 7))
        ]
        token = str(start + size) if start + size < 7 else ""
        return pb.ListRejectsResponse(rejects=rejects, next_page_token=token)

    def GetReject(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        return pb.GetRejectResponse(
            reject=pb.Reject(id=request.id, reason=pb.Reason(code="too_large"), value=b"\x00\xff")
        )

    def ReplayRejects(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        return pb.ReplayRejectsResponse(replayed=len(request.ids) or 7)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIngest]:
    servicer = FakeIngest()  # type: ignore[abstract]  # the others answer UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("TDG_INGEST_ADDR", f"127.0.0.1:{port}")
    monkeypatch.setenv("TDG_TOKEN", "test-token")
    try:
        yield servicer
    finally:
        server.stop(None)


def test_send_reports_the_counts_and_where_the_refused_records_are(
    fake: FakeIngest, files: Path
) -> None:
    result = runner.invoke(
        ingest_app, ["send", "lyon.counts", str(files / "counts.jsonl"), "--batch-rows", "3"]
    )
    assert result.exit_code == 1, result.output
    output = _flat(result.output)
    assert "5 records sent from counts.jsonl · received 5 · queued 4 · refused 1" in output
    assert "3 line 6 format/invalid_json cut short" in output
    assert [r.dataset_id for r in fake.requests] == ["lyon.counts", ""]
    sent = [record for r in fake.requests for record in r.json.records]
    assert sent == [line.rstrip(b"\r") for line in JSONL.split(b"\n") if line.strip()]
    assert set(fake.authorizations) == {"Bearer test-token"}


def test_send_of_a_parquet_file_exits_0_when_nothing_is_refused(
    fake: FakeIngest, tmp_path: Path
) -> None:
    path = tmp_path / "counts.parquet"
    pq.write_table(_table(12_000), path)
    result = runner.invoke(ingest_app, ["send", "lyon.counts", str(path)])
    assert result.exit_code == 0, result.output
    assert "received 12000 · queued 12000 · refused 0" in _flat(result.output)
    assert len(fake.requests) == 3


def test_send_stops_at_an_unreadable_part_and_exits_1_after_the_answer(
    fake: FakeIngest, tmp_path: Path
) -> None:
    path = tmp_path / "late-typo.csv"
    path.write_bytes(b"count\n" + b"1\n" * 600_000 + b"twelve\n")
    result = runner.invoke(ingest_app, ["send", "lyon.counts", str(path)])
    assert result.exit_code == 1, result.output
    output = _flat(result.output)
    received = sum(pa.ipc.open_stream(r.arrow_ipc).read_all().num_rows for r in fake.requests)
    assert 0 < received < 600_000
    assert f"{received} records sent from late-typo.csv · received {received}" in output
    assert f"stopped reading {path} after {received} records" in output
    assert "twelve" in output


def test_dlq_list_follows_the_pages_up_to_the_limit(fake: FakeIngest) -> None:
    result = runner.invoke(dlq_app, ["list", "--dataset", "lyon.counts", "--limit", "5", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in lines] == ["0:0", "0:1", "0:2", "0:3", "0:4"]
    assert [r.page_token for r in fake.requests] == ["", "4"]
    assert {r.filter.dataset_id for r in fake.requests} == {"lyon.counts"}
    assert {r.page_size for r in fake.requests} == {5}

    fake.requests.clear()
    result = runner.invoke(dlq_app, ["list", "--limit", "4"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    output = _flat(result.output)
    assert "0:3 lyon.counts 1/103 partner-a schema/type_mismatch [bold]no[/]" in output
    assert "more rejects than --limit 4" in output
    assert [r.page_token for r in fake.requests] == [""]

    fake.requests.clear()
    result = runner.invoke(dlq_app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "0:6" in result.output
    assert "more rejects" not in result.output
    assert [r.page_token for r in fake.requests] == ["", "4"]


def test_dlq_show_dumps_a_binary_value(fake: FakeIngest) -> None:
    result = runner.invoke(dlq_app, ["show", "0:3"])
    assert result.exit_code == 0, result.output
    assert "2 bytes, not text" in result.output
    assert "00000000  00 ff" in result.output


def test_dlq_replay_asks_first_unless_yes(fake: FakeIngest) -> None:
    result = runner.invoke(dlq_app, ["replay", "--dataset", "lyon.counts"], input="n\n")
    assert result.exit_code == 1
    assert "Replay every reject of lyon.counts?" in result.output
    assert fake.requests == []
    result = runner.invoke(dlq_app, ["replay", "--id", "0:1", "--id", "0:2", "--yes"])
    assert result.exit_code == 0, result.output
    assert "replayed 2 rejects" in result.output
    (request,) = fake.requests
    assert list(request.ids) == ["0:1", "0:2"]
