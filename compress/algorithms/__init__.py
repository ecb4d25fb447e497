"""Algorithms: pure tensor functions that decide new weight values (no modules, no data loops)."""
