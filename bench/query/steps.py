"""Where the service's time goes: what it does per query besides running the statement, done from
here (OPA decisions, the table's metadata load, pyiceberg planning, Flight's schema probe)."""

from __future__ import annotations

import asyncio
import statistics
import time

import duckdb
from common import say
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input
from tdg_ingest.warehouse import Warehouse

from .scenario import DATASET, DUCKDB_SQL, PUBLISHER, PURPOSE, dataset


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
