"""A background process with a pid file and a log file under a state directory.

The pid file is what lets `tdg dev up` run twice without starting a second broker, and lets
`tdg dev down` stop from another shell what `up` started. It records the process start time too,
so a pid reused by an unrelated process after a reboot is not mistaken for ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class DevStackError(RuntimeError):
    """A component could not be provisioned, started, or did not become ready."""


class Component(Protocol):
    """What `tdg dev` and the test fixtures need from every managed component."""

    name: str

    @property
    def address(self) -> str: ...
    @property
    def running(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def log_file(self) -> Path: ...
    def start(self) -> None: ...
    def wait_ready(self, timeout: float) -> None: ...
    def stop(self, timeout: float = ...) -> None: ...


def _start_time(pid: int) -> str | None:
    """The start time of `pid` (clock ticks since boot); None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start = fields[0], fields[19]
    return None if state in {"Z", "X"} else start


@dataclass
class ManagedProcess:
    """One background process: `<state_dir>/<name>.pid` and `<state_dir>/<name>.log`."""

    name: str
    argv: Sequence[str]
    state_dir: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    # Run as this user (e.g. "postgres", which refuses to run as root).
    user: str | None = None
    # PostgreSQL's "smart" shutdown on SIGTERM waits for clients to leave; it wants SIGINT.
    stop_signal: signal.Signals = signal.SIGTERM
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The pid of the live process this pid file names, or None."""
        if self._popen is not None:
            # Reap our own child, so it does not linger as a zombie that looks alive.
            self._popen.poll()
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def returncode(self) -> int | None:
        """The exit code, when this object started the process and it has exited."""
        return None if self._popen is None else self._popen.poll()

    def start(self) -> int:
        """Start the process unless it already runs; return its pid."""
        existing = self.pid
        if existing is not None:
            return existing
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                user=self.user,
                group=self.user,
                # Dropping to another user drops root's supplementary groups too.
                extra_groups=None if self.user is None else [],
                # A session of its own: Ctrl-C in the shell that ran `tdg dev up` does not reach
                # it, and stop() can signal the whole group (a service's own children too).
                start_new_session=True,
            )
        pid = self._popen.pid
        started = _start_time(pid)
        if started is None:
            raise DevStackError(f"{self.name} exited immediately; see {self.log_file}")
        self.pid_file.write_text(f"{pid} {started}\n")
        return pid

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the process to stop, wait up to `timeout` seconds, then kill it."""
        pid = self.pid
        if pid is not None:
            self._signal_group(pid, self.stop_signal)
            if not self._wait_gone(timeout):
                self._signal_group(pid, signal.SIGKILL)
                self._wait_gone(5.0)
        self.pid_file.unlink(missing_ok=True)

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def wait_until_ready(
    process: ManagedProcess,
    probe: Callable[[], str | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> None:
    """Poll `probe` (None when ready, else why not) until ready, the process dies or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        if not process.running:
            code = process.returncode
            raise DevStackError(
                f"{what} exited{'' if code is None else f' with code {code}'} before it was ready;"
                f" last lines of {process.log_file}:\n{process.tail()}"
            )
        reason = probe()
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise DevStackError(
                f"{what} was not ready within {timeout:.0f}s ({reason}); see {process.log_file}"
            )
        time.sleep(interval)
