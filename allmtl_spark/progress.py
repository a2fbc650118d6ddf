"""Progress lines of long Spark jobs (segment, score, ingest), printed from the driver.

A daemon thread asks Spark's status tracker, every ``spark.progress_interval_s`` seconds, which
stages are running and how many of their tasks have finished, and prints a line while a stage
has been running for at least one interval, one line for all the stages the job started so far::

    segment: 37/120 tasks (31%), 1 stage(s) running, 1.2 tasks/s, ETA 1m09s, 31s so far

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


def format_progress_line(label: str, done: int, total: int, running: int, rate: float, elapsed_s: float) -> str:
    """One progress line of a job's stages so far: counts, percentage, rate, ETA, elapsed time.

    Args:
        label: the job (``segment``, ``score``, ``ingest``).
        done: tasks finished in the stages started so far.
        total: tasks of those stages.
        running: stages running now.
        rate: tasks finished per second since the first poll.
        elapsed_s: seconds since the first poll that saw a stage.
    """
    eta = format_duration((total - done) / rate) if rate > 0 else "-"
    percent = 100 * done / total if total else 0.0
    return (
        f"{label}: {done}/{total} tasks ({percent:.0f}%), {running} stage(s) running, "
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
    seen: dict[int, StageProgress] = {}  # every stage seen; a stage no longer running counts as done
    first: tuple[float, int] | None = None  # (time, tasks done) at the first poll that saw a stage
    previous: set[int] = set()
    while not stop.wait(interval_s):
        try:
            stages = running_stages(spark)
        except Exception:  # noqa: BLE001 - the session is stopping; progress must never fail the job
            return
        now, running = time.monotonic(), {stage.stage_id for stage in stages}
        for stage_id, stage in seen.items():
            if stage_id not in running:
                seen[stage_id] = StageProgress(stage_id, stage.total, stage.total)
        seen.update({stage.stage_id: stage for stage in stages})
        done, total = sum(s.done for s in seen.values()), sum(s.total for s in seen.values())
        if first is None and stages:
            first = (now, done)
        # Only stages that ran for a whole interval print (short reads and counts stay quiet).
        if first is not None and running & previous:
            rate = (done - first[1]) / (now - first[0]) if now > first[0] else 0.0
            emit(format_progress_line(label, done, total, len(running), rate, now - first[0]))
        previous = running
