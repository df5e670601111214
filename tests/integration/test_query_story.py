"""Governed queries on tables the ingest service wrote: the publisher reads in clear; an
application reads what its agreement grants, treated as agreed, on gRPC and Arrow Flight alike;
every query leaves an audit record, and the hashing salt never leaves the platform."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from pyarrow import flight
from tdg.catalog.v1 import catalog_pb2
from tdg.consent.v1 import consent_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb
from tdg_core import topics
from tdg_core.events import TopicSpec, ensure_topics
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input
from tdg_core.service import Service
from tdg_core.testing import KafkaBroker, OpaEndpoint
from tdg_ingest.settings import IngestSettings
from tdg_ingest.warehouse import Warehouse
from tdg_lake.catalog import open_catalog
from tdg_query.audit import AuditLog
from tdg_query.audit_table import AuditSink, AuditTable
from tdg_query.settings import QuerySettings

from tests.integration.fixtures.callers import CallerFactory, ConsentCaller, QueryCaller
from tests.integration.helpers import events_for, partner_with_app, published
from tests.integration.ingest_helpers import bike_record, eventually, produce, settled
from tests.integration.query_helpers import (
    Answer,
    agg,
    agreement,
    both,
    cmp,
    flight_query,
    generalised,
    hashed,
    list_flights,
    lit,
    midnight_utc,
    order,
    principal_of,
    query,
    reading,
    refused,
    session_record,
    ts,
)

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"
MOBILITY = "mobility-planning"
COMMUNES = ("69123", "69266", "69029", "38185")  # Lyon, Villeurbanne, Bron: Métropole; Grenoble
AGREED = ("69123", "69266")
GRANTED = ["session_id", "socket_type", "session_start", "energy_kwh", "user_id", "commune_code"]
HEX64 = re.compile(r"[0-9a-f]{64}")


def bikes(answer: Answer) -> list[str]:
    return sorted(answer.column("counter_id"))


async def loaded(
    ingest_app: Service[IngestSettings], kafka: KafkaBroker, dataset_id: str, values: list[bytes]
) -> None:
    """`values` sent by the publisher, once the table holds them all."""
    await produce(kafka.bootstrap, dataset_id, values, LYON)
    rows, letters = await settled(
        ingest_app.part(Warehouse), kafka.bootstrap, dataset_id, len(values)
    )
    assert letters == [] and rows.num_rows == len(values), [x.message for x in letters[:3]]


async def sessions_with_app(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
    count: int = 160,
) -> tuple[QueryCaller, QueryCaller, catalog_pb2.Dataset, list[dict[str, Any]], str]:
    """ev-charging-sessions with `count` sessions of 7 users in 4 communes, and an application
    whose agreement hashes user_id, truncates session_start to the day, keeps Lyon and
    Villeurbanne only and grants GRANTED only. (officer, app, dataset, sent, agreement id)"""
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    dataset = await published(officer, "ev-charging-sessions")
    run = uuid.uuid4().hex[:8]
    values = [session_record(i, f"usr-{run}-{i % 7}", COMMUNES[i % 4]) for i in range(count)]
    await loaded(ingest_app, kafka, dataset.id, values)
    org, app_id = await partner_with_app(admin)
    app = query_caller(app_id, org)
    agreement_id = await agreement(
        officer,
        app,
        dataset.id,
        [MOBILITY, "energy-planning"],
        cpb.Conditions(
            columns=GRANTED,
            masks=[hashed("user_id"), generalised("session_start", truncate_to="day")],
            territory_filter=cpb.TerritoryFilter(column="commune_code", codes=list(AGREED)),
        ),
    )
    return officer, app, dataset, [json.loads(v) for v in values], agreement_id


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the publisher ------------------------------------------------------------------------------


async def test_the_publisher_reads_its_own_dataset_in_clear(
    query_caller: CallerFactory[QueryCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> None:
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    values = [bike_record(i) for i in range(240)]
    await loaded(ingest_app, kafka, dataset.id, values)
    sent = {r["counter_id"]: r for r in map(json.loads, values)}

    everything = await query(officer, qpb.QueryRequest(dataset_id=dataset.id, purpose=MOBILITY))
    assert everything.table.column_names == [c.name for c in dataset.schema.columns]
    assert everything.table.num_rows == everything.summary.rows == 240
    assert everything.summary.bytes > 0
    assert everything.header.agreement_id == ""
    assert set(everything.treatments().values()) == {"clear"}
    for row in everything.table.to_pylist():
        record = sent[row["counter_id"]]
        assert row["date_observed"] == instant(record["date_observed"])
        assert {k: v for k, v in row.items() if k != "date_observed"} == {
            k: v for k, v in record.items() if k != "date_observed"
        }

    projected = await query(
        officer,
        qpb.QueryRequest(
            dataset_id=dataset.id, purpose=MOBILITY, columns=["intensity", "counter_id"]
        ),
    )
    assert projected.table.column_names == ["intensity", "counter_id"]
    assert sorted(projected.table.to_pylist(), key=lambda r: r["counter_id"]) == [
        {"intensity": sent[c]["intensity"], "counter_id": c} for c in sorted(sent)
    ]

    filtered = await query(
        officer,
        qpb.QueryRequest(
            dataset_id=dataset.id,
            purpose=MOBILITY,
            columns=["counter_id"],
            filter=both(cmp("intensity", ">=", 100), cmp("lane_direction", "=", "forward")),
            time_range=qpb.TimeRange(
                start=ts(datetime(2026, 11, 5, tzinfo=UTC)),
                end=ts(datetime(2026, 11, 20, tzinfo=UTC)),
            ),
        ),
    )
    expected = sorted(
        c
        for c, r in sent.items()
        if r["intensity"] >= 100
        and r["lane_direction"] == "forward"
        and datetime(2026, 11, 5, tzinfo=UTC) <= instant(r["date_observed"])
        and instant(r["date_observed"]) < datetime(2026, 11, 20, tzinfo=UTC)
    )
    assert expected and bikes(filtered) == expected

    grouped = await query(
        officer,
        qpb.QueryRequest(
            dataset_id=dataset.id,
            purpose=MOBILITY,
            group_by=["lane_direction", "ref_road_segment"],
            aggregates=[agg("count"), agg("sum", "intensity", "bikes"), agg("max", "intensity")],
        ),
    )
    assert grouped.table.column_names == [
        "lane_direction",
        "ref_road_segment",
        "count",
        "bikes",
        "max_intensity",
    ]
    want: dict[tuple[str, str], list[int]] = {}
    for r in sent.values():
        group = want.setdefault((r["lane_direction"], r["ref_road_segment"]), [0, 0, 0])
        group[0] += 1
        group[1] += r["intensity"]
        group[2] = max(group[2], r["intensity"])
    assert {
        (r["lane_direction"], r["ref_road_segment"]): [r["count"], r["bikes"], r["max_intensity"]]
        for r in grouped.table.to_pylist()
    } == want

    top = await query(
        officer,
        qpb.QueryRequest(
            dataset_id=dataset.id,
            purpose=MOBILITY,
            columns=["counter_id", "intensity"],
            order_by=[order("intensity", descending=True)],
            limit=10,
        ),
    )
    ranked = sorted(sent.values(), key=lambda r: -r["intensity"])[:10]
    assert top.table.to_pylist() == [
        {"counter_id": r["counter_id"], "intensity": r["intensity"]} for r in ranked
    ]
    assert top.summary.rows == 10


# --- an application under an agreement ----------------------------------------------------------


class Reader:
    """An application's queries on one dataset, every answer kept to look into afterwards."""

    def __init__(self, app: QueryCaller, dataset_id: str) -> None:
        self.app = app
        self.dataset_id = dataset_id
        self.answers: list[Answer] = []

    async def ask(self, **fields: Any) -> Answer:
        request = qpb.QueryRequest(dataset_id=self.dataset_id, purpose=MOBILITY, **fields)
        answer = await query(self.app, request)
        self.answers.append(answer)
        return answer


