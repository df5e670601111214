"""The subjects a consent-based read may return, and the streams a revocation must stop.

`apply_changes` turns a subject set and the consent service's changes into the next set (a
withdrawal must take the subject out at once); `Revocations` tells a running stream that its
agreement or its party no longer allows it to go on.
"""

from __future__ import annotations

from collections import Counter
from typing import TypeAlias

import pyarrow as pa
import pytest
from tdg.consent.v1 import consent_pb2 as cpb
from tdg_query.consent_sets import SUBJECTS, apply_changes
from tdg_query.revocations import Revocations

State: TypeAlias = cpb.AgreementState.ValueType
Status: TypeAlias = cpb.PartyStatus.ValueType
CHANGES = pa.schema([("subject_id", pa.string()), ("active", pa.bool_())])


def subjects(*ids: str) -> pa.Table:
    return pa.table({"subject_id": list(ids)}, schema=SUBJECTS)


def changes(*rows: tuple[str, bool]) -> pa.Table:
    return pa.table(
        {"subject_id": [r[0] for r in rows], "active": [r[1] for r in rows]}, schema=CHANGES
    )


def ids(table: pa.Table) -> list[str]:
    values: list[str] = table.column("subject_id").to_pylist()
    return values


def test_a_withdrawal_removes_the_subject() -> None:
    after = apply_changes(subjects("s1", "s2", "s3"), changes(("s2", False)))
    assert sorted(ids(after)) == ["s1", "s3"]


def test_a_consent_adds_the_subject() -> None:
    after = apply_changes(subjects("s1"), changes(("s9", True)))
    assert sorted(ids(after)) == ["s1", "s9"]


def test_the_last_change_of_a_subject_wins() -> None:
    after = apply_changes(
        subjects("s1", "s2"),
        changes(
            ("s1", False),
            ("s3", True),
            ("s1", True),  # s1 gave consent again: in
            ("s2", True),
            ("s3", False),  # s3 withdrew after giving: out
            ("s2", False),  # s2 already in, then withdrew: out
        ),
    )
    assert sorted(ids(after)) == ["s1"]


def test_withdrawing_an_unknown_subject_is_harmless() -> None:
    after = apply_changes(subjects("s1", "s2"), changes(("nobody", False)))
    assert sorted(ids(after)) == ["s1", "s2"]


def test_no_duplicates() -> None:
    after = apply_changes(
        subjects("s1", "s2"), changes(("s1", True), ("s1", True), ("s4", True), ("s4", True))
    )
    counts = Counter(ids(after))
    assert counts == {"s1": 1, "s2": 1, "s4": 1}


def test_the_result_keeps_the_set_schema() -> None:
    after = apply_changes(subjects("s1"), changes(("s2", True), ("s1", False)))
    assert after.schema == SUBJECTS
    assert ids(after) == ["s2"]
    # It can be applied to again (the next refresh), and from an empty set.
    again = apply_changes(after, changes(("s1", True)))
    assert sorted(ids(again)) == ["s1", "s2"]
    assert sorted(ids(apply_changes(SUBJECTS.empty_table(), changes(("a", True))))) == ["a"]


def test_no_changes_change_nothing() -> None:
    after = apply_changes(subjects("s1", "s2"), CHANGES.empty_table())
    assert sorted(ids(after)) == ["s1", "s2"]


def test_changes_with_more_columns() -> None:
    # The consent service may send more than (subject_id, active), e.g. the revision.
    table = pa.table(
        {
            "subject_id": ["s1", "s2", "s1"],
            "active": [True, True, False],
            "revision": pa.array([5, 6, 7], pa.int64()),
        }
    )
    assert ids(apply_changes(subjects(), table)) == ["s2"]


def test_many_changes() -> None:
    start = subjects(*(f"s{i}" for i in range(0, 1000, 2)))  # the even ones
    rows = [(f"s{i}", i % 3 == 0) for i in range(1000)]  # then: multiples of 3 only
    after = apply_changes(start, changes(*rows))
    assert sorted(ids(after)) == sorted(f"s{i}" for i in range(0, 1000, 3))


