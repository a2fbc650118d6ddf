"""Named points where the reliability tests make separate processes meet, or hold one until it is killed.

Inert unless ``$ALLMTL_SYNC_DIR`` is set: then every point named in ``$ALLMTL_SYNC_POINTS`` (comma
separated) records each arrival as a file in that folder and may wait:

- ``name:N``: a barrier; each arrival waits until N arrivals are recorded (N separate drivers).
- ``name:hold``: the first arrival waits until ``<dir>/<name>.release`` exists; later ones pass.
  The tests kill the holder (a driver between two commits, an executor mid-task).

Waiting ends after ``$ALLMTL_SYNC_TIMEOUT`` seconds (default 300) whatever happened, so a test
that fails to act cannot hang a job. The arrival files (``<name>.<pid>.<n>``) hold a JSON record:
time, pid and, inside a Spark task, the partition, attempt number and stage; the tests read them
to show that processes overlapped and that a task was attempted again.

Used at: ``merge:<table>`` / ``merged:<table>`` (before and after every Delta MERGE, in
``lakehouse.merge_new_rows``), ``score:task`` (start of a scoring task on a Python worker) and
``ingest:listed`` (after ingest listed its files, before it reads them).
"""

from __future__ import annotations

import json
import os
import time

POLL_SECONDS = 0.02


def _points() -> dict[str, str]:
    spec = os.environ.get("ALLMTL_SYNC_POINTS", "")
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, mode = item.rpartition(":")
        out[name] = mode
    return out


def sync_point(name: str) -> None:
    """Record an arrival at ``name`` and wait as configured; returns at once when not configured."""
    folder = os.environ.get("ALLMTL_SYNC_DIR")
    if not folder:
        return
    mode = _points().get(name)
    if mode is None:
        return
    safe = name.replace("/", "_")
    _record(folder, safe)
    deadline = time.monotonic() + float(os.environ.get("ALLMTL_SYNC_TIMEOUT", "300"))
    if mode == "hold":
        try:  # only the first arrival claims the hold; the file names the holder's pid
            claim = os.open(os.path.join(folder, f"{safe}.held"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(claim, str(os.getpid()).encode())
        os.close(claim)
        release = os.path.join(folder, f"{safe}.release")
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        return
    parties = int(mode)
    while len(arrivals(folder, safe)) < parties and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)


def holder(folder: str, name: str, seconds: float = 30.0) -> int:
    """The pid of the process holding at ``name`` (``hold`` mode), once its ``.held`` file names it."""
    path = os.path.join(folder, f"{name.replace('/', '_')}.held")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(path) as handle:
            text = handle.read().strip()
        if text:
            return int(text)
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{path} names no holder")


def arrivals(folder: str, name: str) -> list[dict]:
    """The records of every arrival at ``name`` so far (``name`` with ``/`` as ``_``), oldest first."""
    prefix = f"{name.replace('/', '_')}."
    records = []
    for entry in os.listdir(folder):
        if entry.startswith(prefix) and entry.endswith(".json"):
            with open(os.path.join(folder, entry)) as handle:
                records.append(json.load(handle))
    return sorted(records, key=lambda r: r["time"])


def _record(folder: str, name: str) -> None:
    record = {"point": name, "time": time.time(), "pid": os.getpid(), "ppid": os.getppid()}
    try:
        from pyspark import TaskContext

        task = TaskContext.get()
    except ImportError:  # pragma: no cover - pyspark is a dependency
        task = None
    if task is not None:
        record.update(partition=task.partitionId(), attempt=task.attemptNumber(), stage=task.stageId())
    path = os.path.join(folder, f"{name}.{os.getpid()}.{time.time_ns()}.json")
    with open(f"{path}.tmp", "w") as handle:
        json.dump(record, handle)
    os.replace(f"{path}.tmp", path)  # readers never see half a record
