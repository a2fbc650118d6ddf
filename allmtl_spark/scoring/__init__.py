"""Bulk scoring of archived slides: exactly once per model version, with stage-wise aggregates."""
