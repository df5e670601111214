"""The consent service's enums under the names a person types and reads.

`PARTY_KIND_PUBLIC_COMPANY` is `public-company`: the prefix dropped, lowercased, `_` turned into
`-`, as spelt in policies/README.md. The names come from the generated descriptors, so a
value added to the proto is known here without a change. Pure: no I/O, no typer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from tdg.consent.v1 import consent_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)


class OptionError(ValueError):
    """A malformed command-line option; `option` names it, e.g. `--mask`."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(problem)
        self.option = option


class Vocabulary(Generic[V]):
    """The values of one proto enum (UNSPECIFIED aside) by their CLI names."""

    def __init__(self, enum: _EnumTypeWrapper[V], prefix: str) -> None:
        self._by_name: dict[str, V] = {}
        self._by_value: dict[int, str] = {}
        for proto_name, value in enum.items():
            if value == 0:
                self.unspecified = value
                continue
            name = proto_name.removeprefix(prefix).lower().replace("_", "-")
            self._by_name[name] = value
            self._by_value[value] = name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def choices(self) -> str:
        """For help texts: `a|b|c`."""
        return "|".join(self._by_name)

    def value(self, text: str, option: str) -> V:
        """The enum value named `text` (case and `_`/`-` ignored); OptionError naming `option`."""
        name = text.strip().lower().replace("_", "-")
        if name not in self._by_name:
            raise OptionError(option, f"unknown value {text!r}; one of {', '.join(self.names)}")
        return self._by_name[name]

    def optional(self, text: str, option: str) -> V:
        """As `value`, with "" meaning UNSPECIFIED (in a list request: no filter)."""
        return self.value(text, option) if text.strip() else self.unspecified

    def name(self, value: int) -> str:
        """The CLI name of a value: "" for UNSPECIFIED, the number for one this CLI doesn't know."""
        if value == 0:
            return ""
        return self._by_value.get(value, str(value))


PARTY_KINDS = Vocabulary(pb.PartyKind, "PARTY_KIND_")
PARTY_STATUSES = Vocabulary(pb.PartyStatus, "PARTY_STATUS_")
ACCESS_KINDS = Vocabulary(pb.AccessKind, "ACCESS_KIND_")
LEGAL_BASES = Vocabulary(pb.LegalBasis, "LEGAL_BASIS_")
AGREEMENT_STATES = Vocabulary(pb.AgreementState, "AGREEMENT_STATE_")
MASK_METHODS = Vocabulary(pb.MaskMethod, "MASK_METHOD_")
CONSENT_STATES = Vocabulary(pb.ConsentState, "CONSENT_STATE_")
ERASURE_STATES = Vocabulary(pb.ErasureState, "ERASURE_STATE_")


def when(ts: Timestamp) -> str:
    """A timestamp for display (RFC 3339, UTC); "" when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return ts.ToJsonString()
