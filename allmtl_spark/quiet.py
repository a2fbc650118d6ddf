"""Library warnings and log lines a user cannot act on, filtered out of the jobs' output.

Each filter names one message of one library, so every other warning still shows (no blanket
``ignore::FutureWarning``). They come from the pinned stack (docs/stack.md):

- petastorm 0.13 calls pyarrow's legacy filesystem and dataset APIs, which pyarrow 10 marks
  deprecated (``pyarrow.localfs is deprecated``, ``ParquetDatasetPiece is deprecated``, ...);
- petastorm's converter logs, for every dataset it caches, that its Parquet files are smaller than
  50 MB and that float columns become float32 (the job asks for float32), and the validation read
  (unsharded on purpose) trips a logging error in its Horovod-shard check;
- Keras calls the HDF5 format of ``model.save`` "legacy"; the registry stores HDF5 on purpose;
- TensorFlow reports Horovod's first-batch broadcast as a slow ``on_train_batch_end`` callback;
- TensorFlow Lite's C++ code writes straight to the process's standard error, past Python's logging:
  the converter's two "Ignored ..." flags and its "Summary on the non-converted ops" (constants it
  keeps as they are), and the runtime's "Created TensorFlow Lite XNNPACK delegate" once per
  process (a worker, the driver). ``native_stderr`` filters that file descriptor around those calls and
  drops exactly these lines (at DEBUG in the driver: ``--verbose``); any other line passes as it comes.

``install()`` runs where the jobs start (``session.get_spark``) and in each Horovod rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

# (category, regular expression matched at the start of the message)
WARNING_FILTERS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"pyarrow\.\S+ is deprecated"),
    (FutureWarning, r"'ParquetDataset\.\w+' attribute is deprecated"),
    (FutureWarning, r"ParquetDatasetPiece is deprecated"),
    (FutureWarning, r"Specifying the '\w+' argument"),
    (FutureWarning, r"The pyarrow\.filesystem\.\w+"),
    (UserWarning, r"You are saving your model as an HDF5 file"),
)
# logger name -> starts of the messages dropped from it
LOG_FILTERS: dict[str, tuple[str, ...]] = {
    "petastorm.spark.spark_dataset_converter": (
        "The median size",
        "Converting floating-point columns to",
        "The petastorm reader arguments cur_shard",
    ),
    "tensorflow": ("Callback method `on_train_batch_end` is slow",),
}
# The same warnings for Python processes started afterwards (-W syntax: literal message prefixes).
CHILD_PYTHONWARNINGS = ",".join(
    [
        "ignore:pyarrow.localfs is deprecated:FutureWarning",
        "ignore:pyarrow.LocalFileSystem is deprecated:FutureWarning",
        "ignore:ParquetDatasetPiece is deprecated:FutureWarning",
        "ignore:You are saving your model as an HDF5 file:UserWarning",
    ]
)


# Lines TensorFlow Lite's C++ code writes to file descriptor 2 (tensorflow 2.15), matched whole.
NATIVE_NOISE = re.compile(
    r"\s*"
    r"|\S+ \S+: W tensorflow/compiler/mlir/lite/python/tf_tfl_flatbuffer_helpers\.cc:\d+\] "
    r"Ignored (?:output_format|drop_control_dependency)\."
    r"|Summary on the non-converted ops:|-+"
    r"| \* Accepted dialects: .*| \* Non-Converted Ops: .*| \* \d+ \w+ ops"
    r"|- [\w.]+: +\d+ occurrences? +\(.*\)|\s+\((?:\w+: \d+(?:, )?)+\)"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
)


_STDERR_SWAP = threading.Lock()  # fd 2 belongs to the process: one swap at a time


@contextlib.contextmanager
def native_stderr(logger: logging.Logger) -> Iterator[None]:
    """Filter what native code writes to file descriptor 2 inside the block: ``NATIVE_NOISE`` is dropped.

    fd 2 is pointed at a pipe whose reader thread passes every other line on to the real standard
    error as it arrives (a crash message still gets out) and logs the dropped ones at DEBUG. Where
    fd 2 cannot be swapped (closed, no ``sys.stderr``), the block runs unfiltered.
    """
    with _STDERR_SWAP:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except OSError:
            saved = None
        if saved is None:
            yield
            return
        read_end, write_end = os.pipe()
        reader = threading.Thread(target=_pass_on, args=(read_end, saved, logger), daemon=True)
        reader.start()
        try:
            os.dup2(write_end, 2)
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(write_end)  # fd 2 no longer holds the pipe either: the reader sees its end
            reader.join()
            os.close(saved)


def _pass_on(read_end: int, target: int, logger: logging.Logger) -> None:
    """Copy lines from ``read_end`` to fd ``target`` until the pipe closes, dropping ``NATIVE_NOISE``."""
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            if NATIVE_NOISE.fullmatch(line):
                if line.strip():
                    logger.debug("%s", line)
                continue
            with contextlib.suppress(OSError):  # the real standard error is gone (a closed pipe): nothing can show it
                os.write(target, raw)


class DropMessages(logging.Filter):
    """Drop the records of one logger whose message template starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        # The template, not getMessage(): petastorm's shard check logs arguments its template cannot format.
        return not str(record.msg).startswith(self.prefixes)


def install() -> None:
    """Add the warnings and logging filters to this process (idempotent)."""
    for category, message in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefixes in LOG_FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(prefixes))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up notices
    os.environ.setdefault("PYTHONWARNINGS", CHILD_PYTHONWARNINGS)
