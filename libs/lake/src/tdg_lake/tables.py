"""The lake's Iceberg tables as tdg writes them: their properties, creation, loading for a write,
typed predicates, and the few private pyiceberg functions tdg relies on (pinned by
libs/lake/tests/test_tables.py, so that a pyiceberg upgrade that moves them fails there first).

Every table tdg commits to conditionally (the datasets', the audit trail's, the delivery
indicators') has `commit.retry.num-retries = 0`: pyiceberg (0.12) retries a failed commit by
rebasing it on the new head while keeping its summary, which would put stale Kafka offsets or stale
roll-up marks over newer data. Writers re-read and re-check themselves on a conflict instead
(`tdg_lake.offsets.append_exactly_once`).

Functions here block (catalog and file I/O); async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    NotEqualTo,
    NotNull,
)
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties
from pyiceberg.transforms import Transform
from sqlalchemy.exc import IntegrityError

log = structlog.get_logger("tdg.lake.tables")

# Commit attempts before giving up on a table other writers keep changing (the caller's own
# retry, with backoff, takes over then).
COMMIT_ATTEMPTS = 5

# No rebasing retry (see above): what a conditional commit needs.
NO_COMMIT_RETRY: Mapping[str, str] = {TableProperties.COMMIT_NUM_RETRIES: "0"}
# Tables committed to every batch: also trim their metadata files (the last hundred are kept).
BATCH_TABLE_PROPERTIES: Mapping[str, str] = {
    **NO_COMMIT_RETRY,
    TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
}


@dataclass(frozen=True)
class PartitionBy:
    """A partition field of a new table: `transform` of `column`, named `name`."""

    column: str
    transform: Transform[Any, Any]
    name: str


def create_or_load(
    catalog: Catalog,
    identifier: tuple[str, str],
    schema: pa.Schema | Schema,
    properties: Mapping[str, str],
    partition_by: Sequence[PartitionBy] = (),
) -> tuple[Table, bool]:
    """The table, and whether this call created it. Creation races with other processes (another
    replica, another service) end with every one of them holding the winner's table."""
    for _ in range(COMMIT_ATTEMPTS):
        try:
            return catalog.load_table(identifier), False
        except NoSuchTableError:
            pass
        try:
            catalog.create_namespace_if_not_exists(identifier[0])
        except IntegrityError:
            pass  # created by another process between its existence check and its insert
        try:
            tx = catalog.create_table_transaction(
                identifier, schema=schema, properties=dict(properties)
            )
            if partition_by:
                with tx.update_spec() as spec:
                    for field in partition_by:
                        spec.add_field(field.column, field.transform, field.name)
            table = tx.commit_transaction()
        except (TableAlreadyExistsError, CommitFailedException):
            continue  # lost the race (the catalog says it either way): load the winner's
        log.info("table created", table=".".join(identifier))
        return table, True
    raise CommitFailedException(f"{'.'.join(identifier)}: cannot be created")


def load_for_write(
    load: Callable[[], Table], properties: Mapping[str, str] = BATCH_TABLE_PROPERTIES
) -> Table:
    """The table `load` returns, made sure first that pyiceberg will not rebase a conflicting
    commit (a table created elsewhere, or by an older version, may lack the property)."""
    table = load()
    if table.properties.get(TableProperties.COMMIT_NUM_RETRIES) != "0":
        try:
            with table.transaction() as tx:
                tx.set_properties(dict(properties))
        except CommitFailedException:
            table = load()
            if table.properties.get(TableProperties.COMMIT_NUM_RETRIES) != "0":
                raise
    return table


# --- pyiceberg's private functions ---------------------------------------------------------------


def write_data_files(table: Table, data: pa.Table) -> list[DataFile]:
    """Parquet files of `data` laid out by the table's partition spec, not yet committed (so that
    a commit can be retried, or the files deleted, without writing them again)."""
    if data.num_rows == 0:
        return []
    return list(
        _dataframe_to_data_files(
            table_metadata=table.metadata, df=data, io=table.io, write_uuid=uuid.uuid4()
        )
    )


def check_writable(table: Table, schema: pa.Schema) -> None:
    """ValueError unless Arrow data of `schema` can be appended to `table` as it is (what
    pyiceberg's own append checks, done before any file is written)."""
    _check_pyarrow_schema_compatible(
        table.schema(), schema, format_version=table.metadata.format_version
    )


# --- predicates ---------------------------------------------------------------------------------
# pydantic's mypy plugin misreads the constructors pyiceberg's predicates override: typed here once.


def eq(column: str, value: Any) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg]


def ne(column: str, value: Any) -> BooleanExpression:
    return NotEqualTo(column, value)  # type: ignore[call-arg]


def lt(column: str, value: Any) -> BooleanExpression:
    return LessThan(column, value)  # type: ignore[call-arg]


def le(column: str, value: Any) -> BooleanExpression:
    return LessThanOrEqual(column, value)  # type: ignore[call-arg]


def gt(column: str, value: Any) -> BooleanExpression:
    return GreaterThan(column, value)  # type: ignore[call-arg]


def ge(column: str, value: Any) -> BooleanExpression:
    return GreaterThanOrEqual(column, value)  # type: ignore[call-arg]


def is_in(column: str, values: Iterable[Any]) -> BooleanExpression:
    return In(column, set(values))  # type: ignore[call-arg]


def is_null(column: str) -> BooleanExpression:
    return IsNull(column)  # type: ignore[call-arg]


def not_null(column: str) -> BooleanExpression:
    return NotNull(column)  # type: ignore[call-arg]


def all_of(parts: Iterable[BooleanExpression]) -> BooleanExpression:
    """Their conjunction; always true when there are none."""
    listed = list(parts)
    if not listed:
        return AlwaysTrue()
    return listed[0] if len(listed) == 1 else And(*listed)
