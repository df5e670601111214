"""Catalog benchmark: RegisterDataset and SearchDatasets over gRPC on the real stack.

Prints throughput and p50/p99 latency of registering N datasets and of searching them, the cost of
the OPA check alone, and the same registrations done directly on the catalog's store (no gRPC, no
token, no OPA) as a baseline. The last line is one JSON object.

    python bench/catalog_bench.py            # 10,000 datasets
    python bench/catalog_bench.py --quick    # a smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

import grpc
from common import (
    bearer,
    kafka_and_opa,
    launch,
    percentile,
    python_service,
    report,
    timed_calls,
    wait_ready,
    workdir,
)
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg.catalog.v1 import catalog_pb2_grpc
from tdg_catalog.catalog import Catalog
from tdg_catalog.convert import metadata_from_pb, schema_from_pb
from tdg_catalog.server import MIGRATIONS
from tdg_catalog.store import outbox
from tdg_core.db import create_engine, upgrade_to_head
from tdg_core.devstack import free_port
from tdg_core.events import EventProducer
from tdg_core.outbox import Outbox
from tdg_core.policy import DecisionPath, PolicyClient

WORDS = [
    "énergie",
    "électricité",
    "chaleur",
    "vélo",
    "trottinette",
    "bus",
    "tramway",
    "métro",
    "stationnement",
    "recharge",
    "déchets",
    "collecte",
    "tri",
    "compost",
    "eau",
    "assainissement",
    "qualité",
    "air",
    "bruit",
    "température",
    "arbres",
    "parcs",
    "voirie",
    "trafic",
    "comptage",
    "logement",
    "rénovation",
    "population",
    "école",
    "cantine",
    "bibliothèque",
    "piscine",
    "marché",
    "commune",
    "quartier",
    "capteur",
    "compteur",
    "consommation",
    "production",
    "solaire",
]
THEMES = ["ENER", "TRAN", "ENVI", "REGI", "SOCI", "EDUC", "HEAL", "GOVE"]
PUBLISHERS = ["metropole-lyon", "ville-villeurbanne", "sytral", "eau-du-grand-lyon", "enedis-aura"]


def dataset(i: int, rng: random.Random) -> pb.RegisterDatasetRequest:
    words = rng.sample(WORDS, 4)
    publisher = PUBLISHERS[i % len(PUBLISHERS)]
    columns = [
        pb.Column(name="sensor_id", type="string", description="identifiant du capteur"),
        pb.Column(name="date_observed", type="timestamp", description="date de mesure"),
        pb.Column(
            name=f"{words[2]}_value".encode("ascii", "ignore").decode()[:20] or "v",
            type="float64",
            nullable=True,
            description=f"mesure de {words[2]}",
            unit="kWh",
        ),
    ]
    return pb.RegisterDatasetRequest(
        id=f"{publisher}.ds-{i:06d}",
        metadata=pb.DatasetMetadata(
            title=f"{words[0].capitalize()} et {words[1]} — jeu {i}",
            description=f"Mesures de {words[2]} et de {words[3]} sur le territoire.",
            themes=[rng.choice(THEMES)],
            keywords=words[:3],
            licence="etalab-2.0",
            access_level=pb.ACCESS_LEVEL_OPEN,
            territory=["69123"],
            update_frequency="daily",
        ),
        schema=pb.Schema(columns=columns, event_time_column=""),
    )


async def direct_baseline(tmp: Path, requests: list[pb.RegisterDatasetRequest]) -> float:
    """Registrations straight on the store (validation, SQLite, outbox row): no gRPC, no OPA."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'direct.db'}")
    await upgrade_to_head(engine, MIGRATIONS)
    catalog = Catalog(engine, Outbox(outbox, engine, EventProducer("127.0.0.1:1", "unused")), 2000)
    t0 = time.perf_counter()
    for r in requests:
        await catalog.register(r.id, metadata_from_pb(r.metadata), schema_from_pb(r.schema))
    rate = len(requests) / (time.perf_counter() - t0)
    await engine.dispose()
    return rate


async def run(n: int, searches: int, opa_checks: int, concurrency: int) -> dict[str, float]:
    rng = random.Random(42)
    requests = [dataset(i, rng) for i in range(n)]
    with workdir("tdg-bench-") as tmp, contextlib.ExitStack() as processes:
        bootstrap, opa_url = await kafka_and_opa(processes, tmp)
        secret = secrets.token_urlsafe(32)
        settings = {
            "TDG_KAFKA_BOOTSTRAP": bootstrap,
            "TDG_OPA_URL": opa_url,
            "TDG_AUTH_HS256_SECRET": secret,
            "TDG_CATALOG_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'catalog.db'}",
        }
        server = python_service(tmp, "catalog", "tdg_catalog", free_port(), settings)
        await launch(processes, server)
        await wait_ready(server, timeout_s=60)
        md = bearer(secret, "ops", "tdg", ["platform-admin"])
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = catalog_pb2_grpc.CatalogServiceStub(ch)

            async def register(i: int) -> object:
                return await stub.RegisterDataset(requests[i], metadata=md, timeout=30)

            register_rate, register_ms = await timed_calls(n, concurrency, register)
            print(f"register: {n} datasets, {register_rate:.0f}/s over gRPC", file=sys.stderr)

            queries = [" ".join(rng.sample(WORDS, rng.choice((1, 2)))) for _ in range(searches)]

            async def search(i: int) -> object:
                return await stub.SearchDatasets(
                    pb.SearchDatasetsRequest(query=queries[i], limit=20),
                    metadata=md,
                    timeout=30,
                )

            search_rate, search_ms = await timed_calls(searches, concurrency, search)
            print(f"search: {searches} queries, {search_rate:.0f}/s", file=sys.stderr)

        policy = PolicyClient(opa_url, timeout_s=1.0)
        opa_input = {
            "method": "/tdg.catalog.v1.CatalogService/RegisterDataset",
            "service": "tdg.catalog.v1.CatalogService",
            "rpc": "RegisterDataset",
            "subject": {"party": "ops", "org": "metropole-lyon", "roles": ["data-officer"]},
            "resource": {"dataset_id": "metropole-lyon.x", "publisher": "metropole-lyon"},
        }
        opa_ms: list[float] = []
        for _ in range(opa_checks):
            t0 = time.perf_counter()
            await policy.decide(DecisionPath.RPC, opa_input)
            opa_ms.append((time.perf_counter() - t0) * 1000)
        await policy.close()
        server.stop()  # the baseline runs without it
        direct_n = min(n, 2000)
        direct_rate = await direct_baseline(tmp, requests[:direct_n])
    return {
        "datasets": n,
        "concurrency": concurrency,
        "register_per_s": round(register_rate, 1),
        "register_p50_ms": round(statistics.median(register_ms), 2),
        "register_p99_ms": round(percentile(register_ms, 0.99), 2),
        "search_per_s": round(search_rate, 1),
        "search_p50_ms": round(statistics.median(search_ms), 2),
        "search_p99_ms": round(percentile(search_ms, 0.99), 2),
        "opa_check_p50_ms": round(statistics.median(opa_ms), 3),
        "opa_check_p99_ms": round(percentile(opa_ms, 0.99), 3),
        "direct_register_per_s": round(direct_rate, 1),
        "register_ratio_vs_direct": round(register_rate / direct_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--datasets", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    n = args.datasets or (300 if args.quick else 10_000)
    searches = 200 if args.quick else 2_000
    opa_checks = 300 if args.quick else 3_000
    report(run(n, searches, opa_checks, args.concurrency))


if __name__ == "__main__":
    main()
