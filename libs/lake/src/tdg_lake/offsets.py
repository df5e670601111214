"""Kafka offsets kept in Iceberg snapshots: how a topic is appended to a table exactly once.

A writer that consumes a topic commits, in the same snapshot as the rows, the next offset of every
partition (a JSON property of the snapshot's summary). After a crash or a rebalance it reads them
back and seeks there; a batch whose start is not the table's offsets was already stored by someone
else. The ingest service (the datasets' topics) and the query service (its audit topic) both do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

import pyarrow as pa
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of


def write_data_files(table: Table, data: pa.Table) -> list[DataFile]:
    """Parquet files of `data` laid out by the table's partition spec, not yet committed."""
    if data.num_rows == 0:
        return []
    return list(
        _dataframe_to_data_files(
            table_metadata=table.metadata, df=data, io=table.io, write_uuid=uuid.uuid4()
        )
    )


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
