"""Policy benchmark: OPA's tdg.read decision, the consent subject-set export and the time a
revocation takes to reach OPA, on real processes (OPA, the consent service).

1. `tdg.read` decisions through the services' own OPA client (`PolicyClient`), with the consent
   registry (parties, agreements) loaded in OPA from the consent service's bundle: latency of one
   caller, throughput of 8 concurrent callers, beside `opa bench` on the same input, policies and
   bundle (OPA's own evaluation cost, without HTTP or the client).
2. `StreamSubjectSet` of a large subject set over gRPC, end to end (every chunk read into a
   pyarrow Table), and the consent service's peak memory meanwhile (sampled from /proc).
3. From the moment `RevokeAgreement` returns until OPA's `tdg.read` decision stops allowing.

Parties, agreements and consents are bulk-inserted into the service's SQLite database before it
starts; the loading is not measured. Kafka is not started: nothing measured goes through it, the
service serves without it (its outbox and catalog follower retry about once a second, logging a
warning each time into the service log in the temporary directory) and the datasets the service
would learn from the catalog are seeded in its `datasets` table instead.

The subject-set export runs on a consent service of its own (same code, its own database holding
the consents), so the memory it reports is the export's alone, not the leftovers of the registry
bundle builds of the other instance.

The last stdout line is one JSON object: `p50_ms`/`p99_ms` are one caller's latencies,
`decisions_per_s` the throughput of the concurrent callers (`concurrent_p50_ms`/`_p99_ms` their
latencies), `opa_bench_p99_ms` OPA's own evaluation p99 and `ratio_vs_opa_bench` the first over
it; `subject_export_s`, `subject_export_rows_per_s`, `subject_export_peak_mb` (service RSS peak
minus RSS before); `revocation_propagation_ms` (median) and `_max_ms`; `load_avg_1m_at_start`
tells how busy the machine was.

    python bench/policy_bench.py            # 1,000 parties, 10,000 agreements, 1,000,000 subjects
    python bench/policy_bench.py --quick    # 100 parties, 1,000 agreements, 100,000 subjects
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import time
from functools import partial
from typing import Any

from common import ROOT, launch, opa_server, report, say, wait_ready, workdir
from policy.decisions import decisions_phase
from policy.export import export_phase
from policy.loading import bulk_load, load_registry, migrate, prepare_export_db
from policy.registry import build_registry, registry_revision
from policy.revocation import revocation_phase
from policy.scenario import Sizes
from policy.services import Ports, consent_service, fetch_bundle, wait_registry
from tdg_core.devstack import Tools, free_port


async def run(sizes: Sizes, keep: bool) -> dict[str, Any]:
    rng = random.Random(42)
    tools = Tools.locate(ROOT)
    secret = secrets.token_urlsafe(32)
    # The machine's load when the run began: the figures are only as quiet as the machine was.
    figures: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "parties": sizes.parties,
        "agreements": sizes.agreements,
    }
    with workdir("tdg-policy-bench-", keep) as tmp, contextlib.ExitStack() as processes:
        ports = Ports(*(free_port() for _ in range(6)))
        kafka = f"127.0.0.1:{ports.kafka}"
        main_db, export_db = tmp / "consent.db", tmp / "consent-export.db"

        t0 = time.perf_counter()
        registry = build_registry(sizes.parties, sizes.agreements, rng)
        revision = registry_revision(registry)
        await migrate(main_db)
        await asyncio.to_thread(bulk_load, main_db, lambda c: load_registry(c, registry))
        await migrate(export_db)
        expected, consent_revision = await asyncio.to_thread(
            prepare_export_db, export_db, sizes.subjects, rng
        )
        say(
            f"loaded {len(registry.parties)} parties, {len(registry.agreements)} agreements, "
            f"{consent_revision} consent records ({expected} subjects in the set) "
            f"in {time.perf_counter() - t0:.1f} s (not measured)"
        )

        opa = opa_server(tools, tmp, ports.opa, f"http://127.0.0.1:{ports.bundle}")
        await launch(processes, opa)
        await wait_ready(opa, timeout_s=20)
        # The instance holding the registry (whose bundle OPA pulls), and one holding the
        # consents: the export runs in a process where nothing else ran.
        consent = partial(consent_service, tmp, opa_url=opa.url, secret=secret, kafka=kafka)
        service = consent("consent", main_db, ports.grpc, ports.bundle)
        exporter = consent("consent-export", export_db, ports.export_grpc, ports.export_bundle)
        t0 = time.perf_counter()
        for process in (service, exporter):
            await launch(processes, process)
        await wait_ready(service, exporter, timeout_s=60)
        await wait_registry(opa.url, revision)
        bundle = tmp / "registry.tar.gz"
        bundle_bytes = await fetch_bundle(ports.bundle, bundle)
        say(
            f"registry bundle: {bundle_bytes / 1e6:.2f} MB gzipped, in OPA "
            f"{time.perf_counter() - t0:.1f} s after the services started"
        )
        figures["bundle_mb"] = round(bundle_bytes / 1e6, 2)

        figures |= await export_phase(exporter, secret, expected, consent_revision)
        exporter.stop()
        figures |= await decisions_phase(
            opa.url, tools.opa_bin, tmp, bundle, sizes, registry.read_agreement
        )
        figures |= await revocation_phase(service, opa.url, secret, revision, sizes.revocations)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--parties", type=int, default=None)
    parser.add_argument("--agreements", type=int, default=None)
    parser.add_argument("--subjects", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if (
        (args.parties or 100) < 20
        or (args.agreements or 10) < 6
        or (args.subjects or 10**4) < 10**4
    ):
        parser.error("at least 20 parties, 6 agreements and 10,000 subjects")
    quick = args.quick
    sizes = Sizes(
        parties=args.parties or (100 if quick else 1_000),
        agreements=args.agreements or (1_000 if quick else 10_000),
        subjects=args.subjects or (100_000 if quick else 1_000_000),
        decisions=300 if quick else 3_000,
        concurrent_decisions=1_000 if quick else 10_000,
        concurrency=args.concurrency,
        revocations=3 if quick else 5,
    )
    report(run(sizes, args.keep))


if __name__ == "__main__":
    main()
