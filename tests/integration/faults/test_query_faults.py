"""Faults around governed queries: OPA gone and back, results over the caps, an agreement revoked
or a party suspended while a long answer streams, callers that cancel or run out of time, and
answers far larger than a gRPC message."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyarrow import flight
from tdg.consent.v1 import consent_pb2 as pb
from tdg.query.v1 import query_pb2 as qpb
from tdg.query.v1 import query_pb2_grpc
from tdg_core.devstack import DevStackError, OpaServer, Tools, free_port
from tdg_core.service import Service
from tdg_core.testing import KafkaBroker, OpaEndpoint, in_process
from tdg_ingest.settings import IngestSettings
from tdg_ingest.warehouse import Warehouse
from tdg_query.server import build_service
from tdg_query.servicer import SERVICE_NAME
from tdg_query.settings import QuerySettings

from tests.integration.fixtures.callers import CallerFactory, ConsentCaller, QueryCaller
from tests.integration.fixtures.tokens import TokenMaker
from tests.integration.helpers import granted_application, published
from tests.integration.ingest_helpers import eventually, produce, settled
from tests.integration.query_helpers import flight_location, read_batches

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
LYON = "metropole-lyon"
PURPOSE = "mobility-planning"
ROWS = 30_000
# Wide rows: 30,000 of them are ~11 MB of Arrow, several times a gRPC message and more than any
# flow-control window, so a slow reader really holds the stream back.
PAD = "x" * 320
GRPC_LIMIT = 4 * 1024 * 1024
Code = grpc.StatusCode


def session(i: int) -> bytes:
    return json.dumps(
        {
            "session_id": f"S-{i:07d}-{PAD}",
            "ref_ev_charging_station": f"ST-{i % 7}",
            "charging_point_id": f"CP-{i % 50}",
            "socket_type": "Type2",
            "session_start": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "energy_kwh": f"{i % 90}.250",
            "max_power_kw": 22.0,
            "user_id": f"u-{i % 997}",
            "commune_code": "69123",
        }
    ).encode()


@dataclass
class Reader:
    """A caller of one query service (the session's or a dedicated one)."""

    stub: query_pb2_grpc.QueryServiceStub
    token: str
    party: str = ""
    org: str = ""
    flight_location: str = ""

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass
class World:
    dataset_id: str
    officer: Reader  # the publisher, on the session's query service
    admin: Reader  # platform-admin, on the session's query service (audit searches)


@pytest.fixture(scope="module")
async def world(
    query_caller: CallerFactory[QueryCaller],
    ingest_app: Service[IngestSettings],
    kafka: KafkaBroker,
) -> World:
    officer = query_caller("lyon-data-office", LYON, "data-officer")
    dataset = await published(officer, "ev-charging-sessions")
    for start in range(0, ROWS, 10_000):
        values = [session(i) for i in range(start, min(start + 10_000, ROWS))]
        await produce(kafka.bootstrap, dataset.id, values, LYON)
    rows, letters = await settled(
        ingest_app.part(Warehouse), kafka.bootstrap, dataset.id, ROWS, timeout_s=120
    )
    assert rows.num_rows == ROWS and not letters
    admin = query_caller("platform-ops", "tdg-platform", "platform-admin")
    return World(
        dataset.id,
        Reader(officer.stub, officer.token, flight_location=officer.flight_location),
        Reader(admin.stub, admin.token),
    )


@asynccontextmanager
async def dedicated(
    query_app: Service[QuerySettings], tmp: Path, **overrides: Any
) -> AsyncIterator[Service[QuerySettings]]:
    """A second query service on the session's tables, with other settings."""
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    settings = query_app.settings.model_copy(
        update={
            "grpc_port": 0,
            "query_flight_port": 0,
            "query_spill_dir": str(tmp / "spill"),
            **overrides,
        }
    )
    async with in_process(build_service, settings) as app:
        yield app


@asynccontextmanager
async def channel_to(app: Service[QuerySettings]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{app.port}", options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as ch:
        yield ch


def request(dataset_id: str, **fields: Any) -> qpb.QueryRequest:
    fields.setdefault("purpose", PURPOSE)
    return qpb.QueryRequest(dataset_id=dataset_id, **fields)


async def answer(reader: Reader, req: qpb.QueryRequest) -> pa.Table:
    responses = [r async for r in reader.stub.Query(req, metadata=reader.md, timeout=60)]
    return read_batches(responses)


@dataclass
class Failed:
    error: grpc.aio.AioRpcError
    query_id: str  # "" when no header came
    rows: int  # rows received before the error
    batches: int
    summary: bool


async def failing(
    reader: Reader,
    req: qpb.QueryRequest,
    deadline_s: float = 60,
    pace_s: float = 0.0,
    after_batches: int = -1,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> Failed:
    """Read a query that must fail, at `pace_s` per message; `meanwhile` is awaited once, after
    `after_batches` batches. Fails the test if the answer completes."""
    query_id, rows, batches, summary = "", 0, 0, False
    schema: pa.Schema | None = None
    call = reader.stub.Query(req, metadata=reader.md, timeout=deadline_s)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for response in call:
            part = response.WhichOneof("part")
            if part == "header":
                query_id = response.header.query_id
                schema = pa.ipc.read_schema(pa.py_buffer(response.header.arrow_schema))
            elif part == "arrow_batch":
                assert schema is not None
                batch = pa.ipc.read_record_batch(pa.py_buffer(response.arrow_batch), schema)
                rows += batch.num_rows
                batches += 1
                if batches == after_batches and meanwhile is not None:
                    await meanwhile()
            else:
                summary = True
            if pace_s:
                await asyncio.sleep(pace_s)
    return Failed(caught.value, query_id, rows, batches, summary)


async def audited(admin: Reader, query_id: str, timeout_s: float = 30) -> qpb.AuditRecord:
    """The query's record in the audit table, once the audit sink has committed it."""
    found: list[qpb.AuditRecord] = []

    async def there() -> bool:
        response = await admin.stub.SearchAudit(
            qpb.SearchAuditRequest(query_id=query_id), metadata=admin.md, timeout=10
        )
        found[:] = list(response.records)
        return bool(found)

    await eventually(there, timeout_s, f"the audit record of query {query_id}")
    return found[0]


async def reader_with_agreement(
    consent_caller: CallerFactory[ConsentCaller],
    make_token: TokenMaker,
    dataset_id: str,
    stub: query_pb2_grpc.QueryServiceStub,
) -> tuple[Reader, str]:
    """A fresh partner's application reading under an active agreement: (reader, agreement)."""
    org, app_id, agreement_id = await granted_application(
        consent_caller, dataset_id, PURPOSE, pb.Conditions(), LYON
    )
    reader = Reader(stub, make_token(app_id, org, ()), app_id, org)

    async def granted() -> bool:
        try:
            await answer(reader, request(dataset_id, columns=["charging_point_id"], limit=1))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != Code.PERMISSION_DENIED:
                raise
            return False
        return True

    await eventually(granted, 10, "the agreement reaches OPA")
    return reader, agreement_id


# --- OPA down, then back ------------------------------------------------------------------------


def registry_loaded(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/data/tdg/registry", timeout=2) as response:
            return bool(json.loads(response.read()).get("result"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def health(app: Service[QuerySettings]) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        response = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
        status: int = response.status
        return status


async def test_opa_down_fails_closed_then_recovers_by_itself(
    world: World, query_app: Service[QuerySettings], opa: OpaEndpoint, tmp_path: Path
) -> None:
    """A dedicated OPA (pulling the session's registry bundle) behind a dedicated query service,
    so that stopping it leaves the session's OPA alone."""
    if opa.bundle_url is None:
        pytest.skip("the session's OPA pulls no registry bundle to share")
    try:
        tools = Tools.locate(ROOT)
    except DevStackError:
        pytest.skip("no OPA binary in .tools (run `make setup`)")
    if not tools.opa_ready:
        pytest.skip("no OPA binary in .tools (run `make setup`)")
    own_opa = OpaServer(
        tools.opa_bin,
        ROOT / "policies",
        free_port(),
        state_dir=tmp_path / "opa",
        bundle_service_url=opa.bundle_url,
    )
    await asyncio.to_thread(own_opa.start)
    try:
        await asyncio.to_thread(own_opa.wait_ready)

        async def loaded() -> bool:
            return await asyncio.to_thread(registry_loaded, own_opa.url)

        await eventually(loaded, 20, "the dedicated OPA pulls the registry bundle")
        async with (
            dedicated(query_app, tmp_path / "query", opa_url=own_opa.url) as app,
            channel_to(app) as ch,
        ):
            officer = Reader(
                query_pb2_grpc.QueryServiceStub(ch),
                world.officer.token,
                flight_location=flight_location(app),
            )
            req = request(world.dataset_id, columns=["charging_point_id"], limit=500)
            assert (await answer(officer, req)).num_rows == 500

            async def serving() -> bool:
                return bool(await health(app) == health_pb2.HealthCheckResponse.SERVING)

            await eventually(serving, 10, f"health SERVING (down: {app.monitor.down})")

            await asyncio.to_thread(own_opa.stop)
            stopped = time.monotonic()
            failed = await failing(officer, req)
            assert failed.error.code() == Code.UNAVAILABLE, failed.error.details()
            assert failed.batches == 0 and failed.rows == 0 and not failed.query_id
            with pytest.raises(flight.FlightUnavailableError):
                await asyncio.to_thread(flight_rows, officer, req)

            async def not_serving() -> bool:
                return bool(await health(app) == health_pb2.HealthCheckResponse.NOT_SERVING)

            await eventually(not_serving, 5, "health NOT_SERVING while OPA is down")
            print(f"not_serving_after_s={time.monotonic() - stopped:.1f}")
            assert "opa" in app.monitor.down

            await asyncio.to_thread(own_opa.start)
            await asyncio.to_thread(own_opa.wait_ready)

            async def answers_again() -> bool:
                try:
                    return bool((await answer(officer, req)).num_rows == 500)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in (Code.UNAVAILABLE, Code.PERMISSION_DENIED), exc
                    return False

            # The registry comes back with the bundle (until then: "registry is not loaded").
            await eventually(answers_again, 30, "queries answered again once OPA is back")
            assert (await asyncio.to_thread(flight_rows, officer, req)).num_rows == 500
            await eventually(serving, 5, "health SERVING again")
    finally:
        await asyncio.to_thread(own_opa.stop)
    # The session's OPA was never touched.
    assert not opa.stopped and await asyncio.to_thread(registry_loaded, opa.url)
    assert (await answer(world.officer, request(world.dataset_id, limit=3))).num_rows == 3


def flight_rows(reader: Reader, req: qpb.QueryRequest) -> pa.Table:
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {reader.token}".encode())], timeout=30
    )
    with flight.connect(reader.flight_location) as client:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(req.SerializeToString()), options
        )
        return client.do_get(info.endpoints[0].ticket, options).read_all()


# --- caps on rows and bytes ---------------------------------------------------------------------


async def test_results_over_the_caps_end_with_resource_exhausted(
    world: World, query_app: Service[QuerySettings], tmp_path: Path
) -> None:
    async with (
        dedicated(
            query_app,
            tmp_path,
            query_max_rows=100,
            query_max_bytes=16 * 1024,
            query_batch_rows=10,
        ) as app,
        channel_to(app) as ch,
    ):
        officer = Reader(query_pb2_grpc.QueryServiceStub(ch), world.officer.token)
        # Narrow rows: the row cap first.
        failed = await failing(officer, request(world.dataset_id, columns=["charging_point_id"]))
        assert failed.error.code() == Code.RESOURCE_EXHAUSTED, failed.error.details()
        assert "more than 100 rows" in (failed.error.details() or "")
        assert "TDG_QUERY_MAX_ROWS" in (failed.error.details() or "")
        assert failed.rows <= 100 and not failed.summary
        record = await audited(world.admin, failed.query_id)
        assert record.outcome == "limit_exceeded" and record.rows == failed.rows
        # Wide rows: the byte cap first.
        failed = await failing(officer, request(world.dataset_id, limit=90))
        assert failed.error.code() == Code.RESOURCE_EXHAUSTED, failed.error.details()
        assert "larger than 16384 bytes" in (failed.error.details() or "")
        assert "TDG_QUERY_MAX_BYTES" in (failed.error.details() or "")
        assert failed.rows < 90
        # At or under the caps: answered.
        exact = request(world.dataset_id, columns=["charging_point_id"], limit=100)
        assert (await answer(officer, exact)).num_rows == 100
        some = request(world.dataset_id, columns=["session_id"], limit=30)
        assert (await answer(officer, some)).num_rows == 30
        grouped = request(
            world.dataset_id,
            group_by=["charging_point_id"],
            aggregates=[qpb.Aggregate(function=qpb.AGGREGATE_FUNCTION_COUNT, alias="n")],
        )
        table = await answer(officer, grouped)
        assert table.num_rows == 50 and sum(table["n"].to_pylist()) == ROWS


# --- revoked or suspended while streaming -------------------------------------------------------


@pytest.fixture(scope="module")
async def small_batches(
    query_app: Service[QuerySettings], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service[QuerySettings]]:
    """A query service streaming 10 rows a batch: a long answer is thousands of messages."""
    async with dedicated(
        query_app, tmp_path_factory.mktemp("small-batches"), query_batch_rows=10
    ) as app:
        yield app


async def test_agreement_revoked_mid_stream_stops_it(
    world: World,
    small_batches: Service[QuerySettings],
    consent_caller: CallerFactory[ConsentCaller],
    make_token: TokenMaker,
) -> None:
    officer = consent_caller("lyon-data-office", LYON, "data-officer")
    async with channel_to(small_batches) as ch:
        reader, agreement_id = await reader_with_agreement(
            consent_caller, make_token, world.dataset_id, query_pb2_grpc.QueryServiceStub(ch)
        )

        async def revoke() -> None:
            await officer.stub.RevokeAgreement(
                pb.RevokeAgreementRequest(agreement_id=agreement_id, reason="contract ended"),
                metadata=officer.md,
                timeout=10,
            )

        failed = await failing(
            reader, request(world.dataset_id), pace_s=0.003, after_batches=5, meanwhile=revoke
        )
        assert failed.error.code() == Code.PERMISSION_DENIED, failed.error.details()
        assert f"agreement '{agreement_id}' was revoked while the query ran" in (
            failed.error.details() or ""
        )
        assert 50 <= failed.rows < ROWS and not failed.summary
        print(f"revoked_after_rows={failed.rows}")
        record = await audited(world.admin, failed.query_id)
        assert record.outcome == "revoked"
        assert record.agreement_id == agreement_id and record.rows == failed.rows
        # And the next query is refused before any row.
        again = await failing(reader, request(world.dataset_id))
        assert again.error.code() == Code.PERMISSION_DENIED and again.batches == 0


async def test_party_suspended_mid_stream_stops_it(
    world: World,
    small_batches: Service[QuerySettings],
    consent_caller: CallerFactory[ConsentCaller],
    make_token: TokenMaker,
) -> None:
    admin = consent_caller("platform-ops", "tdg-platform", "platform-admin")
    async with channel_to(small_batches) as ch:
        reader, _ = await reader_with_agreement(
            consent_caller, make_token, world.dataset_id, query_pb2_grpc.QueryServiceStub(ch)
        )

        async def suspend() -> None:
            await admin.stub.SuspendParty(
                pb.SuspendPartyRequest(id=reader.org, reason="unpaid fees"),
                metadata=admin.md,
                timeout=10,
            )

        try:
            failed = await failing(
                reader, request(world.dataset_id), pace_s=0.003, after_batches=5, meanwhile=suspend
            )
        finally:
            await admin.stub.ReinstateParty(
                pb.ReinstatePartyRequest(id=reader.org), metadata=admin.md, timeout=10
            )
        assert failed.error.code() == Code.PERMISSION_DENIED, failed.error.details()
        assert f"party '{reader.org}' was suspended while the query ran" in (
            failed.error.details() or ""
        )
        assert 50 <= failed.rows < ROWS and not failed.summary
        record = await audited(world.admin, failed.query_id)
        assert record.outcome == "revoked" and record.rows == failed.rows


# --- callers that go away ------------------------------------------------------------------------


async def test_deadline_passing_mid_stream_is_audited_as_cancelled(
    world: World, small_batches: Service[QuerySettings]
) -> None:
    async with channel_to(small_batches) as ch:
        officer = Reader(query_pb2_grpc.QueryServiceStub(ch), world.officer.token)
        failed = await failing(officer, request(world.dataset_id), deadline_s=1.5, pace_s=0.01)
        assert failed.error.code() == Code.DEADLINE_EXCEEDED
        assert failed.query_id and 0 < failed.rows < ROWS
        record = await audited(world.admin, failed.query_id)
        assert record.outcome == "cancelled", record
        # The service goes on serving.
        table = await answer(officer, request(world.dataset_id, columns=["user_id"], limit=2_000))
        assert table.num_rows == 2_000


async def test_client_cancelling_is_audited_as_cancelled(
    world: World, small_batches: Service[QuerySettings]
) -> None:
    async with channel_to(small_batches) as ch:
        officer = Reader(query_pb2_grpc.QueryServiceStub(ch), world.officer.token)
        call = officer.stub.Query(request(world.dataset_id), metadata=officer.md, timeout=60)
        query_id, batches = "", 0
        async for response in call:
            if response.HasField("header"):
                query_id = response.header.query_id
            else:
                batches += 1
            if batches == 20:
                call.cancel()
                break
        assert call.cancelled() or (await call.code()) == Code.CANCELLED
        record = await audited(world.admin, query_id)
        assert record.outcome == "cancelled", record
        assert 0 < record.rows < ROWS
        assert (await answer(officer, request(world.dataset_id, limit=10))).num_rows == 10


async def test_deadline_passing_while_the_query_is_planned_is_audited(
    world: World, small_batches: Service[QuerySettings], ingest_app: Service[IngestSettings]
) -> None:
    """The Iceberg catalog held locked for a moment: the read cannot be planned before the
    caller's deadline."""
    async with channel_to(small_batches) as ch:
        stub = query_pb2_grpc.QueryServiceStub(ch)
        reader = Reader(stub, world.officer.token)
        since = Timestamp()
        since.FromDatetime(datetime.now(UTC))
        database = ingest_app.settings.lake_catalog_url.removeprefix("sqlite:///")

        def hold_the_catalog(ready: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
            with closing(sqlite3.connect(database, timeout=10, isolation_level=None)) as db:
                db.execute("BEGIN EXCLUSIVE")
                loop.call_soon_threadsafe(ready.set)
                time.sleep(2.5)
                db.execute("ROLLBACK")

        ready = asyncio.Event()
        holding = asyncio.create_task(
            asyncio.to_thread(hold_the_catalog, ready, asyncio.get_running_loop())
        )
        await ready.wait()
        failed = await failing(reader, request(world.dataset_id, limit=5), deadline_s=1.0)
        await holding
        assert failed.error.code() == Code.DEADLINE_EXCEEDED
        assert not failed.query_id  # cut off before the header
        # A later query of the same party on the same dataset: once its record is in the table,
        # every earlier record of the dataset is too (one partition per dataset, in order).
        later = [
            r
            async for r in stub.Query(
                request(world.dataset_id, limit=1), metadata=reader.md, timeout=30
            )
        ]
        await audited(world.admin, later[0].header.query_id)
        response = await world.admin.stub.SearchAudit(
            qpb.SearchAuditRequest(
                dataset_id=world.dataset_id, party="lyon-data-office", since=since, limit=1000
            ),
            metadata=world.admin.md,
            timeout=10,
        )
        outcomes = [r.outcome for r in response.records]
        assert "cancelled" in outcomes, outcomes


# --- answers larger than a message -----------------------------------------------------------


async def test_a_large_answer_streams_in_messages_under_the_grpc_limit(world: World) -> None:
    # Sorted, the answer comes out of DuckDB as one ~11 MB batch, which the service cuts.
    req = request(world.dataset_id, order_by=[qpb.OrderBy(column="session_id", descending=True)])
    sizes: list[int] = []
    ids: list[str] = []
    schema: pa.Schema | None = None
    async for response in world.officer.stub.Query(req, metadata=world.officer.md, timeout=120):
        sizes.append(response.ByteSize())
        if response.HasField("header"):
            schema = pa.ipc.read_schema(pa.py_buffer(response.header.arrow_schema))
        elif response.WhichOneof("part") == "arrow_batch":
            assert schema is not None
            batch = pa.ipc.read_record_batch(pa.py_buffer(response.arrow_batch), schema)
            ids.extend(batch["session_id"].to_pylist())
        else:
            assert response.summary.rows == ROWS
    total = sum(sizes)
    print(f"messages={len(sizes)} total_bytes={total} largest={max(sizes)}")
    assert len(ids) == ROWS and ids == sorted(ids, reverse=True)  # cut, in order, nothing lost
    assert total > 2 * GRPC_LIMIT  # the answer is several messages' worth…
    assert max(sizes) < GRPC_LIMIT  # …and none of them is over the limit
    assert max(sizes) > GRPC_LIMIT // 4  # (large batches were made, and cut)
    # The same through Flight.
    table = await asyncio.to_thread(flight_rows, world.officer, req)
    assert table.num_rows == ROWS
