"""An Open Policy Agent server (`opa run --server`) on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tdg_core.devstack._process import DevStackError, ManagedProcess, wait_until_ready

HOST = "127.0.0.1"


def _health(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
            return None if response.status == 200 else f"/health answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"/health answered {exc.code}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


class OpaServer:
    """OPA serving the policies (and data files) found under `policies_dir`."""

    def __init__(
        self,
        opa_bin: Path,
        policies_dir: Path | None,
        port: int,
        *,
        state_dir: Path,
        name: str = "opa",
        watch: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.opa_bin = opa_bin
        self.policies_dir = policies_dir
        self.port = port
        argv = [
            str(opa_bin),
            "run",
            "--server",
            f"--addr={HOST}:{port}",
            "--log-level=info",
            # No version check over the network at start-up (and none is reachable here).
            "--disable-telemetry",
            *(["--watch"] if watch else []),
            *extra_args,
            *([str(policies_dir)] if policies_dir is not None else []),
        ]
        self._process = ManagedProcess(name=name, argv=argv, state_dir=state_dir)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return self.url

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
        if not self.opa_bin.is_file():
            raise DevStackError(f"OPA not found at {self.opa_bin}: run `make setup`")
        if self.policies_dir is not None and not self.policies_dir.is_dir():
            raise DevStackError(f"policies directory {self.policies_dir} does not exist")
        self._process.start()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until GET /health answers 200 (or raise DevStackError)."""
        url = self.url
        wait_until_ready(self._process, lambda: _health(url), timeout=timeout, what=f"OPA on {url}")

    def stop(self, timeout: float = 10.0) -> None:
        self._process.stop(timeout)
