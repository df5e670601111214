"""The input of OPA's `tdg.read` decision (policies/README.md), built from a catalog entry.

One place for this mapping: the query service asks the decision with it, and the tools and tests
that ask OPA directly use the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tdg.catalog.v1 import catalog_pb2 as pb


def _short(enum: Any, number: int, prefix: str) -> str:
    return str(enum.Name(number)).removeprefix(prefix).lower()


def dataset_input(dataset: pb.Dataset) -> dict[str, Any]:
    """`input.dataset`: the catalog entry as the policy reads it."""
    return {
        "id": dataset.id,
        "publisher": dataset.publisher,
        "status": _short(pb.DatasetStatus, dataset.status, "DATASET_STATUS_"),
        "access_level": _short(pb.AccessLevel, dataset.metadata.access_level, "ACCESS_LEVEL_"),
        "territory": list(dataset.metadata.territory),
        "subject_column": dataset.schema.subject_column,
        "event_time_column": dataset.schema.event_time_column,
        "columns": [
            {
                "name": c.name,
                "type": c.type,
                "sensitivity": _short(pb.Sensitivity, c.sensitivity, "SENSITIVITY_"),
            }
            for c in dataset.schema.columns
        ],
    }


def read_input(
    dataset: pb.Dataset,
    subject: Mapping[str, Any],
    purpose: str,
    columns: Sequence[str] = (),
    filter_columns: Sequence[str] = (),
    group_by: Sequence[str] = (),
    aggregates: Sequence[Mapping[str, str]] = (),
    order_by: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole `tdg.read` input; `columns` empty means every column the caller may see."""
    return {
        "subject": dict(subject),
        "dataset": dataset_input(dataset),
        "request": {
            "purpose": purpose,
            "columns": list(columns),
            "filter_columns": list(filter_columns),
            "group_by": list(group_by),
            "aggregates": [dict(a) for a in aggregates],
            "order_by": list(order_by),
        },
    }
