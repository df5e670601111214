"""Protobuf timestamps ⇄ datetimes, the one way every servicer converts them: UTC on the wire, a
naive datetime taken as UTC (never as the machine's local time), an unset field as None."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)  # an aware datetime converted to UTC, a naive one taken as UTC
    return stamp


def from_timestamp(message: Message, field: str) -> datetime | None:
    """The message's timestamp `field` as an aware UTC datetime, None when unset."""
    if not message.HasField(field):
        return None
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value
