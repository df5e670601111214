"""Upkeep of a dataset's table: small files merged, old snapshots expired.

Ingestion commits a snapshot per micro-batch, so a busy table gathers many small Parquet files a
day and a long history. `compact` rewrites each partition's small files into fewer ones with a
commit that removes exactly those files and adds their replacement — never a predicate overwrite,
so rows that ingestion appends to the same partitions meanwhile survive (a conflict re-bases the
same rewrite on the new head; a rewritten file deleted meanwhile by an erasure voids the rewrite,
which would otherwise bring erased rows back). It also expires snapshots older than a bound and
deletes the files that only they referenced. Blocking, like the warehouse; the service calls it
through `upkeep.TableUpkeep`, which rolls the indicators up first and holds the table's lock.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

import structlog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.typedef import Record
from tdg_lake.tables import COMMIT_ATTEMPTS, write_data_files

from tdg_ingest.contract import MAINTENANCE_PROPERTY
from tdg_ingest.warehouse import Warehouse, carried_offsets

log = structlog.get_logger("tdg.ingest.maintenance")

MiB = 1024 * 1024
# Marks the snapshots written by upkeep, so that a reader of the history tells them from data.
# A rewrite competes with ingestion's frequent commits: more tries than a batch, spaced out.
REWRITE_ATTEMPTS = 8


@dataclass(frozen=True)
class CompactionResult:
    files_rewritten: int
    files_written: int
    snapshots_expired: int
    snapshot_id: int  # of the rewrite; 0 when no partition had small files to merge


def compact(
    warehouse: Warehouse,
    dataset_id: str,
    target_file_bytes: int = 64 * MiB,
    expire_older_than: timedelta = timedelta(hours=24),
    retain_last: int = 1,
) -> CompactionResult:
    # Expiring first keeps the files this run replaces readable until the next run, for
    # queries planned on the snapshot just before the rewrite.
    expired = expire_snapshots(warehouse, dataset_id, expire_older_than, retain_last)
    rewritten, written, snapshot_id = _rewrite_small_files(warehouse, dataset_id, target_file_bytes)
    log.info(
        "table compacted",
        dataset=dataset_id,
        files_rewritten=rewritten,
        files_written=written,
        snapshots_expired=expired,
    )
    return CompactionResult(rewritten, written, expired, snapshot_id)


# --- rewriting --------------------------------------------------------------------------------


def _rewrite_small_files(
    warehouse: Warehouse, dataset_id: str, target: int
) -> tuple[int, int, int]:
    bins: list[list[FileScanTask]] = []
    new: list[DataFile] = []
    table = warehouse.load_for_write(dataset_id)
    for attempt in range(REWRITE_ATTEMPTS):
        if attempt:
            _pause(attempt)
            table = warehouse.load_for_write(dataset_id)
        if not bins:
            bins = _plan(table, target)
            if not bins:
                return 0, 0, 0
            new = [f for group in bins for f in _merge(table, group)]
        old = [task.file for group in bins for task in group]
        try:
            snapshot_id = _replace(table, old, new)
        except CommitFailedException:
            continue  # ingestion appended meanwhile: the same rewrite still holds on the new head
        except ValidationException:
            log.info("rewritten file changed meanwhile, planning again", dataset=dataset_id)
            _discard(table, new)
            bins, new = [], []
            continue
        return len(old), len(new), snapshot_id
    _discard(table, new)
    raise CommitFailedException(f"{dataset_id}: {REWRITE_ATTEMPTS} conflicts while compacting")


def _plan(table: Table, target: int) -> list[list[FileScanTask]]:
    """Groups of at least two small files of one partition, each group about `target` bytes."""
    spec_id = table.spec().spec_id
    by_partition: dict[Record, list[FileScanTask]] = defaultdict(list)
    for task in table.scan().plan_files():
        small = task.file.file_size_in_bytes < target
        # Files with delete files would need them applied, files of an older partition spec
        # would move: both are left as they are.
        if small and not task.delete_files and task.file.spec_id == spec_id:
            by_partition[task.file.partition].append(task)
    bins: list[list[FileScanTask]] = []
    for tasks in by_partition.values():
        bins.extend(group for group in _pack(tasks, target) if len(group) > 1)
    return bins


def _pack(tasks: list[FileScanTask], target: int) -> list[list[FileScanTask]]:
    groups: list[list[FileScanTask]] = []
    current: list[FileScanTask] = []
    size = 0
    for task in sorted(tasks, key=lambda t: t.file.file_size_in_bytes):
        if current and size + task.file.file_size_in_bytes > target:
            groups.append(current)
            current, size = [], 0
        current.append(task)
        size += task.file.file_size_in_bytes
    if current:
        groups.append(current)
    return groups


def _merge(table: Table, group: list[FileScanTask]) -> list[DataFile]:
    data = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(group)
    # Sorted by the partition source (event time), so file statistics prune time ranges well.
    schema = table.schema()
    keys = [schema.find_column_name(f.source_id) for f in table.spec().fields]
    if keys and data.num_rows:
        data = data.sort_by([(k, "ascending") for k in keys if k])
    return write_data_files(table, data)


def _replace(table: Table, old: list[DataFile], new: list[DataFile]) -> int:
    properties = {**carried_offsets(table), MAINTENANCE_PROPERTY: "compaction"}
    tx = table.transaction()
    with tx.update_snapshot(snapshot_properties=properties).overwrite() as rewrite:
        for data_file in old:
            rewrite.delete_data_file(data_file)
        for data_file in new:
            rewrite.append_data_file(data_file)
    tx.commit_transaction()
    return int(rewrite.snapshot_id)


def _pause(attempt: int) -> None:
    # Jittered so that two replicas compacting the same table do not collide again.
    time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))


def _discard(table: Table, files: list[DataFile]) -> None:
    for data_file in files:
        with contextlib.suppress(FileNotFoundError):
            table.io.delete(data_file.file_path)


# --- expiring ---------------------------------------------------------------------------------


def expire_snapshots(
    warehouse: Warehouse, dataset_id: str, older_than: timedelta, retain_last: int = 1
) -> int:
    """Expire the snapshots older than `older_than` except the current one and its
    `retain_last - 1` parents; delete the files no remaining snapshot uses. Returns how many."""
    for _ in range(COMMIT_ATTEMPTS):
        table = warehouse.load_for_write(dataset_id)
        doomed = _expirable(table, datetime.now(UTC) - older_than, max(retain_last, 1))
        if not doomed:
            return 0
        try:
            table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in doomed]).commit()
        except CommitFailedException:
            continue
        _purge(warehouse.load(dataset_id), doomed)
        return len(doomed)
    raise CommitFailedException(f"{dataset_id}: {COMMIT_ATTEMPTS} conflicts while expiring")


def _expirable(table: Table, bound: datetime, retain_last: int) -> list[Snapshot]:
    kept = {
        s.snapshot_id
        for s in islice(ancestors_of(table.current_snapshot(), table.metadata), retain_last)
    }
    kept |= {ref.snapshot_id for ref in table.metadata.refs.values()}
    bound_ms = int(bound.timestamp() * 1000)
    return [
        s
        for s in table.metadata.snapshots
        if s.timestamp_ms < bound_ms and s.snapshot_id not in kept
    ]


def _purge(table: Table, expired: list[Snapshot]) -> None:
    """Delete what only the expired snapshots referenced: their manifest lists, manifests and
    data files. Files of commits in flight are in no expired snapshot, so they are safe."""
    io = table.io
    live_manifests: set[str] = set()
    live_files: set[str] = set()
    for snapshot in table.metadata.snapshots:
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path not in live_manifests:
                live_manifests.add(manifest.manifest_path)
                live_files.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(io))
    doomed: set[str] = set()
    for snapshot in expired:
        doomed.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in live_manifests:
                continue
            doomed.add(manifest.manifest_path)
            doomed.update(
                e.data_file.file_path
                for e in manifest.fetch_manifest_entry(io)
                if e.data_file.file_path not in live_files
            )
    for path in doomed:
        with contextlib.suppress(FileNotFoundError):
            io.delete(path)
