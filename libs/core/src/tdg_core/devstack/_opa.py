"""An Open Policy Agent server (`opa run --server`) on loopback.

With a bundle service URL it also pulls the consent service's data bundle (`data.tdg.registry`)
through OPA's bundle service API, long polling, while the policies keep coming from the local
directory. The bundle's root (`tdg/registry`) never overlaps the policy packages: they coexist.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tdg_core.devstack._process import DevStackError, ManagedProcess, wait_until_ready

HOST = "127.0.0.1"

# The consent service's data bundle (policies/README.md): one name for the service and
# the bundle in every OPA configuration (local stack, test fixture, Kubernetes sidecars).
REGISTRY_SERVICE = "consent"
REGISTRY_BUNDLE = "registry"
REGISTRY_RESOURCE = "bundles/registry.tar.gz"
REGISTRY_ROOT = "tdg/registry"
# How long the bundle server may hold a request (OPA sends `Prefer: ...;wait=<this>`); a change is
# answered at once, so this only bounds how often an idle OPA asks again.
LONG_POLLING_TIMEOUT_S = 10
# The wait between two attempts while the service is unreachable (or answers without long polling):
# OPA picks a delay in [min, max], so an OPA started before the consent service finds it within ~2s.
MIN_DELAY_S = 1
MAX_DELAY_S = 2


def registry_bundle_config(
    service_url: str,
    *,
    long_polling_timeout_s: int = LONG_POLLING_TIMEOUT_S,
    min_delay_s: int = MIN_DELAY_S,
    max_delay_s: int = MAX_DELAY_S,
) -> dict[str, Any]:
    """OPA's configuration (`opa run -c`) that pulls the registry bundle from `service_url`.

    `service_url` is the consent service's bundle server, e.g. `http://127.0.0.1:8282` (local) or
    `http://consent:8282` (Kubernetes; deploy/k8s/base/opa-config.yaml is this, checked by
    tests/k8s). OPA starts and serves without it and keeps retrying.
    """
    if min_delay_s > max_delay_s:
        raise ValueError(f"min_delay_s {min_delay_s} > max_delay_s {max_delay_s}")
    return {
        "services": {REGISTRY_SERVICE: {"url": service_url.rstrip("/")}},
        "bundles": {
            REGISTRY_BUNDLE: {
                "service": REGISTRY_SERVICE,
                "resource": REGISTRY_RESOURCE,
                "polling": {
                    "min_delay_seconds": min_delay_s,
                    "max_delay_seconds": max_delay_s,
                    "long_polling_timeout_seconds": long_polling_timeout_s,
                },
            }
        },
    }


def _health(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
            return None if response.status == 200 else f"/health answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"/health answered {exc.code}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


class OpaServer:
    """OPA serving the policies (and data files) found under `policies_dir`.

    `bundle_service_url` (e.g. "http://127.0.0.1:8282"): also pull the registry bundle from the
    consent service there (`registry_bundle_config`, written to `<state_dir>/<name>.config.json`).
    Readiness (`/health`) does not wait for that bundle: OPA serves the policies at once and
    retries the bundle until the consent service answers, so it may start before it.

    With `watch=True`, beware: a reload after a change to a *data* file (JSON/YAML) under
    `policies_dir` rewrites OPA's data and drops the pulled bundle until its next change (Rego-only
    changes keep it). policies/ holds Rego only; keep it so.
    """

    def __init__(
        self,
        opa_bin: Path,
        policies_dir: Path | None,
        port: int,
        *,
        state_dir: Path,
        name: str = "opa",
        watch: bool = False,
        bundle_service_url: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.opa_bin = opa_bin
        self.policies_dir = policies_dir
        self.port = port
        self.state_dir = state_dir
        self.bundle_service_url = bundle_service_url
        argv = [
            str(opa_bin),
            "run",
            "--server",
            f"--addr={HOST}:{port}",
            "--log-level=info",
            # No version check over the network at start-up (and none is reachable here).
            "--skip-version-check",
            # The Rego unit tests are for `opa test`: compiled in, they would double the work of
            # every bundle activation.
            "--ignore=*_test.rego",
            *(["--watch"] if watch else []),
            *([f"--config-file={self.config_file}"] if bundle_service_url is not None else []),
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
    def argv(self) -> list[str]:
        """The command line it runs."""
        return list(self._process.argv)

    @property
    def config_file(self) -> Path:
        """Where the OPA configuration goes (only written with a `bundle_service_url`)."""
        return self.state_dir / f"{self.name}.config.json"

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
        if self.bundle_service_url is not None:
            # JSON is YAML: OPA reads it as is. Rewritten at every start (the URL may change).
            self.state_dir.mkdir(parents=True, exist_ok=True)
            config = registry_bundle_config(self.bundle_service_url)
            self.config_file.write_text(json.dumps(config, indent=2) + "\n")
        self._process.start()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until GET /health answers 200 (or raise DevStackError).

        The registry bundle is not awaited (see the class docstring).
        """
        url = self.url
        wait_until_ready(self._process, lambda: _health(url), timeout=timeout, what=f"OPA on {url}")

    def stop(self, timeout: float = 10.0) -> None:
        self._process.stop(timeout)
