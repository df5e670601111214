"""Where the provisioned tools live (`.tools/`, or TDG_TOOLS_DIR) and how to provision them."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tdg_core.devstack._process import DevStackError

KAFKA_VERSION = "4.1.1"
OPA_VERSION = "1.22.3"


def find_repo_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above `start` (default: this file) that is the tdg workspace.

    Recognised by its `policies/` and `scripts/` directories beside a `pyproject.toml`.
    """
    here = (start or Path(__file__)).resolve()
    for candidate in (here, *here.parents):
        if (
            (candidate / "pyproject.toml").is_file()
            and (candidate / "policies").is_dir()
            and (candidate / "scripts").is_dir()
        ):
            return candidate
    return None


def _postgres_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        # /usr/local/bin/initdb may be a symlink; the real directory also holds pg_isready, psql.
        return Path(initdb).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    usable = (d for d in debian if (d / "initdb").is_file() and (d / "postgres").is_file())
    return next(usable, None)


@dataclass(frozen=True)
class Tools:
    """The provisioned tool locations under one tools directory."""

    root: Path

    @classmethod
    def locate(cls, repo_root: Path | None = None) -> Tools:
        """`TDG_TOOLS_DIR`, else `<repo root>/.tools`."""
        override = os.environ.get("TDG_TOOLS_DIR")
        if override:
            return cls(Path(override).resolve())
        root = repo_root or find_repo_root()
        if root is None:
            raise DevStackError("cannot find the tdg repository root; set TDG_TOOLS_DIR")
        return cls(root / ".tools")

    @property
    def kafka_home(self) -> Path:
        return self.root / f"kafka-{KAFKA_VERSION}"

    @property
    def opa_bin(self) -> Path:
        return self.root / "bin" / "opa"

    @property
    def kafka_ready(self) -> bool:
        # The provisioning script writes the stamp last, after its smoke test passed.
        return (self.kafka_home / ".provisioned").is_file()

    @property
    def opa_ready(self) -> bool:
        return os.access(self.opa_bin, os.X_OK)

    @staticmethod
    def postgres_bindir() -> Path | None:
        """The directory of the PostgreSQL server binaries (PATH, then the Debian layout)."""
        return _postgres_bindir()


def provision(component: str, repo_root: Path) -> None:
    """Run `scripts/provision_<component>.sh` (idempotent; output goes to the terminal)."""
    script = repo_root / "scripts" / f"provision_{component}.sh"
    if not script.is_file():
        raise DevStackError(f"{script} not found: run `make setup` from the repository")
    result = subprocess.run(["bash", str(script)], check=False)
    if result.returncode != 0:
        raise DevStackError(f"{script.name} failed (exit {result.returncode}), see above")
