"""What a dependency of the lake being away looks like, for the loops that retry (`log_failure`):
besides Kafka and the network, the Iceberg catalog losing a commit race too often, or a table not
created yet. Anything else is a bug, logged with its traceback."""

from __future__ import annotations

from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from tdg_core.background import DEPENDENCY_FAILURES

LAKE_FAILURES: tuple[type[BaseException], ...] = (
    *DEPENDENCY_FAILURES,
    CommitFailedException,
    NoSuchTableError,
)
