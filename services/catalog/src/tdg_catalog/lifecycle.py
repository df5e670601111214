"""A dataset's status: draft → published → deprecated, and a draft may be withdrawn directly.

Deprecated is final: consumers have been told to move away, so the dataset neither comes back
nor changes its schema (every existing version stays readable).
"""

from __future__ import annotations

from tdg_core.errors import FailedPrecondition

from tdg_catalog.model import Status


def publish(status: Status) -> Status:
    """The status after publishing a dataset in `status`."""
    if status == Status.DRAFT:
        return Status.PUBLISHED
    if status == Status.PUBLISHED:
        raise FailedPrecondition("dataset is already published")
    raise FailedPrecondition("a deprecated dataset cannot be published again")


def deprecate(status: Status) -> Status:
    """The status after deprecating a dataset in `status` (a draft may be withdrawn too)."""
    if status in (Status.DRAFT, Status.PUBLISHED):
        return Status.DEPRECATED
    raise FailedPrecondition("dataset is already deprecated")


def ensure_evolvable(status: Status) -> None:
    """Raises unless a new schema version may be added to a dataset in `status`."""
    if status == Status.DEPRECATED:
        raise FailedPrecondition("the schema of a deprecated dataset cannot evolve")
