"""Progress lines of long Spark jobs (segment, score, ingest), printed from the driver.

A daemon thread asks Spark's status tracker, every ``spark.progress_interval_s`` seconds, which
stages are running and how many of their tasks have finished, and prints one line per stage that
has been running for at least one interval::

    segment: stage 14: 37/120 tasks (31%), 1.2 tasks/s, ETA 1m09s, 31s so far

The tracker reads the driver's own bookkeeping (no extra Spark job, nothing on the executors),
so the job runs at the same speed; short stages (table reads, counts) finish between two polls
and print nothing. ``spark.progress_interval_s: 0`` turns the lines off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class StageProgress:
    """One running stage as the status tracker sees it."""

    stage_id: int
    done: int
    total: int


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``, ``3725`` -> ``1h02m``, ``9`` -> ``9s``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_progress_line(label: str, stage: StageProgress, done_at_start: int, elapsed_s: float) -> str:
    """One progress line: counts, percentage, rate since the stage was first seen, ETA, elapsed time.

    Args:
        label: the job (``segment``, ``score``, ``ingest``).
        stage: the stage now.
        done_at_start: its finished tasks when first seen.
        elapsed_s: seconds since it was first seen.
    """
    rate = (stage.done - done_at_start) / elapsed_s if elapsed_s > 0 else 0.0
    left = stage.total - stage.done
    eta = format_duration(left / rate) if rate > 0 else "-"
    percent = 100 * stage.done / stage.total if stage.total else 0.0
    return (
        f"{label}: stage {stage.stage_id}: {stage.done}/{stage.total} tasks ({percent:.0f}%), "
        f"{rate:.2g} tasks/s, ETA {eta}, {format_duration(elapsed_s)} so far"
    )


def running_stages(spark) -> list[StageProgress]:
    """The stages running now, from ``SparkContext.statusTracker()`` (driver-side, no Spark job)."""
    tracker = spark.sparkContext.statusTracker()
    stages = []
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None and info.numTasks > 0:
            stages.append(StageProgress(stage_id, info.numCompletedTasks, info.numTasks))
    return stages


@contextmanager
def spark_progress(spark, label: str, interval_s: float, out: Callable[[str], object] | None = None) -> Iterator[None]:
    """Print progress lines of the Spark stages run inside the ``with`` block.

    Args:
        spark: the job's session.
        label: the job's name, first word of each line.
        interval_s: seconds between polls; 0 prints nothing (no thread is started).
        out: where lines go (default ``print`` with flush).
    """
    if interval_s <= 0:
        yield
        return
    emit = out or (lambda line: print(line, flush=True))
    stop = threading.Event()
    thread = threading.Thread(
        target=_poll, args=(spark, label, interval_s, emit, stop), name=f"allmtl-progress-{label}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=max(1.0, interval_s))


def _poll(spark, label: str, interval_s: float, emit: Callable[[str], object], stop: threading.Event) -> None:
    first_seen: dict[int, tuple[float, int]] = {}  # stage id -> (time, tasks done) when first seen
    while not stop.wait(interval_s):
        try:
            stages = running_stages(spark)
        except Exception:  # noqa: BLE001 - the session is stopping; progress must never fail the job
            return
        now = time.monotonic()
        for stage in stages:
            if stage.stage_id not in first_seen:
                first_seen[stage.stage_id] = (now, stage.done)
                continue  # print stages that ran for a whole interval only
            seen_at, done_at_start = first_seen[stage.stage_id]
            emit(format_progress_line(label, stage, done_at_start, now - seen_at))
