"""Arrow Flight's tickets: single use, each bound to the party it was issued to, expiring."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tdg_core.errors import NotFound, PermissionDenied

TICKET_GONE = "ticket unknown or expired: call GetFlightInfo again"

T = TypeVar("T")


@dataclass
class _Held(Generic[T]):
    party: str
    item: T
    expires: float


class Tickets(Generic[T]):
    """Single-use tickets, each bound to the party it was issued to; `expire` gets each item that
    is not claimed in time (or still held at `close`), exactly once and outside the lock."""

    def __init__(
        self,
        ttl_s: float,
        expire: Callable[[T], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._expire = expire
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[bytes, _Held[T]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def issue(self, party: str, item: T) -> bytes:
        ticket = secrets.token_urlsafe(32).encode()
        with self._lock:
            self._held[ticket] = _Held(party, item, self._clock() + self._ttl_s)
        return ticket

    def claim(self, ticket: bytes, party: str) -> T:
        """The ticket's item, once; NotFound when unknown or expired, PermissionDenied (and the
        ticket kept for its party) when issued to another party."""
        with self._lock:
            held = self._held.get(ticket)
            if held is None:
                raise NotFound(TICKET_GONE)
            if held.expires <= self._clock():
                del self._held[ticket]
            elif held.party != party:
                raise PermissionDenied(["the ticket was issued to another party"])
            else:
                del self._held[ticket]
                return held.item
        self._expire(held.item)
        raise NotFound(TICKET_GONE)

    def sweep(self) -> None:
        now = self._clock()
        with self._lock:
            gone = [t for t, held in self._held.items() if held.expires <= now]
            items = [self._held.pop(t).item for t in gone]
        for item in items:
            self._expire(item)

    def close(self) -> None:
        with self._lock:
            items = [held.item for held in self._held.values()]
            self._held.clear()
        for item in items:
            self._expire(item)
