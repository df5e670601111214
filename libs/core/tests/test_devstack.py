"""The fixtures and the devstack against the real things: Kafka, OPA, PostgreSQL, processes."""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tdg_core.devstack import ManagedProcess, OpaServer, Tools, free_port, list_topics
from tdg_core.testing import KafkaBroker, OpaEndpoint, unavailable


async def _create_topic(bootstrap: str) -> str:
    name = f"tdg.test.devstack-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while len(values) < expected:
            batches = await consumer.getmany(timeout_ms=10_000)
            if not batches:
                break
            values += [r.value for records in batches.values() for r in records if r.value]
    finally:
        await consumer.stop()
    return values


async def test_broker_creates_a_topic_and_round_trips_a_record(kafka: KafkaBroker) -> None:
    topic = await _create_topic(kafka.bootstrap)
    assert topic in await list_topics(kafka.bootstrap)

    await _produce(kafka.bootstrap, topic, b"bike counter 42")

    assert await _read_all(kafka.bootstrap, topic, expected=1) == [b"bike counter 42"]


async def test_broker_does_not_create_topics_on_first_use(kafka: KafkaBroker) -> None:
    if not kafka.owned or kafka.node is None:
        pytest.skip("checks the configuration of the broker this session provisions")
    assert "auto.create.topics.enable=false" in kafka.node.properties_file.read_text()


async def test_owned_broker_keeps_its_data_across_an_outage(kafka: KafkaBroker) -> None:
    if not kafka.owned:
        pytest.skip("TDG_KAFKA_BOOTSTRAP names a broker this session may not stop")
    topic = await _create_topic(kafka.bootstrap)
    await _produce(kafka.bootstrap, topic, b"before the outage")

    await kafka.stop_async()
    with pytest.raises(KafkaConnectionError):
        await list_topics(kafka.bootstrap, timeout_s=1.0)
    await kafka.start_async()

    await _produce(kafka.bootstrap, topic, b"after the outage")
    assert await _read_all(kafka.bootstrap, topic, expected=2) == [
        b"before the outage",
        b"after the outage",
    ]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def _decide(url: str, path: str, payload: object) -> object:
    request = urllib.request.Request(
        f"{url}/v1/data/{path}",
        data=json.dumps({"input": payload}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read()).get("result")


def test_opa_fixture_serves_the_repository_policies(opa: OpaEndpoint) -> None:
    status, _ = _get(f"{opa.url}/health")
    assert status == 200

    repo_rego = sorted(p.name for p in (Path(__file__).parents[3] / "policies").rglob("*.rego"))
    _, body = _get(f"{opa.url}/v1/policies")
    loaded = sorted(Path(policy["id"]).name for policy in json.loads(body)["result"])
    assert loaded == repo_rego


def test_opa_server_decides_with_policies_from_a_directory(tmp_path: Path) -> None:
    tools = Tools.locate()
    if not tools.opa_ready:
        unavailable("OPA is required in CI: run `make setup`")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "greeting.rego").write_text(
        'package tdg.test.greeting\n\ndefault allow := false\n\nallow if input.party == "lyon"\n'
    )
    server = OpaServer(tools.opa_bin, policies, free_port(), state_dir=tmp_path)
    server.start()
    try:
        server.wait_ready()
        assert _decide(server.url, "tdg/test/greeting/allow", {"party": "lyon"}) is True
        assert _decide(server.url, "tdg/test/greeting/allow", {"party": "paris"}) is False
    finally:
        server.stop()
    assert not server.running


async def test_postgres_accepts_a_query_through_sqlalchemy_asyncpg(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://")
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("select 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def _sleeper(state_dir: Path) -> ManagedProcess:
    return ManagedProcess(
        name="sleeper",
        argv=[sys.executable, "-c", "import time; time.sleep(120)"],
        state_dir=state_dir,
    )


def test_managed_process_starts_once_and_stops_from_another_handle(tmp_path: Path) -> None:
    first = _sleeper(tmp_path)
    pid = first.start()
    try:
        # A second `up` (another handle on the same pid file) finds it running and starts nothing.
        again = _sleeper(tmp_path)
        assert again.running
        assert again.start() == pid

        # `down` from another shell: a fresh handle stops what the first one started.
        _sleeper(tmp_path).stop(timeout=5)
        assert not first.running
        assert not first.pid_file.exists()
    finally:
        first.stop(timeout=5)


def test_stale_pid_file_is_not_mistaken_for_a_live_process(tmp_path: Path) -> None:
    process = _sleeper(tmp_path)
    tmp_path.joinpath("sleeper.pid").write_text("1 0\n")  # pid 1 lives, but started at another time
    assert not process.running
