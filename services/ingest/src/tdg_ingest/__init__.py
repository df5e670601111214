"""tdg ingest service."""
