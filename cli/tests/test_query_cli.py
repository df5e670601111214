"""`tdg query` and `tdg audit search`: options into a structured QueryRequest (bad ones refused
with exit 2 naming them, before any call), aggregates, the output format, the stream read into a
table, CSV, Parquet or an Arrow IPC file a batch at a time (from fake streams built here from
pyarrow tables), no partial file left when a stream fails, and (against an in-process fake
service) the token, a status mid-stream, the audit trail. The real service is tested elsewhere."""

from __future__ import annotations

import csv
import io
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
from tdg.query.v1 import query_pb2 as pb
from tdg.query.v1 import query_pb2_grpc
from tdg_cli import query as query_module  # the command looks query_stream up there
from tdg_cli.audit import audit_request, audit_table
from tdg_cli.client import Service
from tdg_cli.query_display import masked, summary_lines
from tdg_cli.query_request import aggregate_name, parse_aggregate, parse_order_by, query_request
from tdg_cli.query_sinks import (
    ArrowFileSink,
    CsvSink,
    OutputError,
    ParquetSink,
    TablePreview,
    output_format,
)
from tdg_cli.query_stream import QueryStreamError, receive
from tdg_cli.vocabulary import OptionError
from typer.testing import CliRunner

runner = CliRunner()
TREATMENTS = [
    pb.ColumnTreatment(column="counter_id", treatment="hash"),
    pb.ColumnTreatment(column="count", treatment="clear"),
    pb.ColumnTreatment(column="ts", treatment="generalise"),
]


def _flat(text: str) -> str:
    """The output without rich's box drawing and line breaks."""
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


def _ts(text: str) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(text))
    return ts


