"""The lake: Iceberg tables in a SQL catalog and a warehouse (local directory or S3)."""
