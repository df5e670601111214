"""`tdg consent subjects`: the chunks of StreamSubjectSet → one Arrow table (pure, no gRPC).

Each chunk's `arrow_ipc` is an Arrow IPC stream of one record batch: `subject_id` (string) for a
snapshot (since_revision 0), `subject_id` and `active` (bool) for the changes after a revision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from tdg.consent.v1 import consent_pb2 as pb

SNAPSHOT_SCHEMA = pa.schema([pa.field("subject_id", pa.string())])
CHANGES_SCHEMA = pa.schema([pa.field("subject_id", pa.string()), pa.field("active", pa.bool_())])


class SubjectSetError(ValueError):
    """The stream is not what the contract promises (undecodable or inconsistent chunks)."""


@dataclass(frozen=True)
class SubjectSet:
    table: Any  # pyarrow.Table
    # None when the service sent no chunk (it then says nothing of the revision).
    revision: int | None
    snapshot: bool
    chunks: int

    @property
    def count(self) -> int:
        return int(self.table.num_rows)

    @property
    def activated(self) -> int:
        """Changes only: the subjects whose consent became active."""
        if self.snapshot or "active" not in self.table.column_names:
            return 0
        return sum(1 for active in self.table.column("active").to_pylist() if active)

    @property
    def deactivated(self) -> int:
        return 0 if self.snapshot else self.count - self.activated


def collect(chunks: Iterable[pb.SubjectSetChunk], since_revision: int) -> SubjectSet:
    """Concatenate the chunks; SubjectSetError when one cannot be read or they disagree."""
    tables = []
    revision: int | None = None
    snapshot = since_revision == 0
    for i, chunk in enumerate(chunks):
        if revision is None:
            revision, snapshot = chunk.revision, chunk.snapshot
        elif (chunk.revision, chunk.snapshot) != (revision, snapshot):
            raise SubjectSetError(
                f"chunk {i}: revision {chunk.revision} snapshot {chunk.snapshot}, but chunk 0 had "
                f"revision {revision} snapshot {snapshot}"
            )
        try:
            tables.append(pa.ipc.open_stream(chunk.arrow_ipc).read_all())
        except (pa.ArrowException, OSError) as exc:
            raise SubjectSetError(f"chunk {i} is not an Arrow IPC stream: {exc}") from exc
    if not tables:
        empty = (SNAPSHOT_SCHEMA if snapshot else CHANGES_SCHEMA).empty_table()
        return SubjectSet(table=empty, revision=None, snapshot=snapshot, chunks=0)
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowException as exc:
        raise SubjectSetError(f"the chunks have different schemas: {exc}") from exc
    return SubjectSet(table=table, revision=revision, snapshot=snapshot, chunks=len(tables))


def write_arrow_file(table: Any, path: Path) -> None:
    """The table as an Arrow IPC file (random access format, e.g. `pyarrow.ipc.open_file`)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
