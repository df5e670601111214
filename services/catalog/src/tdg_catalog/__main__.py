"""`python -m tdg_catalog` / `tdg-catalog`: settings → logging → serve."""

from __future__ import annotations

from tdg_core.service import run

from tdg_catalog.server import build_service
from tdg_catalog.settings import CatalogSettings


def main() -> None:
    run(build_service, CatalogSettings())


if __name__ == "__main__":
    main()
