"""tdg_catalog."""