def _table(n: int) -> pa.Table:
    return pa.table(
        {
            "counter_id": pa.array([f"h{i % 7:02d}" for i in range(n)]),
            "count": pa.array([i if i % 10 else None for i in range(n)], pa.int64()),
            "ts": pa.array(
                [datetime(2026, 1, 1, i % 24, tzinfo=UTC) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "ratio": pa.array([i / 4 for i in range(n)], pa.float64()),
        }
    )


def _header(schema: pa.Schema, **fields: Any) -> pb.QueryHeader:
    values: dict[str, Any] = {
        "query_id": "q-123",
        "dataset_id": "lyon.counts",
        "snapshot_id": 987,
        "agreement_id": "agr-1",
        "treatments": TREATMENTS,
    }
    values.update(fields)
    return pb.QueryHeader(arrow_schema=schema.serialize().to_pybytes(), **values)


def _stream(table: pa.Table, batch_rows: int = 7, **header: Any) -> list[pb.QueryResponse]:
    """What the service sends for `table`: the header, a batch per `batch_rows`, the summary."""
    messages = [pb.QueryResponse(header=_header(table.schema, **header))]
    size = 0
    for batch in table.to_batches(max_chunksize=batch_rows):
        payload = batch.serialize().to_pybytes()
        size += len(payload)
        messages.append(pb.QueryResponse(arrow_batch=payload))
    summary = pb.QuerySummary(rows=table.num_rows, bytes=size, duration_ms=1234)
    messages.append(pb.QueryResponse(summary=summary))
    return messages


# --- the request -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "function", "column", "alias", "name"),
    [
        ("count", pb.AGGREGATE_FUNCTION_COUNT, "", "", "count"),
        ("COUNT", pb.AGGREGATE_FUNCTION_COUNT, "", "", "count"),
        ("count:note", pb.AGGREGATE_FUNCTION_COUNT, "note", "", "count_note"),
        ("count::rows", pb.AGGREGATE_FUNCTION_COUNT, "", "rows", "rows"),
        ("sum:count", pb.AGGREGATE_FUNCTION_SUM, "count", "", "sum_count"),
        ("min:ts", pb.AGGREGATE_FUNCTION_MIN, "ts", "", "min_ts"),
        ("max:ts:last_seen", pb.AGGREGATE_FUNCTION_MAX, "ts", "last_seen", "last_seen"),
        (" avg : ratio ", pb.AGGREGATE_FUNCTION_AVG, "ratio", "", "avg_ratio"),
        (
            "count_distinct:counter_id:counters",
            pb.AGGREGATE_FUNCTION_COUNT_DISTINCT,
            "counter_id",
            "counters",
            "counters",
        ),
        (
            "count_distinct:counter_id",
            pb.AGGREGATE_FUNCTION_COUNT_DISTINCT,
            "counter_id",
            "",
            "count_distinct_counter_id",
        ),
    ],
)
def test_aggregates_are_function_column_alias(
    text: str, function: int, column: str, alias: str, name: str
) -> None:
    aggregate = parse_aggregate(text)
    assert aggregate == pb.Aggregate(function=function, column=column, alias=alias)  # type: ignore[arg-type]
    assert aggregate_name(aggregate) == name


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("median:count", "unknown function 'median'"),
        ("sum", "sum needs a column, e.g. sum:count"),
        ("count_distinct", "count_distinct needs a column"),
        ("sum:Count", "the column 'Count' is not"),
        ("sum:count:Total", "the alias 'Total' is not"),
        ("sum:count:total:x", "FUNCTION[:COLUMN][:ALIAS]"),
        ("", "unknown function ''"),
    ],
)
def test_a_bad_aggregate_says_why(text: str, says: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_aggregate(text)
    assert info.value.option == "--agg"
    assert says in str(info.value)


def test_order_by_takes_directions_commas_and_repeats() -> None:
    assert parse_order_by(["sum_count:desc, counter_id", "ts:ASC"]) == [
        pb.OrderBy(column="sum_count", descending=True),
        pb.OrderBy(column="counter_id"),
        pb.OrderBy(column="ts"),
    ]
    with pytest.raises(OptionError, match="COLUMN:desc"):
        parse_order_by(["ts:down"])
    with pytest.raises(OptionError, match="named twice"):
        parse_order_by(["ts", "ts:desc"])


def test_the_request_holds_every_option() -> None:
    request = query_request(
        " lyon.counts ",
        "mobility-planning",
        where="count >= 3 AND counter_id IN ('c1', 'c2')",
        group_by=["counter_id,commune"],
        aggregates=["sum:count", "count", "count_distinct:ts:days"],
        since="2026-01-01",
        until="2026-02-01T00:00+01:00",
        order_by=["sum_count:desc"],
        limit=10,
        snapshot=42,
    )
    assert request.dataset_id == "lyon.counts"
    assert request.purpose == "mobility-planning"
    assert not request.columns
    assert request.filter.WhichOneof("kind") == "and"
    assert list(request.group_by) == ["counter_id", "commune"]
    assert [aggregate_name(a) for a in request.aggregates] == ["sum_count", "count", "days"]
    assert request.time_range.start == _ts("2026-01-01T00:00+00:00")
    assert request.time_range.end == _ts("2026-01-31T23:00+00:00")
    assert list(request.order_by) == [pb.OrderBy(column="sum_count", descending=True)]
    assert request.HasField("limit") and request.limit == 10
    assert request.WhichOneof("as_of") == "snapshot_id" and request.snapshot_id == 42


def test_the_request_leaves_unset_what_is_not_given() -> None:
    request = query_request("d.s", "research", columns=["a", "b, c"], as_of="2026-03-01T12:00Z")
    assert list(request.columns) == ["a", "b", "c"]
    for name in ("filter", "time_range", "limit"):
        assert not request.HasField(name)
    assert request.WhichOneof("as_of") == "as_of_time"
    assert request.as_of_time == _ts("2026-03-01T12:00+00:00")
    assert query_request("d.s", "research").WhichOneof("as_of") is None


@pytest.mark.parametrize(
    ("options", "option", "says"),
    [
        ({"columns": ["a", "Bad"]}, "--columns", "'Bad' is not a column name"),
        ({"columns": ["a,a"]}, "--columns", "named twice"),
        ({"group_by": ["x-y"]}, "--group-by", "not a column name"),
        ({"where": "a ="}, "--where", "expected a value after '=' at column 4"),
        ({"columns": ["a"], "aggregates": ["count"]}, "--columns", "not with --agg"),
        ({"aggregates": ["count", "count"]}, "--agg", "two result columns named 'count'"),
        ({"group_by": ["sum_x"], "aggregates": ["sum:x"]}, "--agg", "'sum_x'"),
        ({"since": "yesterday"}, "--since", "ISO 8601"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "--until", "after --since"),
        ({"limit": 0}, "--limit", "at least 1"),
        ({"snapshot": 4, "as_of": "2026-01-01"}, "--as-of", "not both"),
        ({"as_of": "soon"}, "--as-of", "ISO 8601"),
    ],
)
def test_a_bad_option_names_itself(options: dict[str, Any], option: str, says: str) -> None:
    with pytest.raises(OptionError) as info:
        query_request("d.s", "research", **options)
    assert info.value.option == option
    assert says in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "output", "expected"),
    [
        (None, None, "table"),
        (None, "out.csv", "csv"),
        (None, "out.PARQUET", "parquet"),
        (None, "out.arrow", "arrow"),
        (None, "out.feather", "arrow"),
        ("csv", None, "csv"),
        ("CSV", "out.txt", "csv"),
        ("parquet", "out.bin", "parquet"),
        ("table", None, "table"),
    ],
)
def test_the_format_comes_from_the_option_or_the_suffix(
    fmt: str | None, output: str | None, expected: str
) -> None:
    assert output_format(fmt, Path(output) if output else None) == expected


