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
  interpreter in every worker. ``native_stderr`` captures that file descriptor around those calls and
  drops exactly these lines (kept at DEBUG, shown with ``--verbose``); any other line is written back.

``install()`` runs where the jobs start (``session.get_spark``) and in each Horovod rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
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


@contextlib.contextmanager
def native_stderr(logger: logging.Logger) -> Iterator[None]:
    """Capture what native code writes to file descriptor 2 inside the block; drop ``NATIVE_NOISE``.

    The dropped lines go to ``logger`` at DEBUG; every other line is written back to standard error
    unchanged, so a real error from the same code still shows.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = []
            for line in sink.read().decode(errors="replace").splitlines(keepends=True):
                if NATIVE_NOISE.fullmatch(line.rstrip("\n")):
                    if line.strip():
                        logger.debug("%s", line.rstrip("\n"))
                else:
                    kept.append(line)
            if kept:
                os.write(2, "".join(kept).encode())


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
