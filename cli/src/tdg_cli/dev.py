"""`tdg dev up | down | status | logs`: the local stack as background processes under var/dev/.

Kafka on 127.0.0.1:9092, OPA on 127.0.0.1:8181 (serving policies/, reloaded on change, and pulling
the registry bundle from the consent service's bundle server on 127.0.0.1:8282), then each service
in SERVICES. OPA starts before the consent service and retries the bundle every 1-2 s until it
answers; from then on, long polling brings every change within a second. Every component has a pid
file and a log under var/dev/, so `up` twice starts nothing new and `down` works from any shell. The
shared TDG_ variables are also written to var/dev/dev.env, which the settings of the CLI (and of
services started by hand) read.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from tdg_core.devstack import (
    Component,
    DevStackError,
    KafkaNode,
    OpaServer,
    PythonService,
    ServiceSpec,
    Tools,
    find_repo_root,
    port_in_use,
    provision,
)

dev_app = typer.Typer(
    help="The local stack: Kafka, OPA and the tdg services.", no_args_is_help=True
)
console = Console(soft_wrap=True)

KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
OPA_PORT = 8181
# The consent service's OPA bundle server (TDG_CONSENT_BUNDLE_PORT), which OPA pulls from.
CONSENT_BUNDLE_PORT = 8282

# The Iceberg catalog and warehouse: written by ingest, read by query.
LAKE_ENV = {
    "TDG_LAKE_CATALOG_URL": "sqlite:///var/dev/iceberg-catalog.db",
    "TDG_LAKE_WAREHOUSE": "var/dev/warehouse",
}

# One line per service; its env is added to the shared TDG_ variables (and to dev.env).
SERVICES: list[ServiceSpec] = [
    ServiceSpec(
        "catalog",
        "tdg_catalog",
        50051,
        {"TDG_CATALOG_DATABASE_URL": "sqlite+aiosqlite:///var/dev/catalog.db"},
    ),
    ServiceSpec(
        "consent",
        "tdg_consent",
        50052,
        {
            "TDG_CONSENT_DATABASE_URL": "sqlite+aiosqlite:///var/dev/consent.db",
            "TDG_CONSENT_BUNDLE_PORT": str(CONSENT_BUNDLE_PORT),
        },
        extra_ports=(CONSENT_BUNDLE_PORT,),
    ),
    ServiceSpec(
        "ingest",
        "tdg_ingest",
        50053,
        LAKE_ENV,
    ),
    ServiceSpec(
        "query",
        "tdg_query",
        50054,
        {**LAKE_ENV, "TDG_QUERY_SPILL_DIR": "var/dev/query-spill"},
        extra_ports=(50055,),
    ),
]


@dataclass(frozen=True)
class DevStack:
    """The local stack of one repository checkout."""

    root: Path

    @classmethod
    def here(cls) -> DevStack:
        root = find_repo_root(Path.cwd()) or find_repo_root()
        if root is None:
            raise DevStackError("run `tdg dev` inside the tdg repository")
        return cls(root)

    @property
    def state_dir(self) -> Path:
        return self.root / "var" / "dev"

    @property
    def tools(self) -> Tools:
        return Tools.locate(self.root)

    @property
    def kafka(self) -> KafkaNode:
        return KafkaNode(
            self.tools.kafka_home,
            self.state_dir / "kafka",
            KAFKA_PORT,
            KAFKA_CONTROLLER_PORT,
            state_dir=self.state_dir,
        )

    @property
    def opa(self) -> OpaServer:
        return OpaServer(
            self.tools.opa_bin,
            self.root / "policies",
            OPA_PORT,
            state_dir=self.state_dir,
            watch=True,
            bundle_service_url=f"http://127.0.0.1:{CONSENT_BUNDLE_PORT}",
        )

    def secret(self) -> str:
        """The development HS256 secret: made once, kept in var/dev/secret (never in the repo)."""
        path = self.state_dir / "secret"
        if not path.is_file():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def shared_env(self) -> dict[str, str]:
        """The TDG_ variables every service of the stack gets (and dev.env holds)."""
        env = {
            "TDG_KAFKA_BOOTSTRAP": f"127.0.0.1:{KAFKA_PORT}",
            "TDG_OPA_URL": f"http://127.0.0.1:{OPA_PORT}",
            "TDG_AUTH_HS256_SECRET": self.secret(),
        }
        for spec in SERVICES:
            env.update(spec.env)
        return env

    def write_dev_env(self, env: dict[str, str]) -> Path:
        path = self.state_dir / "dev.env"
        path.touch(mode=0o600)  # it holds the secret
        path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        return path

    def services(self, env: dict[str, str]) -> list[PythonService]:
        # The services inherit this shell's environment (PATH, …) with the stack's on top; they
        # run from the repository root, where the relative sqlite paths and dev.env resolve.
        full_env = {**os.environ, **env}
        return [
            PythonService(spec, state_dir=self.state_dir, env=full_env, cwd=self.root)
            for spec in SERVICES
        ]

    def components(self, env: dict[str, str] | None = None) -> list[Component]:
        """In start order; `down` stops them in reverse."""
        return [self.kafka, self.opa, *self.services(env or {})]


def _stack() -> DevStack:
    try:
        return DevStack.here()
    except DevStackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _ensure_tools(stack: DevStack, auto_provision: bool) -> None:
    tools = stack.tools
    missing = [
        name
        for name, ready in (("kafka", tools.kafka_ready), ("opa", tools.opa_ready))
        if not ready
    ]
    if not missing:
        return
    if not auto_provision:
        console.print(f"[red]error:[/red] not provisioned: {', '.join(missing)}: run `make setup`")
        raise typer.Exit(1)
    for name in missing:
        console.print(f"provisioning {name} into {tools.root} …")
        provision(name, stack.root)


def _ports(component: Component) -> list[int]:
    if isinstance(component, KafkaNode):
        return [component.port, component.controller_port]
    if isinstance(component, OpaServer):
        return [component.port]
    if isinstance(component, PythonService):
        return list(component.spec.ports)
    return []


@dev_app.command()
def up(
    timeout: float = typer.Option(90.0, help="seconds to wait for each component to be ready"),
    provision_missing: bool = typer.Option(
        True, "--provision/--no-provision", help="provision missing tools (else: fail)"
    ),
) -> None:
    """Start Kafka, OPA and the services in the background (what already runs is left alone)."""
    stack = _stack()
    try:
        _ensure_tools(stack, provision_missing)
        env = stack.shared_env()
        dev_env = stack.write_dev_env(env)
        for component in stack.components(env):
            _up_one(component, timeout)
    except DevStackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        console.print("what started is still running: `tdg dev status`, `tdg dev down`")
        raise typer.Exit(1) from exc
    console.print(f"settings for the CLI and hand-started services: {dev_env}")


def _up_one(component: Component, timeout: float) -> None:
    name = component.name
    if component.running:
        console.print(f"{name:<8} already running (pid {component.pid}) on {component.address}")
        return
    if isinstance(component, PythonService) and not component.spec.installed:
        console.print(
            f"{name:<8} [yellow]skipped[/yellow]: {component.spec.module} is not installed"
        )
        return
    busy = [port for port in _ports(component) if port_in_use(port)]
    if busy:
        raise DevStackError(
            f"{name}: port {', '.join(map(str, busy))} is taken by a process `tdg dev` did not"
            " start; stop it first"
        )
    started = time.monotonic()
    with console.status(f"{name}: starting …"):
        component.start()
        component.wait_ready(timeout)
    elapsed = time.monotonic() - started
    console.print(
        f"{name:<8} [green]ready[/green] on {component.address}"
        f" (pid {component.pid}, {elapsed:.1f}s; log {component.log_file})"
    )


@dev_app.command()
def down() -> None:
    """Stop what `up` started (from any shell)."""
    stack = _stack()
    for component in reversed(stack.components()):
        if not component.running:
            console.print(f"{component.name:<8} not running")
            continue
        pid = component.pid
        component.stop()
        console.print(f"{component.name:<8} stopped (pid {pid})")


def _state(component: Component) -> str:
    if not component.running:
        return "[dim]stopped[/dim]"
    ports = _ports(component)
    if ports and not port_in_use(ports[0]):
        return "[yellow]starting[/yellow]"
    return "[green]running[/green]"


@dev_app.command()
def status() -> None:
    """One line per component: pid, address, state."""
    stack = _stack()
    table = Table("component", "pid", "address", "state", "log")
    for component in stack.components():
        pid = component.pid
        table.add_row(
            component.name,
            "" if pid is None else str(pid),
            component.address,
            _state(component),
            str(component.log_file.relative_to(stack.root)),
        )
    console.print(table)


@dev_app.command()
def logs(
    component: str | None = typer.Argument(None, help="kafka, opa or a service (default: all)"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new lines"),
    lines: int = typer.Option(40, "--lines", "-n", help="lines of history to print first"),
) -> None:
    """Print (or follow) the components' logs."""
    stack = _stack()
    everything = {c.name: c.log_file for c in stack.components()}
    if component is not None and component not in everything:
        console.print(f"[red]error:[/red] unknown component {component!r}: {', '.join(everything)}")
        raise typer.Exit(2)
    files = {component: everything[component]} if component else everything
    _print_logs(files, lines, prefix=len(files) > 1)
    if follow:
        try:
            _follow(files, prefix=len(files) > 1)
        except KeyboardInterrupt:
            pass


def _print_logs(files: dict[str, Path], lines: int, prefix: bool) -> None:
    for name, path in files.items():
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            typer.echo(f"{name:<8} | {line}" if prefix else line)


def _follow(files: dict[str, Path], prefix: bool) -> None:
    # Remember where each file ends; files that appear later are read from their start.
    offsets = {name: path.stat().st_size if path.is_file() else 0 for name, path in files.items()}
    while True:
        for name, path in files.items():
            if not path.is_file():
                continue
            size = path.stat().st_size
            if size < offsets[name]:
                offsets[name] = 0  # truncated or replaced
            if size == offsets[name]:
                continue
            with path.open("rb") as handle:
                handle.seek(offsets[name])
                chunk = handle.read()
            # Print whole lines only; a partial last line waits for its end.
            complete, newline, _ = chunk.rpartition(b"\n")
            if not newline:
                continue
            offsets[name] += len(complete) + 1
            for line in complete.decode(errors="replace").splitlines():
                typer.echo(f"{name:<8} | {line}" if prefix else line)
        time.sleep(0.3)