@pytest.mark.parametrize(
    ("fmt", "output", "option", "says"),
    [
        (None, "out.txt", "--format", "cannot tell the format"),
        ("json", None, "--format", "unknown format 'json'"),
        ("table", "out.csv", "--format", "with --output give csv|parquet|arrow"),
        ("parquet", None, "--output", "--format parquet writes a file"),
        ("arrow", None, "--output", "--format arrow writes a file"),
    ],
)
def test_a_format_that_cannot_be_is_refused(
    fmt: str | None, output: str | None, option: str, says: str
) -> None:
    with pytest.raises(OptionError) as info:
        output_format(fmt, Path(output) if output else None)
    assert info.value.option == option
    assert says in str(info.value)


# --- the stream into sinks ---------------------------------------------------------------------


def test_a_table_keeps_the_first_rows_and_counts_the_others() -> None:
    table = _table(120)
    preview = TablePreview(max_rows=50)
    seen: list[tuple[int, int]] = []
    received = receive(_stream(table, batch_rows=40), preview, lambda r, b: seen.append((r, b)))
    assert (received.rows, received.batches) == (120, 3)
    assert [r for r, _ in seen] == [40, 80, 120]
    assert seen[-1][1] == received.bytes == received.summary.bytes
    assert len(preview.rows) == 50
    assert preview.more == 70
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(preview.table())
    lines = [_flat(line) for line in console.export_text().splitlines()]
    assert "counter_id count ts ratio" in lines[1]
    assert "h00 null 2026-01-01T00:00:00Z 0.0" in lines
    assert "h01 1 2026-01-01T01:00:00Z 0.25" in lines
    assert any(line.startswith("h00 49 2026-01-01T01:00:00Z 12.25") for line in lines)  # row 49
    assert not any(line.endswith((" 12.5", " 12.75")) for line in lines)  # rows 50, 51


def test_a_table_of_nothing_shows_the_columns() -> None:
    preview = TablePreview()
    receive(_stream(_table(0)), preview)
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(preview.table())
    text = _flat(console.export_text())
    assert "counter_id count ts ratio" in text
    assert "no rows" in text


