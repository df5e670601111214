"""The measurements: each query by each way (warmed up, then in rounds whose order rotates), the
fixed cost of a query, and the aggregate under a partner's agreement; medians, beside the
service's own durations read from its log. Each blocks: run it in a thread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from common import Metadata, log_events, say

from .clients import Clients, sorted_rows, timed
from .scenario import TERRITORY, pruned_request, requests


def measure(
    clients: Clients,
    md: Metadata,
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


def measure_fixed(clients: Clients, md: Metadata, rounds: int, log_file: Path) -> dict[str, float]:
    """What a query costs the service besides reading data: one pruned to no data file in
    planning, by gRPC and Flight. Blocking."""
    request = pruned_request()
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


def measure_masked(clients: Clients, md: Metadata, rounds: int) -> dict[str, float]:
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
