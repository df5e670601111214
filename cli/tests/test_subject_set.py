"""StreamSubjectSet chunks → one Arrow table, and the Arrow IPC file written from it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from tdg.consent.v1 import consent_pb2 as pb
from tdg_cli.subject_set import SubjectSetError, collect, write_arrow_file


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _snapshot_chunk(subjects: list[str], revision: int = 42) -> pb.SubjectSetChunk:
    table = pa.table({"subject_id": pa.array(subjects, pa.string())})
    return pb.SubjectSetChunk(arrow_ipc=_ipc(table), revision=revision, snapshot=True)


def _changes_chunk(changes: dict[str, bool], revision: int = 50) -> pb.SubjectSetChunk:
    table = pa.table(
        {
            "subject_id": pa.array(list(changes), pa.string()),
            "active": pa.array(list(changes.values()), pa.bool_()),
        }
    )
    return pb.SubjectSetChunk(arrow_ipc=_ipc(table), revision=revision, snapshot=False)


def test_a_snapshot_in_two_chunks() -> None:
    s = collect([_snapshot_chunk(["s1", "s2"]), _snapshot_chunk(["s3"])], since_revision=0)
    assert (s.count, s.revision, s.snapshot, s.chunks) == (3, 42, True, 2)
    assert s.table.column("subject_id").to_pylist() == ["s1", "s2", "s3"]


def test_changes_count_activations_and_withdrawals() -> None:
    s = collect([_changes_chunk({"s1": True, "s2": False}), _changes_chunk({"s3": False})], 40)
    assert (s.count, s.revision, s.snapshot) == (3, 50, False)
    assert (s.activated, s.deactivated) == (1, 2)


def test_no_chunk_leaves_the_revision_unknown() -> None:
    s = collect([], since_revision=0)
    assert (s.count, s.revision, s.snapshot) == (0, None, True)
    assert s.table.column_names == ["subject_id"]
    changes = collect([], since_revision=7)
    assert changes.table.column_names == ["subject_id", "active"]


def test_chunks_of_different_revisions_are_refused() -> None:
    with pytest.raises(SubjectSetError, match="chunk 1: revision 43"):
        collect([_snapshot_chunk(["s1"], 42), _snapshot_chunk(["s2"], 43)], 0)


def test_chunks_of_different_schemas_are_refused() -> None:
    mixed = [_changes_chunk({"s1": True}), _changes_chunk({"s2": True})]
    mixed[1] = pb.SubjectSetChunk(
        arrow_ipc=_snapshot_chunk(["s2"]).arrow_ipc, revision=50, snapshot=False
    )
    with pytest.raises(SubjectSetError, match="different schemas"):
        collect(mixed, 40)


def test_bytes_that_are_not_arrow_are_refused() -> None:
    with pytest.raises(SubjectSetError, match="chunk 0 is not an Arrow IPC stream"):
        collect([pb.SubjectSetChunk(arrow_ipc=b"not arrow", revision=1, snapshot=True)], 0)


def test_the_table_is_written_as_an_arrow_ipc_file(tmp_path: Path) -> None:
    s = collect([_snapshot_chunk(["s1", "s2"]), _snapshot_chunk(["s3"])], since_revision=0)
    path = tmp_path / "subjects.arrow"
    write_arrow_file(s.table, path)
    with pa.ipc.open_file(path) as reader:
        assert reader.read_all().column("subject_id").to_pylist() == ["s1", "s2", "s3"]