def test_a_markup_like_value_is_shown_as_it_is() -> None:
    preview = TablePreview()
    receive(_stream(pa.table({"note": ["[bold]x[/]", "caf\u00e9"]})), preview)
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(preview.table())
    assert "[bold]x[/]" in console.export_text()


def test_csv_parquet_and_arrow_files_hold_the_whole_result(tmp_path: Path) -> None:
    table = _table(1000)
    for sink, path in (
        (CsvSink(tmp_path / "r.csv"), tmp_path / "r.csv"),
        (ParquetSink(tmp_path / "r.parquet"), tmp_path / "r.parquet"),
        (ArrowFileSink(tmp_path / "r.arrow"), tmp_path / "r.arrow"),
    ):
        received = receive(_stream(table, batch_rows=128), sink)
        assert received.batches == 8
        assert path.exists()
        assert not path.with_name(path.name + ".part").exists()
    assert pq.read_table(tmp_path / "r.parquet").equals(table)
    assert pa.ipc.open_file(tmp_path / "r.arrow").read_all().equals(table)
    options = pa_csv.ConvertOptions(column_types=table.schema)
    assert pa_csv.read_csv(tmp_path / "r.csv", convert_options=options).equals(table)


def test_csv_goes_to_stdout_with_its_header() -> None:
    buffer = io.BytesIO()
    receive(_stream(pa.table({"a": [1, 2], "b": ["x,y", 'say "hi"']})), CsvSink(None, buffer))
    rows = list(csv.reader(io.StringIO(buffer.getvalue().decode())))
    assert rows == [["a", "b"], ["1", "x,y"], ["2", 'say "hi"']]


def test_an_empty_result_is_still_a_file_with_the_schema(tmp_path: Path) -> None:
    table = _table(0)
    receive(_stream(table), ParquetSink(tmp_path / "e.parquet"))
    receive(_stream(table), CsvSink(tmp_path / "e.csv"))
    assert pq.read_table(tmp_path / "e.parquet").schema == table.schema
    assert (tmp_path / "e.csv").read_text() == '"counter_id","count","ts","ratio"\n'


def _failing(messages: list[pb.QueryResponse], after: int) -> Iterator[pb.QueryResponse]:
    """The first `after` messages, then the stream fails (as call_stream does on a status)."""
    yield from messages[:after]
    raise typer.Exit(1)


@pytest.mark.parametrize("sink_class", [CsvSink, ParquetSink, ArrowFileSink])
def test_a_stream_failing_midway_leaves_no_file_and_an_old_one_untouched(
    tmp_path: Path, sink_class: Any
) -> None:
    path = tmp_path / "result.out"
    path.write_text("yesterday's result")
    messages = _stream(_table(100), batch_rows=10)
    with pytest.raises(typer.Exit):
        receive(_failing(messages, after=5), sink_class(path))
    assert path.read_text() == "yesterday's result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.out"]


