"""Benchmarks: commands that print figures (``allmtl bench <name>``), not timed tests."""
