"""The query service: governed Arrow queries over gRPC and Arrow Flight."""
