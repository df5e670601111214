"""2. `StreamSubjectSet` of a large subject set over gRPC, end to end (every chunk read into a
pyarrow Table), and the consent service's peak memory meanwhile."""

from __future__ import annotations

import asyncio
import time

import grpc
import pyarrow as pa
import pyarrow.compute as pc
from common import Metadata, bearer, say
from tdg.consent.v1 import consent_pb2 as pb
from tdg.consent.v1 import consent_pb2_grpc
from tdg_core.devstack import PythonService

from .memory import RssSampler, rss_kb
from .scenario import EXPORT_DATASET, EXPORT_PURPOSE, WARMUP_PURPOSE, WARMUP_SUBJECTS


async def stream_subject_set(
    stub: consent_pb2_grpc.ConsentServiceStub,
    md: Metadata,
    dataset_id: str,
    purpose: str,
) -> tuple[pa.Table, int, int]:
    """(the set as one Table, its revision, the number of chunks)."""
    tables: list[pa.Table] = []
    revisions: set[int] = set()
    request = pb.StreamSubjectSetRequest(dataset_id=dataset_id, purpose=purpose)
    async for chunk in stub.StreamSubjectSet(request, metadata=md, timeout=600):
        if not chunk.snapshot:
            raise RuntimeError("a snapshot was asked, changes came")
        tables.append(pa.ipc.open_stream(chunk.arrow_ipc).read_all())
        revisions.add(chunk.revision)
    if len(revisions) != 1:
        raise RuntimeError(f"chunks of one stream carry revisions {sorted(revisions)}")
    return pa.concat_tables(tables), revisions.pop(), len(tables)


async def export_phase(
    service: PythonService, secret: str, expected: int, revision: int
) -> dict[str, float]:
    md = bearer(secret, "tdg-query", "tdg", ["platform-service"])
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        warm, _, _ = await stream_subject_set(stub, md, EXPORT_DATASET, WARMUP_PURPOSE)
        if warm.num_rows != WARMUP_SUBJECTS:
            raise RuntimeError(f"warm-up set has {warm.num_rows} rows, not {WARMUP_SUBJECTS}")
        await asyncio.sleep(0.5)
        pid = service.pid
        if pid is None:
            raise RuntimeError("the export service is not running")
        before_kb = rss_kb(pid)
        with RssSampler(pid) as sampler:
            t0 = time.perf_counter()
            table, seen_revision, chunks = await stream_subject_set(
                stub, md, EXPORT_DATASET, EXPORT_PURPOSE
            )
            if table.num_rows != expected:
                raise RuntimeError(f"{table.num_rows} subjects exported, {expected} expected")
            elapsed = time.perf_counter() - t0
        peak_kb = max(sampler.peak_kb, sampler.hwm_kb())
    distinct = pc.count_distinct(table.column("subject_id")).as_py()
    if distinct != expected or seen_revision != revision:
        raise RuntimeError(f"{distinct} distinct subjects at revision {seen_revision}")
    peak_mb = (peak_kb - before_kb) / 1024
    say(
        f"subject set: {table.num_rows} subjects in {chunks} chunks, {elapsed:.2f} s "
        f"({table.num_rows / elapsed:,.0f}/s), {table.nbytes / 1e6:.0f} MB of Arrow"
    )
    say(
        f"  service RSS {before_kb / 1024:.0f} MB before, peak +{peak_mb:.1f} MB "
        f"({sampler.samples} samples{', VmHWM reset' if sampler.hwm_reset else ''})"
    )
    return {
        "subjects": table.num_rows,
        "subject_export_s": round(elapsed, 3),
        "subject_export_rows_per_s": round(table.num_rows / elapsed),
        "subject_export_peak_mb": round(peak_mb, 1),
        "subject_export_rss_before_mb": round(before_kb / 1024, 1),
    }
