"""The lake: Iceberg tables in a SQL catalog and a warehouse (local directory or S3), as the ingest
and query services share it.

- `settings`: TDG_LAKE_* (catalog URL, warehouse, S3)
- `catalog`: opening the catalog; a dataset's table identifier
- `tables`: table properties, create-or-load, load for a write, typed predicates, and every use
  of pyiceberg's private functions
- `offsets`: Kafka offsets kept in snapshots; the exactly-once append (`StaleOffsets`)
- `sink`: the exactly-once Kafka → Iceberg consumer loop, with a flush hook per table
- `failures`: what a lake dependency being away looks like, for loops that retry
"""
