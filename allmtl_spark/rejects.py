"""Rows for the ``rejects`` table, shared by every stage (ingest, segment, score)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def reject_rows(
    frame: DataFrame,
    stage: str,
    run_id: str,
    version: str | None,
    path_col: str = "item_path",
    sha_col: str = "sha256",
) -> DataFrame:
    """Shape ``frame`` (path, content hash, ``reason``, ``detail``) into ``tables.REJECTS`` rows.

    The ``reject_key`` hashes stage, path, content hash and version, so the same failure seen
    again (a rerun, a retry) maps to the same row and the MERGE adds nothing.
    """
    version_col = F.lit(version).cast("string")
    key = F.sha2(
        F.concat_ws(
            "|",
            F.lit(stage),
            F.col(path_col),
            F.coalesce(F.col(sha_col), F.lit("")),
            F.coalesce(version_col, F.lit("")),
        ),
        256,
    )
    return frame.select(
        key.alias("reject_key"),
        F.lit(stage).alias("stage"),
        F.col(path_col).alias("source_path"),
        F.col(sha_col).alias("content_sha256"),
        F.col("reason"),
        F.col("detail"),
        version_col.alias("version"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("rejected_at"),
    )
