"""What is measured: the dataset (bike counts of 11 communes), the three queries through the
service, a query pruned to no data file, and the same work as bare DuckDB SQL."""

from __future__ import annotations

from datetime import UTC, datetime

from tdg.catalog.v1 import catalog_pb2 as cpb
from tdg.query.v1 import query_pb2 as qpb

DATASET = "metropole-lyon.bike-counters-bench"
PUBLISHER = "metropole-lyon"
PURPOSE = "mobility-planning"
FILES = 10  # one append of one day each
COUNTERS = 5_000
COMMUNES = [
    "69123",
    "69266",
    "69381",
    "69382",
    "69383",
    "69384",
    "69385",
    "69386",
    "69387",
    "69388",
    "69389",
]
TERRITORY = ["69123", "69266", "69381"]  # the agreement's territory filter
FIRST_DAY = datetime(2026, 3, 1, tzinfo=UTC)
COLUMNS = [
    ("counter_id", "string", False),
    ("date_observed", "timestamp", False),
    ("lane_direction", "string", False),
    ("intensity", "int32", False),
    ("lane_id", "int32", True),
    ("vehicle_type", "string", True),
    ("ref_road_segment", "string", True),
    ("commune_code", "string", True),
    ("latitude", "float64", True),
    ("longitude", "float64", True),
]
THE_COUNTER = "CPT-01234"
FILTER_COLUMNS = ["counter_id", "date_observed", "lane_direction", "intensity"]
EXPORT_COLUMNS = ["counter_id", "date_observed", "intensity"]


def dataset() -> cpb.Dataset:
    return cpb.Dataset(
        id=DATASET,
        publisher=PUBLISHER,
        status=cpb.DATASET_STATUS_PUBLISHED,
        metadata=cpb.DatasetMetadata(
            title="Comptages vélo (bench)",
            access_level=cpb.ACCESS_LEVEL_OPEN,
            territory=["200046977", *COMMUNES],
        ),
        schema=cpb.Schema(
            version=1,
            columns=[
                cpb.Column(name=n, type=t, nullable=z, sensitivity=cpb.SENSITIVITY_PUBLIC)
                for n, t, z in COLUMNS
            ],
            event_time_column="date_observed",
            key_columns=["counter_id", "lane_direction", "date_observed"],
        ),
    )


def requests() -> dict[str, qpb.QueryRequest]:
    eq = qpb.Comparison(
        column="counter_id",
        op=qpb.COMPARISON_OPERATOR_EQ,
        value=qpb.Literal(string_value=THE_COUNTER),
    )
    return {
        "filter": qpb.QueryRequest(
            dataset_id=DATASET,
            purpose=PURPOSE,
            columns=FILTER_COLUMNS,
            filter=qpb.Expression(comparison=eq),
        ),
        "aggregate": qpb.QueryRequest(
            dataset_id=DATASET,
            purpose=PURPOSE,
            group_by=["commune_code"],
            aggregates=[
                qpb.Aggregate(function=qpb.AGGREGATE_FUNCTION_COUNT),
                qpb.Aggregate(function=qpb.AGGREGATE_FUNCTION_SUM, column="intensity"),
            ],
        ),
        "export": qpb.QueryRequest(dataset_id=DATASET, purpose=PURPOSE, columns=EXPORT_COLUMNS),
    }


def pruned_request() -> qpb.QueryRequest:
    """A query whose filter (a counter id above every file's upper bound) prunes every data file
    in planning: what a query costs the service besides reading data."""
    return qpb.QueryRequest(
        dataset_id=DATASET,
        purpose=PURPOSE,
        columns=["counter_id"],
        filter=qpb.Expression(
            comparison=qpb.Comparison(
                column="counter_id",
                op=qpb.COMPARISON_OPERATOR_EQ,
                value=qpb.Literal(string_value="ZZZ"),
            )
        ),
    )


# The same work for DuckDB alone ($1: the data files), as the service's statement does it (its
# sum of integers is cast to BIGINT the same way).
SCAN = "read_parquet($files, union_by_name=false, hive_partitioning=false)"
DUCKDB_SQL = {
    "filter": f"SELECT {', '.join(FILTER_COLUMNS)} FROM {SCAN} WHERE counter_id = $counter",
    "aggregate": "SELECT commune_code, count(*) AS count, "
    f"CAST(sum(intensity) AS BIGINT) AS sum_intensity FROM {SCAN} GROUP BY commune_code",
    "export": f"SELECT {', '.join(EXPORT_COLUMNS)} FROM {SCAN}",
    "masked_aggregate": "SELECT commune_code, count(*) AS count, "
    f"CAST(sum(intensity) AS BIGINT) AS sum_intensity FROM {SCAN} "
    "WHERE commune_code IN (SELECT unnest($territory)) GROUP BY commune_code",
}
