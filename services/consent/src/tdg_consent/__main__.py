"""`python -m tdg_consent` / `tdg-consent`: settings → logging → serve."""

from __future__ import annotations

from tdg_core.service import run

from tdg_consent.server import build_service
from tdg_consent.settings import ConsentSettings


def main() -> None:
    run(build_service, ConsentSettings())


if __name__ == "__main__":
    main()
