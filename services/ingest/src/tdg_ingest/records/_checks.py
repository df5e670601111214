"""What pyarrow's JSON reader does not check, checked over the table it read, a column at a time:
required fields, finite floats, decimal precision, real dates and instants, value ranges."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from tdg_ingest.records._arrays import all_false, arange, as_mask
from tdg_ingest.records._grammar import bounded, parse_temporal
from tdg_ingest.records._outcome import REASON_CODES, SCHEMA, Reason
from tdg_ingest.schema import ColumnSpec, TableSchema


def checked_table(
    schema: TableSchema, storage: pa.Schema, table: pa.Table, positions: pa.Array
) -> tuple[pa.Table, pa.Array, list[tuple[int, Reason]]]:
    """The rows that pass every check, in the storage schema, with their positions; and the
    position and reason of each row that does not (the first check it fails)."""
    columns: list[pa.Array] = []
    flags: list[tuple[ColumnSpec, str, pa.Array]] = []
    for spec in schema.columns:
        column, column_flags = _checked(spec, table[spec.name].combine_chunks())
        columns.append(column)
        flags.extend((spec, code, mask) for code, mask in column_flags)
    failed: list[tuple[int, Reason]] = []
    if flags:
        bad = flags[0][2]
        for _, _, mask in flags[1:]:
            bad = pc.or_(bad, mask)
        if pc.any(bad).as_py():
            failed = _failed(flags, bad, positions)
            keep = pc.invert(bad)
            columns = [pc.filter(column, keep) for column in columns]
            positions = pc.filter(positions, keep)
    columns = [
        c if c.type == spec.arrow_type else pc.cast(c, spec.arrow_type)
        for c, spec in zip(columns, schema.columns, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=storage), positions, failed


def _failed(
    flags: list[tuple[ColumnSpec, str, pa.Array]], bad: pa.Array, positions: pa.Array
) -> list[tuple[int, Reason]]:
    first: dict[int, tuple[ColumnSpec, str]] = {}
    for spec, code, mask in flags:
        for row in pc.indices_nonzero(mask).to_pylist():
            first.setdefault(row, (spec, code))
    failed: list[tuple[int, Reason]] = []
    for row in pc.indices_nonzero(bad).to_pylist():
        spec, code = first[row]
        said = REASON_CODES[(SCHEMA, code)]
        failed.append((positions[row].as_py(), (SCHEMA, code, f"field '{spec.name}': {said}")))
    return failed


def _checked(spec: ColumnSpec, column: pa.Array) -> tuple[pa.Array, list[tuple[str, pa.Array]]]:
    """The column (converted to its storage type where its cells allow) and the masks of its
    rows that fail a check, by reason code."""
    flags: list[tuple[str, pa.Array]] = []
    if not spec.nullable:
        flags.append(("missing_field", pc.is_null(column)))
    converted, cell_flags = _cells(column, spec.arrow_type)
    flags.extend(cell_flags)
    measure = _measure(converted, spec.arrow_type) if bounded(spec) else None
    if measure is not None:
        if spec.minimum is not None:
            flags.append(("below_minimum", as_mask(pc.less(measure, spec.minimum))))
        if spec.maximum is not None:
            flags.append(("above_maximum", as_mask(pc.greater(measure, spec.maximum))))
    return converted, flags


def _cells(column: pa.Array, t: pa.DataType) -> tuple[pa.Array, list[tuple[str, pa.Array]]]:
    if pa.types.is_list(t):
        _, inner = _cells(column.flatten(), t.value_type)
        return column, [(code, _parents(column, mask)) for code, mask in inner]
    if pa.types.is_floating(t):
        return column, [("not_finite", as_mask(pc.invert(pc.is_finite(column))))]
    if pa.types.is_decimal(t):
        wide = pa.decimal256(76, t.scale)
        bound = pa.scalar(Decimal(10 ** (t.precision - t.scale)), wide)
        # The reader fits the scale but not the precision: 123456789.0 comes out of a
        # decimal(10,2) as an 11-digit value.
        return column, [
            ("invalid_decimal", as_mask(pc.greater_equal(pc.abs(column.cast(wide)), bound)))
        ]
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        converted, bad = parse_temporal(column, t)
        return converted, [("invalid_date" if pa.types.is_date(t) else "invalid_timestamp", bad)]
    return column, []


def _measure(column: pa.Array, t: pa.DataType) -> pa.Array:
    """What minimum/maximum bound: the number, the length, or the epoch seconds."""
    if pa.types.is_string(t):
        return pc.utf8_length(column)
    if pa.types.is_list(t):
        return pc.list_value_length(column)
    if pa.types.is_date(t):
        return pc.multiply(pc.cast(pc.cast(column, pa.int32()), pa.int64()), 86400)
    if pa.types.is_timestamp(t):
        return pc.divide(pc.cast(pc.cast(column, pa.int64()), pa.float64()), 1e6)
    if pa.types.is_decimal(t):
        return pc.cast(column, pa.float64())
    return column


def _parents(column: pa.Array, child_mask: pa.Array) -> pa.Array:
    """A mask over the lists of `column` from a mask over their flattened items."""
    if not pc.any(child_mask).as_py():
        return all_false(len(column))
    bad = pc.unique(pc.filter(pc.list_parent_indices(column), child_mask))
    return pc.is_in(arange(len(column)), bad.cast(pa.int64()))