def pseudonyms_of(answer: Answer, sent: dict[str, dict[str, Any]]) -> dict[str, str]:
    """user → its pseudonym in the answer, checked: one per user, distinct users apart, never the
    value nor its unsalted SHA-256; and every session_start truncated to its day."""
    found: dict[str, set[str]] = {}
    for row in answer.table.to_pylist():
        record = sent[row["session_id"]]
        assert HEX64.fullmatch(row["user_id"]), row["user_id"]
        found.setdefault(record["user_id"], set()).add(row["user_id"])
        start = instant(record["session_start"])
        assert midnight_utc(row["session_start"]) and row["session_start"].date() == start.date()
        assert row["energy_kwh"] == Decimal(str(record["energy_kwh"]))
    assert all(len(h) == 1 for h in found.values()), "one pseudonym per user"
    pseudonyms = {user: next(iter(h)) for user, h in found.items()}
    assert len(set(pseudonyms.values())) == len(pseudonyms), "distinct users, distinct pseudonyms"
    users = set(pseudonyms)
    assert not set(pseudonyms.values()) & users
    assert not set(pseudonyms.values()) & {hashlib.sha256(u.encode()).hexdigest() for u in users}
    return pseudonyms


async def test_the_agreement_s_treatments_are_what_the_application_receives(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> None:
    officer, app, dataset, records, agreement_id = await sessions_with_app(
        query_caller, consent_caller, ingest_app, kafka
    )
    sent = {r["session_id"]: r for r in records}
    visible = sorted(s for s, r in sent.items() if r["commune_code"] in AGREED)
    reader = Reader(app, dataset.id)

    every = await reader.ask()
    assert every.header.agreement_id == agreement_id
    assert every.table.column_names == GRANTED  # no ungranted column, none asked for
    assert every.treatments() == {
        "session_id": "clear",
        "socket_type": "clear",
        "session_start": "generalise(truncate_to=day)",
        "energy_kwh": "clear",
        "user_id": "hash",
        "commune_code": "clear",
    }
    # The territory filter: only the agreed communes, though the caller filtered nothing…
    assert sorted(every.column("session_id")) == visible
    assert set(every.column("commune_code")) == set(AGREED)
    # … and asking for the others explicitly does not widen it.
    widened = await reader.ask(
        columns=["session_id"],
        filter=qpb.Expression(
            in_list=qpb.InList(column="commune_code", values=[lit(c) for c in COMMUNES])
        ),
    )
    assert sorted(widened.column("session_id")) == visible
    pseudonyms = pseudonyms_of(every, sent)
    assert set(pseudonyms) == {r["user_id"] for r in records}

    def pseudonym(session_id: str) -> str:
        return pseudonyms[sent[session_id]["user_id"]]

    # Under a filter on other columns: the same pseudonyms.
    filtered = await reader.ask(
        filter=both(cmp("socket_type", "=", "CCS"), cmp("energy_kwh", ">=", Decimal("15.5"))),
    )
    expected = [
        s for s in visible if sent[s]["socket_type"] == "CCS" and sent[s]["energy_kwh"] >= 15.5
    ]
    assert expected and sorted(filtered.column("session_id")) == expected
    assert all(r["user_id"] == pseudonym(r["session_id"]) for r in filtered.table.to_pylist())
    # Grouped by another column: counts over the agreed communes only.
    grouped = await reader.ask(group_by=["socket_type"], aggregates=[agg("count")])
    assert dict(zip(grouped.column("socket_type"), grouped.column("count"), strict=True)) == dict(
        Counter(sent[s]["socket_type"] for s in visible)
    )
    # Ordered and limited.
    ordered = await reader.ask(
        columns=["session_id", "user_id", "session_start"],
        order_by=[order("session_id", descending=True)],
        limit=7,
    )
    assert ordered.column("session_id") == visible[::-1][:7]
    assert ordered.column("user_id") == [pseudonym(s) for s in visible[::-1][:7]]
    assert all(midnight_utc(v) for v in ordered.column("session_start"))

    later = await more_sessions_then_time_travel(reader, every, ingest_app, kafka, records)
    # Nothing travelled in clear: no user id, no unsalted hash, in any message of any answer.
    users = {r["user_id"] for r in records + later}
    for answer in reader.answers:
        raw = answer.raw
        for user in users:
            assert user.encode() not in raw
            assert hashlib.sha256(user.encode()).hexdigest().encode() not in raw

    # Another application's agreement has its own salt: the pseudonyms cannot be linked.
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    org, other_id = await partner_with_app(admin)
    other = query_caller(other_id, org)
    await agreement(
        officer, other, dataset.id, [MOBILITY], cpb.Conditions(masks=[hashed("user_id")])
    )
    theirs = await query(other, qpb.QueryRequest(dataset_id=dataset.id, purpose=MOBILITY))
    theirs_by_session = dict(
        zip(theirs.column("session_id"), theirs.column("user_id"), strict=True)
    )
    assert all(HEX64.fullmatch(h) for h in theirs_by_session.values())
    assert not set(theirs_by_session.values()) & set(pseudonyms.values())

    await refusals(app, dataset.id, agreement_id, next(iter(users)))


async def more_sessions_then_time_travel(
    reader: Reader,
    first: Answer,
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
    records: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """More sessions arrive; the first snapshot is still read as it was, treated the same."""
    run = records[0]["user_id"].rsplit("-", 1)[0]
    values = [session_record(i, f"{run}-late-{i % 3}", COMMUNES[i % 4]) for i in range(500, 540)]
    later = [json.loads(v) for v in values]
    await produce(kafka.bootstrap, reader.dataset_id, values, LYON)
    await settled(ingest_app.part(Warehouse), kafka.bootstrap, reader.dataset_id, len(records) + 40)
    now = await reader.ask()
    assert now.header.snapshot_id != first.header.snapshot_id
    assert now.table.num_rows == first.table.num_rows + sum(
        1 for r in later if r["commune_code"] in AGREED
    )
    assert all(HEX64.fullmatch(u) for u in now.column("user_id"))
    before = await reader.ask(snapshot_id=first.header.snapshot_id)
    assert before.header.snapshot_id == first.header.snapshot_id
    assert before.table.sort_by("session_id").equals(first.table.sort_by("session_id"))
    return later


async def refusals(app: QueryCaller, dataset_id: str, agreement_id: str, user: str) -> None:
    """What the agreement does not grant, the application cannot have, and is told why."""

    def request(**fields: Any) -> qpb.QueryRequest:
        return qpb.QueryRequest(dataset_id=dataset_id, purpose=MOBILITY, **fields)

    details = await refused(app, request(columns=["charging_point_id"]))
    assert "column 'charging_point_id' is not granted" in details
    details = await refused(app, request(columns=["session_id", "max_power_kw"]))
    assert "column 'max_power_kw' is not granted" in details and "session_id" not in details
    # The pseudonymised column cannot be filtered, grouped or ordered on (nor the truncated one).
    for fields, usage in (
        (dict(filter=cmp("user_id", "=", user)), "filter_columns"),
        (dict(group_by=["user_id"], aggregates=[agg("count")]), "group_by"),
        (dict(columns=["user_id"], order_by=[order("user_id")]), "order_by"),
        (dict(aggregates=[agg("count_distinct", "user_id")]), "aggregates"),
    ):
        details = await refused(app, request(**fields))
        assert f"column 'user_id' in {usage} must be clear, but its treatment is hash" in details
    details = await refused(app, request(group_by=["session_start"], aggregates=[agg("count")]))
    assert "column 'session_start' in group_by must be clear" in details
    # A purpose outside the agreement: OPA's reason.
    details = await refused(app, qpb.QueryRequest(dataset_id=dataset_id, purpose="research"))
    assert (
        f"purpose 'research' is not among the purposes of agreement '{agreement_id}' "
        "(energy-planning, mobility-planning)" in details
    )


async def test_a_restricted_dataset_without_an_agreement_is_refused(
    query_caller: CallerFactory[QueryCaller], consent_caller: CallerFactory[ConsentCaller]
) -> None:
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    dataset = await published(officer, "ev-charging-sessions")
    org, app_id = await partner_with_app(admin)
    app = query_caller(app_id, org)
    details = await refused(app, qpb.QueryRequest(dataset_id=dataset.id, purpose=MOBILITY))
    assert f"no read agreement for dataset '{dataset.id}' held by '{app_id}' or '{org}'" in details
    assert f"dataset '{dataset.id}' is restricted: reading it requires an agreement" in details
    # Aggregating does not help either.
    await refused(
        app,
        qpb.QueryRequest(dataset_id=dataset.id, purpose=MOBILITY, aggregates=[agg("count")]),
    )


async def test_generalised_columns_never_show_the_value_itself(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> None:
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    dataset = await published(officer, "ev-charging-sessions")
    values = [session_record(i, f"usr-{i % 5}", COMMUNES[i % 4]) for i in range(40)]
    await loaded(ingest_app, kafka, dataset.id, values)
    org, app_id = await partner_with_app(admin)
    app = query_caller(app_id, org)
    await agreement(
        officer,
        app,
        dataset.id,
        [MOBILITY],
        cpb.Conditions(
            masks=[
                generalised("commune_code", commune_to_epci=True),
                generalised("energy_kwh", round_to=10),
                generalised("session_start", truncate_to="month"),
            ]
        ),
    )
    answer = await query(
        app,
        qpb.QueryRequest(
            dataset_id=dataset.id,
            purpose=MOBILITY,
            columns=["session_id", "commune_code", "energy_kwh", "session_start"],
        ),
    )
    assert answer.treatments() == {
        "session_id": "clear",
        "commune_code": "generalise(commune_to_epci)",
        "energy_kwh": "generalise(round_to=10)",
        "session_start": "generalise(truncate_to=month)",
    }
    sent = {r["session_id"]: r for r in map(json.loads, values)}
    got = {r["session_id"]: r for r in answer.table.to_pylist()}
    assert set(got) == set(sent)
    for session_id, row in got.items():
        record = sent[session_id]
        # Communes of the Métropole become its EPCI; a commune unknown to the table, NULL.
        epci = None if record["commune_code"] == "38185" else "200046977"
        assert row["commune_code"] == epci
        tens = (Decimal(str(record["energy_kwh"])) / 10).quantize(Decimal(1), ROUND_HALF_UP)
        assert row["energy_kwh"] == tens * 10  # to the nearest 10 kWh, halves up
        assert row["session_start"] == datetime(2026, 11, 1, tzinfo=UTC)
    for commune in COMMUNES:
        assert commune.encode() not in answer.raw
    # The agreement grants every column (none listed): the others are there, user_id hashed by
    # default as a personal column.
    every = await query(app, qpb.QueryRequest(dataset_id=dataset.id, purpose=MOBILITY))
    assert every.table.column_names == [c.name for c in dataset.schema.columns]
    assert every.treatments()["user_id"] == "hash"


# --- aggregate-only -----------------------------------------------------------------------------


async def test_aggregate_only_access_hides_groups_of_fewer_than_k_subjects(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> None:
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    dataset = await published(officer, "household-energy-meters")
    run = uuid.uuid4().hex[:6]
    # (commune, households, days each): rows are many in Bron, but households few.
    plan = [("69123", 6, 4), ("69266", 5, 4), ("69029", 4, 6), ("69034", 1, 12)]
    values = [
        reading(f"hh-{run}-{commune}-{h}", day, commune)
        for commune, households, days in plan
        for h in range(households)
        for day in range(1, days + 1)
    ]
    await loaded(ingest_app, kafka, dataset.id, values)
    org, app_id = await partner_with_app(admin)
    app = query_caller(app_id, org)
    await agreement(
        officer,
        app,
        dataset.id,
        ["energy-planning"],
        cpb.Conditions(aggregate_only=True, min_group_size=5),
    )
    request = qpb.QueryRequest(
        dataset_id=dataset.id,
        purpose="energy-planning",
        group_by=["commune_code"],
        aggregates=[agg("count"), agg("sum", "consumption_kwh", "kwh")],
        order_by=[order("commune_code")],
    )
    answer = await query(app, request)
    kwh: dict[str, Decimal] = {}
    for record in map(json.loads, values):
        kwh[record["commune_code"]] = kwh.get(record["commune_code"], Decimal(0)) + Decimal(
            str(record["consumption_kwh"])
        )
    assert answer.table.to_pylist() == [
        {"commune_code": "69123", "count": 24, "kwh": kwh["69123"]},
        {"commune_code": "69266", "count": 20, "kwh": kwh["69266"]},
    ]
    total = await query(
        app,
        qpb.QueryRequest(
            dataset_id=dataset.id, purpose="energy-planning", aggregates=[agg("count")]
        ),
    )
    assert total.column("count") == [len(values)]
    # A filter narrowing the whole to one household (12 rows): no answer row at all.
    alone = await query(
        app,
        qpb.QueryRequest(
            dataset_id=dataset.id,
            purpose="energy-planning",
            filter=cmp("commune_code", "=", "69034"),
            aggregates=[agg("count"), agg("max", "consumption_kwh")],
        ),
    )
    assert alone.table.num_rows == 0
    # Raw rows, or a column neither grouped nor aggregated: refused.
    details = await refused(app, qpb.QueryRequest(dataset_id=dataset.id, purpose="energy-planning"))
    assert f"access to dataset '{dataset.id}' is aggregate-only: the request must aggregate" in (
        details
    )
    await refused(
        app,
        qpb.QueryRequest(
            dataset_id=dataset.id, purpose="energy-planning", columns=["commune_code"]
        ),
    )
    # The publisher sees every group.
    own = await query(officer, request)
    assert own.column("commune_code") == ["69029", "69034", "69123", "69266"]


async def test_aggregate_only_without_a_subject_column_counts_rows(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> None:
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    dataset = await published(officer, "bike-counters")
    sizes = {"SEG-A": 7, "SEG-B": 5, "SEG-C": 4, "SEG-D": 1}
    segments = [s for s, n in sizes.items() for _ in range(n)]
    values = [bike_record(i, ref_road_segment=s) for i, s in enumerate(segments)]
    await loaded(ingest_app, kafka, dataset.id, values)
    org, app_id = await partner_with_app(admin)
    app = query_caller(app_id, org)
    await agreement(
        officer, app, dataset.id, [MOBILITY], cpb.Conditions(aggregate_only=True, min_group_size=5)
    )
    answer = await query(
        app,
        qpb.QueryRequest(
            dataset_id=dataset.id,
            purpose=MOBILITY,
            group_by=["ref_road_segment"],
            aggregates=[agg("count"), agg("sum", "intensity")],
            order_by=[order("ref_road_segment")],
        ),
    )
    intensity = Counter[str]()
    for record in map(json.loads, values):
        intensity[record["ref_road_segment"]] += record["intensity"]
    assert answer.table.to_pylist() == [
        {"ref_road_segment": "SEG-A", "count": 7, "sum_intensity": intensity["SEG-A"]},
        {"ref_road_segment": "SEG-B", "count": 5, "sum_intensity": intensity["SEG-B"]},
    ]
    assert answer.header.treatments[-1].treatment == "aggregate"
    await refused(app, qpb.QueryRequest(dataset_id=dataset.id, purpose=MOBILITY))


# --- time travel --------------------------------------------------------------------------------


async def test_time_travel_reads_an_earlier_snapshot(
    query_caller: CallerFactory[QueryCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> None:
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "bike-counters")
    first = [bike_record(i) for i in range(60)]
    await loaded(ingest_app, kafka, dataset.id, first)
    request = qpb.QueryRequest(dataset_id=dataset.id, purpose=MOBILITY, columns=["counter_id"])
    earlier = await query(officer, request)
    assert earlier.table.num_rows == 60 and earlier.header.snapshot_id > 0
    between = datetime.now(UTC)
    await asyncio.sleep(0.05)

    second = [bike_record(i) for i in range(60, 100)]
    await produce(kafka.bootstrap, dataset.id, second, LYON)
    await settled(ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, 100)
    now = await query(officer, request)
    assert now.table.num_rows == 100 and now.header.snapshot_id != earlier.header.snapshot_id

    by_id = qpb.QueryRequest()
    by_id.CopyFrom(request)
    by_id.snapshot_id = earlier.header.snapshot_id
    again = await query(officer, by_id)
    assert again.header.snapshot_id == earlier.header.snapshot_id
    assert bikes(again) == bikes(earlier) == sorted(json.loads(v)["counter_id"] for v in first)

    by_time = qpb.QueryRequest()
    by_time.CopyFrom(request)
    by_time.as_of_time.CopyFrom(ts(between))
    assert bikes(await query(officer, by_time)) == bikes(earlier)

    # Aggregates on an old snapshot too.
    counted = qpb.QueryRequest(
        dataset_id=dataset.id,
        purpose=MOBILITY,
        aggregates=[agg("count")],
        snapshot_id=earlier.header.snapshot_id,
    )
    assert (await query(officer, counted)).column("count") == [60]

    unknown = qpb.QueryRequest()
    unknown.CopyFrom(request)
    unknown.snapshot_id = 4242424242
    details = await refused(officer, unknown, grpc.StatusCode.NOT_FOUND)
    assert "snapshot 4242424242" in details
    too_early = qpb.QueryRequest()
    too_early.CopyFrom(request)
    too_early.as_of_time.CopyFrom(ts(datetime(2001, 1, 1, tzinfo=UTC)))
    await refused(officer, too_early, grpc.StatusCode.NOT_FOUND)


# --- Arrow Flight -------------------------------------------------------------------------------


async def test_flight_and_grpc_answer_the_same_tables(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> None:
    officer, app, dataset, sent, _ = await sessions_with_app(
        query_caller, consent_caller, ingest_app, kafka, count=120
    )
    other = await published(officer, "ev-charging-sessions")  # restricted, no agreement
    requests = [
        (
            app,
            qpb.QueryRequest(
                dataset_id=dataset.id, purpose=MOBILITY, order_by=[order("session_id")]
            ),
        ),
        (
            app,
            qpb.QueryRequest(
                dataset_id=dataset.id,
                purpose=MOBILITY,
                columns=["session_id", "user_id"],
                filter=cmp("socket_type", "!=", "CCS"),
                order_by=[order("session_id")],
                limit=25,
            ),
        ),
        (
            app,
            qpb.QueryRequest(
                dataset_id=dataset.id,
                purpose=MOBILITY,
                group_by=["socket_type", "commune_code"],
                aggregates=[agg("count"), agg("sum", "energy_kwh"), agg("avg", "energy_kwh")],
                order_by=[order("socket_type"), order("commune_code")],
            ),
        ),
        (
            officer,
            qpb.QueryRequest(
                dataset_id=dataset.id, purpose=MOBILITY, order_by=[order("session_id")]
            ),
        ),
    ]
    nothing = qpb.QueryRequest(
        dataset_id=dataset.id, purpose=MOBILITY, filter=cmp("socket_type", "=", "none")
    )
    empty = await query(app, nothing)
    assert empty.table.num_rows == 0 and empty.summary.rows == 0
    assert (await flight_query(app, nothing))[1].equals(empty.table)
    for caller, request in requests:
        answer = await query(caller, request)
        info, table = await flight_query(caller, request)
        assert table.num_rows > 0
        assert table.equals(answer.table), request
        assert info.schema.equals(answer.table.schema)
    masked = (await flight_query(app, requests[0][1]))[1]
    assert all(HEX64.fullmatch(u) for u in masked.column("user_id").to_pylist())
    clear = (await flight_query(officer, requests[0][1]))[1]
    assert set(clear.column("user_id").to_pylist()) == {r["user_id"] for r in sent}

    # Refusals travel as Flight's: the reasons of OPA.
    with pytest.raises(flight.FlightUnauthorizedError, match="charging_point_id"):
        await flight_query(
            app,
            qpb.QueryRequest(
                dataset_id=dataset.id, purpose=MOBILITY, columns=["charging_point_id"]
            ),
        )
    with pytest.raises(flight.FlightUnauthorizedError, match="no read agreement"):
        await flight_query(app, qpb.QueryRequest(dataset_id=other.id, purpose=MOBILITY))

    # What the caller may read: its agreement's dataset for its purposes, not the other one.
    readable = await app.stub.ListReadable(qpb.ListReadableRequest(), metadata=app.md, timeout=30)
    mine = {d.dataset_id: sorted(d.purposes) for d in readable.datasets}
    assert mine[dataset.id] == ["energy-planning", MOBILITY]
    assert other.id not in mine
    flights = {f["dataset_id"]: f for f in await list_flights(app, MOBILITY)}
    assert flights[dataset.id]["purposes"] == [MOBILITY]
    assert other.id not in flights
    assert dataset.id not in {f["dataset_id"] for f in await list_flights(app, "research")}
    everything = await officer.stub.ListReadable(
        qpb.ListReadableRequest(purpose=MOBILITY), metadata=officer.md, timeout=30
    )
    assert {dataset.id, other.id} <= {d.dataset_id for d in everything.datasets}


# --- audit --------------------------------------------------------------------------------------


async def test_every_query_is_audited_and_the_salt_never_leaves(
    query_caller: CallerFactory[QueryCaller],
    consent_caller: CallerFactory[ConsentCaller],
    ingest_app: Service[IngestSettings],
    query_app: Service[QuerySettings],
    kafka: KafkaBroker,
    opa: OpaEndpoint,
) -> None:
    officer, app, dataset, sent, agreement_id = await sessions_with_app(
        query_caller, consent_caller, ingest_app, kafka, count=80
    )
    answered = qpb.QueryRequest(
        dataset_id=dataset.id,
        purpose=MOBILITY,
        columns=["session_id", "user_id", "session_start"],
        filter=cmp("socket_type", "=", "Type2"),
        order_by=[order("session_id")],
    )
    ok = await query(app, answered)
    grouped = qpb.QueryRequest(
        dataset_id=dataset.id,
        purpose=MOBILITY,
        group_by=["socket_type"],
        aggregates=[agg("count")],
    )
    info, flight_table = await flight_query(app, grouped)
    ungranted = qpb.QueryRequest(
        dataset_id=dataset.id, purpose=MOBILITY, columns=["session_id", "charging_point_id"]
    )
    await refused(app, ungranted)
    with pytest.raises(flight.FlightUnauthorizedError):
        await flight_query(
            app, qpb.QueryRequest(dataset_id=dataset.id, purpose="research", columns=["session_id"])
        )

    # The salt, as OPA hands it to the query service: the hashes are made with it.
    salt = await salt_of(opa.url, dataset, app)
    by_id = {r["session_id"]: r for r in sent}
    assert ok.table.num_rows > 0
    for row in ok.table.to_pylist():
        clear_user = by_id[row["session_id"]]["user_id"]
        assert row["user_id"] == hashlib.sha256((salt + clear_user).encode()).hexdigest()

    found: dict[str, list[qpb.AuditRecord]] = {}

    async def audited() -> bool:
        response = await officer.stub.SearchAudit(
            qpb.SearchAuditRequest(dataset_id=dataset.id, limit=1000),
            metadata=officer.md,
            timeout=30,
        )
        mine = [r for r in response.records if r.party == principal_of(app)["party"]]
        found["all"] = list(response.records)
        found["ok"] = [r for r in mine if r.query_id == ok.header.query_id]
        found["flight"] = [r for r in mine if r.channel == "flight" and r.outcome == "ok"]
        found["denied"] = [r for r in mine if "charging_point_id" in r.request_json]
        found["purpose"] = [r for r in mine if r.purpose == "research"]
        return all(found[k] for k in ("ok", "flight", "denied", "purpose"))

    await eventually(audited, 30, "the audit records of the four queries")
    check_answered(found["ok"], ok, answered, principal_of(app)["party"], agreement_id)
    (via_flight,) = found["flight"]
    assert json.loads(via_flight.request_json) == json_format.MessageToDict(grouped)
    assert via_flight.rows == flight_table.num_rows and via_flight.bytes > 0
    assert via_flight.agreement_id == agreement_id and via_flight.allowed

    (denied,) = found["denied"]
    assert not denied.allowed and denied.outcome == "denied" and denied.channel == "grpc"
    assert "column 'charging_point_id' is not granted" in list(denied.reasons)
    assert (denied.rows, denied.bytes) == (0, 0)
    (other_purpose,) = found["purpose"]
    assert not other_purpose.allowed and other_purpose.channel == "flight"
    assert any("is not among the purposes" in r for r in other_purpose.reasons)

    # Nowhere a salt: not in an audit record, an answer, nor on the tdg.audit topic.
    for each in found["all"]:
        assert salt.encode() not in each.SerializeToString()
    assert salt.encode() not in ok.raw
    assert salt.encode() not in info.serialize()
    events = await events_for(kafka.bootstrap, dataset.id, 4, topic=topics.AUDIT)
    assert len({e.id for e in events}) >= 4
    for event in events:
        assert salt.encode() not in event.data and salt not in str(event)


async def test_the_audit_sink_reads_its_topic_created_after_it_started(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    """The query service's first start on a fresh cluster: the sink starts, then the audit topic
    is created; the records sent to it must reach the audit table within seconds."""
    run = uuid.uuid4().hex[:8]
    topic = f"tdg.audit-{run}"
    catalog = await asyncio.to_thread(
        open_catalog,
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"file://{tmp_path}/w"},
    )
    table = AuditTable(catalog, topic=topic)
    sink = AuditSink(kafka.bootstrap, table, flush_every_s=0.3, group_id=f"tdg-query-audit-{run}")
    audit = AuditLog(kafka.bootstrap, topic=topic)
    record = qpb.AuditRecord(query_id=str(uuid.uuid4()), dataset_id=f"{LYON}.x", party="p")
    record.time.GetCurrentTime()
    sink.start()
    try:
        await asyncio.sleep(3.0)  # the sink started meanwhile, the topic not there yet
        await ensure_topics(kafka.bootstrap, [TopicSpec(topic, 3, 1)])
        audit.start()
        audit.record(record)

        async def stored() -> bool:
            return bool(await asyncio.to_thread(table.search, query_id=record.query_id))

        await eventually(stored, 20, "the record in the audit table")
    finally:
        await audit.stop()
        await sink.stop()


async def salt_of(opa_url: str, dataset: catalog_pb2.Dataset, caller: QueryCaller) -> str:
    """The hashing salt of the caller's agreement, as OPA hands it to the query service."""
    policy = PolicyClient(opa_url, timeout_s=5.0)
    try:
        decision = await policy.decide(
            DecisionPath.READ, read_input(dataset, principal_of(caller), MOBILITY)
        )
    finally:
        await policy.close()
    salt: str = decision["columns"]["user_id"]["salt"]
    assert len(salt) >= 32
    return salt


def check_answered(
    records: list[qpb.AuditRecord],
    answer: Answer,
    request: qpb.QueryRequest,
    party: str,
    agreement_id: str,
) -> None:
    """The one audit record of an answered gRPC query says what the caller got."""
    (record,) = records
    assert record.party == party and record.org
    assert record.dataset_id == request.dataset_id
    assert record.snapshot_id == answer.header.snapshot_id
    assert record.purpose == request.purpose
    assert record.agreement_id == agreement_id
    assert record.allowed and list(record.reasons) == []
    assert [(t.column, t.treatment) for t in record.treatments] == [
        (t.column, t.treatment) for t in answer.header.treatments
    ]
    assert json.loads(record.request_json) == json_format.MessageToDict(request)
    assert (record.rows, record.bytes) == (answer.summary.rows, answer.summary.bytes)
    assert record.outcome == "ok" and record.channel == "grpc"
    assert json.loads(record.row_filters_json) == [
        {"column": "commune_code", "op": "in", "values": list(AGREED)}
    ]
