"""parse_decision: OPA's `tdg.read` result read strictly (policies/README.md, "tdg.read").

Whatever the engine does not understand fails closed with UNAVAILABLE; a treatment's description
(in answers and in the audit trail) never carries the agreement's salt.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tdg_core.errors import Unavailable
from tdg_query.decision import RowFilter, Treatment, parse_decision

SALT = "5f1c9a7e-secret-salt"

# The README's example of an allowed read, extended to every treatment.
ALLOW: dict[str, Any] = {
    "allow": True,
    "reasons": [],
    "agreement_id": "agr-7f3a",
    "purpose": "mobility-planning",
    "columns": {
        "counter_id": {"treatment": "hash", "salt": SALT},
        "ts": {"treatment": "generalise", "generalise": {"truncate_to": "day"}},
        "count": {"treatment": "clear"},
        "speed": {"treatment": "generalise", "generalise": {"round_to": 0.5}},
        "commune": {"treatment": "generalise", "generalise": {"commune_to_epci": True}},
        "comment": {"treatment": "null"},
        "secret_col": {"treatment": "deny"},
    },
    "row_filters": [{"column": "commune", "op": "in", "values": ["69123", "69266"]}],
    "consent": {"required": False, "purpose": "", "subject_column": ""},
    "aggregate_only": False,
    "min_group_size": 0,
}

# The README's deny: nothing granted.
DENY: dict[str, Any] = {
    "allow": False,
    "reasons": ["no read agreement for dataset 'lyon.trips' held by 'velo-app' or 'velo'"],
    "agreement_id": "",
    "purpose": "mobility-planning",
    "columns": {"counter_id": {"treatment": "deny"}},
    "row_filters": [],
    "consent": {"required": False, "purpose": "", "subject_column": ""},
    "aggregate_only": False,
    "min_group_size": 0,
}


def allow(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(ALLOW)
    result.update(changes)
    return result


def with_column(name: str, value: Any) -> dict[str, Any]:
    result = allow()
    result["columns"][name] = value
    return result


def test_an_allowed_read_is_typed() -> None:
    decision = parse_decision(ALLOW, "dec-1")
    assert decision.allow
    assert decision.reasons == ()
    assert decision.agreement_id == "agr-7f3a"
    assert decision.decision_id == "dec-1"
    assert decision.treatment("counter_id") == Treatment("hash", salt=SALT)
    assert decision.treatment("ts") == Treatment("generalise", truncate_to="day")
    assert decision.treatment("count") == Treatment("clear")
    assert decision.treatment("speed") == Treatment("generalise", round_to=0.5)
    assert decision.treatment("commune") == Treatment("generalise", commune_to_epci=True)
    assert decision.treatment("comment") == Treatment("null")
    assert decision.treatment("secret_col") == Treatment("deny")
    assert decision.row_filters == (RowFilter("commune", ("69123", "69266")),)
    assert not decision.consent_required
    assert not decision.aggregate_only
    assert decision.min_group_size == 0


def test_a_column_the_decision_does_not_name_is_denied() -> None:
    assert parse_decision(ALLOW).treatment("not_in_the_decision").kind == "deny"


def test_a_denied_read_grants_nothing() -> None:
    decision = parse_decision(DENY, "dec-2")
    assert not decision.allow
    assert decision.reasons == tuple(DENY["reasons"])
    assert decision.columns == {}
    assert decision.treatment("counter_id").kind == "deny"
    assert decision.row_filters == ()
    assert decision.decision_id == "dec-2"


def test_a_deny_without_reasons_still_says_why() -> None:
    assert parse_decision({"allow": False}).reasons == ("read refused",)


def test_consent_and_aggregate_only() -> None:
    decision = parse_decision(
        allow(
            consent={"required": True, "purpose": "research", "subject_column": "subject"},
            aggregate_only=True,
            min_group_size=10,
        )
    )
    assert decision.consent_required
    assert decision.consent_purpose == "research"
    assert decision.subject_column == "subject"
    assert decision.aggregate_only
    assert decision.min_group_size == 10


def test_row_filter_values_are_text() -> None:
    decision = parse_decision(
        allow(row_filters=[{"column": "code", "op": "in", "values": [69123, "2A004"]}])
    )
    assert decision.row_filters == (RowFilter("code", ("69123", "2A004")),)
    assert decision.row_filters_json() == (
        '[{"column": "code", "op": "in", "values": ["69123", "2A004"]}]'
    )


@pytest.mark.parametrize(
    "result",
    [
        {},
        {"allow": "true"},
        {"allow": 1},
        {"allow": None},
        allow(reasons="none"),
        allow(columns=None),
        allow(columns=["count"]),
        with_column("counter_id", {"treatment": "hash"}),
        with_column("counter_id", {"treatment": "hash", "salt": ""}),
        with_column("counter_id", {"treatment": "hash", "salt": 42}),
        with_column("x", {"treatment": "encrypt"}),
        with_column("x", {"treatment": "CLEAR"}),
        with_column("x", {}),
        with_column("x", "clear"),
        with_column("x", None),
        with_column("x", {"treatment": "generalise"}),
        with_column("x", {"treatment": "generalise", "generalise": "day"}),
        with_column("x", {"treatment": "generalise", "generalise": {}}),
        with_column("x", {"treatment": "generalise", "generalise": {"truncate_to": "minute"}}),
        with_column("x", {"treatment": "generalise", "generalise": {"truncate_to": "Day"}}),
        with_column("x", {"treatment": "generalise", "generalise": {"round_to": 0}}),
        with_column("x", {"treatment": "generalise", "generalise": {"round_to": -10}}),
        with_column("x", {"treatment": "generalise", "generalise": {"round_to": True}}),
        with_column("x", {"treatment": "generalise", "generalise": {"round_to": "100"}}),
        with_column("x", {"treatment": "generalise", "generalise": {"commune_to_epci": "yes"}}),
        with_column("x", {"treatment": "generalise", "generalise": {"to_region": True}}),
        allow(row_filters=[{"column": "commune", "op": "=", "values": ["69123"]}]),
        allow(row_filters=[{"column": "commune", "op": "not_in", "values": ["69123"]}]),
        allow(row_filters=[{"column": "commune", "values": ["69123"]}]),
        allow(row_filters=[{"op": "in", "values": ["69123"]}]),
        allow(row_filters=[{"column": "commune", "op": "in", "values": "69123"}]),
        allow(row_filters=[{"column": "commune", "op": "in"}]),
        allow(row_filters=["commune in 69123"]),
        allow(row_filters={"column": "commune", "op": "in", "values": ["69123"]}),
        allow(consent="required"),
        allow(consent={"required": True, "purpose": "research", "subject_column": ""}),
        allow(min_group_size=-1),
        allow(min_group_size=2.5),
        allow(min_group_size="10"),
        allow(aggregate_only=True, min_group_size=0),
        allow(aggregate_only=True, min_group_size=None),
    ],
)
def test_a_malformed_decision_fails_closed(result: dict[str, Any]) -> None:
    with pytest.raises(Unavailable, match="read decision is malformed"):
        parse_decision(result)


@pytest.mark.parametrize(
    "result",
    [
        allow(aggregate_only="true", min_group_size=10),
        allow(aggregate_only=1, min_group_size=10),
        allow(consent={"required": "true", "purpose": "research", "subject_column": "subject"}),
        allow(consent={"required": 1, "purpose": "research", "subject_column": "subject"}),
    ],
)
def test_a_non_boolean_restriction_fails_closed(result: dict[str, Any]) -> None:
    with pytest.raises(Unavailable):
        parse_decision(result)


@pytest.mark.parametrize("row_filters", [False, 0, "", {}])
def test_row_filters_of_the_wrong_type_fail_closed(row_filters: Any) -> None:
    with pytest.raises(Unavailable):
        parse_decision(allow(row_filters=row_filters))


def test_no_row_filters() -> None:
    assert parse_decision(allow(row_filters=[])).row_filters == ()


@pytest.mark.parametrize(
    ("treatment", "description"),
    [
        (Treatment("clear"), "clear"),
        (Treatment("null"), "null"),
        (Treatment("deny"), "deny"),
        (Treatment("hash", salt=SALT), "hash"),
        (Treatment("generalise", truncate_to="month"), "generalise(truncate_to=month)"),
        (Treatment("generalise", round_to=100.0), "generalise(round_to=100)"),
        (Treatment("generalise", round_to=0.5), "generalise(round_to=0.5)"),
        (Treatment("generalise", commune_to_epci=True), "generalise(commune_to_epci)"),
    ],
)
def test_describe(treatment: Treatment, description: str) -> None:
    assert treatment.describe() == description


def test_the_salt_is_never_shown() -> None:
    decision = parse_decision(ALLOW)
    hashed = decision.treatment("counter_id")
    assert hashed.salt == SALT
    for text in (
        hashed.describe(),
        repr(hashed),
        str(hashed),
        repr(decision),
        decision.row_filters_json(),
        *(t.describe() for t in decision.columns.values()),
    ):
        assert SALT not in text
