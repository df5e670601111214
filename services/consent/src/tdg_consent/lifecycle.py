"""The agreement's state machine: which step may follow which.

requested ─approve─► active ◄─resume── suspended
    │                  │  └──suspend──►   │
    └─refuse─► refused │                  │
                       ├─revoke─► revoked ◄┘
                       └─(valid_until passed)─► expired
"""

from __future__ import annotations

from tdg_core.errors import FailedPrecondition

from tdg_consent.model import AgreementState as S

_STEPS: dict[str, tuple[frozenset[S], S]] = {
    "approve": (frozenset({S.REQUESTED}), S.ACTIVE),
    "refuse": (frozenset({S.REQUESTED}), S.REFUSED),
    "suspend": (frozenset({S.ACTIVE}), S.SUSPENDED),
    "resume": (frozenset({S.SUSPENDED}), S.ACTIVE),
    "revoke": (frozenset({S.ACTIVE, S.SUSPENDED}), S.REVOKED),
    "expire": (frozenset({S.ACTIVE, S.SUSPENDED}), S.EXPIRED),
}

STEPS = tuple(_STEPS)


def next_state(step: str, current: S, agreement_id: str) -> S:
    """The state after `step`, or FailedPrecondition saying why the step is not possible now."""
    allowed_from, target = _STEPS[step]
    if current not in allowed_from:
        expected = " or ".join(sorted(s.value for s in allowed_from))
        raise FailedPrecondition(
            f"cannot {step} agreement '{agreement_id}': it is {current.value}, "
            f"and only an agreement that is {expected} can be"
        )
    return target


# In the OPA bundle: what OPA needs to decide (requested/refused/revoked/expired decide nothing).
IN_BUNDLE = frozenset({S.ACTIVE, S.SUSPENDED})
