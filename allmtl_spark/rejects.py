"""Rows for the ``rejects`` table, shared by every stage (ingest, segment, score).

A reject is permanent (a property of the input: it cannot be decoded, has no white cells) or
retryable (the cause may pass: a worker ran out of memory, a size limit of the config, a file that
could not be read when it was listed). The next run of a stage tries its retryable rejects again
and deletes their rows once the input succeeds (``resolve_retried``); a retry that fails for another
reason takes over the row (``merge_rejects``), so a slide that was too large and, let through, cannot be
decoded ends as a permanent ``decode_error``. A permanent reject is not retried for the same version
(delete its row to retry it).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from allmtl_spark import tables
from allmtl_spark.lakehouse import Lakehouse, delete_matched, merge_new_rows

# Reasons whose cause may pass, per stage.
RETRYABLE_REASONS: dict[str, tuple[str, ...]] = {
    "ingest": ("unreadable",),
    "segment": ("out_of_memory", "too_large_for_worker"),
    "score": ("out_of_memory", "too_large_for_worker"),
}


def is_retryable(stage: str, reason: str) -> bool:
    return reason in RETRYABLE_REASONS.get(stage, ())


def retryable_column(stage: str) -> Column:
    """Whether a ``rejects`` row of ``stage`` is retryable: its flag, else (older rows) its reason."""
    return F.coalesce(F.col("retryable"), F.col("reason").isin(*RETRYABLE_REASONS.get(stage, ())))


def retryable_sql(stage: str, alias: str = "t") -> str:
    """``retryable_column`` as SQL on the ``rejects`` row ``alias`` (for MERGE conditions)."""
    reasons = ", ".join(repr(r) for r in RETRYABLE_REASONS.get(stage, ())) or "NULL"
    return f"coalesce({alias}.retryable, {alias}.reason IN ({reasons}))"


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
    again (a rerun, a retry) maps to the same row and the MERGE adds nothing. ``retryable``
    follows from the stage and the reason (``RETRYABLE_REASONS``).
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
        F.col("reason").isin(*RETRYABLE_REASONS.get(stage, ())).alias("retryable"),
    )


def merge_rejects(spark: SparkSession, lake: Lakehouse, rejects: DataFrame, stage: str) -> int:
    """MERGE ``reject_rows`` of a segment or score run into ``rejects``; returns the rows inserted.

    A new failure is inserted. A retried input that fails again for the same reason adds nothing
    (no commit); one that fails for another reason replaces its earlier retryable row (reason,
    detail, run, time, flag), so it is no longer retried if the new reason is permanent.
    """
    changed = ("reason", "detail", "run_id", "rejected_at", "retryable")
    return merge_new_rows(
        spark,
        lake,
        tables.REJECTS,
        rejects,
        update_condition=f"{retryable_sql(stage)} AND t.reason <> s.reason",
        update_set={c: f"s.`{c}`" for c in changed},
    )


def resolve_retried(spark: SparkSession, lake: Lakehouse, done: DataFrame, stage: str) -> int:
    """Delete the retryable ``stage`` rejects of inputs this run completed; returns the rows deleted.

    Args:
        done: ``content_sha256`` and ``version`` of every input the run completed (a scored slide,
            a segmented one).
    """
    return delete_matched(
        spark,
        lake,
        tables.REJECTS,
        done.select("content_sha256", "version").distinct(),
        f"t.stage = '{stage}' AND t.version = s.version AND t.content_sha256 = s.content_sha256 "
        f"AND {retryable_sql(stage)}",
    )
