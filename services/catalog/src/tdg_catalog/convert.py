"""Proto ⇄ domain translation, shared by the servicer and the event adapter."""

from __future__ import annotations

from tdg.catalog.v1 import catalog_pb2 as pb
from tdg_core.errors import InvalidArgument
from tdg_core.timestamps import to_timestamp

from tdg_catalog.model import (
    AccessLevel,
    Column,
    Dataset,
    Metadata,
    Schema,
    Sensitivity,
    Status,
)

ACCESS_TO_PB = {
    AccessLevel.OPEN: pb.ACCESS_LEVEL_OPEN,
    AccessLevel.RESTRICTED: pb.ACCESS_LEVEL_RESTRICTED,
    AccessLevel.PERSONAL: pb.ACCESS_LEVEL_PERSONAL,
}
ACCESS_FROM_PB = {v: k for k, v in ACCESS_TO_PB.items()}
SENSITIVITY_TO_PB = {
    Sensitivity.PUBLIC: pb.SENSITIVITY_PUBLIC,
    Sensitivity.INTERNAL: pb.SENSITIVITY_INTERNAL,
    Sensitivity.PERSONAL: pb.SENSITIVITY_PERSONAL,
    Sensitivity.SENSITIVE: pb.SENSITIVITY_SENSITIVE,
}
SENSITIVITY_FROM_PB = {v: k for k, v in SENSITIVITY_TO_PB.items()}
STATUS_TO_PB = {
    Status.DRAFT: pb.DATASET_STATUS_DRAFT,
    Status.PUBLISHED: pb.DATASET_STATUS_PUBLISHED,
    Status.DEPRECATED: pb.DATASET_STATUS_DEPRECATED,
}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}


def access_level_from_pb(value: int, field: str) -> AccessLevel:
    try:
        return ACCESS_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(field, "must be open, restricted or personal") from None


def status_from_pb(value: int, field: str) -> Status:
    try:
        return STATUS_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(field, "must be draft, published or deprecated") from None


def metadata_from_pb(m: pb.DatasetMetadata) -> Metadata:
    return Metadata(
        title=m.title,
        description=m.description,
        contact=m.contact,
        themes=tuple(m.themes),
        keywords=tuple(m.keywords),
        licence=m.licence,
        access_level=access_level_from_pb(m.access_level, "metadata.access_level"),
        territory=tuple(m.territory),
        update_frequency=m.update_frequency,
        retention_days=m.retention_days,
    )


def schema_from_pb(s: pb.Schema, field: str = "schema") -> Schema:
    columns = []
    for i, c in enumerate(s.columns):
        if c.sensitivity not in SENSITIVITY_FROM_PB and c.sensitivity != pb.SENSITIVITY_UNSPECIFIED:
            raise InvalidArgument(f"{field}.columns[{i}].sensitivity", "unknown sensitivity")
        columns.append(
            Column(
                name=c.name,
                type=c.type.strip(),
                nullable=c.nullable,
                description=c.description,
                unit=c.unit,
                # Unset sensitivity means public: the publisher states what is not.
                sensitivity=SENSITIVITY_FROM_PB.get(c.sensitivity, Sensitivity.PUBLIC),
                # proto3 `optional`: presence, not zero, tells a bound of 0 from no bound.
                minimum=c.minimum if c.HasField("minimum") else None,
                maximum=c.maximum if c.HasField("maximum") else None,
            )
        )
    return Schema(
        columns=tuple(columns),
        event_time_column=s.event_time_column,
        key_columns=tuple(s.key_columns),
        subject_column=s.subject_column,
    )


def metadata_to_pb(m: Metadata) -> pb.DatasetMetadata:
    return pb.DatasetMetadata(
        title=m.title,
        description=m.description,
        contact=m.contact,
        themes=m.themes,
        keywords=m.keywords,
        licence=m.licence,
        access_level=ACCESS_TO_PB[m.access_level],
        territory=m.territory,
        update_frequency=m.update_frequency,
        retention_days=m.retention_days,
    )


def schema_to_pb(s: Schema) -> pb.Schema:
    return pb.Schema(
        version=s.version,
        columns=[
            pb.Column(
                name=c.name,
                type=c.type,
                nullable=c.nullable,
                description=c.description,
                unit=c.unit,
                sensitivity=SENSITIVITY_TO_PB[c.sensitivity],
                minimum=c.minimum,  # None leaves the field unset
                maximum=c.maximum,
            )
            for c in s.columns
        ],
        event_time_column=s.event_time_column,
        key_columns=s.key_columns,
        subject_column=s.subject_column,
        created_at=to_timestamp(s.created_at),
    )


def dataset_to_pb(d: Dataset) -> pb.Dataset:
    return pb.Dataset(
        id=d.id,
        publisher=d.publisher,
        metadata=metadata_to_pb(d.metadata),
        status=STATUS_TO_PB[d.status],
        schema=schema_to_pb(d.schema),
        latest_schema_version=d.latest_schema_version,
        created_at=to_timestamp(d.created_at),
        updated_at=to_timestamp(d.updated_at),
        deprecation_reason=d.deprecation_reason,
    )
