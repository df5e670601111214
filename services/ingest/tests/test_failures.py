"""A background loop's failed round, as the platform team reads it in the logs."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs
from tdg_core.errors import Unavailable
from tdg_ingest.failures import log_failed_round

log = structlog.get_logger("test")


def test_a_dependency_down_is_one_line_without_a_traceback() -> None:
    with capture_logs() as logs:
        log_failed_round(log, "roll-up failed", Unavailable("Kafka unreachable"), dataset="a.b")
    assert logs == [
        {
            "event": "roll-up failed",
            "error": "Kafka unreachable",
            "dataset": "a.b",
            "log_level": "warning",
        }
    ]


def test_a_bug_is_logged_with_its_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        with capture_logs() as logs:
            log_failed_round(log, "roll-up failed", exc)
    (entry,) = logs
    assert entry["log_level"] == "error"
    assert isinstance(entry["exc_info"], KeyError)
    assert entry["exc_info"].__traceback__ is not None
