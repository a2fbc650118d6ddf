"""Check the runtime a job starts on: Python, Spark, TensorFlow, horovod and the Databricks Runtime.

The product is built and tested on one generation of the stack (Python 3.10-3.11, Spark 3.5,
TensorFlow 2.15 whose ``tf.keras`` is Keras 2, horovod 0.28). A job that starts elsewhere fails
later in ways that say nothing about the cause (horovod's Keras layer on Keras 3, a TensorFlow
without Python 3.12 wheels, horovod missing after Databricks Runtime 15.4 LTS ML), so every job
checks first what it needs and stops with one message listing what does not fit and what to use.
``runtime.check: warn`` turns the stop into a warning; ``off`` skips the check.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from importlib import metadata

from allmtl_spark.errors import AllmtlError

log = logging.getLogger(__name__)

PYTHON = ((3, 10), (3, 11))  # TensorFlow 2.15 has no wheels for 3.12
SPARK = (3, 5)  # Delta 3.3, petastorm 0.13 and horovod.spark 0.28 all accept Spark 3.5
TENSORFLOW = (2, 15)  # the last TensorFlow whose tf.keras is Keras 2
HOROVOD = (0, 28)
DATABRICKS_LAST = (15, 4)  # the last Databricks Runtime ML with horovod (and Python 3.11)
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel")
# What each job needs beyond Python and Spark.
NEEDS = {
    "ingest": (),
    "train-segmenter": ("tensorflow",),
    "segment": ("tensorflow",),
    "score": ("tensorflow",),
    "train": ("tensorflow", "horovod"),
    "tune": ("tensorflow", "horovod"),
    "evaluate": ("tensorflow", "horovod"),
}


class RuntimeMismatch(AllmtlError):
    """The job started on a Python, Spark, TensorFlow, horovod or Databricks Runtime it does not support."""


@dataclass(frozen=True)
class Runtime:
    """Versions found where the job runs (None: not installed / not on Databricks)."""

    python: tuple[int, int, int]
    spark: str | None
    tensorflow: str | None
    horovod: str | None
    databricks: str | None  # DATABRICKS_RUNTIME_VERSION, e.g. "15.4"


def _major_minor(version: str | None) -> tuple[int, int] | None:
    if not version:
        return None
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return None


def _installed(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def detect(spark_version: str | None = None) -> Runtime:
    """The runtime of this process; ``spark_version`` from the session (``spark.version``) when known.

    Versions come from package metadata, so nothing heavy (TensorFlow) is imported.
    """
    if spark_version is None:
        try:
            import pyspark

            spark_version = pyspark.__version__
        except ImportError:
            spark_version = None
    return Runtime(
        python=tuple(sys.version_info[:3]),
        spark=spark_version,
        tensorflow=_installed(*TENSORFLOW_DISTRIBUTIONS),
        horovod=_installed("horovod"),
        databricks=os.environ.get("DATABRICKS_RUNTIME_VERSION") or None,
    )


def compute_runtime_problems(runtime: Runtime, needs: tuple[str, ...]) -> list[str]:
    """One sentence per part of ``runtime`` that does not fit a job needing ``needs``; [] when all fit.

    Args:
        runtime: what was found (``detect``).
        needs: the extras the job uses beyond Python and Spark: ``tensorflow``, ``horovod``.
    """
    problems = []
    if tuple(runtime.python[:2]) not in PYTHON:
        problems.append(
            f"Python {'.'.join(map(str, runtime.python))}: need 3.10 or 3.11 (TensorFlow 2.15 has no wheels for newer)"
        )
    spark = _major_minor(runtime.spark)
    if spark != SPARK:
        problems.append(
            f"Spark {runtime.spark or 'not found'}: need 3.5.x (the line Delta 3.3, petastorm and horovod.spark accept)"
        )
    if "tensorflow" in needs and _major_minor(runtime.tensorflow) != TENSORFLOW:
        problems.append(
            f"TensorFlow {runtime.tensorflow or 'not installed'}: need 2.15.x, whose tf.keras is Keras 2 "
            "(install tensorflow-cpu==2.15.1 or tensorflow[and-cuda]==2.15.1)"
        )
    if "horovod" in needs and _major_minor(runtime.horovod) != HOROVOD:
        problems.append(
            f"horovod {runtime.horovod or 'not installed'}: need 0.28.x built against TensorFlow 2.15 "
            "(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 pip install --no-build-isolation horovod[spark]==0.28.1)"
        )
    databricks = _major_minor(runtime.databricks)
    if databricks is not None and databricks > DATABRICKS_LAST and needs:
        problems.append(
            f"Databricks Runtime {runtime.databricks}: runtimes after 15.4 LTS ML ship Python 3.12 and no horovod; "
            "use 15.4.x-cpu-ml-scala2.12 or 15.4.x-gpu-ml-scala2.12 (spark_version of the job cluster)"
        )
    return problems


def check_runtime(job: str, mode: str = "error", spark_version: str | None = None) -> list[str]:
    """Check this process's runtime for ``job`` (an ``allmtl`` command); return the problems found.

    Args:
        job: the command (``ingest``, ``train`` ...); commands not in ``NEEDS`` need Python and Spark only.
        mode: ``error`` raises, ``warn`` logs, ``off`` checks nothing (``runtime.check``).
        spark_version: the session's Spark version (the JVM's), if a session exists.

    Raises:
        RuntimeMismatch: with ``mode`` error and at least one problem; the message lists them all.
    """
    if mode == "off":
        return []
    problems = compute_runtime_problems(detect(spark_version), NEEDS.get(job, ()))
    if not problems:
        return []
    text = (
        f"`allmtl {job}` cannot run on this runtime:\n  - "
        + "\n  - ".join(problems)
        + "\n(docs/deploy-databricks.md lists the supported runtimes; runtime.check=warn runs anyway)"
    )
    if mode == "error":
        raise RuntimeMismatch(text)
    log.warning("%s", text)
    return problems


# ---------------------------------------------------------------- allmtl --version

# The pinned stack as pyproject.toml (and deploy/lock/horovod.txt for horovod) declares it:
# (shown name, distributions that provide it, version specifier). tests/test_runtime.py keeps them equal.
PINNED_STACK = (
    ("Python", (), ">=3.10,<3.12"),
    ("Spark", ("pyspark",), ">=3.5.3,<3.6"),
    ("Delta", ("delta-spark",), ">=3.3,<3.4"),
    ("TensorFlow", TENSORFLOW_DISTRIBUTIONS, "==2.15.1"),
    ("horovod", ("horovod",), "==0.28.1"),
    ("Petastorm", ("petastorm",), "==0.13.1"),
    ("MLflow", ("mlflow-skinny", "mlflow"), ">=2.10,<3"),
)


def compute_stack_lines(installed: dict[str, str | None]) -> list[str]:
    """One aligned line per pinned component: installed version, pin, and a mark where they differ.

    Args:
        installed: shown name (``PINNED_STACK``'s first field) -> installed version, None when missing.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    lines = []
    for name, _, pin in PINNED_STACK:
        version = installed.get(name)
        try:
            fits = version is not None and Version(version) in SpecifierSet(pin)
        except InvalidVersion:
            fits = False
        mark = "" if fits else ("  <- not installed" if version is None else "  <- differs from the pin")
        lines.append(f"  {name:<11} {version or '-':<10} pinned {pin}{mark}".rstrip())
    return lines


def version_text() -> str:
    """What ``allmtl --version`` prints: the package version and the pinned stack as installed here."""
    installed = {name: _installed(*dists) for name, dists, _ in PINNED_STACK if dists}
    installed["Python"] = ".".join(map(str, sys.version_info[:3]))
    if installed["Spark"] is None:  # a platform's own Spark (Databricks) may carry no package metadata
        installed["Spark"] = detect().spark
    package = _installed("allmtl-spark") or "(not installed as a package)"
    return "\n".join([f"allmtl {package}", "stack (installed, pinned):", *compute_stack_lines(installed)])