def _broken(kind: str) -> list[pb.QueryResponse]:
    table = _table(20)
    messages = _stream(table, batch_rows=10)
    header, first, second, summary = messages
    if kind == "no header":
        return [first, second, summary]
    if kind == "no summary":
        return [header, first, second]
    if kind == "two headers":
        return [header, first, header, second, summary]
    if kind == "after the summary":
        return [header, first, summary, second]
    if kind == "summary first":
        return [summary, header]
    if kind == "rows missing":
        return [header, first, summary]
    if kind == "empty message":
        return [header, pb.QueryResponse(), summary]
    if kind == "bad schema":
        return [pb.QueryResponse(header=pb.QueryHeader(arrow_schema=b"nope")), summary]
    if kind == "bad batch":
        return [header, pb.QueryResponse(arrow_batch=b"\x00" * 40), summary]
    other = pa.table({"x": pa.array(["a"] * 10)}).to_batches()[0].serialize().to_pybytes()
    assert kind == "other schema"
    return [header, first, pb.QueryResponse(arrow_batch=other), summary]


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("no header", "message 0 is a batch before the header"),
        ("no summary", "ended without a summary after 20 rows: the result is incomplete"),
        ("two headers", "message 2 is a second header"),
        ("after the summary", "message 3 (arrow_batch) came after the summary"),
        ("summary first", "message 0 is the summary, before any header"),
        ("rows missing", "the summary counts 20 rows, 10 were received"),
        ("empty message", "message 1 is empty"),
        ("bad schema", "not an Arrow IPC schema"),
        ("bad batch", "batch 0 is not an Arrow record batch of the header's schema"),
        ("other schema", "batch 1 is not an Arrow record batch of the header's schema"),
    ],
)
def test_a_stream_out_of_contract_is_refused_and_nothing_kept(
    tmp_path: Path, kind: str, says: str
) -> None:
    path = tmp_path / "r.parquet"
    with pytest.raises(QueryStreamError) as info:
        receive(_broken(kind), ParquetSink(path))
    assert says in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_type_csv_cannot_hold_is_an_output_error(tmp_path: Path) -> None:
    table = pa.table({"days": pa.array([[1, 2], [3]], pa.list_(pa.int64()))})
    with pytest.raises(OutputError, match="use --format parquet or arrow"):
        receive(_stream(table), CsvSink(tmp_path / "r.csv"))
    assert list(tmp_path.iterdir()) == []


def test_the_summary_says_what_was_read_and_what_was_masked() -> None:
    received = receive(_stream(_table(3)), TablePreview())
    lines = summary_lines(received, Path("out.parquet"))
    assert lines[0].startswith("3 rows · ")
    assert "1,234 ms · query q-123 · snapshot 987 · agreement agr-1" in lines[0]
    assert lines[1] == "masked: counter_id=hash, ts=generalise"
    assert lines[2] == "written to out.parquet"
    open_data = receive(
        _stream(_table(0), agreement_id="", treatments=[], snapshot_id=0, consent_revision=5),
        TablePreview(),
    )
    first, second = summary_lines(open_data)
    assert "snapshot 0 (no data yet) · agreement - (publisher or open dataset)" in first
    assert first.endswith("consent revision 5")
    assert second == "masked: none"
    assert masked([pb.ColumnTreatment(column="note", treatment="null")]) == "note=null"


# --- the command, against a fake stream --------------------------------------------------------


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[pb.QueryRequest]:
    """The command's requests; the stream answers with 120 rows of `_table`."""
    requests: list[pb.QueryRequest] = []

    def fake_stream(request: pb.QueryRequest) -> Iterator[pb.QueryResponse]:
        requests.append(request)
        yield from _stream(_table(120), batch_rows=50)

    monkeypatch.setattr(query_module, "query_stream", fake_stream)
    return requests


@pytest.fixture
def no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call to a service fails the test: a bad option must be refused before calling."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the service was called")

    for method in ("rpc", "rpc_pages", "stream", "pages"):
        monkeypatch.setattr(Service, method, refuse)
    monkeypatch.setattr(query_module, "query_stream", refuse)


def _app() -> typer.Typer:
    from tdg_cli.main import app

    return app


def test_main_registers_query_and_audit() -> None:
    result = runner.invoke(_app(), ["--help"])
    assert result.exit_code == 0
    assert "query" in result.output and "audit" in result.output
    result = runner.invoke(_app(), ["audit", "--help"])
    assert result.exit_code == 0
    assert "search" in result.output


