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
import dataclasses
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import grpc
import jwt
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.consent.v1 import consent_pb2 as pb
from tdg.consent.v1 import consent_pb2_grpc
from tdg_consent import store
from tdg_consent.bundle_server import PATH as BUNDLE_PATH
from tdg_consent.codec import conditions_to_dict
from tdg_consent.convert import conditions_to_pb
from tdg_consent.model import (
    ColumnMask,
    Commitments,
    Conditions,
    Generalisation,
    MaskMethod,
    TerritoryFilter,
)
from tdg_consent.server import MIGRATIONS
from tdg_consent.settings import DEFAULT_PURPOSES
from tdg_core.db import create_engine, upgrade_to_head
from tdg_core.devstack import OpaServer, PythonService, ServiceSpec, Tools, free_port
from tdg_core.policy import PolicyClient
from tdg_core.read_policy import read_input

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
PURPOSES = list(DEFAULT_PURPOSES)

# The read decision measured: an application of a private partner, holding an active agreement
# (masks, territory filter, a column withheld) on a restricted dataset of 12 columns.
READ_DATASET = "metropole-lyon.bike-counters"
READ_PARTY, READ_ORG = "velo-app", "velo-startup"
READ_PURPOSE = "mobility-planning"
# Registered over gRPC for the revocation runs: no agreement of theirs is in the bulk data.
REVOKE_PARTY, REVOKE_ORG = "revocation-app", "revocation-partner"
# The subject set exported, and a small one exported first to warm the service up.
EXPORT_DATASET = "metropole-lyon.mobility-survey"
EXPORT_PURPOSE = "public-statistics"
WARMUP_PURPOSE = "research"
WARMUP_SUBJECTS = 1_000

COLUMNS: list[tuple[str, str, str]] = [
    ("counter_id", "string", "public"),
    ("commune", "string", "public"),
    ("ts", "timestamp", "public"),
    ("count", "int64", "public"),
    ("direction", "string", "public"),
    ("lane", "string", "internal"),
    ("speed_kmh", "float64", "internal"),
    ("device_serial", "string", "internal"),
    ("cyclist_id", "string", "personal"),
    ("age_band", "string", "personal"),
    ("home_commune", "string", "personal"),
    ("health_flag", "bool", "sensitive"),
]
SURVEY_COLUMNS: list[tuple[str, str, str]] = [
    ("respondent_id", "string", "personal"),
    ("commune", "string", "public"),
    ("answered_at", "timestamp", "public"),
    ("main_mode", "string", "public"),
    ("trips_per_week", "int32", "public"),
]
# INSEE-shaped commune codes of the Rhône (syntax is what the service checks).
COMMUNES = [f"69{k:03d}" for k in range(1, 300)]
PUBLISHERS = ["metropole-lyon", "ville-villeurbanne", "sytral", "eau-du-grand-lyon", "enedis-aura"]


@dataclass(frozen=True)
class Sizes:
    parties: int
    agreements: int
    subjects: int
    decisions: int  # one caller, for the latency percentiles
    concurrent_decisions: int  # across `concurrency` callers, for the throughput
    concurrency: int
    revocations: int


# --- small helpers --------------------------------------------------------------------------


