"""A background loop's failed round, as the platform team reads it in the logs: ingest's loops
count the lake's dependencies (`tdg_lake.failures`) as such."""

from __future__ import annotations

import structlog
from pyiceberg.exceptions import CommitFailedException
from structlog.testing import capture_logs
from tdg_core.background import log_failure
from tdg_core.errors import Unavailable
from tdg_lake.failures import LAKE_FAILURES

log = structlog.get_logger("test")


def test_a_dependency_down_is_one_line_without_a_traceback() -> None:
    with capture_logs() as logs:
        log_failure(
            log,
            "roll-up failed",
            Unavailable("Kafka unreachable"),
            dependencies=LAKE_FAILURES,
            dataset="a.b",
        )
    assert logs == [
        {
            "event": "roll-up failed",
            "error": "Kafka unreachable",
            "dataset": "a.b",
            "log_level": "warning",
        }
    ]


def test_a_lost_commit_race_is_a_dependency_failure_too() -> None:
    with capture_logs() as logs:
        log_failure(
            log, "maintenance failed", CommitFailedException("lost"), dependencies=LAKE_FAILURES
        )
    assert logs == [{"event": "maintenance failed", "error": "lost", "log_level": "warning"}]


def test_a_bug_is_logged_with_its_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        with capture_logs() as logs:
            log_failure(log, "roll-up failed", exc, dependencies=LAKE_FAILURES)
    (entry,) = logs
    assert entry["log_level"] == "error"
    assert isinstance(entry["exc_info"], KeyError)
    assert entry["exc_info"].__traceback__ is not None