@pytest.mark.parametrize(
    ("args", "option", "says"),
    [
        (
            ["query", "d.s", "--purpose", "r", "--where", "count >= 3 AND x ="],
            "--where",
            "column 19",
        ),
        (["query", "d.s", "--purpose", "r", "--agg", "median:x"], "--agg", "median"),
        (["query", "d.s", "--purpose", "r", "--format", "parquet"], "--output", "writes a file"),
        (["query", "d.s", "--purpose", "r", "-o", "x.txt"], "--format", "cannot tell"),
        (["query", "d.s", "--purpose", "r", "--limit", "0"], "--limit", ""),
        (
            ["query", "d.s", "--purpose", "r", "--snapshot", "3", "--as-of", "2026-01-01"],
            "--as-of",
            "",
        ),
        (["query", "d.s", "--purpose", "r", "--since", "monday"], "--since", "ISO 8601"),
        (["audit", "search", "--until", "later"], "--until", "ISO 8601"),
        (["audit", "search", "--limit", "1001"], "--limit", ""),
    ],
)
@pytest.mark.usefixtures("no_call")
def test_a_bad_option_exits_2_naming_it(args: list[str], option: str, says: str) -> None:
    result = runner.invoke(_app(), args)
    assert result.exit_code == 2, result.output
    output = _flat(result.output)
    assert f"Invalid value for '{option}'" in output
    assert says in output


