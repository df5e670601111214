"""`python -m tdg_ingest` / `tdg-ingest`: settings → logging → serve."""

from __future__ import annotations

from tdg_core.service import run

from tdg_ingest.server import build_service
from tdg_ingest.settings import IngestSettings


def main() -> None:
    run(build_service, IngestSettings())


if __name__ == "__main__":
    main()
