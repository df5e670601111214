"""How ingest's background loops report a round that failed before they try again: a dependency
that is down (Kafka, OPA, the Iceberg catalog, a commit that lost the race too often, a table not
created yet) in one line, anything else, a bug most likely, with its traceback. Either way the loop
goes on."""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaError
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from structlog.typing import FilteringBoundLogger
from tdg_core.errors import Unavailable

DEPENDENCY_FAILURES: tuple[type[BaseException], ...] = (
    Unavailable,
    KafkaError,
    ConnectionError,
    TimeoutError,
    CommitFailedException,
    NoSuchTableError,
)


def log_failed_round(
    log: FilteringBoundLogger,
    event: str,
    exc: BaseException,
    **context: Any,
) -> None:
    if isinstance(exc, DEPENDENCY_FAILURES):
        log.warning(event, error=str(exc), **context)
    else:
        log.error(event, exc_info=exc, **context)
