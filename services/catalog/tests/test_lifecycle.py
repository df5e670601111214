"""A dataset's status: draft → published → deprecated."""

from __future__ import annotations

import pytest
from tdg_catalog.lifecycle import deprecate, ensure_evolvable, publish
from tdg_catalog.model import Status
from tdg_core.errors import FailedPrecondition


def test_publishing_a_draft_makes_it_published() -> None:
    assert publish(Status.DRAFT) == Status.PUBLISHED


def test_publishing_twice_says_already_published() -> None:
    with pytest.raises(FailedPrecondition, match="already published"):
        publish(Status.PUBLISHED)


def test_a_deprecated_dataset_cannot_be_published_again() -> None:
    with pytest.raises(FailedPrecondition, match="deprecated"):
        publish(Status.DEPRECATED)


@pytest.mark.parametrize("status", [Status.DRAFT, Status.PUBLISHED])
def test_drafts_and_published_datasets_can_be_deprecated(status: Status) -> None:
    assert deprecate(status) == Status.DEPRECATED


def test_deprecating_twice_says_already_deprecated() -> None:
    with pytest.raises(FailedPrecondition, match="already deprecated"):
        deprecate(Status.DEPRECATED)


@pytest.mark.parametrize("status", [Status.DRAFT, Status.PUBLISHED])
def test_live_datasets_may_evolve_their_schema(status: Status) -> None:
    ensure_evolvable(status)


def test_a_deprecated_dataset_cannot_evolve_its_schema() -> None:
    with pytest.raises(FailedPrecondition, match="deprecated"):
        ensure_evolvable(Status.DEPRECATED)
