"""Proto ⇄ domain translation for the IngestService, the one place where its messages are built
or read (the servicer calls it; no other module of the service sees an ingest proto).

Timestamps: a naive datetime is taken as UTC, and every datetime read is aware, in UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from tdg.ingest.v1 import ingest_pb2 as pb
from tdg_core.timestamps import from_timestamp, to_timestamp

from tdg_ingest.dlq import DeadLetter, RejectFilter
from tdg_ingest.front_door import PublishTotals, RecordBatch
from tdg_ingest.indicator_periods import Indicator
from tdg_ingest.maintenance import CompactionResult
from tdg_ingest.status import DatasetFigures


def delivery_window(
    request: pb.GetDeliveryIndicatorsRequest,
) -> tuple[datetime | None, datetime | None]:
    """The request's `since` and `until`, None when unset."""
    return from_timestamp(request, "since"), from_timestamp(request, "until")


async def record_batches(requests: AsyncIterator[pb.PublishRequest]) -> AsyncIterator[RecordBatch]:
    """The messages of a Publish stream as the front door reads them. The records' bytes are
    taken as they are (the same copy the front door made before), so this costs nothing per
    record."""
    async for request in requests:
        kind = request.WhichOneof("payload")
        yield RecordBatch(
            dataset_id=request.dataset_id,
            json_records=list(request.json.records) if kind == "json" else None,
            arrow_ipc=request.arrow_ipc if kind == "arrow_ipc" else None,
        )


def publish_response(totals: PublishTotals) -> pb.PublishResponse:
    return pb.PublishResponse(
        received=totals.received,
        queued=totals.queued,
        refused=totals.refused,
        topic=totals.topic,
        problems=[
            pb.RecordProblem(
                index=index,
                reason=pb.Reason(category=r.category, code=r.code, message=r.message),
            )
            for index, r in totals.problems
        ],
    )


def status_to_pb(f: DatasetFigures) -> pb.DatasetStatus:
    return pb.DatasetStatus(
        dataset_id=f.dataset_id,
        topic=f.topic,
        state=f.state,
        lag_records=f.lag_records,
        records_per_s=f.records_per_s,
        last_event_time=to_timestamp(f.last_event_time),
        last_commit_time=to_timestamp(f.last_commit_time),
        rows_stored=f.rows_stored,
        records_rejected=f.records_rejected,
        snapshot_id=f.snapshot_id,
        schema_version=f.schema_version,
    )


def reject_to_pb(letter: DeadLetter) -> pb.Reject:
    return pb.Reject(
        id=letter.id,
        dataset_id=letter.dataset_id,
        source_topic=letter.source_topic,
        source_partition=letter.source_partition,
        source_offset=letter.source_offset,
        producer=letter.producer,
        reason=pb.Reason(category=letter.category, code=letter.code, message=letter.message),
        rejected_at=to_timestamp(letter.rejected_at),
        value=letter.value,
        schema_version=letter.schema_version,
    )


def reject_filter_from_pb(message: pb.RejectFilter, field: str = "filter") -> RejectFilter:
    """The checked filter; InvalidArgument names the offending field, e.g. `filter.category`."""
    return RejectFilter(
        dataset_id=message.dataset_id,
        category=message.category,
        code=message.code,
        producer=message.producer,
        since=from_timestamp(message, "since"),
    ).check(field)


def indicator_to_pb(indicator: Indicator) -> pb.DeliveryIndicator:
    c = indicator.commitments
    return pb.DeliveryIndicator(
        dataset_id=indicator.dataset_id,
        producer=indicator.producer,
        period=indicator.period,
        period_start=to_timestamp(indicator.period_start),
        received=indicator.received,
        accepted=indicator.accepted,
        rejected=indicator.rejected,
        rejected_by_reason=indicator.rejected_by_reason,
        freshness_p50_s=indicator.freshness_p50_s,
        freshness_max_s=indicator.freshness_max_s,
        availability_pct=indicator.availability_pct,
        validity_pct=indicator.validity_pct,
        commitments=pb.Commitments(
            max_freshness_lag_s=c.max_freshness_lag_s or 0,
            completeness_pct=c.completeness_pct or 0.0,
            validity_rate_pct=c.validity_rate_pct or 0.0,
        ),
        freshness_met=indicator.freshness_met,
        availability_met=indicator.availability_met,
        validity_met=indicator.validity_met,
    )


def compaction_to_pb(result: CompactionResult) -> pb.CompactTableResponse:
    return pb.CompactTableResponse(
        files_rewritten=result.files_rewritten,
        files_written=result.files_written,
        snapshots_expired=result.snapshots_expired,
        snapshot_id=result.snapshot_id,
    )
