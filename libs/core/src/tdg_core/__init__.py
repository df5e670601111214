"""tdg_core."""
