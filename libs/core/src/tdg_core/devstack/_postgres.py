"""A PostgreSQL server from the system's binaries, in a data directory of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tdg_core.devstack._process import DevStackError, ManagedProcess, wait_until_ready
from tdg_core.devstack._tools import Tools

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = "tdg"


def _as_user() -> str | None:
    """initdb and postgres refuse to run as root: run them as the `postgres` system user then."""
    return SUPERUSER if os.geteuid() == 0 else None


class PostgresServer:
    """PostgreSQL on loopback with trust authentication and a `tdg` database.

    `durable=False` turns off fsync and friends: right for throw-away test clusters, wrong for
    data you want to keep across a power cut.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        name: str = "postgres",
        durable: bool = True,
    ) -> None:
        found = bin_dir or Tools.postgres_bindir()
        if found is None:
            raise DevStackError(
                "PostgreSQL server binaries (initdb, postgres) not found: run `make setup`"
                " (scripts/provision_postgres.sh)"
            )
        self.name = name
        self.bin_dir = found
        self.data_dir = data_dir
        self.port = port
        self.user = _as_user()
        fast = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        settings = [] if durable else fast
        argv = [
            str(found / "postgres"),
            "-D",
            str(data_dir),
            "-p",
            str(port),
            "-h",
            HOST,
            # TCP only: a Unix socket path has a 107-byte limit that deep data dirs exceed.
            "-c",
            "unix_socket_directories=",
            *(arg for setting in settings for arg in ("-c", setting)),
        ]
        self._process = ManagedProcess(
            name=name,
            argv=argv,
            state_dir=state_dir or data_dir.parent,
            cwd=data_dir.parent,
            user=self.user,
            # SIGTERM is a "smart" shutdown that waits for every client to disconnect.
            stop_signal=signal.SIGINT,
        )

    @property
    def url(self) -> str:
        """The SQLAlchemy async URL of the `tdg` database."""
        return f"postgresql+asyncpg://{SUPERUSER}@{HOST}:{self.port}/{DATABASE}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

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
        if self.running:
            return
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        self._process.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server accepts connections, then create the `tdg` database once."""
        wait_until_ready(
            self._process, self._isready, timeout=timeout, what=f"PostgreSQL on {self.address}"
        )
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.strip() != "1":
            self._psql(f"CREATE DATABASE {DATABASE}")

    def stop(self, timeout: float = 15.0) -> None:
        self._process.stop(timeout)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            # The server's user must own its data directory (and initdb checks it can write it).
            shutil.chown(self.data_dir, self.user, self.user)
        result = self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                # The C locale exists everywhere; a missing system locale would fail initdb.
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        if result.returncode != 0:
            raise DevStackError(
                f"initdb {self.data_dir} failed (as user {self.user or 'current'}): {result.stdout}"
            )

    def _isready(self) -> str | None:
        result = self._run(
            [str(self.bin_dir / "pg_isready"), "-h", HOST, "-p", str(self.port), "-t", "1"]
        )
        return None if result.returncode == 0 else result.stdout.strip() or "not ready"

    def _psql(self, sql: str) -> str:
        result = self._run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                HOST,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-tAc",
                sql,
            ]
        )
        if result.returncode != 0:
            raise DevStackError(f"psql {sql!r} on {self.address} failed: {result.stdout}")
        return result.stdout

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            user=self.user,
            group=self.user,
            extra_groups=None if self.user is None else [],
            cwd=self.data_dir.parent,
            check=False,
        )