# --- revocations -------------------------------------------------------------------------------


def agreement(agreement_id: str, state: State) -> cpb.Agreement:
    return cpb.Agreement(id=agreement_id, state=state)


def party(party_id: str, status: Status) -> cpb.Party:
    return cpb.Party(id=party_id, status=status)


@pytest.mark.parametrize(
    ("state", "word"),
    [
        (cpb.AGREEMENT_STATE_REVOKED, "revoked"),
        (cpb.AGREEMENT_STATE_SUSPENDED, "suspended"),
        (cpb.AGREEMENT_STATE_EXPIRED, "expired"),
    ],
)
def test_an_ended_agreement_stops_its_streams(state: State, word: str) -> None:
    revocations = Revocations()
    watch = revocations.watch("agr-1", "velo-app", "velo")
    assert watch.problem() is None
    revocations.agreement_changed(agreement("agr-1", state))
    assert watch.problem() == f"agreement 'agr-1' was {word} while the query ran"
    # Another agreement's streams go on.
    assert revocations.watch("agr-2", "velo-app", "velo").problem() is None


def test_a_resumed_agreement_lets_new_streams_run() -> None:
    revocations = Revocations()
    revocations.agreement_changed(agreement("agr-1", cpb.AGREEMENT_STATE_SUSPENDED))
    watch = revocations.watch("agr-1", "velo-app", "velo")
    assert watch.problem() is not None
    revocations.agreement_changed(agreement("agr-1", cpb.AGREEMENT_STATE_ACTIVE))
    assert watch.problem() is None


@pytest.mark.parametrize("state", [cpb.AGREEMENT_STATE_REQUESTED, cpb.AGREEMENT_STATE_REFUSED])
def test_other_agreement_states_do_not_stop_streams(state: State) -> None:
    revocations = Revocations()
    revocations.agreement_changed(agreement("agr-1", state))
    assert revocations.watch("agr-1", "velo-app", "velo").problem() is None


def test_a_read_without_agreement_is_not_stopped_by_an_agreement() -> None:
    # The publisher reading its own dataset, or an open dataset: agreement_id "".
    revocations = Revocations()
    revocations.agreement_changed(agreement("", cpb.AGREEMENT_STATE_REVOKED))
    assert revocations.watch("", "lyon-app", "lyon").problem() is None


@pytest.mark.parametrize("suspended", ["velo-app", "velo"])
def test_a_suspended_party_or_organisation_stops_its_streams(suspended: str) -> None:
    revocations = Revocations()
    watch = revocations.watch("agr-1", "velo-app", "velo")
    revocations.party_changed(party(suspended, cpb.PARTY_STATUS_SUSPENDED))
    assert watch.problem() == f"party '{suspended}' was suspended while the query ran"
    assert revocations.watch("agr-9", "other-app", "other").problem() is None
    revocations.party_changed(party(suspended, cpb.PARTY_STATUS_ACTIVE))
    assert watch.problem() is None


def test_a_party_without_organisation() -> None:
    revocations = Revocations()
    watch = revocations.watch("agr-1", "citizen-1", "")
    assert watch.parties == ("citizen-1",)
    revocations.party_changed(party("", cpb.PARTY_STATUS_SUSPENDED))
    assert watch.problem() is None
    revocations.party_changed(party("citizen-1", cpb.PARTY_STATUS_SUSPENDED))
    assert watch.problem() == "party 'citizen-1' was suspended while the query ran"


def test_the_agreement_is_reported_before_the_party() -> None:
    revocations = Revocations()
    watch = revocations.watch("agr-1", "velo-app", "velo")
    revocations.party_changed(party("velo", cpb.PARTY_STATUS_SUSPENDED))
    revocations.agreement_changed(agreement("agr-1", cpb.AGREEMENT_STATE_REVOKED))
    assert watch.problem() == "agreement 'agr-1' was revoked while the query ran"
