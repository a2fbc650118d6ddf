"""``allmtl bench <name>``: one subcommand per benchmark, each in its own module, imported only when run.

To add one, put ``add_arguments(parser)`` and ``main(args) -> int`` in ``allmtl_spark/bench/<name>.py``
and list it in ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, str] = {
    # name: help
    "segment": "images/s of the segmentation pipeline: a plain 2-process pool vs the Spark job, and worker memory",
    "train": "images/s the Petastorm -> tf.data input side delivers vs what a training step consumes",
    "score": "slides/s of archive scoring: one plain process vs the Spark job, model loads, worker memory",
    "scale": "ms per 2592x1944 slide of the red-cell pixel-size estimate, and its error on slides of known scale",
    "aggregates": "driver memory computing a scoring run's aggregates over 200,000 score rows vs a tenth of them",
    "convert": "seconds to convert a classifier to TensorFlow Lite: handed its variables vs the Keras model",
}


def _run(name: str):
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(f"allmtl_spark.bench.{name}").main(args)

    return run


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench`` with one subcommand per entry of ``BENCHMARKS`` to the main CLI."""
    from allmtl_spark.cli import add_common_arguments

    bench = subparsers.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="Benchmarks print figures; they are commands, not tests.",
    )
    sub = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, help_text in BENCHMARKS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(cmd, needs_spark=True, run_id=False)
        importlib.import_module(f"allmtl_spark.bench.{name}").add_arguments(cmd)
        cmd.set_defaults(func=_run(name))
    return bench
