"""Library warnings and log lines a user cannot act on, filtered out of the jobs' output.

Each filter names one message of one library, so every other warning still shows (no blanket
``ignore::FutureWarning``). They come from the pinned stack (docs/stack.md):

- petastorm 0.13 calls pyarrow's legacy filesystem and dataset APIs, which pyarrow 10 marks
  deprecated (``pyarrow.localfs is deprecated``, ``ParquetDatasetPiece is deprecated``, ...);
- petastorm's converter logs, for every dataset it caches, that its Parquet files are smaller than
  50 MB and that float columns become float32 (the job asks for float32), and the validation read
  (unsharded on purpose) trips a logging error in its Horovod-shard check;
- Keras calls the HDF5 format of ``model.save`` "legacy"; the registry stores HDF5 on purpose;
- TensorFlow reports Horovod's first-batch broadcast as a slow ``on_train_batch_end`` callback.

``install()`` runs where the jobs start (``session.get_spark``) and in each Horovod rank.
"""

from __future__ import annotations

import logging
import os
import warnings

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
