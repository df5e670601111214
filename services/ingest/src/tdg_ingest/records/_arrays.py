"""Boolean masks and positions over Arrow arrays, as the checks combine them."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def or_mask(mask: pa.Array | None, more: pa.Array) -> pa.Array:
    return more if mask is None else pc.or_(mask, more)


def as_mask(mask: pa.Array) -> pa.Array:
    """Nulls (a check on a null cell) count as false."""
    return pc.fill_null(mask, False)


def arange(n: int) -> pa.Array:
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def all_false(n: int) -> pa.Array:
    return pa.repeat(pa.scalar(False), n)
