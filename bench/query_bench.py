"""Query benchmark: the query service (gRPC and Arrow Flight, end to end) beside bare DuckDB doing
the same SQL work on the same Parquet files, in the same run.

1. Setup (not measured): Kafka, OPA (pulling the consent service's registry bundle: `tdg.read`
   needs its purposes), the consent service, and an Iceberg table of N bike-counter rows written
   with pyiceberg as the ingest service makes it (day partitions on `date_observed`, one append
   of one day per data file, 10 files) in a fresh SQLite catalog and warehouse. The dataset's
   DatasetPublished event goes to tdg.catalog.events; the query service runs in its own
   process. A partner application gets a read agreement (hashed counter_id, a territory filter
   on three communes) through the consent service, for the masked query.
2. Three queries, each through gRPC (`Query`, the batches decoded into one Arrow table), through
   Flight (GetFlightInfo then DoGet, read whole) and by DuckDB alone on the table's data files
   (`table.scan().plan_files()`, `read_parquet([...])`, `.to_arrow_table()`), after a warm-up,
   in rounds (the order rotates each round); the median of the rounds:
   - filter: one counter's rows (4 columns, N / 5,000 rows);
   - aggregate: count and sum(intensity) by commune_code (11 groups);
   - export: 3 columns of every row, consumed whole client-side.
   The service's time is the client's, from the call to the last batch received (OPA, planning,
   DuckDB, streaming and decoding included). The service's own figure for each query (its log's
   `duration_ms`, from the call's arrival to the stream's end) and the costs of its steps, measured
   from here (OPA decisions, the table's metadata load, pyiceberg planning, Flight's schema probe),
   tell where the time goes.
3. The fixed cost of a query: one that planning prunes to no data file, through gRPC and Flight.
4. The masked aggregate: the same aggregate by the partner application under its agreement (the
   territory filter becomes a row filter inside the plan), through gRPC.

The last stdout line is one JSON object: `ratio_vs_duckdb_<query>` (gRPC median / DuckDB median)
and `ratio_vs_duckdb_<query>_flight`, the medians behind them (`duckdb_<query>_ms`,
`grpc_<query>_ms`, `flight_<query>_ms`, `server_grpc_<query>_ms`, `server_flight_<query>_ms`;
`grpc_<query>_header_ms`: to gRPC's first message, the query decided, planned and opened),
`flight_export_mb_per_s` (Arrow bytes received / seconds), `grpc_masked_aggregate_ms`,
`grpc_empty_ms` / `flight_empty_ms` (a query planned to no data file: the fixed cost of a query),
the step costs (`opa_*_ms`, `iceberg_*_ms`, `flight_schema_probe_ms`), `rows`, `files`,
`setup_s`.

    python bench/query_bench.py            # 10,000,000 rows, 10 rounds
    python bench/query_bench.py --quick    # 1,000,000 rows, 5 rounds, a smoke run under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
import grpc
import pyarrow as pa
from common import (
    bearer,
    launch,
    log_events,
    python_service,
    registry_opa,
    report,
    say,
    start_kafka,
    wait_ready,
    workdir,
)
from google.protobuf.timestamp_pb2 import Timestamp
from policy.services import consent_service, wait_registry
from pyarrow import flight
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.consent.v1 import consent_pb2 as pb
from tdg.consent.v1 import consent_pb2_grpc
from tdg.events.v1 import catalog_events_pb2 as cev
from tdg.query.v1 import query_pb2 as qpb
from tdg.query.v1 import query_pb2_grpc
from tdg_core import topics
from tdg_core.devstack import free_port
from tdg_core.events import CloudEvent, EventProducer, TopicSpec, ensure_topics
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input
from tdg_ingest.schema import TableSchema
from tdg_ingest.warehouse import Warehouse

DATASET = "metropole-lyon.bike-counters-bench"
PUBLISHER = "metropole-lyon"
PURPOSE = "mobility-planning"
FILES = 10  # one append of one day each
COUNTERS = 5_000
COMMUNES = [
    "69123",
    "69266",
    "69381",
    "69382",
    "69383",
    "69384",
    "69385",
    "69386",
    "69387",
    "69388",
    "69389",
]
TERRITORY = ["69123", "69266", "69381"]  # the agreement's territory filter
FIRST_DAY = datetime(2026, 3, 1, tzinfo=UTC)
COLUMNS = [
    ("counter_id", "string", False),
    ("date_observed", "timestamp", False),
    ("lane_direction", "string", False),
    ("intensity", "int32", False),
    ("lane_id", "int32", True),
    ("vehicle_type", "string", True),
    ("ref_road_segment", "string", True),
    ("commune_code", "string", True),
    ("latitude", "float64", True),
    ("longitude", "float64", True),
]
THE_COUNTER = "CPT-01234"
FILTER_COLUMNS = ["counter_id", "date_observed", "lane_direction", "intensity"]
EXPORT_COLUMNS = ["counter_id", "date_observed", "intensity"]
KINDS = ("filter", "aggregate", "export")


def dataset() -> cpb.Dataset:
    return cpb.Dataset(
        id=DATASET,
        publisher=PUBLISHER,
        status=cpb.DATASET_STATUS_PUBLISHED,
        metadata=cpb.DatasetMetadata(
            title="Comptages vélo (bench)",
            access_level=cpb.ACCESS_LEVEL_OPEN,
            territory=["200046977", *COMMUNES],
        ),
        schema=cpb.Schema(
            version=1,
            columns=[
                cpb.Column(name=n, type=t, nullable=z, sensitivity=cpb.SENSITIVITY_PUBLIC)
                for n, t, z in COLUMNS
            ],
            event_time_column="date_observed",
            key_columns=["counter_id", "lane_direction", "date_observed"],
        ),
    )


# --- the table ------------------------------------------------------------------------------

# One day of hourly counts: COUNTERS counters, both directions, the rows spread over the day's
# hours; intensity pseudo-random in [0, 400); each counter in one commune.
DAY_SQL = f"""
SELECT 'CPT-' || lpad(CAST(c AS VARCHAR), 5, '0') AS counter_id,
  make_timestamptz(CAST($day_us + (i * 24 // $m) * 3600000000 AS BIGINT)) AS date_observed,
  CASE WHEN (i // {COUNTERS}) % 2 = 0 THEN 'forward' ELSE 'backward' END AS lane_direction,
  CAST(hash(i, $day_us) % 400 AS INTEGER) AS intensity,
  CAST(1 + c % 3 AS INTEGER) AS lane_id,
  CASE WHEN hash(i, $day_us, 1) % 10 = 0 THEN 'cargoBicycle' ELSE 'bicycle' END AS vehicle_type,
  'SEG-' || lpad(CAST(c // 3 AS VARCHAR), 5, '0') AS ref_road_segment,
  $communes[CAST(1 + hash(c) % {len(COMMUNES)} AS BIGINT)] AS commune_code,
  CAST(45.70 + (c % 97) * 0.0013 AS DOUBLE) AS latitude,
  CAST(4.78 + (c % 89) * 0.0017 AS DOUBLE) AS longitude
FROM (SELECT range AS i, range % {COUNTERS} AS c FROM range($m))
"""


def write_table(properties: dict[str, str], rows: int) -> tuple[list[str], int]:
    """The dataset's table as the ingest service makes it, FILES appends of one day each; the
    current snapshot's data files (local paths) and their bytes."""
    warehouse = Warehouse(properties)
    schema = TableSchema.from_proto(DATASET, dataset().schema)
    warehouse.ensure_table(schema)
    table = warehouse.load_for_write(DATASET)
    target = schema.arrow_schema()
    generator = duckdb.connect(config={"threads": os.cpu_count() or 1})
    generator.execute("SET TimeZone = 'UTC'")
    for day in range(FILES):
        m = rows // FILES + (1 if day < rows % FILES else 0)
        day_us = int((FIRST_DAY + timedelta(days=day)).timestamp() * 1_000_000)
        data = generator.sql(
            DAY_SQL, params={"day_us": day_us, "m": m, "communes": COMMUNES}
        ).to_arrow_table()
        table.append(data.cast(target))
    generator.close()
    table = warehouse.load(DATASET)
    tasks = list(table.scan().plan_files())
    return [local_path(t.file.file_path) for t in tasks], sum(
        t.file.file_size_in_bytes for t in tasks
    )


def local_path(uri: str) -> str:
    parts = urlsplit(uri)
    return unquote(parts.path) if parts.scheme == "file" else uri


# --- the queries ----------------------------------------------------------------------------


def requests() -> dict[str, qpb.QueryRequest]:
    eq = qpb.Comparison(
        column="counter_id",
        op=qpb.COMPARISON_OPERATOR_EQ,
        value=qpb.Literal(string_value=THE_COUNTER),
    )
    return {
        "filter": qpb.QueryRequest(
            dataset_id=DATASET,
            purpose=PURPOSE,
            columns=FILTER_COLUMNS,
            filter=qpb.Expression(comparison=eq),
        ),
        "aggregate": qpb.QueryRequest(
            dataset_id=DATASET,
            purpose=PURPOSE,
            group_by=["commune_code"],
            aggregates=[
                qpb.Aggregate(function=qpb.AGGREGATE_FUNCTION_COUNT),
                qpb.Aggregate(function=qpb.AGGREGATE_FUNCTION_SUM, column="intensity"),
            ],
        ),
        "export": qpb.QueryRequest(dataset_id=DATASET, purpose=PURPOSE, columns=EXPORT_COLUMNS),
    }


# The same work for DuckDB alone ($1: the data files), as the service's statement does it (its
# sum of integers is cast to BIGINT the same way).
SCAN = "read_parquet($files, union_by_name=false, hive_partitioning=false)"
DUCKDB_SQL = {
    "filter": f"SELECT {', '.join(FILTER_COLUMNS)} FROM {SCAN} WHERE counter_id = $counter",
    "aggregate": "SELECT commune_code, count(*) AS count, "
    f"CAST(sum(intensity) AS BIGINT) AS sum_intensity FROM {SCAN} GROUP BY commune_code",
    "export": f"SELECT {', '.join(EXPORT_COLUMNS)} FROM {SCAN}",
    "masked_aggregate": "SELECT commune_code, count(*) AS count, "
    f"CAST(sum(intensity) AS BIGINT) AS sum_intensity FROM {SCAN} "
    "WHERE commune_code IN (SELECT unnest($territory)) GROUP BY commune_code",
}


@dataclass
class Clients:
    """The three ways to run a query, each returning the whole answer as an Arrow table."""

    grpc_channel: grpc.Channel
    flight_client: flight.FlightClient
    files: list[str]
    duck: duckdb.DuckDBPyConnection
    # ms from the last gRPC call to its first message (the header: the query prepared and its
    # statement opened, no batch yet)
    header_ms: float = 0.0

    def grpc(self, request: qpb.QueryRequest, md: tuple[tuple[str, str], ...]) -> pa.Table:
        stub = query_pb2_grpc.QueryServiceStub(self.grpc_channel)
        t0 = time.perf_counter()
        responses = stub.Query(request, metadata=md, timeout=300)
        received = [next(responses)]
        self.header_ms = (time.perf_counter() - t0) * 1000
        received.extend(responses)
        schema = pa.ipc.read_schema(pa.py_buffer(received[0].header.arrow_schema))
        bodies = [r.arrow_batch for r in received if r.WhichOneof("part") == "arrow_batch"]
        batches = [pa.ipc.read_record_batch(pa.py_buffer(b), schema) for b in bodies]
        return pa.Table.from_batches(batches, schema=schema)

    def flight(self, request: qpb.QueryRequest, md: tuple[tuple[str, str], ...]) -> pa.Table:
        options = flight.FlightCallOptions(
            headers=[(k.encode(), v.encode()) for k, v in md], timeout=300
        )
        descriptor = flight.FlightDescriptor.for_command(request.SerializeToString())
        info = self.flight_client.get_flight_info(descriptor, options)
        return self.flight_client.do_get(info.endpoints[0].ticket, options).read_all()

    def duckdb(self, kind: str) -> pa.Table:
        params: dict[str, Any] = {"files": self.files}
        if kind == "filter":
            params["counter"] = THE_COUNTER
        if kind == "masked_aggregate":
            params["territory"] = TERRITORY
        return self.duck.sql(DUCKDB_SQL[kind], params=params).to_arrow_table()


def timed(call: Callable[[], pa.Table]) -> tuple[float, pa.Table]:
    t0 = time.perf_counter()
    result = call()
    return (time.perf_counter() - t0) * 1000, result


def sorted_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return sorted(zip(*columns, strict=True))


def measure(
    clients: Clients,
    md: tuple[tuple[str, str], ...],
    rounds: int,
    log_file: Path,
) -> dict[str, Any]:
    """Every query by every way, warmed up, then `rounds` rounds; medians (and the service's own
    durations from its log). Blocking."""
    figures: dict[str, Any] = {}
    for kind, request in requests().items():
        ways: dict[str, Callable[[], pa.Table]] = {
            "duckdb": partial(clients.duckdb, kind),
            "grpc": partial(clients.grpc, request, md),
            "flight": partial(clients.flight, request, md),
        }
        answers = {way: call() for way, call in ways.items()}  # the warm-up
        expected = answers["duckdb"]
        for way in ("grpc", "flight"):
            got = answers[way]
            if got.num_rows != expected.num_rows or (
                kind != "export" and sorted_rows(got) != sorted_rows(expected)
            ):
                raise AssertionError(f"{kind}: {way} answered {got.num_rows} rows, not as DuckDB")
        _, offset = log_events(log_file, "query")
        times: dict[str, list[float]] = {way: [] for way in ways}
        headers: list[float] = []
        order = list(ways)
        for r in range(rounds):
            for way in order[r % 3 :] + order[: r % 3]:
                ms, answers[way] = timed(ways[way])
                times[way].append(ms)
                if way == "grpc":
                    headers.append(clients.header_ms)
        figures[f"grpc_{kind}_header_ms"] = round(statistics.median(headers), 2)
        logged, _ = log_events(log_file, "query", offset)
        for way, values in times.items():
            figures[f"{way}_{kind}_ms"] = round(statistics.median(values), 2)
        for channel in ("grpc", "flight"):
            server = [float(e["duration_ms"]) for e in logged if e.get("channel") == channel]
            if server:
                figures[f"server_{channel}_{kind}_ms"] = round(statistics.median(server), 1)
        duck = figures[f"duckdb_{kind}_ms"]
        figures[f"ratio_vs_duckdb_{kind}"] = round(figures[f"grpc_{kind}_ms"] / duck, 3)
        figures[f"ratio_vs_duckdb_{kind}_flight"] = round(figures[f"flight_{kind}_ms"] / duck, 3)
        say(
            f"{kind}: {expected.num_rows} rows, {answers['flight'].nbytes / 1e6:.1f} MB; median ms "
            f"DuckDB {duck:.1f}, gRPC {figures[f'grpc_{kind}_ms']:.1f} (header "
            f"{figures[f'grpc_{kind}_header_ms']:.0f}, server "
            f"{figures.get(f'server_grpc_{kind}_ms', float('nan')):.0f}), Flight "
            f"{figures[f'flight_{kind}_ms']:.1f} (server "
            f"{figures.get(f'server_flight_{kind}_ms', float('nan')):.0f}); ratios "
            f"{figures[f'ratio_vs_duckdb_{kind}']:.2f} / "
            f"{figures[f'ratio_vs_duckdb_{kind}_flight']:.2f}"
        )
        if kind == "export":
            mb = answers["flight"].nbytes / 1e6
            figures["export_arrow_mb"] = round(mb, 1)
            for way in ways:
                per_s = mb / (figures[f"{way}_export_ms"] / 1000)
                figures[f"{way}_export_mb_per_s"] = round(per_s, 1)
    return figures


def measure_fixed(
    clients: Clients, md: tuple[tuple[str, str], ...], rounds: int, log_file: Path
) -> dict[str, float]:
    """What a query costs the service besides reading data: one whose filter (a counter id above
    every file's upper bound) prunes every data file in planning, by gRPC and Flight. Blocking."""
    request = qpb.QueryRequest(
        dataset_id=DATASET,
        purpose=PURPOSE,
        columns=["counter_id"],
        filter=qpb.Expression(
            comparison=qpb.Comparison(
                column="counter_id",
                op=qpb.COMPARISON_OPERATOR_EQ,
                value=qpb.Literal(string_value="ZZZ"),
            )
        ),
    )
    times: dict[str, list[float]] = {"grpc": [], "flight": []}
    for _ in range(2):  # the warm-up
        clients.grpc(request, md)
        clients.flight(request, md)
    _, offset = log_events(log_file, "query")
    for _ in range(rounds * 2):
        times["grpc"].append(timed(lambda: clients.grpc(request, md))[0])
        times["flight"].append(timed(lambda: clients.flight(request, md))[0])
    logged, _ = log_events(log_file, "query", offset)
    figures = {f"{way}_empty_ms": round(statistics.median(v), 2) for way, v in times.items()}
    for way in times:
        server = [float(e["duration_ms"]) for e in logged if e.get("channel") == way]
        figures[f"server_{way}_empty_ms"] = round(statistics.median(server or [math.nan]), 1)
    say(
        "a query pruned to no data file (the fixed cost of a query), median ms: gRPC "
        f"{figures['grpc_empty_ms']:.1f} (server {figures['server_grpc_empty_ms']:.0f}), Flight "
        f"{figures['flight_empty_ms']:.1f} (server {figures['server_flight_empty_ms']:.0f})"
    )
    return figures


def measure_masked(
    clients: Clients, md: tuple[tuple[str, str], ...], rounds: int
) -> dict[str, float]:
    """The aggregate under the partner's agreement (territory filter) by gRPC, beside DuckDB
    applying the same filter. Blocking."""
    request = requests()["aggregate"]
    got = clients.grpc(request, md)
    expected = clients.duckdb("masked_aggregate")
    if sorted_rows(got) != sorted_rows(expected):
        raise AssertionError(f"masked aggregate: {got.to_pylist()} != {expected.to_pylist()}")
    service, bare = [], []
    for _ in range(rounds):
        service.append(timed(lambda: clients.grpc(request, md))[0])
        bare.append(timed(lambda: clients.duckdb("masked_aggregate"))[0])
    figures = {
        "grpc_masked_aggregate_ms": round(statistics.median(service), 2),
        "duckdb_masked_aggregate_ms": round(statistics.median(bare), 2),
    }
    say(
        f"masked aggregate (agreement: territory {len(TERRITORY)} communes, hashed counter_id): "
        f"{got.num_rows} groups; median ms gRPC {figures['grpc_masked_aggregate_ms']:.1f}, "
        f"DuckDB {figures['duckdb_masked_aggregate_ms']:.1f}"
    )
    return figures


# --- where the service's time goes ----------------------------------------------------------


async def step_costs(
    opa_url: str, properties: dict[str, str], files: list[str], n: int
) -> dict[str, float]:
    """Medians of what the service does per query besides running the statement, done from here:
    OPA's tdg.rpc and tdg.read decisions (through the services' client), the table's metadata
    load (each TDG_QUERY_TABLE_TTL_S), pyiceberg planning (cached per snapshot in the service),
    and Flight's schema probe (`LIMIT 0` of the statement)."""
    subject = {"party": "lyon-data-office", "org": PUBLISHER, "roles": ["data-officer"]}
    policy = PolicyClient(opa_url, 5.0)
    read = read_input(dataset(), subject, PURPOSE, group_by=["commune_code"])
    rpc = {
        "method": "/tdg.query.v1.QueryService/Query",
        "service": "tdg.query.v1.QueryService",
        "rpc": "Query",
        "subject": subject,
        "resource": {"dataset_id": DATASET, "dataset": {"id": DATASET, "publisher": PUBLISHER}},
    }
    reads, rpcs = [], []
    try:
        for _ in range(n + 1):
            t0 = time.perf_counter()
            await policy.decide_with_id(DecisionPath.READ, read)
            t1 = time.perf_counter()
            await policy.decide(DecisionPath.RPC, rpc)
            reads.append((t1 - t0) * 1000)
            rpcs.append((time.perf_counter() - t1) * 1000)
    finally:
        await policy.close()

    def iceberg() -> tuple[list[float], list[float], list[float]]:
        warehouse = Warehouse(properties)
        loads, plans, probes = [], [], []
        duck = duckdb.connect()
        for _ in range(n + 1):
            t0 = time.perf_counter()
            table = warehouse.load(DATASET)
            t1 = time.perf_counter()
            list(table.scan().plan_files())
            t2 = time.perf_counter()
            duck.sql(f"SELECT * FROM ({DUCKDB_SQL['aggregate']}) LIMIT 0", params={"files": files})
            probes.append((time.perf_counter() - t2) * 1000)
            loads.append((t1 - t0) * 1000)
            plans.append((t2 - t1) * 1000)
        duck.close()
        return loads, plans, probes

    loads, plans, probes = await asyncio.to_thread(iceberg)
    figures = {
        "opa_read_decision_ms": round(statistics.median(reads[1:]), 2),
        "opa_rpc_decision_ms": round(statistics.median(rpcs[1:]), 2),
        "iceberg_load_table_ms": round(statistics.median(loads[1:]), 2),
        "iceberg_plan_files_ms": round(statistics.median(plans[1:]), 2),
        "flight_schema_probe_ms": round(statistics.median(probes[1:]), 2),
    }
    say(
        "steps, median ms: OPA tdg.read "
        f"{figures['opa_read_decision_ms']:.1f}, tdg.rpc {figures['opa_rpc_decision_ms']:.1f}; "
        f"Iceberg load_table {figures['iceberg_load_table_ms']:.1f}, plan_files "
        f"{figures['iceberg_plan_files_ms']:.1f}; DuckDB LIMIT 0 probe "
        f"{figures['flight_schema_probe_ms']:.1f}"
    )
    return figures


# --- the agreement --------------------------------------------------------------------------


async def agreement(consent_address: str, secret: str) -> tuple[tuple[str, str], ...]:
    """A partner application with an active read agreement (counter_id hashed, the territory
    filter); its gRPC metadata."""
    org, app = "velo-startup-bench", "velo-app-bench"
    admin = bearer(secret, "platform-ops", "tdg-platform", ["platform-admin"])
    officer = bearer(secret, "lyon-data-office", PUBLISHER, ["data-officer"])
    app_md = bearer(secret, app, org, [])
    async with grpc.aio.insecure_channel(consent_address) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        for party in (
            pb.Party(id=org, kind=pb.PARTY_KIND_PRIVATE_PARTNER, name="Vélo Startup"),
            pb.Party(
                id=app,
                kind=pb.PARTY_KIND_APPLICATION,
                name="Vélo planner",
                organisation=org,
                roles=["consumer"],
            ),
        ):
            await stub.RegisterParty(
                pb.RegisterPartyRequest(party=party), metadata=admin, timeout=30
            )
        columns = ["counter_id", "date_observed", "intensity", "commune_code"]
        requested = await stub.RequestAccess(
            pb.RequestAccessRequest(
                dataset_id=DATASET,
                purposes=[PURPOSE],
                legal_basis=pb.LEGAL_BASIS_PUBLIC_TASK,
                justification="Size the cycle lanes",
                columns=columns,
            ),
            metadata=app_md,
            timeout=30,
        )
        until = Timestamp()
        until.FromDatetime(datetime.now(UTC) + timedelta(days=1))
        await stub.ApproveAccess(
            pb.ApproveAccessRequest(
                agreement_id=requested.agreement.id,
                conditions=pb.Conditions(
                    columns=columns,
                    masks=[pb.ColumnMask(column="counter_id", method=pb.MASK_METHOD_HASH)],
                    territory_filter=pb.TerritoryFilter(column="commune_code", codes=TERRITORY),
                    valid_until=until,
                ),
            ),
            metadata=officer,
            timeout=30,
        )
    return app_md


async def until_allowed(opa_url: str, subject: dict[str, Any], timeout_s: float = 30) -> None:
    """Until OPA (its bundle pulled) allows the subject's aggregate under the agreement."""
    policy = PolicyClient(opa_url, 5.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            decision = await policy.decide(
                DecisionPath.READ,
                read_input(dataset(), subject, PURPOSE, group_by=["commune_code"]),
            )
            if decision.get("allow") and decision.get("agreement_id"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agreement is not in OPA: {decision.get('reasons')}")
            await asyncio.sleep(0.05)
    finally:
        await policy.close()


# --- the run --------------------------------------------------------------------------------


async def run(rows: int, rounds: int, keep: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "rows": rows,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    started = time.perf_counter()
    with workdir("tdg-query-bench-", keep) as tmp, contextlib.ExitStack() as processes:
        secret = secrets.token_urlsafe(32)
        catalog_url = f"sqlite:///{tmp / 'iceberg.db'}"
        properties = {"type": "sql", "uri": catalog_url, "warehouse": (tmp / "warehouse").as_uri()}
        # The table is written while the processes come up.
        writing = asyncio.create_task(asyncio.to_thread(write_table, properties, rows))
        bootstrap, kafka = await start_kafka(processes, tmp)
        consent_port, bundle_port = free_port(), free_port()
        opa_url = await registry_opa(processes, tmp, bundle_port)
        consent = consent_service(
            tmp,
            "consent",
            tmp / "consent.db",
            consent_port,
            bundle_port,
            opa_url=opa_url,
            secret=secret,
            kafka=bootstrap,
        )
        grpc_port, flight_port = free_port(), free_port()
        settings = {
            "TDG_KAFKA_BOOTSTRAP": bootstrap,
            "TDG_OPA_URL": opa_url,
            "TDG_AUTH_HS256_SECRET": secret,
            "TDG_LAKE_CATALOG_URL": catalog_url,
            "TDG_LAKE_WAREHOUSE": str(tmp / "warehouse"),
            "TDG_QUERY_FLIGHT_PORT": str(flight_port),
            "TDG_QUERY_CONSENT_ADDRESS": f"127.0.0.1:{consent_port}",
            "TDG_QUERY_SPILL_DIR": str(tmp / "spill"),
            # The per-query log line ("query", with its duration) is INFO.
            "TDG_LOG_LEVEL": "INFO",
            "TDG_LOG_FORMAT": "json",
        }
        query = python_service(tmp, "query", "tdg_query", grpc_port, settings, (flight_port,))
        # The services wait for Kafka (and the catalog's topic) by themselves.
        for service in (consent, query):
            await launch(processes, service)
        if kafka is not None:
            await wait_ready(kafka, timeout_s=120)
        await ensure_topics(
            bootstrap, [TopicSpec(topics.CATALOG_EVENTS, 1, config={"retention.ms": "-1"})]
        )
        events = EventProducer(bootstrap, "bench")
        await events.send(
            topics.CATALOG_EVENTS,
            DATASET,
            CloudEvent.of(cev.DatasetPublished(dataset=dataset()), "bench"),
        )
        await events.stop()
        say(f"Kafka and OPA up, dataset published: {time.perf_counter() - started:.1f} s")
        files, data_bytes = await writing
        figures["files"] = len(files)
        figures["data_mb"] = round(data_bytes / 1e6, 1)
        say(
            f"table: {rows} rows in {len(files)} Parquet files, {figures['data_mb']} MB: "
            f"{time.perf_counter() - started:.1f} s"
        )
        await wait_ready(consent, query, timeout_s=120)
        await wait_registry(opa_url, 0)  # the registry bundle (its purposes) is in OPA
        say(f"consent and query services ready: {time.perf_counter() - started:.1f} s")
        app_md = await agreement(f"127.0.0.1:{consent_port}", secret)
        await until_allowed(opa_url, {"party": "velo-app-bench", "org": "velo-startup-bench"})
        figures["setup_s"] = round(time.perf_counter() - started, 1)
        say(f"setup: {figures['setup_s']} s")

        officer = bearer(secret, "lyon-data-office", PUBLISHER, ["data-officer"])
        duck = duckdb.connect(
            config={"threads": os.cpu_count() or 1, "memory_limit": "2GB"},
        )
        duck.execute("SET TimeZone = 'UTC'")  # as the service's
        with (
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            flight.FlightClient(f"grpc+tcp://127.0.0.1:{flight_port}") as flight_client,
        ):
            clients = Clients(channel, flight_client, files, duck)
            t0 = time.perf_counter()
            figures |= await asyncio.to_thread(measure, clients, officer, rounds, query.log_file)
            figures |= await asyncio.to_thread(
                measure_fixed, clients, officer, rounds, query.log_file
            )
            figures |= await asyncio.to_thread(measure_masked, clients, app_md, rounds)
            figures["measure_s"] = round(time.perf_counter() - t0, 1)
        duck.close()
        figures |= await step_costs(opa_url, properties, files, 20)
    figures["flight_export_mb_per_s"] = figures.pop("flight_export_mb_per_s")
    figures["total_s"] = round(time.perf_counter() - started, 1)
    say(f"total: {figures['total_s']} s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    args = parser.parse_args()
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    if rows < FILES * COUNTERS * 2:
        parser.error(f"at least {FILES * COUNTERS * 2} rows")
    report(run(rows, args.rounds or (5 if args.quick else 10), keep=args.keep))


if __name__ == "__main__":
    main()
