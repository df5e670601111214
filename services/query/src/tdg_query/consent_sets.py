"""Subjects with active consent, per (dataset, purpose), held in memory as Arrow.

The consent service is the source: `StreamSubjectSet` gives the whole set at a revision, then the
changes after any revision. A `ConsentChanged` event on tdg.consent.events marks the sets of its
purpose stale and refreshes them at once (the event leaves the consent service's outbox as soon as
the change commits), so a withdrawal reaches new queries well within a second. A query never uses a
set known to be stale: it waits for the refresh. When the events cannot be followed (Kafka down),
or a set has not been refreshed for `max_age_s`, the query refreshes it itself first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import structlog
from tdg.consent.v1 import consent_pb2 as cpb
from tdg.consent.v1 import consent_pb2_grpc
from tdg_core.errors import Unavailable

log = structlog.get_logger("tdg.query.consent_sets")

SUBJECTS = pa.schema([pa.field("subject_id", pa.string(), nullable=False)])


@dataclass
class SubjectSet:
    subjects: pa.Table  # one column, subject_id; no duplicates
    revision: int
    refreshed_at: float
    stale: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Snapshot:
    """What one query filters with."""

    subjects: pa.Table
    revision: int


class ConsentSets:
    def __init__(
        self,
        address: str,
        token: Callable[[], str],
        timeout_s: float = 5.0,
        max_age_s: float = 30.0,
        following: Callable[[], bool] = lambda: False,
    ) -> None:
        self._address = address
        self._token = token
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._following = following
        self._sets: dict[tuple[str, str], SubjectSet] = {}
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> consent_pb2_grpc.ConsentServiceStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._address)
        return consent_pb2_grpc.ConsentServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def current(self, dataset_id: str, purpose: str) -> Snapshot:
        """The set to filter a query with, refreshed first when it may be out of date."""
        key = (dataset_id, purpose)
        known = self._sets.get(key)
        if known is None:
            known = self._sets.setdefault(
                key, SubjectSet(SUBJECTS.empty_table(), -1, 0.0, stale=True)
            )
        must_refresh = (
            known.stale
            or known.revision < 0
            or not self._following()
            or time.monotonic() - known.refreshed_at > self._max_age_s
        )
        if must_refresh:
            await self._refresh(key, known)
        return Snapshot(known.subjects, known.revision)

    def mark_stale(self, purpose: str, dataset_id: str, revision: int) -> list[tuple[str, str]]:
        """A consent for `purpose` on `dataset_id` ("" = every dataset) changed at `revision`."""
        marked = []
        for key, known in self._sets.items():
            concerned = key[1] == purpose and (not dataset_id or key[0] == dataset_id)
            if concerned and revision > known.revision:
                known.stale = True
                marked.append(key)
        return marked

    async def refresh_stale(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            known = self._sets.get(key)
            if known is not None and known.stale:
                try:
                    await self._refresh(key, known)
                except Unavailable as exc:
                    log.warning("subject set refresh failed", dataset=key[0], error=str(exc))
                except Exception:  # a fault: the next query refreshes the set itself
                    log.exception("subject set refresh failed", dataset=key[0])

    async def _refresh(self, key: tuple[str, str], known: SubjectSet) -> None:
        async with known.lock:
            # Another query may have refreshed it while this one waited for the lock.
            if (
                not known.stale
                and known.revision >= 0
                and self._following()
                and (time.monotonic() - known.refreshed_at <= self._max_age_s)
            ):
                return
            started = time.monotonic()
            known.stale = False  # a change arriving during the fetch marks it again
            try:
                await self._fetch(key, known)
            except BaseException:
                known.stale = True
                raise
            known.refreshed_at = started

    async def _fetch(self, key: tuple[str, str], known: SubjectSet) -> None:
        since = max(known.revision, 0)
        request = cpb.StreamSubjectSetRequest(
            dataset_id=key[0], purpose=key[1], since_revision=since
        )
        metadata = (("authorization", f"Bearer {self._token()}"),)
        snapshot: list[pa.RecordBatch] = []
        changes: list[pa.RecordBatch] = []
        revision = known.revision
        is_snapshot = since == 0
        try:
            call = self._stub().StreamSubjectSet(
                request, metadata=metadata, timeout=self._timeout_s
            )
            async for chunk in call:
                revision = chunk.revision
                is_snapshot = chunk.snapshot
                if chunk.arrow_ipc:
                    reader = pa.ipc.open_stream(chunk.arrow_ipc)
                    (snapshot if chunk.snapshot else changes).extend(reader)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"the consent service cannot give the subject set of {key[0]} for purpose "
                f"'{key[1]}': {exc.code().name} {exc.details()}"
            ) from exc
        if is_snapshot:
            table = pa.Table.from_batches(snapshot) if snapshot else SUBJECTS.empty_table()
            known.subjects = (
                table.select(["subject_id"]).cast(SUBJECTS).group_by("subject_id").aggregate([])
            )
        elif changes:
            known.subjects = apply_changes(known.subjects, pa.Table.from_batches(changes))
        known.revision = max(revision, 0)
        log.debug(
            "subject set refreshed",
            dataset=key[0],
            purpose=key[1],
            revision=known.revision,
            subjects=known.subjects.num_rows,
        )


def apply_changes(subjects: pa.Table, changes: pa.Table) -> pa.Table:
    """The set after `changes` (subject_id, active), the last change of a subject winning."""
    last = changes.append_column("seq", pa.array(range(changes.num_rows), pa.int64()))
    last = last.group_by("subject_id").aggregate([("seq", "max")])
    order = pc.take(changes, last["seq_max"])
    touched = order["subject_id"]
    kept = subjects.filter(pc.invert(pc.is_in(subjects["subject_id"], value_set=touched)))
    added = order.filter(pc.equal(order["active"], True)).select(["subject_id"]).cast(SUBJECTS)
    return pa.concat_tables([kept, added])
