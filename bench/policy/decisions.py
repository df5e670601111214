"""1. `tdg.read` decisions through the services' own OPA client, one caller then several, beside
OPA's own account of the time (its metrics, and `opa bench` on the same input and data)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from common import POLICIES, percentile, say, timed_calls
from tdg_core.policy import DecisionPath, PolicyClient

from .scenario import READ_DATASET, READ_ORG, READ_PARTY, Sizes, read_request


def opa_bench(opa_bin: Path, tmp: Path, bundle: Path, inp: dict[str, Any]) -> dict[str, Any]:
    """`opa bench` of data.tdg.read.decision: the policies, the registry bundle, the same input."""
    input_file = tmp / "read-input.json"
    input_file.write_text(json.dumps(inp))
    argv = [
        str(opa_bin),
        "bench",
        "--format=json",
        "--data",
        str(POLICIES),
        "--bundle",
        str(bundle),
        "--input",
        str(input_file),
        "data.tdg.read.decision",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"opa bench failed ({done.returncode}): {done.stderr or done.stdout}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def opa_server_times(opa_url: str, inp: dict[str, Any], n: int) -> tuple[float, float]:
    """Medians (ms) of OPA's own handler and evaluation times of the decision, as OPA reports
    them (`?metrics=true`): what the server spends, without the client or the network."""
    handler: list[float] = []
    evaluation: list[float] = []
    url = f"{opa_url}/v1/data/tdg/read/decision?metrics=true"
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.post(url, json={"input": inp}) as response:
                response.raise_for_status()
                metrics = (await response.json())["metrics"]
            handler.append(metrics["timer_server_handler_ns"] / 1e6)
            evaluation.append(metrics["timer_rego_query_eval_ns"] / 1e6)
    return statistics.median(handler), statistics.median(evaluation)


async def decisions_phase(
    opa_url: str, opa_bin: Path, tmp: Path, bundle: Path, sizes: Sizes, agreement_id: str
) -> dict[str, float]:
    inp = read_request(READ_PARTY, READ_ORG)
    policy = PolicyClient(opa_url, timeout_s=5.0)
    try:
        first = await policy.decide(DecisionPath.READ, inp)
        if not first["allow"] or first["agreement_id"] != agreement_id:
            raise RuntimeError(f"the measured read is not allowed by {agreement_id}: {first}")
        treatments = sorted(f"{k}:{v['treatment']}" for k, v in first["columns"].items())
        say(f"tdg.read for {READ_PARTY} on {READ_DATASET}: allowed, {' '.join(treatments)}")
        row_filter = first["row_filters"][0]
        say(f"  row filter: {row_filter['column']} in {len(row_filter['values'])} codes")

        async def decide(_: int) -> object:
            answer = await policy.decide(DecisionPath.READ, inp)
            if not answer["allow"]:
                raise RuntimeError(f"decision changed while measuring: {answer['reasons']}")
            return answer

        await timed_calls(min(200, sizes.decisions // 3), 1, decide)  # warm-up: connection, caches
        seq_rate, seq_ms = await timed_calls(sizes.decisions, 1, decide)
        say(
            f"tdg.read, 1 caller: {sizes.decisions} decisions, {seq_rate:.0f}/s, "
            f"p50 {statistics.median(seq_ms):.2f} ms, p99 {percentile(seq_ms, 0.99):.2f} ms"
        )
        rate, conc_ms = await timed_calls(sizes.concurrent_decisions, sizes.concurrency, decide)
        say(
            f"tdg.read, {sizes.concurrency} callers: {sizes.concurrent_decisions} decisions, "
            f"{rate:.0f}/s, p50 {statistics.median(conc_ms):.2f} ms, "
            f"p99 {percentile(conc_ms, 0.99):.2f} ms"
        )
    finally:
        await policy.close()
    handler_ms, eval_ms = await opa_server_times(opa_url, inp, min(300, sizes.decisions // 3))
    say(f"  OPA server's own time per decision: handler {handler_ms:.2f} ms, eval {eval_ms:.2f} ms")
    bench = await asyncio.to_thread(opa_bench, opa_bin, tmp, bundle, inp)
    extra = bench.get("Extra", {})
    bench_p99_ms = float(extra["histogram_timer_rego_query_eval_ns_99%"]) / 1e6
    bench_p50_ms = float(extra["histogram_timer_rego_query_eval_ns_median"]) / 1e6
    ns_per_op = float(bench["T"]) / float(bench["N"])
    say(
        f"opa bench: {bench['N']} evaluations, {ns_per_op / 1e3:.0f} µs/op, "
        f"eval p50 {bench_p50_ms:.3f} ms, p99 {bench_p99_ms:.3f} ms"
    )
    p99 = percentile(seq_ms, 0.99)
    return {
        "decisions_per_s": round(rate, 1),
        "concurrency": sizes.concurrency,
        "concurrent_p50_ms": round(statistics.median(conc_ms), 3),
        "concurrent_p99_ms": round(percentile(conc_ms, 0.99), 3),
        "single_caller_decisions_per_s": round(seq_rate, 1),
        "p50_ms": round(statistics.median(seq_ms), 3),
        "p99_ms": round(p99, 3),
        "opa_server_handler_p50_ms": round(handler_ms, 3),
        "opa_server_eval_p50_ms": round(eval_ms, 3),
        "opa_bench_ns_per_op": round(ns_per_op),
        "opa_bench_p50_ms": round(bench_p50_ms, 3),
        "opa_bench_p99_ms": round(bench_p99_ms, 3),
        "ratio_vs_opa_bench": round(p99 / bench_p99_ms, 2),
    }
