"""Kafka offsets kept in Iceberg snapshots: how a topic is appended to a table exactly once.

A writer that consumes a topic commits, in the same snapshot as the rows, the next offset of every
partition (a JSON property of the snapshot's summary). After a crash or a rebalance it reads them
back and seeks there; a batch whose start is not the table's offsets was already stored by someone
else. The ingest service (the datasets' topics) and the query service (its audit topic) both do.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping

import pyarrow as pa
import structlog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from tdg_lake.tables import COMMIT_ATTEMPTS, write_data_files

log = structlog.get_logger("tdg.lake.offsets")


def encode_offsets(topic: str, offsets: dict[int, int]) -> str:
    partitions = {str(p): o for p, o in sorted(offsets.items())}
    return json.dumps({"topic": topic, "partitions": partitions}, separators=(",", ":"))


def offset_summaries(table: Table, prop: str) -> Iterable[str]:
    """The `prop` values of the current snapshot's ancestors, newest first (snapshots made by
    maintenance may carry none)."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        value = snapshot.summary.get(prop) if snapshot.summary else None
        if value:
            yield value


def offsets_in(table: Table, topic: str, prop: str) -> dict[int, int]:
    """The offsets of `topic` in the newest ancestor of the current snapshot carrying any."""
    for summary in offset_summaries(table, prop):
        decoded = json.loads(summary)
        if decoded.get("topic") == topic:
            return {int(p): int(o) for p, o in decoded.get("partitions", {}).items()}
    return {}


def show_offsets(offsets: dict[int, int]) -> str:
    return "{" + ", ".join(f"{p}: {o}" for p, o in sorted(offsets.items())) + "}"


class StaleOffsets(Exception):
    """Someone else (another replica, a zombie) committed these offsets first; `committed` is
    what the table holds now, where the caller should resume."""

    def __init__(self, name: str, committed: dict[int, int], start: dict[int, int]) -> None:
        self.name = name
        self.committed = committed
        super().__init__(
            f"{name}: batch starts at {show_offsets(start)} "
            f"but the table is at {show_offsets(committed)}"
        )


def append_exactly_once(
    table: Table,
    reload: Callable[[], Table],
    data: pa.Table,
    topic: str,
    prop: str,
    start: dict[int, int],
    end: dict[int, int],
    properties: Mapping[str, str] | None = None,
) -> int:
    """Append `data` (possibly empty) in one snapshot whose `prop` carries the offsets of `topic`
    advanced to `end`; StaleOffsets when the table is not at `start` (a partition the table holds
    no offset for is accepted from wherever the batch began). On a commit conflict the table is
    `reload`ed and its offsets checked again: pyiceberg's own retry (switched off on these tables)
    would re-apply the append on top of the other writer's. A parent snapshot expired under the
    append (table maintenance) is such a conflict too. Returns the new snapshot id."""
    name = ".".join(table.name())
    files: list[DataFile] | None = None
    try:
        for attempt in range(COMMIT_ATTEMPTS):
            if attempt:
                table = reload()
            committed = offsets_in(table, topic, prop)
            if any(p in committed and committed[p] != s for p, s in start.items()):
                raise StaleOffsets(name, committed, start)
            if files is None:  # written once, committed by whichever attempt succeeds
                files = write_data_files(table, data)
            summary = {**(properties or {}), prop: encode_offsets(topic, {**committed, **end})}
            try:
                tx = table.transaction()
                with tx.update_snapshot(snapshot_properties=summary).fast_append() as append:
                    for data_file in files:
                        append.append_data_file(data_file)
                tx.commit_transaction()
            except CommitFailedException:
                log.info("commit conflict, re-checking offsets", table=name)
                continue
            except FileNotFoundError:
                # The snapshot this append builds on was expired meanwhile and its manifest list
                # deleted: the table has moved on, as in a conflict.
                log.info("parent snapshot expired, re-checking offsets", table=name)
                continue
            return int(append.snapshot_id)
        raise CommitFailedException(f"{name}: {COMMIT_ATTEMPTS} commit conflicts in a row")
    except (StaleOffsets, CommitFailedException):
        # Every attempt was refused by the catalog, so no snapshot holds these files.
        for data_file in files or ():
            with contextlib.suppress(Exception):
                table.io.delete(data_file.file_path)
        raise