def say(line: str) -> None:
    print(line, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def token(secret: str, sub: str, org: str, roles: list[str]) -> str:
    now = int(time.time())
    claims = {"sub": sub, "org": org, "roles": roles, "iss": "tdg", "aud": "tdg"}
    return jwt.encode({**claims, "iat": now, "exp": now + 3600}, secret, "HS256")


def bearer(secret: str, sub: str, org: str, roles: list[str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token(secret, sub, org, roles)}"),)


def subject_id(rng: random.Random) -> str:
    """A pseudonymous subject id shaped like a UUID."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class RssSampler:
    """Samples a process's VmRSS every `interval_s` in a thread; `peak_kb` is the largest seen.
    Also resets the kernel's peak (VmHWM) at the start when allowed, so `hwm_kb` afterwards is
    the exact peak of the interval, samples or not."""

    def __init__(self, pid: int, interval_s: float = 0.002) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_kb = 0
        self.samples = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
                self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to VmRSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.peak_kb = rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def hwm_kb(self) -> int:
        return rss_kb(self.pid, "VmHWM") if self.hwm_reset else 0


async def timed_calls(
    n: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> tuple[float, list[float]]:
    """Run n calls with at most `concurrency` in flight; (calls per second, latencies in ms)."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), latencies


# --- the data -------------------------------------------------------------------------------


def read_conditions(now: datetime) -> Conditions:
    """The conditions of the measured agreement (and of each approval in the revocation runs)."""
    return Conditions(
        columns=tuple(name for name, _, _ in COLUMNS if name != "device_serial"),
        masks=(
            ColumnMask("counter_id", MaskMethod.HASH),
            ColumnMask("ts", MaskMethod.GENERALISE, Generalisation(truncate_to="hour")),
            ColumnMask("speed_kmh", MaskMethod.GENERALISE, Generalisation(round_to=5.0)),
            ColumnMask("age_band", MaskMethod.CLEAR),
            ColumnMask("home_commune", MaskMethod.GENERALISE, Generalisation(commune_to_epci=True)),
        ),
        territory_filter=TerritoryFilter("commune", tuple(COMMUNES[:20])),
        valid_until=now + timedelta(days=365),
    )


def random_conditions(rng: random.Random, now: datetime, kind: str) -> Conditions:
    valid_from = now - timedelta(days=rng.randint(1, 700))
    valid_until = now + timedelta(days=rng.randint(30, 900)) if rng.random() < 0.5 else None
    if kind == "write":
        return Conditions(
            valid_from=valid_from,
            valid_until=valid_until,
            commitments=Commitments(rng.choice((60, 300, 3600)), 95.0, 99.0),
        )
    names = [name for name, _, _ in COLUMNS]
    columns = () if rng.random() < 0.3 else tuple(rng.sample(names, rng.randint(6, 11)))
    granted = set(columns or names)
    candidates = [
        ColumnMask("counter_id", MaskMethod.HASH),
        ColumnMask("cyclist_id", MaskMethod.HASH),
        ColumnMask(
            "ts", MaskMethod.GENERALISE, Generalisation(truncate_to=rng.choice(("hour", "day")))
        ),
        ColumnMask("count", MaskMethod.GENERALISE, Generalisation(round_to=10.0)),
        ColumnMask("speed_kmh", MaskMethod.GENERALISE, Generalisation(round_to=5.0)),
        ColumnMask("home_commune", MaskMethod.GENERALISE, Generalisation(commune_to_epci=True)),
        ColumnMask("age_band", MaskMethod.CLEAR),
        ColumnMask("health_flag", MaskMethod.NULL),
    ]
    masks = tuple(m for m in candidates if m.column in granted and rng.random() < 0.5)
    territory = None
    if "commune" in granted and rng.random() < 0.7:
        territory = TerritoryFilter("commune", tuple(rng.sample(COMMUNES, rng.randint(1, 40))))
    aggregate_only = rng.random() < 0.1
    return Conditions(
        columns=columns,
        masks=masks,
        territory_filter=territory,
        aggregate_only=aggregate_only,
        min_group_size=rng.choice((0, 20)) if aggregate_only else 0,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def dataset_row(
    dataset_id: str,
    access_level: str,
    columns: list[tuple[str, str, str]],
    subject: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": dataset_id,
        "publisher": dataset_id.partition(".")[0],
        "status": "published",
        "access_level": access_level,
        "columns": [{"name": n, "type": t, "sensitivity": s} for n, t, s in columns],
        "subject_column": subject,
        "updated_at": now,
    }


@dataclass
class Registry:
    parties: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    agreements: list[dict[str, Any]]
    read_agreement: str  # the agreement the measured decision rests on


def build_registry(n_parties: int, n_agreements: int, rng: random.Random) -> Registry:
    """Publishers (5%), consumer organisations (35%) and their applications, 10 datasets per
    publisher, and agreements spread over them (97% active, 3% suspended; 90% read)."""
    now = datetime.now(UTC)

    def party(pid: str, kind: str, organisation: str, roles: list[str]) -> dict[str, Any]:
        return {
            "id": pid,
            "kind": kind,
            "name": pid.replace("-", " ").title(),
            "organisation": organisation,
            "roles": roles,
            "siren": "",
            "contact": f"dpo@{pid}.example",
            "status": "active",
            "suspension_reason": "",
            "created_at": now,
            "updated_at": now,
        }

    n_publishers = max(len(PUBLISHERS), n_parties // 20)
    n_orgs = max(2, n_parties * 35 // 100)
    n_apps = n_parties - n_publishers - n_orgs
    publishers = PUBLISHERS + [f"commune-{k:03d}" for k in range(n_publishers - len(PUBLISHERS))]
    parties = [
        party(
            p, "public-company" if i in (2, 3, 4) else "municipality", p, ["publisher", "consumer"]
        )
        for i, p in enumerate(publishers)
    ]
    orgs = [READ_ORG] + [f"partner-{k:03d}" for k in range(n_orgs - 1)]
    for i, o in enumerate(orgs):
        kind = ("private-partner", "research-body", "private-partner")[i % 3]
        parties.append(party(o, kind, o, ["consumer", "producer"] if i % 4 == 0 else ["consumer"]))
    apps = [READ_PARTY] + [f"app-{k:04d}" for k in range(n_apps - 1)]
    owners = {READ_PARTY: READ_ORG}
    for a in apps[1:]:
        owners[a] = rng.choice(orgs[1:])
    for a in apps:
        parties.append(party(a, "application", owners[a], ["consumer"]))
    others = [p for p in parties[len(publishers) :] if p["id"] not in (READ_ORG, READ_PARTY)]
    for p in rng.sample(others, max(1, n_parties // 100)):
        p["status"], p["suspension_reason"] = "suspended", "late delivery reports"

    datasets = [dataset_row(READ_DATASET, "restricted", COLUMNS, "cyclist_id", now)]
    for publisher in publishers:
        for k in range(10):
            level = rng.choice(("restricted", "restricted", "personal", "open"))
            dataset_id = f"{publisher}.ds-{k:02d}"
            datasets.append(dataset_row(dataset_id, level, COLUMNS, "cyclist_id", now))
    consumers = orgs[1:] + apps[1:]

    def agreement(
        dataset_id: str,
        consumer: str,
        kind: str,
        purposes: list[str],
        c: Conditions,
        state: str,
        legal_basis: str = "",
    ) -> dict[str, Any]:
        publisher = dataset_id.partition(".")[0]
        return {
            "id": f"agr-{rng.getrandbits(128):032x}",
            "dataset_id": dataset_id,
            "publisher": publisher,
            "consumer": consumer,
            "consumer_org": owners.get(consumer, consumer),
            "kind": kind,
            "purposes": purposes,
            "legal_basis": legal_basis
            or rng.choice(("public-task", "contract", "legitimate-interest", "consent")),
            "justification": "mobility studies of the territory",
            "requested_columns": [],
            "state": state,
            "conditions": conditions_to_dict(c),
            "salt": f"{rng.getrandbits(256):064x}",
            "requested_by": consumer,
            "decided_by": f"dpo-{publisher}",
            "reason": "",
            "created_at": now,
            "updated_at": now,
            "valid_until": c.valid_until,
        }

    read_terms = dataclasses.replace(read_conditions(now), valid_from=now - timedelta(days=30))
    read = agreement(
        READ_DATASET,
        READ_PARTY,
        "read",
        [READ_PURPOSE, "urban-planning"],
        read_terms,
        "active",
        "public-task",
    )
    # The application's organisation holds one for another purpose (found, not usable), and the
    # application reads a few other datasets: the decision looks at more than one agreement.
    fixed = [
        read,
        agreement(
            READ_DATASET,
            READ_ORG,
            "read",
            ["research"],
            random_conditions(rng, now, "read"),
            "active",
        ),
    ]
    for d in rng.sample(datasets[1:], 4):
        fixed.append(
            agreement(
                d["id"],
                READ_PARTY,
                "read",
                [READ_PURPOSE],
                random_conditions(rng, now, "read"),
                "active",
            )
        )
    agreements = fixed[:n_agreements]
    while len(agreements) < n_agreements:
        kind = "write" if rng.random() < 0.1 else "read"
        d = rng.choice(datasets[1:])
        agreements.append(
            agreement(
                d["id"],
                rng.choice(consumers),
                kind,
                rng.sample(PURPOSES, rng.randint(1, 3)),
                random_conditions(rng, now, kind),
                "suspended" if rng.random() < 0.03 else "active",
            )
        )
    return Registry(parties, datasets, agreements, read["id"])


def read_dataset_pb() -> cpb.Dataset:
    """The measured dataset as the catalog serves it (the query service builds its input so)."""
    return cpb.Dataset(
        id=READ_DATASET,
        publisher=READ_DATASET.partition(".")[0],
        status=cpb.DATASET_STATUS_PUBLISHED,
        metadata=cpb.DatasetMetadata(
            title="Comptages vélo",
            access_level=cpb.ACCESS_LEVEL_RESTRICTED,
            territory=["200046977"],
        ),
        schema=cpb.Schema(
            columns=[
                cpb.Column(
                    name=n, type=t, sensitivity=cpb.Sensitivity.Value(f"SENSITIVITY_{s.upper()}")
                )
                for n, t, s in COLUMNS
            ],
            event_time_column="ts",
            subject_column="cyclist_id",
        ),
    )


def read_request(party: str, org: str) -> dict[str, Any]:
    """A detail query: eight columns (hashed, generalised, defaulted), filtered and ordered."""
    return read_input(
        read_dataset_pb(),
        {"party": party, "org": org, "roles": []},
        READ_PURPOSE,
        columns=[
            "counter_id",
            "commune",
            "ts",
            "count",
            "direction",
            "speed_kmh",
            "cyclist_id",
            "age_band",
        ],
        filter_columns=["commune", "direction"],
        order_by=["count"],
    )


@dataclass
class SubjectSet:
    consents: list[tuple[Any, ...]]  # in the column order of store.consents
    log: list[tuple[Any, ...]]  # in the column order of store.consent_log
    expected: int  # subjects with active consent for (EXPORT_DATASET, EXPORT_PURPOSE)
    revision: int  # the last consent revision


def build_subjects(n: int, rng: random.Random) -> SubjectSet:
    """n subjects in the set: 95% by a consent for every dataset, 5% by one for this dataset.
    Besides them, as many as 5% more subjects who are not: withdrawn (2%), given for every dataset
    but withdrawn for this one (1%), given for another purpose only (2%). The first WARMUP_SUBJECTS
    of the set also consent to WARMUP_PURPOSE."""
    dialect = sqlite_dialect.dialect()
    process = store.consents.c.given_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    base = datetime.now(UTC) - timedelta(days=400)
    times = [process(base + timedelta(days=d, seconds=d * 97)) for d in range(400)]
    n_specific, n_withdrawn, n_override, n_other = n // 20, n // 50, n // 100, n // 50
    roles = (
        ["all"] * (n - n_specific)
        + ["specific"] * n_specific
        + ["withdrawn"] * n_withdrawn
        + ["override"] * n_override
        + ["other"] * n_other
    )
    rng.shuffle(roles)
    ids = sorted({subject_id(rng) for _ in range(len(roles))})
    assert len(ids) == len(roles), "subject id collision"
    consents: list[tuple[Any, ...]] = []
    log: list[tuple[Any, ...]] = []
    warm = WARMUP_SUBJECTS
    sources = ("portal", "paper-form", "app:mobiplan")

    def add(sid: str, purpose: str, dataset: str, given: bool) -> None:
        revision = len(log) + 1
        receipt = f"rcpt-{revision:012x}{rng.getrandbits(80):020x}"
        source = sources[revision % 3]
        at = times[revision % len(times)]
        state = "given" if given else "withdrawn"
        withdrawn_at = None if given else at
        consents.append((sid, purpose, dataset, state, receipt, source, at, withdrawn_at, revision))
        log.append((revision, receipt, sid, purpose, dataset, state, source, at))

    # Within a subject, rows in primary-key order (purpose, dataset): inserts append to the index.
    for sid, role in zip(ids, roles, strict=True):
        if role == "all":
            add(sid, EXPORT_PURPOSE, "", True)
            if warm:
                add(sid, WARMUP_PURPOSE, "", True)
                warm -= 1
        elif role == "specific":
            add(sid, EXPORT_PURPOSE, EXPORT_DATASET, True)
        elif role == "withdrawn":
            add(sid, EXPORT_PURPOSE, "", False)
        elif role == "override":
            add(sid, EXPORT_PURPOSE, "", True)
            add(sid, EXPORT_PURPOSE, EXPORT_DATASET, False)
        else:
            add(sid, "energy-planning", "", True)
    # Consent rows are sorted by (subject, purpose, dataset) already; the log by revision too.
    return SubjectSet(consents, log, n, len(log))


# --- the databases --------------------------------------------------------------------------


async def migrate(db: Path) -> None:
    """The service's own schema (its Alembic migrations), as it would create it."""
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await upgrade_to_head(engine, MIGRATIONS)
    finally:
        await engine.dispose()


def bulk_load(db: Path, load: Callable[[sa.Connection], None]) -> None:
    """One transaction on a plain synchronous connection, without fsync (a throw-away file)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-262144")
            conn.commit()
            with conn.begin():
                load(conn)
    finally:
        engine.dispose()


def set_counter(conn: sa.Connection, name: str, value: int) -> None:
    c = store.counters.c
    conn.execute(sa.update(store.counters).where(c.name == name).values(value=value))


def registry_revision(registry: Registry) -> int:
    """As if each party and agreement had been one change; the service bumps it from there."""
    return len(registry.parties) + len(registry.agreements)


def load_registry(conn: sa.Connection, registry: Registry) -> None:
    conn.execute(sa.insert(store.parties), registry.parties)
    conn.execute(sa.insert(store.datasets), registry.datasets)
    conn.execute(sa.insert(store.agreements), registry.agreements)
    set_counter(conn, store.REGISTRY, registry_revision(registry))


def load_subjects(conn: sa.Connection, subjects: SubjectSet) -> None:
    now = datetime.now(UTC)
    survey = dataset_row(EXPORT_DATASET, "personal", SURVEY_COLUMNS, "respondent_id", now)
    conn.execute(sa.insert(store.datasets), [survey])
    # A million rows: the statement compiled from the service's tables, the values already in
    # their stored form, straight to the driver's executemany (SQLAlchemy's per-row processing
    # would double the loading time).
    dialect = sqlite_dialect.dialect()
    for table, rows in ((store.consents, subjects.consents), (store.consent_log, subjects.log)):
        statement = str(sa.insert(table).compile(dialect=dialect))
        for start in range(0, len(rows), 100_000):
            conn.exec_driver_sql(statement, rows[start : start + 100_000])
    set_counter(conn, store.CONSENT, subjects.revision)


# --- the processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    opa: int
    grpc: int
    bundle: int
    export_grpc: int
    export_bundle: int
    kafka: int  # nobody listens there: the service runs without Kafka


def service_env(
    db: Path, bundle_port: int, opa_url: str, secret: str, kafka: str
) -> dict[str, str]:
    """The service's configuration; the caller's own TDG_ variables (a dev stack's) are dropped
    so that nothing of it leaks in (its Kafka above all: the catalog follower's consumer group
    is the real service's)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TDG_")}
    return {
        **inherited,
        "TDG_CONSENT_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "TDG_CONSENT_BUNDLE_PORT": str(bundle_port),
        "TDG_OPA_URL": opa_url,
        "TDG_AUTH_HS256_SECRET": secret,
        "TDG_KAFKA_BOOTSTRAP": kafka,
        "TDG_LOG_LEVEL": "WARNING",
        "TDG_LOG_FORMAT": "json",
    }


def consent_service(
    tmp: Path, name: str, grpc_port: int, bundle_port: int, env: dict[str, str]
) -> PythonService:
    spec = ServiceSpec(name=name, module="tdg_consent", port=grpc_port, extra_ports=(bundle_port,))
    # cwd: the temporary directory, where no var/dev/dev.env is read by the settings.
    return PythonService(spec, state_dir=tmp, env=env, cwd=tmp)


async def opa_get(http: aiohttp.ClientSession, opa_url: str, path: str) -> Any:
    async with http.get(f"{opa_url}/v1/data/{path}") as response:
        response.raise_for_status()
        return (await response.json()).get("result")


async def wait_registry(opa_url: str, revision: int, timeout_s: float = 120) -> None:
    """Until OPA's data.tdg.registry.revision reaches `revision` (the bundle pulled, activated)."""
    deadline = time.monotonic() + timeout_s
    seen = None
    async with aiohttp.ClientSession() as http:
        while True:
            seen = await opa_get(http, opa_url, "tdg/registry/revision")
            if isinstance(seen, int) and seen >= revision:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"OPA's registry revision is {seen}, not {revision}")
            await asyncio.sleep(0.05)


# --- 1. tdg.read decisions ------------------------------------------------------------------


def opa_bench(opa_bin: Path, tmp: Path, bundle: Path, inp: dict[str, Any]) -> dict[str, Any]:
    """`opa bench` of data.tdg.read.decision: the policies, the registry bundle, the same input."""
    input_file = tmp / "read-input.json"
    input_file.write_text(json.dumps(inp))
    argv = [
        str(opa_bin),
        "bench",
        "--format=json",
        "--data",
        str(ROOT / "policies"),
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
        first = await policy.decide("tdg.read", "decision", inp)
        if not first["allow"] or first["agreement_id"] != agreement_id:
            raise RuntimeError(f"the measured read is not allowed by {agreement_id}: {first}")
        treatments = sorted(f"{k}:{v['treatment']}" for k, v in first["columns"].items())
        say(f"tdg.read for {READ_PARTY} on {READ_DATASET}: allowed, {' '.join(treatments)}")
        row_filter = first["row_filters"][0]
        say(f"  row filter: {row_filter['column']} in {len(row_filter['values'])} codes")

        async def decide(_: int) -> object:
            answer = await policy.decide("tdg.read", "decision", inp)
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


# --- 2. the subject-set export --------------------------------------------------------------


async def stream_subject_set(
    stub: consent_pb2_grpc.ConsentServiceStub,
    md: tuple[tuple[str, str], ...],
    dataset_id: str,
    purpose: str,
) -> tuple[pa.Table, int, int]:
    """(the set as one Table, its revision, the number of chunks)."""
    tables: list[pa.Table] = []
    revisions: set[int] = set()
    request = pb.StreamSubjectSetRequest(dataset_id=dataset_id, purpose=purpose)
    async for chunk in stub.StreamSubjectSet(request, metadata=md, timeout=600):
        if not chunk.snapshot:
            raise RuntimeError("a snapshot was asked, changes came")
        tables.append(pa.ipc.open_stream(chunk.arrow_ipc).read_all())
        revisions.add(chunk.revision)
    if len(revisions) != 1:
        raise RuntimeError(f"chunks of one stream carry revisions {sorted(revisions)}")
    return pa.concat_tables(tables), revisions.pop(), len(tables)


async def export_phase(
    service: PythonService, secret: str, expected: int, revision: int
) -> dict[str, float]:
    md = bearer(secret, "tdg-query", "tdg", ["platform-service"])
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        warm, _, _ = await stream_subject_set(stub, md, EXPORT_DATASET, WARMUP_PURPOSE)
        if warm.num_rows != WARMUP_SUBJECTS:
            raise RuntimeError(f"warm-up set has {warm.num_rows} rows, not {WARMUP_SUBJECTS}")
        await asyncio.sleep(0.5)
        pid = service.pid
        if pid is None:
            raise RuntimeError("the export service is not running")
        before_kb = rss_kb(pid)
        with RssSampler(pid) as sampler:
            t0 = time.perf_counter()
            table, seen_revision, chunks = await stream_subject_set(
                stub, md, EXPORT_DATASET, EXPORT_PURPOSE
            )
            if table.num_rows != expected:
                raise RuntimeError(f"{table.num_rows} subjects exported, {expected} expected")
            elapsed = time.perf_counter() - t0
        peak_kb = max(sampler.peak_kb, sampler.hwm_kb())
    distinct = pc.count_distinct(table.column("subject_id")).as_py()
    if distinct != expected or seen_revision != revision:
        raise RuntimeError(f"{distinct} distinct subjects at revision {seen_revision}")
    peak_mb = (peak_kb - before_kb) / 1024
    say(
        f"subject set: {table.num_rows} subjects in {chunks} chunks, {elapsed:.2f} s "
        f"({table.num_rows / elapsed:,.0f}/s), {table.nbytes / 1e6:.0f} MB of Arrow"
    )
    say(
        f"  service RSS {before_kb / 1024:.0f} MB before, peak +{peak_mb:.1f} MB "
        f"({sampler.samples} samples{', VmHWM reset' if sampler.hwm_reset else ''})"
    )
    return {
        "subjects": table.num_rows,
        "subject_export_s": round(elapsed, 3),
        "subject_export_rows_per_s": round(table.num_rows / elapsed),
        "subject_export_peak_mb": round(peak_mb, 1),
        "subject_export_rss_before_mb": round(before_kb / 1024, 1),
    }


# --- 3. revocation propagation --------------------------------------------------------------


async def wait_decision(
    policy: PolicyClient,
    inp: dict[str, Any],
    allowed: bool,
    agreement_id: str,
    timeout_s: float = 30,
) -> float:
    """Poll the decision every ~2 ms until it allows by `agreement_id` (or stops allowing);
    the seconds until the answer that showed it arrived."""
    t0 = time.perf_counter()
    while True:
        answer = await policy.decide("tdg.read", "decision", inp)
        now = time.perf_counter()
        if allowed == (answer["allow"] and answer["agreement_id"] == agreement_id):
            return now - t0
        if now - t0 > timeout_s:
            raise TimeoutError(f"decision still {answer['allow']} after {timeout_s}s: {answer}")
        await asyncio.sleep(0.002)


class Retrying:
    """Calls an RPC again when the service answers UNAVAILABLE: its own OPA check ran out of time
    (a loaded machine, or its event loop busy rebuilding the bundle). Counts the retries."""

    def __init__(self, attempts: int = 5) -> None:
        self.attempts = attempts
        self.retries = 0

    async def __call__(self, rpc: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return await rpc()
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.attempts:
                    raise
                self.retries += 1
                say(f"  retrying after UNAVAILABLE: {exc.details()}")
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")


async def revocation_phase(
    service: PythonService, opa_url: str, secret: str, revision: int, repeats: int
) -> dict[str, float]:
    admin = bearer(secret, "ops", "tdg", ["platform-admin"])
    app = bearer(secret, REVOKE_PARTY, REVOKE_ORG, [])
    officer = bearer(secret, "dpo-lyon", READ_DATASET.partition(".")[0], ["data-officer"])
    inp = read_request(REVOKE_PARTY, REVOKE_ORG)
    conditions = conditions_to_pb(read_conditions(datetime.now(UTC)))
    policy = PolicyClient(opa_url, timeout_s=5.0)
    call = Retrying()
    approvals: list[float] = []
    revocations: list[float] = []
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = consent_pb2_grpc.ConsentServiceStub(channel)
            organisation = pb.Party(
                id=REVOKE_ORG,
                kind=pb.PARTY_KIND_PRIVATE_PARTNER,
                name="Revocation partner",
                roles=["consumer"],
            )
            application = pb.Party(
                id=REVOKE_PARTY,
                kind=pb.PARTY_KIND_APPLICATION,
                name="Revocation app",
                organisation=REVOKE_ORG,
                roles=["consumer"],
            )
            for party in (organisation, application):
                request = pb.RegisterPartyRequest(party=party)
                await call(partial(stub.RegisterParty, request, metadata=admin, timeout=30))
            # Each registration bumped the registry: start once OPA has both.
            await wait_registry(opa_url, revision + 2)
            for _ in range(repeats):
                access = pb.RequestAccessRequest(
                    dataset_id=READ_DATASET,
                    kind=pb.ACCESS_KIND_READ,
                    purposes=[READ_PURPOSE],
                    legal_basis=pb.LEGAL_BASIS_PUBLIC_TASK,
                    justification="counting cyclists for the network plan",
                )
                requested = await call(
                    partial(stub.RequestAccess, access, metadata=app, timeout=30)
                )
                agreement_id = requested.agreement.id
                approve = pb.ApproveAccessRequest(agreement_id=agreement_id, conditions=conditions)
                await call(partial(stub.ApproveAccess, approve, metadata=officer, timeout=30))
                approvals.append(await wait_decision(policy, inp, True, agreement_id))
                await asyncio.sleep(0.2)  # OPA is back in its long poll (or its polling)
                revoke = pb.RevokeAgreementRequest(
                    agreement_id=agreement_id, reason="end of the study"
                )
                await call(partial(stub.RevokeAgreement, revoke, metadata=officer, timeout=30))
                # From here (the revocation returned) until OPA stops allowing.
                revocations.append(await wait_decision(policy, inp, False, agreement_id))
    finally:
        await policy.close()
    revoke_ms = [s * 1000 for s in revocations]
    approve_ms = [s * 1000 for s in approvals]
    say(
        f"revocation → OPA denies: median {statistics.median(revoke_ms):.0f} ms, "
        f"max {max(revoke_ms):.0f} ms ({', '.join(f'{v:.0f}' for v in revoke_ms)})"
    )
    say(f"approval → OPA allows: median {statistics.median(approve_ms):.0f} ms")
    return {
        "revocation_propagation_ms": round(statistics.median(revoke_ms), 1),
        "revocation_propagation_max_ms": round(max(revoke_ms), 1),
        "approval_propagation_ms": round(statistics.median(approve_ms), 1),
        "revocation_rpc_retries": call.retries,
    }


# --- the run --------------------------------------------------------------------------------


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tdg-policy-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def dump_logs(tmp: Path, lines: int = 25) -> None:
    """The end of every process log, before the temporary directory goes."""
    for log in sorted(tmp.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.name} (last {len(tail)} lines)", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


def prepare_export_db(db: Path, n: int, rng: random.Random) -> tuple[int, int]:
    """Builds and loads the consents; (subjects expected in the set, last consent revision)."""
    subjects = build_subjects(n, rng)
    bulk_load(db, lambda conn: load_subjects(conn, subjects))
    return subjects.expected, subjects.revision


async def fetch_bundle(bundle_port: int, to: Path) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{bundle_port}{BUNDLE_PATH}") as response,
    ):
        response.raise_for_status()
        body = await response.read()
    await asyncio.to_thread(to.write_bytes, body)
    return len(body)


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
    with workdir(keep) as tmp, contextlib.ExitStack() as processes:
        try:
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

            opa = OpaServer(
                tools.opa_bin,
                ROOT / "policies",
                ports.opa,
                state_dir=tmp,
                bundle_service_url=f"http://127.0.0.1:{ports.bundle}",
            )
            processes.callback(opa.stop)
            opa.start()
            await asyncio.to_thread(opa.wait_ready)
            # The instance holding the registry (whose bundle OPA pulls), and one holding the
            # consents: the export runs in a process where nothing else ran.
            service = consent_service(
                tmp,
                "consent",
                ports.grpc,
                ports.bundle,
                service_env(main_db, ports.bundle, opa.url, secret, kafka),
            )
            exporter = consent_service(
                tmp,
                "consent-export",
                ports.export_grpc,
                ports.export_bundle,
                service_env(export_db, ports.export_bundle, opa.url, secret, kafka),
            )
            t0 = time.perf_counter()
            for process in (service, exporter):
                processes.callback(process.stop)
                process.start()
            await asyncio.gather(
                asyncio.to_thread(service.wait_ready, 60),
                asyncio.to_thread(exporter.wait_ready, 60),
            )
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
        except BaseException:
            dump_logs(tmp)
            raise
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

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # A SIGTERM unwinds like Ctrl-C: the processes are stopped, the temporary directory removed.
    signal.signal(signal.SIGTERM, interrupted)
    figures = asyncio.run(run(sizes, args.keep))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
