"""The fixtures and the devstack against the real things: Kafka, OPA, PostgreSQL, processes."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tdg_core.devstack import (
    ManagedProcess,
    OpaServer,
    Tools,
    free_port,
    list_topics,
    port_in_use,
    registry_bundle_config,
)
from tdg_core.testing import KafkaBroker, OpaEndpoint, RegistryBundleServer, unavailable


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


@pytest.mark.integration
async def test_broker_creates_a_topic_and_round_trips_a_record(kafka: KafkaBroker) -> None:
    topic = await _create_topic(kafka.bootstrap)
    assert topic in await list_topics(kafka.bootstrap)

    await _produce(kafka.bootstrap, topic, b"bike counter 42")

    assert await _read_all(kafka.bootstrap, topic, expected=1) == [b"bike counter 42"]


@pytest.mark.integration
async def test_broker_does_not_create_topics_on_first_use(kafka: KafkaBroker) -> None:
    if not kafka.owned or kafka.node is None:
        pytest.skip("checks the configuration of the broker this session provisions")
    assert "auto.create.topics.enable=false" in kafka.node.properties_file.read_text()


@pytest.mark.integration
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


def _served_policies(policies: Path) -> list[str]:
    """The Rego files a server loads: every policy, none of their unit tests."""
    return sorted(p.name for p in policies.rglob("*.rego") if not p.name.endswith("_test.rego"))


@pytest.mark.integration
def test_opa_fixture_serves_the_repository_policies(opa: OpaEndpoint) -> None:
    status, _ = _get(f"{opa.url}/health")
    assert status == 200

    repo_rego = _served_policies(Path(__file__).parents[3] / "policies")
    _, body = _get(f"{opa.url}/v1/policies")
    loaded = sorted(Path(policy["id"]).name for policy in json.loads(body)["result"])
    assert loaded == repo_rego


@pytest.mark.integration
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
    # Without a bundle service, no configuration file: the policies are all it loads.
    assert not server.config_file.exists()


# --- the registry bundle (the consent service's bundle server, played by RegistryBundleServer) --


def _registry(status: str) -> dict[str, Any]:
    return {
        "revision": 1,
        "parties": {
            "velo-app": {
                "kind": "application",
                "organisation": "velo-startup",
                "status": status,
                "roles": ["consumer"],
            }
        },
    }


def _wait(check: Callable[[], object], timeout: float) -> float:
    """Seconds until `check()` is truthy; fails the test after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        time.sleep(0.02)
    return time.monotonic() - started


def _opa_bin() -> Path:
    tools = Tools.locate()
    if not tools.opa_ready:
        unavailable("OPA is required in CI: run `make setup`")
    return tools.opa_bin


@pytest.mark.integration
def test_opa_server_pulls_the_registry_bundle_beside_its_policies(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "parties.rego").write_text(
        "package tdg.test.parties\n\ndefault active := false\n\n"
        'active if data.tdg.registry.parties[input.party].status == "active"\n'
    )
    bundle_port = free_port()
    url = f"http://127.0.0.1:{bundle_port}"
    server = OpaServer(
        _opa_bin(), policies, free_port(), state_dir=tmp_path, bundle_service_url=url
    )

    def active() -> object:
        return _decide(server.url, "tdg/test/parties/active", {"party": "velo-app"})

    server.start()
    try:
        # The consent service is not up yet: OPA starts, serves its policies, and keeps trying.
        server.wait_ready()
        assert json.loads(server.config_file.read_text()) == registry_bundle_config(url)
        assert not port_in_use(bundle_port)
        assert active() is False
        assert "result" not in json.loads(_get(f"{server.url}/v1/data/tdg/registry")[1])

        with RegistryBundleServer(bundle_port, _registry("active")) as bundles:
            _wait(lambda: active() is True, timeout=10)  # found within its 1-2 s retry delay

            # Long polling: a change reaches OPA at once, not at the next poll.
            bundles.publish(_registry("suspended"))
            assert _wait(lambda: active() is False, timeout=5) < 1.0
            assert any("wait=10" in r.get("Prefer", "") for r in bundles.requests)

        # The consent service gone: OPA keeps the last bundle it pulled, and its policies.
        assert active() is False
        _, body = _get(f"{server.url}/v1/data/tdg/registry/parties/velo-app/status")
        assert json.loads(body)["result"] == "suspended"
    finally:
        server.stop()


@pytest.mark.integration
def test_opa_server_with_the_bundle_still_serves_the_repository_policies(tmp_path: Path) -> None:
    repo_policies = Path(__file__).parents[3] / "policies"
    bundle_port = free_port()
    server = OpaServer(
        _opa_bin(),
        repo_policies,
        free_port(),
        state_dir=tmp_path,
        bundle_service_url=f"http://127.0.0.1:{bundle_port}",
    )
    with RegistryBundleServer(bundle_port, _registry("active")):
        server.start()
        try:
            server.wait_ready()
            _wait(lambda: _get(f"{server.url}/v1/data/tdg/registry")[1] != b"{}\n", timeout=10)
            _, body = _get(f"{server.url}/v1/data/tdg/registry")
            assert json.loads(body)["result"] == _registry("active")

            _, body = _get(f"{server.url}/v1/policies")
            loaded = sorted(Path(p["id"]).name for p in json.loads(body)["result"])
            assert loaded == _served_policies(repo_policies)
        finally:
            server.stop()


@pytest.mark.integration
def test_opa_fixture_pulls_the_registry_bundle_from_its_bundle_port(opa: OpaEndpoint) -> None:
    # Checked on the configuration only: pulling a bundle into the session's OPA would make
    # data.tdg.registry bundle-owned for every later test (see tdg_core.testing._bundles).
    port = opa.require_bundle_port()
    assert opa.bundle_url == f"http://127.0.0.1:{port}"
    if opa.server is not None:
        config = json.loads(opa.server.config_file.read_text())
        assert config == registry_bundle_config(f"http://127.0.0.1:{port}")
        assert f"--config-file={opa.server.config_file}" in opa.server.argv


@pytest.mark.integration
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
