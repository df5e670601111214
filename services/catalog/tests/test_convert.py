"""Column ranges survive every hop: proto → domain → stored JSON → domain → proto."""

from __future__ import annotations

from tdg.catalog.v1 import catalog_pb2 as pb
from tdg_catalog.codec import schema_from_dict, schema_to_dict
from tdg_catalog.convert import schema_from_pb, schema_to_pb
from tdg_catalog.model import Column, Schema

SENT = pb.Schema(
    columns=[
        pb.Column(name="intensity", type="int32", minimum=0),
        pb.Column(name="filling_level", type="float32", minimum=0, maximum=1),
        pb.Column(name="temperature", type="float32", maximum=-0.0),
        pb.Column(name="status", type="string"),
    ]
)


def test_a_bound_of_zero_is_not_mistaken_for_no_bound() -> None:
    columns = schema_from_pb(SENT).columns
    assert [(c.minimum, c.maximum) for c in columns] == [
        (0.0, None),
        (0.0, 1.0),
        (None, 0.0),
        (None, None),
    ]


def test_ranges_come_back_on_the_wire_as_sent() -> None:
    back = schema_to_pb(schema_from_pb(SENT))
    for sent, got in zip(SENT.columns, back.columns, strict=True):
        for side in ("minimum", "maximum"):
            assert got.HasField(side) == sent.HasField(side), (sent.name, side)
            assert getattr(got, side) == getattr(sent, side)


def test_ranges_survive_storage() -> None:
    schema = schema_from_pb(SENT)
    stored = schema_from_dict(schema_to_dict(schema), version=1, created_at=None)
    assert stored.columns == schema.columns


def test_a_schema_stored_before_ranges_existed_reads_as_unbounded() -> None:
    stored = {
        "columns": [
            {
                "name": "intensity",
                "type": "int32",
                "nullable": False,
                "description": "",
                "unit": "bicycles/h",
                "sensitivity": "public",
            }
        ],
        "event_time_column": "",
        "key_columns": [],
        "subject_column": "",
    }
    schema = schema_from_dict(stored, version=1, created_at=None)
    assert schema == Schema(
        columns=(Column("intensity", "int32", nullable=False, unit="bicycles/h"),), version=1
    )
    assert not schema_to_pb(schema).columns[0].HasField("minimum")
