"""tdg_cli."""
