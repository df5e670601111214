"""A single-node Apache Kafka (KRaft, combined broker and controller) run on the JDK."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from tdg_core.devstack._ports import port_in_use
from tdg_core.devstack._process import DevStackError, ManagedProcess, wait_until_ready

HOST = "127.0.0.1"


def _cluster_id() -> str:
    # Kafka's Uuid.randomUuid: 16 random bytes, URL-safe base64 without padding, never starting
    # with "-" (it would read as a command-line option). Made here to spare a JVM start.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(port: int, controller_port: int, log_dir: Path) -> str:
    """The broker's configuration: one node, loopback only, every internal topic at RF 1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # A single node cannot host more than one replica of anything.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions: the first consumer group and transaction start in
        # milliseconds instead of creating 50 partitions each.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Services create their topics (partitions, retention) through the admin client; a typo
        # in a topic name must fail, not create a stray topic.
        "auto.create.topics.enable": "false",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


async def list_topics(bootstrap: str, timeout_s: float = 5.0) -> list[str]:
    """The broker's topic names through the admin client (the readiness probe)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="tdg-devstack-probe",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        return list(await asyncio.wait_for(admin.list_topics(), timeout_s))
    finally:
        await admin.close()


def _probe(port: int) -> str | None:
    # A plain TCP connect first: the admin client logs an error for every refused connection,
    # which would flood the terminal while the JVM starts.
    if not port_in_use(port, HOST):
        return "port not open yet"
    bootstrap = f"{HOST}:{port}"
    try:
        coro = list_topics(bootstrap, timeout_s=3.0)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(coro)
        else:
            # Called from inside an event loop (an async test): asyncio.run needs a thread.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, coro).result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class KafkaNode:
    """One KRaft node; configuration, metadata and topic data all under `data_dir`.

    Stopping and starting again on the same data dir and ports keeps the cluster id and the data.
    """

    def __init__(
        self,
        kafka_home: Path,
        data_dir: Path,
        port: int,
        controller_port: int,
        *,
        state_dir: Path | None = None,
        name: str = "kafka",
        heap: str = "512m",
    ) -> None:
        self.name = name
        self.kafka_home = kafka_home
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self._process = ManagedProcess(
            name=name,
            argv=self._argv(),
            state_dir=state_dir or data_dir,
            cwd=data_dir,
        )

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return self.bootstrap

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self._process.log_file

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.running

    def start(self) -> None:
        """Write the configuration, format the storage once, and start the broker (no wait)."""
        if self.running:
            return
        libs = self.kafka_home / "libs"
        if not libs.is_dir():
            raise DevStackError(f"Kafka is not provisioned in {self.kafka_home}: run `make setup`")
        self._java()  # a clear error now rather than a FileNotFoundError from Popen
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = server_properties(self.port, self.controller_port, self.log_dir)
        self.properties_file.write_text(props)
        if not (self.log_dir / "meta.properties").is_file():
            self._format()
        self._process.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until an admin client lists the topics (or raise DevStackError)."""
        port = self.port
        wait_until_ready(
            self._process, lambda: _probe(port), timeout=timeout, what=f"Kafka on {self.bootstrap}"
        )

    async def wait_ready_async(self, timeout_s: float = 60.0) -> None:
        """`wait_ready` for async callers: their event loop stays free while the broker starts."""
        deadline = time.monotonic() + timeout_s
        reason = "not probed yet"
        while time.monotonic() < deadline:
            if not self.running:
                raise DevStackError(
                    f"Kafka on {self.bootstrap} exited before it was ready; last lines of"
                    f" {self.log_file}:\n{self._process.tail()}"
                )
            if not port_in_use(self.port, HOST):
                reason = "port not open yet"
            else:
                try:
                    await list_topics(self.bootstrap, timeout_s=3.0)
                    return
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
        raise DevStackError(
            f"Kafka on {self.bootstrap} was not ready within {timeout_s:.0f}s ({reason});"
            f" see {self.log_file}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown that flushes the logs), then SIGKILL after `timeout`."""
        self._process.stop(timeout)

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise DevStackError("`java` not found on PATH: Kafka needs a JDK 17 or newer")
        return java

    def _jvm_args(self) -> list[str]:
        config = self.kafka_home / "config" / "log4j2.properties"
        return [
            f"-Xmx{self.heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={config}",
            # Quoted wildcard: Java, not a shell, expands it.
            "-cp",
            f"{self.kafka_home / 'libs'}/*",
        ]

    def _argv(self) -> list[str]:
        return [
            shutil.which("java") or "java",
            *self._jvm_args(),
            "kafka.Kafka",
            str(self.properties_file),
        ]

    def _format(self) -> None:
        # --ignore-formatted keeps an existing cluster id; a fresh one is only used the first time.
        argv = [
            self._java(),
            *self._jvm_args(),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _cluster_id(),
            "--config",
            str(self.properties_file),
            "--ignore-formatted",
        ]
        self._process.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise DevStackError(
                f"formatting Kafka storage in {self.log_dir} failed; last lines of"
                f" {self.log_file}:\n{self._process.tail()}"
            )