def test_query_prints_a_table_then_the_summary_on_stderr(sent: list[pb.QueryRequest]) -> None:
    result = runner.invoke(
        _app(),
        [
            "query",
            "lyon.counts",
            "--purpose",
            "research",
            "--where",
            "count > 3",
            "--max-rows",
            "5",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    stdout = _flat(result.stdout)
    assert "h01 1 2026-01-01T01:00:00Z 0.25" in stdout
    assert "h05 5" not in stdout
    assert "… 115 more rows (the first 5 shown" in stdout
    stderr = _flat(result.stderr)
    assert "120 rows" in stderr
    assert "query q-123 · snapshot 987 · agreement agr-1" in stderr
    assert "masked: counter_id=hash, ts=generalise" in stderr
    (request,) = sent
    assert request.dataset_id == "lyon.counts"
    assert request.filter.comparison.column == "count"


def test_query_writes_csv_to_stdout_and_nothing_else(sent: list[pb.QueryRequest]) -> None:
    result = runner.invoke(_app(), ["query", "lyon.counts", "--purpose", "r", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["counter_id", "count", "ts", "ratio"]
    assert len(rows) == 121
    assert "masked: counter_id=hash" in result.stderr


def test_query_writes_a_parquet_file_named_by_its_suffix(
    sent: list[pb.QueryRequest], tmp_path: Path
) -> None:
    path = tmp_path / "counts.parquet"
    args = ["query", "lyon.counts", "--purpose", "r", "--group-by", "counter_id"]
    args += ["--agg", "sum:count", "--order-by", "sum_count:desc", "-o", str(path)]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert pq.read_table(path).equals(_table(120))
    assert result.stdout == ""
    assert f"written to {path}" in _flat(result.stderr)
    (request,) = sent
    assert list(request.group_by) == ["counter_id"]
    assert list(request.order_by) == [pb.OrderBy(column="sum_count", descending=True)]


# --- against an in-process fake service --------------------------------------------------------


class FakeQuery(query_pb2_grpc.QueryServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.authorizations: list[str] = []
        self.revoke_after: int | None = None

    def _seen(self, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        self.authorizations.append(dict(context.invocation_metadata()).get("authorization", ""))

    def Query(self, request: Any, context: grpc.ServicerContext) -> Iterator[pb.QueryResponse]:
        self._seen(request, context)
        if request.dataset_id == "unknown":
            context.abort(grpc.StatusCode.NOT_FOUND, "no dataset unknown")
        for n, message in enumerate(_stream(_table(300), batch_rows=50)):
            if self.revoke_after is not None and n > self.revoke_after:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "agreement agr-1 was revoked")
            yield message

    def SearchAudit(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        records = [
            pb.AuditRecord(
                query_id="q-1",
                time=_ts("2026-03-01T08:00:00+00:00"),
                party="partner-a",
                dataset_id="lyon.counts",
                purpose="research",
                agreement_id="agr-1",
                allowed=True,
                outcome="ok",
                rows=1200,
                bytes=48_000,
                duration_ms=85,
                treatments=TREATMENTS,
            ),
            pb.AuditRecord(
                query_id="q-2",
                time=_ts("2026-03-01T09:00:00+00:00"),
                party="partner-b",
                dataset_id="lyon.counts",
                purpose="marketing",
                outcome="denied",
                reasons=["no agreement covers the purpose marketing"],
            ),
        ]
        return pb.SearchAuditResponse(records=records[: request.limit or 100])


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeQuery]:
    servicer = FakeQuery()  # type: ignore[abstract]  # the others answer UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("TDG_QUERY_ADDR", f"127.0.0.1:{port}")
    monkeypatch.setenv("TDG_TOKEN", "test-token")
    try:
        yield servicer
    finally:
        server.stop(None)


def test_query_over_grpc_writes_an_arrow_file_with_the_token(
    fake: FakeQuery, tmp_path: Path
) -> None:
    path = tmp_path / "counts.arrow"
    result = runner.invoke(
        _app(), ["query", "lyon.counts", "--purpose", "research", "--limit", "300", "-o", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert pa.ipc.open_file(path).read_all().equals(_table(300))
    assert "300 rows" in result.stderr
    (request,) = fake.requests
    assert (request.dataset_id, request.purpose, request.limit) == ("lyon.counts", "research", 300)
    assert fake.authorizations == ["Bearer test-token"]


def test_a_status_mid_stream_exits_1_with_it_and_leaves_no_file(
    fake: FakeQuery, tmp_path: Path
) -> None:
    fake.revoke_after = 3
    path = tmp_path / "counts.parquet"
    result = runner.invoke(_app(), ["query", "lyon.counts", "--purpose", "r", "-o", str(path)])
    assert result.exit_code == 1, result.output
    assert "PERMISSION_DENIED: agreement agr-1 was revoked" in _flat(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_status_before_the_header_exits_1_with_it(fake: FakeQuery) -> None:
    result = runner.invoke(_app(), ["query", "unknown", "--purpose", "r"])
    assert result.exit_code == 1, result.output
    assert "NOT_FOUND: no dataset unknown" in _flat(result.stderr)
    assert result.stdout == ""


def test_audit_request_holds_the_filters() -> None:
    request = audit_request(" lyon.counts ", "partner-a", "", "agr-1", "", "2026-03-01", None, 20)
    assert (request.dataset_id, request.party, request.agreement_id) == (
        "lyon.counts",
        "partner-a",
        "agr-1",
    )
    assert request.since == _ts("2026-03-01T00:00+00:00")
    assert not request.HasField("until")
    assert request.limit == 20
    with pytest.raises(OptionError, match="after --since"):
        audit_request(since="2026-03-02", until="2026-03-01")


def test_audit_search_shows_a_table_or_json_lines(fake: FakeQuery) -> None:
    result = runner.invoke(
        _app(),
        ["audit", "search", "--dataset", "lyon.counts", "--limit", "2"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    output = _flat(result.output)
    assert (
        "2026-03-01T08:00:00Z q-1 partner-a lyon.counts research agr-1 ok 1,200 48.0 kB 85 "
        "counter_id=hash, ts=generalise"
    ) in output
    assert "q-2 partner-b lyon.counts marketing - denied" in output
    assert "no agreement covers the purpose marketing" in output
    assert "--limit 2 reached" in output
    assert fake.requests[0].dataset_id == "lyon.counts"
    assert fake.requests[0].limit == 2

    result = runner.invoke(_app(), ["audit", "search", "--query-id", "q-1", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query_id"] for r in lines] == ["q-1", "q-2"]
    assert lines[0]["treatments"][0] == {"column": "counter_id", "treatment": "hash"}
    assert lines[0]["rows"] == "1200"  # int64 in the proto JSON mapping
    assert fake.requests[1].query_id == "q-1"
    assert "reached" not in result.output


def test_audit_table_without_records_is_empty() -> None:
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(audit_table([]))
    assert "query id" in console.export_text()
