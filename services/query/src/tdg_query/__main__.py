"""`python -m tdg_query` / `tdg-query`: settings → logging → serve (gRPC and Arrow Flight)."""

from __future__ import annotations

from tdg_core.service import run

from tdg_query.server import build_service
from tdg_query.settings import QuerySettings


def main() -> None:
    run(build_service, QuerySettings())


if __name__ == "__main__":
    main()
