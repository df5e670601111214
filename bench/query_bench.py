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
import os
import secrets
import time
from typing import Any

import duckdb
import grpc
from common import (
    bearer,
    launch,
    registry_opa,
    report,
    say,
    start_kafka,
    wait_ready,
    workdir,
)
from policy.services import consent_service, wait_registry
from pyarrow import flight
from query.agreement import APPLICATION, PARTNER, agreement, until_allowed
from query.clients import Clients
from query.measures import measure, measure_fixed, measure_masked
from query.scenario import COUNTERS, FILES, PUBLISHER
from query.services import publish_dataset, query_service
from query.steps import step_costs
from query.table import write_table
from tdg_core.devstack import free_port


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
        query = query_service(
            tmp,
            grpc_port,
            flight_port,
            kafka=bootstrap,
            opa_url=opa_url,
            secret=secret,
            catalog_url=catalog_url,
            consent_address=f"127.0.0.1:{consent_port}",
        )
        # The services wait for Kafka (and the catalog's topic) by themselves.
        for service in (consent, query):
            await launch(processes, service)
        if kafka is not None:
            await wait_ready(kafka, timeout_s=120)
        await publish_dataset(bootstrap)
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
        await until_allowed(opa_url, {"party": APPLICATION, "org": PARTNER})
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
