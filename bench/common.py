"""What every benchmark shares: the run's temporary directory and child processes (OPA, the tdg
services), bearer tokens, the timing of calls, and the report (human lines, then the figures as
one JSON object on the last stdout line).

The scripts run as `python bench/<name>.py`, so bench/ is on sys.path and this is `common`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
import jwt
from tdg_core.devstack import (
    Component,
    KafkaNode,
    OpaServer,
    PythonService,
    ServiceSpec,
    Tools,
    free_port,
)

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"

Metadata = tuple[tuple[str, str], ...]


# --- the report -----------------------------------------------------------------------------


def say(line: str) -> None:
    """One human line of the report, at once (the JSON line comes last)."""
    print(line, flush=True)


def report(figures: Coroutine[Any, Any, Mapping[str, Any]]) -> None:
    """Runs the benchmark and prints its figures as the last stdout line, one JSON object."""

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # A SIGTERM unwinds like Ctrl-C: the processes are stopped, the temporary directory removed.
    signal.signal(signal.SIGTERM, interrupted)
    print(json.dumps(asyncio.run(figures)))


# --- timing ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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


# --- callers --------------------------------------------------------------------------------


def bearer(secret: str, sub: str, org: str, roles: list[str]) -> Metadata:
    """gRPC metadata with a token the services accept (HS256 with their `secret`, one hour)."""
    now = int(time.time())
    claims = {"sub": sub, "org": org, "roles": roles, "iss": "tdg", "aud": "tdg"}
    token = jwt.encode({**claims, "iat": now, "exp": now + 3600}, secret, "HS256")
    return (("authorization", f"Bearer {token}"),)


# --- the run's directory and processes ------------------------------------------------------


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary directory for the run's databases and process logs. When the run fails, the
    end of every log is shown before the directory goes."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except BaseException:
        dump_logs(path)
        raise
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def dump_logs(tmp: Path, lines: int = 25) -> None:
    """The end of every process log in `tmp`, on stderr."""
    for log in sorted(tmp.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.name} (last {len(tail)} lines)", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


async def launch(processes: contextlib.ExitStack, component: Component) -> None:
    """Starts a child process, to be stopped when `processes` closes; its readiness is not
    awaited (`wait_ready`): several can come up at once."""
    processes.callback(component.stop)
    await asyncio.to_thread(component.start)  # some take seconds (Kafka formats its storage)


async def wait_ready(*components: Component, timeout_s: float) -> None:
    await asyncio.gather(*(asyncio.to_thread(c.wait_ready, timeout_s) for c in components))


def opa_server(
    tools: Tools, tmp: Path, port: int, bundle_service_url: str | None = None
) -> OpaServer:
    """OPA serving the repository's policies (and, given its URL, the consent registry bundle)."""
    return OpaServer(
        tools.opa_bin, POLICIES, port, state_dir=tmp, bundle_service_url=bundle_service_url
    )


def python_service(
    tmp: Path,
    name: str,
    module: str,
    port: int,
    settings: Mapping[str, str],
    extra_ports: tuple[int, ...] = (),
) -> PythonService:
    """A tdg service (`python -m <module>`) configured by `settings` (TDG_ variables) alone: the
    caller's own TDG_ variables (a dev stack's) are dropped so that nothing of it leaks in (its
    Kafka above all: the consumer groups are the real services')."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TDG_")}
    env = {**inherited, "TDG_LOG_LEVEL": "WARNING", **settings}
    spec = ServiceSpec(name=name, module=module, port=port, extra_ports=extra_ports)
    # cwd: the temporary directory, where no var/dev/dev.env is read by the settings.
    return PythonService(spec, state_dir=tmp, env=env, cwd=tmp)


async def kafka_and_opa(
    processes: contextlib.ExitStack, tmp: Path, wait_kafka: bool = False
) -> tuple[str, str]:
    """Kafka and OPA: the ones named by TDG_KAFKA_BOOTSTRAP / TDG_OPA_URL, else our own."""
    bootstrap = os.environ.get("TDG_KAFKA_BOOTSTRAP", "")
    opa_url = os.environ.get("TDG_OPA_URL", "")
    tools = Tools.locate(ROOT)
    if not bootstrap:
        kafka = KafkaNode(tools.kafka_home, tmp / "kafka", free_port(), free_port(), state_dir=tmp)
        await launch(processes, kafka)
        bootstrap = kafka.bootstrap
        if wait_kafka:  # the catalog serves without it (its outbox keeps the events)
            await wait_ready(kafka, timeout_s=120)
    if not opa_url:
        opa = opa_server(tools, tmp, free_port())
        await launch(processes, opa)
        await wait_ready(opa, timeout_s=20)
        opa_url = opa.url
    return bootstrap, opa_url


async def start_kafka(processes: contextlib.ExitStack, tmp: Path) -> tuple[str, KafkaNode | None]:
    """Kafka as `kafka_and_opa` has it: TDG_KAFKA_BOOTSTRAP's, else our own, started but not
    awaited (`wait_ready` it: the tdg services may start meanwhile, they wait for it)."""
    bootstrap = os.environ.get("TDG_KAFKA_BOOTSTRAP", "")
    if bootstrap:
        return bootstrap, None
    tools = Tools.locate(ROOT)
    kafka = KafkaNode(tools.kafka_home, tmp / "kafka", free_port(), free_port(), state_dir=tmp)
    await launch(processes, kafka)
    return kafka.bootstrap, kafka


async def registry_opa(processes: contextlib.ExitStack, tmp: Path, bundle_port: int) -> str:
    """Our own OPA (ready), pulling the registry bundle (purposes, parties, agreements) from the
    consent service the caller starts on `bundle_port`: a run's parties and agreements are its
    own, so TDG_OPA_URL is not used."""
    opa = opa_server(Tools.locate(ROOT), tmp, free_port(), f"http://127.0.0.1:{bundle_port}")
    await launch(processes, opa)
    await wait_ready(opa, timeout_s=20)
    return opa.url


def log_events(log_file: Path, event: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The JSON log lines (TDG_LOG_FORMAT=json) of `event` in a service's log from byte `offset`
    on, and the offset of the log's end (for the next call)."""
    found: list[dict[str, Any]] = []
    with log_file.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = offset + len(data)
    for line in data.splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found, end


T = TypeVar("T")


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
